"""audit() and AuditReport: every render is produced, parseable and consistent."""

from __future__ import annotations

import json

import numpy as np
import pandas as pd
import pytest

import tfprivadv
from tfprivadv.audit import AuditReport, audit
from tfprivadv.data import training_dataset


@pytest.fixture
def trained():
    """A small recommender whose taste depends on gender, so the audit has a leak."""
    rng = np.random.default_rng(0)
    users = pd.DataFrame(
        {
            "user_id": np.arange(1, 121),
            "gender": np.where(np.arange(120) % 2 == 0, "F", "M"),
            "age_group": rng.choice([1, 18, 25, 35], 120),
        }
    )
    rows = []
    for user, gender in zip(users["user_id"], users["gender"], strict=True):
        pool = np.arange(1, 21) if gender == "F" else np.arange(21, 41)
        for item in rng.choice(pool, 8, replace=False):
            rows.append((user, item))
    ratings = pd.DataFrame(rows, columns=["user_id", "item_id"])
    test = ratings.groupby("user_id").tail(1)
    train = ratings.drop(test.index).reset_index(drop=True)
    model = tfprivadv.BPRRetrievalModel(users["user_id"], np.arange(1, 41), embedding_dim=4, seed=0)
    model.compile(tfprivadv._keras.tf.keras.optimizers.Adam(0.05))
    model.fit(training_dataset(train, batch_size=256, seed=0), epochs=15, verbose=0)
    return model, train, test.reset_index(drop=True), users


@pytest.fixture
def report(trained) -> AuditReport:
    model, train, test, users = trained
    return audit(
        model, train, test, users, attackers="logistic", cv=3, n_bootstrap=20, random_state=0
    )


def test_audit_finds_the_planted_leak_in_vectors_and_lists(report):
    best = report.best_attackers().set_index(["source", "attribute"])
    assert best.loc[("embeddings", "gender"), "balanced_accuracy"] > 0.9
    assert best.loc[("recommendations", "gender"), "balanced_accuracy"] > 0.9
    assert set(report.leakage["source"]) == {"embeddings", "recommendations"}


def test_utility_and_parity_are_filled(report):
    assert 0.0 <= report.utility["hr@10"] <= 1.0
    assert report.utility["users"] == 120
    assert set(report.fairness.by_group["attribute"]) == {"gender", "age_group"}
    assert report.fairness.exposure is not None
    # Groups get disjoint items: exposure distributions are far apart.
    exposure = report.fairness.exposure.set_index(["attribute", "statistic"])["value"]
    assert exposure.loc["gender"].max() > 0.5


def test_every_render_is_parseable(report, tmp_path):
    markdown = report.to_markdown()
    for title in (
        "# tfprivadv audit report",
        "## Utility",
        "## Leakage from embeddings",
        "## Leakage from recommendations",
        "## Outcome parity",
        "## Exposure parity",
    ):
        assert title in markdown
    html = report.to_html()
    assert html.startswith("<!DOCTYPE html>") and "data:image/png;base64," in html
    assert html.count("<table") >= 5
    parsed = json.loads(report.to_json())
    assert parsed["utility"]["users"] == 120
    assert len(parsed["leakage"]) == len(report.leakage)
    frame = report.to_frame()
    assert set(frame["section"]) == {"leakage", "utility", "outcome_parity", "exposure_parity"}
    written = report.save(tmp_path)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["report.html", "report.json", "report.md"]
    assert json.loads(written["report.json"].read_text()) == parsed
    figure = report.plot()
    assert len(figure.axes) == 4


def test_summary_names_the_best_attacker_and_the_gap(report):
    lines = report.summary().splitlines()
    assert lines[0].startswith("HR@10")
    assert any(
        "embeddings" in line and "gender" in line and "chance 0.500" in line for line in lines
    )
    assert any(line.startswith("HR@10 by gender") for line in lines)


def test_bad_inputs(trained, tmp_path):
    model, train, test, users = trained
    with pytest.raises(TypeError, match="`model`"):
        audit(object(), train, test, users)
    with pytest.raises(ValueError, match="`users` lacks"):
        audit(model, train, test, users, attributes=["income"])
    with pytest.raises(ValueError, match="`k`"):
        audit(model, train, test, users, k=0)


@pytest.mark.integration
def test_cli_audit_writes_reports_into_the_run_folder(tmp_path, capsys, ml100k_path):
    from tfprivadv import cli

    run = tmp_path / "run"
    assert (
        cli.main(
            [
                "train",
                "--data-path",
                ml100k_path,
                "--epochs",
                "3",
                "--verbose",
                "0",
                "--output",
                str(run),
            ]
        )
        == 0
    )
    assert (
        cli.main(["audit", str(run), "--attackers", "logistic,decision_tree", "--bootstrap", "20"])
        == 0
    )
    out = capsys.readouterr().out
    assert "best attacker" in out
    report = json.loads((run / "report.json").read_text())
    assert {row["attacker"] for row in report["leakage"]} == {"logistic", "decision_tree"}
    assert "data:image/png;base64," in (run / "report.html").read_text()


def test_cli_audit_rejects_a_folder_that_is_not_a_run(tmp_path, capsys):
    from tfprivadv import cli

    assert cli.main(["audit", str(tmp_path)]) == 2
    assert "not a run folder" in capsys.readouterr().err
