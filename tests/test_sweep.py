"""tfprivadv.sweep: the grid end to end on real ML-100K, resuming, and the checks."""

from __future__ import annotations

import json
import math

import numpy as np
import pandas as pd
import pytest

from tfprivadv import cli
from tfprivadv.experiment import RunConfig
from tfprivadv.sweep import (
    PAPER_TABLES,
    SweepConfig,
    cell_name,
    pareto_front,
    stability,
    tables_markdown,
    target_check,
)


def _sweep_args(path, output, lambdas, epochs="2"):
    return [
        "sweep",
        "--dataset",
        "100k",
        "--data-path",
        path,
        "--dims",
        "8",
        "--lambdas",
        lambdas,
        "--epochs",
        epochs,
        "--attackers",
        "logistic",
        "--recommendation-attackers",
        "logistic",
        "--table1-dim",
        "8",
        "--table1-lambda",
        "0.5",
        "--table1-attackers",
        "logistic,decision_tree",
        "--objective",
        "confusion",
        "--no-progress",
        "--output",
        str(output),
    ]


@pytest.mark.integration
def test_sweep_cli_end_to_end_and_resume(ml100k_path, tmp_path, capsys):
    output = tmp_path / "sweep"
    assert cli.main(_sweep_args(ml100k_path, output, "0,0.5")) == 0
    printed = capsys.readouterr().out
    assert "dim8-lambda0.5" in printed and "Stable" in printed
    expected = {
        "README.md",
        "cells",
        "cells.csv",
        "leakage.csv",
        "leakage_vs_lambda.png",
        "summary.json",
        "sweep.json",
        "tables.md",
        "tradeoff.png",
    }
    assert expected <= {p.name for p in output.iterdir()}
    assert not [p for p in output.iterdir() if p.name.startswith(".")]  # no staging left
    cells = pd.read_csv(output / "cells.csv")
    assert list(cells["cell"]) == ["dim8-lambda0", "dim8-lambda0.5"]
    for column in (
        "hr@10",
        "ndcg@10",
        "val_hr@10",
        "best_epoch",
        "fit_seconds",
        "embeddings.gender.logistic.accuracy",
        "embeddings.gender.logistic.balanced_accuracy",
        "embeddings.age_group.logistic.roc_auc",
        "embeddings.gender.best_attacker",
        "recommendations.gender.best_balanced_accuracy",
    ):
        assert cells[column].notna().all(), column
    assert cells["hr@10"].between(0.0, 1.0).all()
    assert (cells["best_epoch"] == 2).all()  # selection window: the second half
    long = pd.read_csv(output / "leakage.csv")
    assert set(long["source"]) == {"embeddings", "recommendations"}
    assert len(long) == 2 * 2 * 2  # cells x sources x attributes (one attacker)
    table1 = pd.read_csv(output / "cells" / "dim8-lambda0.5" / "table1.csv")
    assert set(table1["attacker"]) == {"logistic", "decision_tree"}
    readme = (output / "README.md").read_text()
    assert "tfprivadv sweep --dataset 100k" in readme
    for heading in ("Table 1", "Table 2", "Table 3", "Table 4", "Stability"):
        assert heading in readme
    assert (output / "tradeoff.png").stat().st_size > 10_000
    config = json.loads((output / "cells" / "dim8-lambda0.5" / "config.json").read_text())
    assert config["validation"] is True and config["adversary_objective"] == "confusion"
    assert config["embedding_dim"] == 8 and config["adversary_weight"] == 0.5

    # Resume with a grown grid: the finished cells are read back, not retrained.
    finished = output / "cells" / "dim8-lambda0" / "metrics.json"
    stamp = finished.stat().st_mtime_ns
    assert cli.main(_sweep_args(ml100k_path, output, "0,0.5,2")) == 0
    printed = capsys.readouterr().out
    assert "Resuming: 2 finished cells" in printed
    assert finished.stat().st_mtime_ns == stamp
    cells = pd.read_csv(output / "cells.csv")
    assert list(cells["cell"]) == ["dim8-lambda0", "dim8-lambda0.5", "dim8-lambda2"]
    summary = json.loads((output / "summary.json").read_text())
    assert [run["cells_trained"] for run in summary["invocations"]] == [2, 1]

    # Other settings in the same folder are refused (no mixed grids).
    assert cli.main(_sweep_args(ml100k_path, output, "0,0.5", epochs="3")) == 2
    assert "base.epochs" in capsys.readouterr().err


# ----------------------------------------------------------------- pure parts
def _frame(rows):
    return pd.DataFrame(
        [
            {
                "cell": cell_name(dim, lam),
                "dim": dim,
                "lambda": lam,
                "hr@10": hr,
                "ndcg@10": hr / 2,
                "embeddings.gender.best_balanced_accuracy": gender,
                "embeddings.gender.best_attacker": "mlp",
                "embeddings.gender.chance_balanced_accuracy": 0.5,
                "embeddings.gender.logistic.accuracy": 0.7,
                "embeddings.gender.mlp.roc_auc": 0.6,
                "embeddings.age_group.best_balanced_accuracy": age,
                "embeddings.age_group.best_attacker": "logistic",
                "embeddings.age_group.chance_balanced_accuracy": 1 / 7,
                "embeddings.age_group.logistic.accuracy": 0.35,
            }
            for dim, lam, hr, gender, age in rows
        ]
    )


ROWS = [
    (10, 0.0, 0.067, 0.74, 0.37),
    (10, 0.1, 0.062, 0.52, 0.16),
    (10, 1.0, 0.055, 0.75, 0.15),  # leaks more gender than lambda 0
    (20, 0.0, 0.070, 0.75, 0.38),
    (20, 0.1, 0.064, 0.53, 0.20),
]


def test_stability_flags_cells_leaking_more_than_lambda0():
    result = stability(_frame(ROWS), ["gender", "age_group"])
    assert len(result) == 3 * 2
    bad = result[~result["ok"]]
    assert list(zip(bad["dim"], bad["lambda"], bad["attribute"], strict=True)) == [
        (10, 1.0, "gender")
    ]


def test_target_check_needs_all_three_conditions():
    result = target_check(_frame(ROWS))
    assert list(result["lambda"]) == [0.1, 1.0]
    assert list(result["meets_target"]) == [True, False]
    missed_age = _frame([(10, 0.0, 0.07, 0.7, 0.3), (10, 0.1, 0.065, 0.51, 0.18)])
    assert not target_check(missed_age)["meets_target"].any()


def test_pareto_front_keeps_undominated_points():
    points = pd.DataFrame({"u": [0.06, 0.05, 0.07, 0.04], "leak": [0.52, 0.50, 0.70, 0.55]})
    front = pareto_front(points, "u", "leak")
    assert list(front.index) == [1, 0, 2]  # (0.55, 0.04) is dominated


def test_tables_put_the_papers_numbers_beside_ours():
    config = SweepConfig(base=RunConfig(), dims=(10, 20), lambdas=(0.0, 0.1, 1.0))
    text = tables_markdown(_frame(ROWS), config)
    assert f"({PAPER_TABLES['gender'][10][0.0]:.2f})" in text  # 76.97
    assert f"({PAPER_TABLES['hr'][20][0.1]:.2f})" in text  # 2.04
    assert "7.00 (3.00)" in text  # our HR@10 at size 20, lambda 0 beside the paper's
    assert "0.520 mlp" in text
    assert "| 20 |" in text and "–" in text  # size 20, lambda 1 is missing


def test_sweep_config_validation():
    with pytest.raises(ValueError, match="must include 0"):
        SweepConfig(lambdas=(0.1, 1.0)).validate()
    with pytest.raises(ValueError, match="must not repeat"):
        SweepConfig(dims=(10, 10)).validate()
    with pytest.raises(ValueError, match="lambdas"):
        SweepConfig(lambdas=(0.0, -1.0)).validate()
    with pytest.raises(ValueError, match="`epochs`"):
        SweepConfig(base=RunConfig(epochs=0)).validate()
    config = SweepConfig(dims=(10,), lambdas=(0, 1))
    assert config.cells() == [(10, 0.0), (10, 1.0)]
    cell = config.cell_config(10, 1.0)
    assert cell.embedding_dim == 10 and cell.adversary_weight == 1.0
    assert math.isclose(json.loads(json.dumps(config.to_dict()))["lambdas"][1], 1.0)
    assert np.array_equal(SweepConfig(**json.loads(json.dumps(config.to_dict()))).dims, (10,))
