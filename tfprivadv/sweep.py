"""The privacy-utility sweep: a grid of embedding sizes x adversary weights.

Every cell is one `tfprivadv.experiment` run (train, select the epoch on a
validation split, audit the user vectors and the top-k lists) written as a run
folder under `<output>/cells/`; a cell whose folder exists is read back, not
retrained, so an interrupted sweep resumes where it stopped. After the grid the
sweep writes:

- `cells.csv`: one row per cell (utility, time, and per source / attribute /
  attacker: accuracy, balanced accuracy, ROC AUC; the best attacker);
- `leakage.csv`: every attacker row of every cell (long form);
- `tables.md`: the paper's Tables 1-4 with our figures beside the paper's;
- `tradeoff.png` (HR@k against leakage per size, Pareto fronts) and
  `leakage_vs_lambda.png`;
- `README.md`: the results document (setting, command, time, the stability and
  target checks, the tables and plots).
"""

from __future__ import annotations

import json
import math
import os
import shutil
import tempfile
import time
from collections.abc import Callable, Sequence
from dataclasses import asdict, dataclass, replace
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from tfprivadv._validation import check_float, check_int

# --------------------------------------------------------------- the paper
PAPER_DIMS: tuple[int, ...] = (10, 20, 50)
PAPER_LAMBDAS: tuple[float, ...] = (0.0, 0.01, 0.1, 1.0, 10.0)

#: Tables 2-4 of Resheff et al. (percent): quantity -> dim -> lambda -> value.
PAPER_TABLES: dict[str, dict[int, dict[float, float]]] = {
    "gender": {
        10: dict(zip(PAPER_LAMBDAS, (76.97, 74.21, 71.33, 71.70, 71.60), strict=True)),
        20: dict(zip(PAPER_LAMBDAS, (77.55, 74.26, 71.50, 72.30, 71.03), strict=True)),
        50: dict(zip(PAPER_LAMBDAS, (77.80, 74.34, 72.24, 86.00, 74.26), strict=True)),
    },
    "age_group": {
        10: dict(zip(PAPER_LAMBDAS, (41.29, 36.28, 34.29, 34.47, 34.31), strict=True)),
        20: dict(zip(PAPER_LAMBDAS, (44.16, 36.34, 33.97, 35.70, 38.01), strict=True)),
        50: dict(zip(PAPER_LAMBDAS, (44.90, 36.46, 34.62, 70.27, 52.70), strict=True)),
    },
    "hr": {
        10: dict(zip(PAPER_LAMBDAS, (3.05, 2.76, 2.88, 2.43, 2.67), strict=True)),
        20: dict(zip(PAPER_LAMBDAS, (3.00, 2.68, 2.04, 2.20, 2.07), strict=True)),
        50: dict(zip(PAPER_LAMBDAS, (2.65, 2.38, 2.22, 2.22, 2.15), strict=True)),
    },
}

#: Table 1 (size 10, lambda 1): our attacker name -> (paper label, gender %, age %).
PAPER_TABLE1: dict[str, tuple[str, float, float]] = {
    "majority": ("majority baseline", 71.70, 34.70),
    "logistic": ("softmax readout", 71.70, 34.47),
    "linear_svm_c0.1": ("linear SVM C=.1", 71.71, 34.62),
    "linear_svm_c1": ("linear SVM C=1", 71.71, 34.59),
    "linear_svm_c10": ("linear SVM C=10", 71.71, 34.59),
    "rbf_svm": ("RBF SVM", 71.71, 29.20),
    "decision_tree": ("decision tree", 64.00, 25.44),
    "random_forest": ("random forest", 69.80, 29.20),
    "gradient_boosting": ("gradient boosting", 71.79, 33.48),
}

#: Issue targets at size 10 with protection.
TARGET = {"hr": 0.060, "gender": 0.53, "age_group": 0.17}


@dataclass
class SweepConfig:
    """A grid of runs: `base` with every (embedding_dim, adversary_weight) pair.

    Attributes:
        base: The run settings shared by every cell (data, epochs, optimizer,
            heads, attackers, validation).
        dims: Embedding sizes.
        lambdas: Adversary weights (one float for all heads per cell).
        table1_cell: `(dim, lambda)` audited with `table1_attackers` as well (the
            paper's Table 1 is size 10, lambda 1); None skips it.
        table1_attackers: Attackers for that cell (a suite name or names).
    """

    base: Any = None
    dims: tuple[int, ...] = PAPER_DIMS
    lambdas: tuple[float, ...] = PAPER_LAMBDAS
    table1_cell: tuple[int, float] | None = (10, 1.0)
    table1_attackers: str | tuple[str, ...] = "paper"

    def __post_init__(self) -> None:
        from tfprivadv.experiment import RunConfig

        if self.base is None:
            self.base = RunConfig()
        elif isinstance(self.base, dict):
            self.base = RunConfig(**self.base)
        self.dims = tuple(self.dims)
        self.lambdas = tuple(float(x) for x in self.lambdas)
        if self.table1_cell is not None:
            self.table1_cell = (int(self.table1_cell[0]), float(self.table1_cell[1]))

    def validate(self) -> SweepConfig:
        if not self.dims or not self.lambdas:
            raise ValueError(
                f"`dims` and `lambdas` must be non-empty. Received dims={self.dims}, "
                f"lambdas={self.lambdas}"
            )
        for dim in self.dims:
            check_int("dims[]", dim, minimum=1)
        for value in self.lambdas:
            check_float("lambdas[]", value, minimum=0.0)
        if len(set(self.dims)) != len(self.dims) or len(set(self.lambdas)) != len(self.lambdas):
            raise ValueError(
                f"`dims` and `lambdas` must not repeat. Received dims={self.dims}, "
                f"lambdas={self.lambdas}"
            )
        if 0.0 not in self.lambdas:
            raise ValueError(
                "`lambdas` must include 0: every protected cell is compared with the "
                f"unprotected run of its size. Received: {self.lambdas}"
            )
        self.base.validate()
        return self

    def cells(self) -> list[tuple[int, float]]:
        return [(dim, lam) for dim in self.dims for lam in self.lambdas]

    def cell_config(self, dim: int, lam: float):
        """The `RunConfig` of one cell."""
        return replace(self.base, embedding_dim=dim, adversary_weight=lam, verbose=0)

    def to_dict(self) -> dict[str, Any]:
        return {
            "base": asdict(self.base),
            "dims": list(self.dims),
            "lambdas": list(self.lambdas),
            "table1_cell": None if self.table1_cell is None else list(self.table1_cell),
            "table1_attackers": self.table1_attackers,
        }


def cell_name(dim: int, lam: float) -> str:
    """Folder name of a cell, e.g. `dim10-lambda0.1`."""
    return f"dim{dim}-lambda{lam:g}"


# ------------------------------------------------------------ running it
def run_sweep(
    config: SweepConfig,
    output: str | os.PathLike,
    *,
    progress: bool = True,
    log: Callable[[str], None] | None = print,
    command: str | None = None,
) -> pd.DataFrame:
    """Trains and audits every cell not yet in `output`, then writes the tables,
    plots and results document. Returns the `cells.csv` frame.

    Raises:
        ValueError: `output` holds a sweep with other settings (resuming must not
            mix configurations; use a new folder).
    """
    from tqdm.auto import tqdm

    from tfprivadv.callbacks import TrainingCheckpoint
    from tfprivadv.experiment import load_split

    config.validate()
    output = Path(output)
    if output.exists() and not output.is_dir():
        raise ValueError(f"`output` must be a folder. Received the file {output}")
    _check_resumable(config, output)
    output.mkdir(parents=True, exist_ok=True)
    _write_json(output / "sweep.json", config.to_dict())

    started = time.perf_counter()
    data, train, test = load_split(config.base)
    todo = [cell for cell in config.cells() if not _finished(output, *cell)]
    if log and len(todo) < len(config.cells()):
        log(f"Resuming: {len(config.cells()) - len(todo)} finished cells are read back.")
    for dim, lam in todo:
        epochs = TrainingCheckpoint.epochs_saved(_checkpoint_dir(output, dim, lam))
        if log and epochs:
            log(f"Resuming: cell {cell_name(dim, lam)} continues after epoch {epochs}.")
    bar = tqdm(total=len(config.cells()), desc="cells", unit="cell", disable=not progress)
    bar.update(len(config.cells()) - len(todo))
    try:
        for dim, lam in todo:
            bar.set_postfix_str(cell_name(dim, lam))
            _run_cell(config, output, dim, lam, data, train, test, progress)
            bar.update(1)
    finally:
        bar.close()
    if (output / "checkpoints").is_dir() and not any((output / "checkpoints").iterdir()):
        (output / "checkpoints").rmdir()
    seconds = time.perf_counter() - started
    frame = collect(config, output)
    previous = output / "summary.json"
    invocations = (
        json.loads(previous.read_text()).get("invocations", []) if previous.is_file() else []
    )
    if todo:  # a pure re-render (nothing trained) is not worth a line
        invocations.append(
            {
                "seconds": seconds,
                "cells_trained": len(todo),
                "finished": time.strftime("%Y-%m-%d %H:%M:%S"),
                "command": command,
            }
        )
    summary = {
        "cell_seconds_total": float(frame["cell_seconds"].sum()),
        "fit_seconds_total": float(frame["fit_seconds"].sum()),
        "invocations": invocations,
    }
    write_outputs(
        config,
        output,
        frame,
        summary,
        command=command,
        data_description=_describe(data, train, test),
    )
    return frame


def _describe(data, train, test) -> str:
    return (
        f"MovieLens {data.name.upper()} ({Path(str(data.source)).name}): "
        f"{len(data.ratings):,} ratings, "
        f"{len(data.users):,} users, {data.ratings['item_id'].nunique():,} items; "
        f"train {len(train):,} / test {len(test):,}"
    )


def _check_resumable(config: SweepConfig, output: Path) -> None:
    previous = output / "sweep.json"
    if not previous.is_file():
        return
    before = json.loads(previous.read_text())
    now = json.loads(json.dumps(config.to_dict()))
    # The grid itself may grow or shrink; everything a cell depends on may not.
    changed = [
        f"base.{key}"
        for key, value in now["base"].items()
        if key != "verbose" and value != before["base"].get(key)
    ]
    changed += [key for key in ("table1_cell", "table1_attackers") if now[key] != before.get(key)]
    changed.sort()
    if changed:
        raise ValueError(
            f"`output` {output} holds a sweep with other settings ({', '.join(changed)} "
            "differ); resume it with the same settings or choose a new folder."
        )


def _finished(output: Path, dim: int, lam: float) -> bool:
    return (output / "cells" / cell_name(dim, lam) / "metrics.json").is_file()


def _checkpoint_dir(output: Path, dim: int, lam: float) -> Path:
    return output / "checkpoints" / cell_name(dim, lam)


def _run_cell(config, output, dim, lam, data, train, test, progress) -> None:
    from tfprivadv.audit.probes import probe_embeddings
    from tfprivadv.experiment import train_and_evaluate, write_run

    cell = config.cell_config(dim, lam)
    start = time.perf_counter()
    # A cell killed mid-training continues from its last finished epoch.
    checkpoint = _checkpoint_dir(output, dim, lam)
    outcome = train_and_evaluate(
        cell, data, train, test, progress=progress, checkpoint_dir=checkpoint
    )
    if config.table1_cell == (dim, lam):
        model = outcome["model"].retrieval_model
        audited = data.users[data.users["user_id"].isin(train["user_id"])]
        vectors = model.user_embeddings(audited["user_id"].to_numpy()).numpy()
        table1 = probe_embeddings(
            vectors,
            audited[list(cell.attributes)].reset_index(drop=True),
            attackers=config.table1_attackers,
            random_state=cell.seed,
        )
        table1.insert(0, "source", table1.pop("source"))
        outcome["extra_frames"] = {"table1.csv": table1}
    elapsed = time.perf_counter() - start
    outcome["metrics"]["cell_seconds"] = elapsed + outcome["metrics"]["resumed_seconds"]
    write_run(output / "cells" / cell_name(dim, lam), cell, outcome)
    shutil.rmtree(checkpoint, ignore_errors=True)


# --------------------------------------------------------- collecting it
def collect(config: SweepConfig, output: str | os.PathLike) -> pd.DataFrame:
    """The `cells.csv` frame from the finished cell folders of the grid."""
    output = Path(output)
    rows, long = [], []
    for dim, lam in config.cells():
        folder = output / "cells" / cell_name(dim, lam)
        if not (folder / "metrics.json").is_file():
            continue
        metrics = json.loads((folder / "metrics.json").read_text())["metrics"]
        leakage = pd.read_csv(folder / "leakage.csv")
        row = {"cell": cell_name(dim, lam), "dim": dim, "lambda": lam}
        k = config.base.k
        for key in (f"hr@{k}", f"ndcg@{k}", f"val_hr@{k}", f"popularity_hr@{k}"):
            row[key] = metrics.get(key, math.nan)
        for key in ("best_epoch", "epochs_run", "fit_seconds", "cell_seconds"):
            row[key] = metrics.get(key, math.nan)
        row["audit_seconds"] = row["cell_seconds"] - row["fit_seconds"]
        for item in leakage.itertuples():
            prefix = f"{item.source}.{item.attribute}.{item.attacker}"
            for metric in ("accuracy", "balanced_accuracy", "roc_auc", "r2"):
                value = getattr(item, metric, math.nan)
                if isinstance(value, float) and not math.isnan(value):
                    row[f"{prefix}.{metric}"] = value
        for (source, attribute), part in leakage.groupby(["source", "attribute"], sort=False):
            metric = "balanced_accuracy" if part["kind"].iloc[0] == "categorical" else "r2"
            best = part.loc[part[metric].idxmax()]
            row[f"{source}.{attribute}.best_attacker"] = best["attacker"]
            row[f"{source}.{attribute}.best_{metric}"] = best[metric]
            row[f"{source}.{attribute}.chance_{metric}"] = best[f"{metric}_chance"]
            if metric == "balanced_accuracy":
                row[f"{source}.{attribute}.majority_accuracy"] = best["accuracy_chance"]
        rows.append(row)
        leakage.insert(0, "lambda", lam)
        leakage.insert(0, "dim", dim)
        long.append(leakage)
    frame = pd.DataFrame(rows)
    frame.attrs["leakage"] = pd.concat(long, ignore_index=True) if long else pd.DataFrame()
    return frame


# ----------------------------------------------------------------- checks
def stability(frame: pd.DataFrame, attributes: Sequence[str]) -> pd.DataFrame:
    """Per protected cell and attribute: its best-attacker balanced accuracy on the
    vectors against the lambda-0 cell of the same size (`ok` = not higher)."""
    rows = []
    for dim, part in frame.groupby("dim"):
        base = part[part["lambda"] == 0.0]
        if base.empty:
            continue
        for _, row in part[part["lambda"] > 0].iterrows():
            for attribute in attributes:
                column = f"embeddings.{attribute}.best_balanced_accuracy"
                if column not in part.columns:
                    continue
                value = part.loc[part["cell"] == row["cell"], column].iloc[0]
                reference = base[column].iloc[0]
                rows.append(
                    {
                        "dim": dim,
                        "lambda": row["lambda"],
                        "attribute": attribute,
                        "balanced_accuracy": value,
                        "lambda0_balanced_accuracy": reference,
                        "ok": bool(value <= reference),
                    }
                )
    return pd.DataFrame(rows)


def target_check(frame: pd.DataFrame, k: int = 10, dim: int = 10) -> pd.DataFrame:
    """The size-`dim` protected cells against the issue's target."""
    part = frame[(frame["dim"] == dim) & (frame["lambda"] > 0)].copy()
    if part.empty:
        return part
    checks = {"hr": part[f"hr@{k}"] >= TARGET["hr"]}
    for attribute in ("gender", "age_group"):
        column = f"embeddings.{attribute}.best_balanced_accuracy"
        if column in part.columns:
            checks[attribute] = part[column] <= TARGET[attribute]
    part["meets_target"] = np.logical_and.reduce(list(checks.values()))
    return part


def pareto_front(points: pd.DataFrame, utility: str, leakage: str) -> pd.DataFrame:
    """Rows no other row beats on both (higher utility, lower leakage), by leakage."""
    ordered = points.sort_values([leakage, utility], ascending=[True, False])
    best, keep = -math.inf, []
    for index, value in zip(ordered.index, ordered[utility], strict=False):
        if value > best:
            keep.append(index)
            best = value
    return ordered.loc[keep]


# ----------------------------------------------------------------- outputs
def _fmt(value: Any, digits: int = 3, percent: bool = False) -> str:
    if value is None or (isinstance(value, float) and math.isnan(value)):
        return "–"
    return f"{value * 100:.2f}" if percent else f"{value:.{digits}f}"


def _lam(value: float) -> str:
    return f"{value:g}"


def _cell(frame: pd.DataFrame, dim: int, lam: float) -> pd.Series | None:
    part = frame[(frame["dim"] == dim) & (frame["lambda"] == lam)]
    return None if part.empty else part.iloc[0]


def _grid_table(
    frame: pd.DataFrame,
    config: SweepConfig,
    value: Callable[[pd.Series], str],
    paper: str | None = None,
) -> str:
    lambdas = config.lambdas
    lines = [
        "| size \\ lambda | " + " | ".join(_lam(x) for x in lambdas) + " |",
        "|---|" + "---|" * len(lambdas),
    ]
    for dim in config.dims:
        cells = []
        for lam in lambdas:
            row = _cell(frame, dim, lam)
            text = "–" if row is None else value(row)
            reference = PAPER_TABLES.get(paper, {}).get(dim, {}).get(lam) if paper else None
            if reference is not None:
                text += f" ({reference:.2f})"
            cells.append(text)
        lines.append(f"| {dim} | " + " | ".join(cells) + " |")
    return "\n".join(lines)


def tables_markdown(frame: pd.DataFrame, config: SweepConfig, output: Path | None = None) -> str:
    """The paper's Tables 1-4 beside ours, plus the stronger metrics."""
    k = config.base.k
    out = []
    table1 = None
    if output is not None and config.table1_cell is not None:
        path = output / "cells" / cell_name(*config.table1_cell) / "table1.csv"
        if path.is_file():
            table1 = pd.read_csv(path)
    if table1 is not None:
        dim, lam = config.table1_cell
        out.append(
            f"### Table 1 — attackers on size-{dim} vectors trained with lambda = {_lam(lam)}\n\n"
            "Accuracy in % (the paper's metric; the paper's figure in parentheses), then "
            "balanced accuracy and ROC AUC (chance .5 / .143 and .5). 5-fold CV over users.\n"
        )
        out.append(
            "| attacker | gender acc. (paper) | gender bal. acc. | gender AUC "
            "| age acc. (paper) | age bal. acc. | age AUC |\n|---|---|---|---|---|---|---|"
        )
        by = {(r.attacker, r.attribute): r for r in table1.itertuples()}
        majority = {
            a: table1[table1["attribute"] == a]["accuracy_chance"].iloc[0]
            for a in ("gender", "age_group")
            if (table1["attribute"] == a).any()
        }
        label, pg, pa = PAPER_TABLE1["majority"]
        out.append(
            f"| {label} | {_fmt(majority.get('gender'), percent=True)} ({pg:.2f}) | .500 | .500 "
            f"| {_fmt(majority.get('age_group'), percent=True)} ({pa:.2f}) | .143 | .500 |"
        )
        for attacker in dict.fromkeys(table1["attacker"]):
            label, pg, pa = PAPER_TABLE1.get(attacker, (attacker, math.nan, math.nan))
            cells = []
            for attribute, reference in (("gender", pg), ("age_group", pa)):
                row = by.get((attacker, attribute))
                if row is None:
                    cells += ["–", "–", "–"]
                    continue
                paper_text = "" if math.isnan(reference) else f" ({reference:.2f})"
                cells += [
                    _fmt(row.accuracy, percent=True) + paper_text,
                    _fmt(row.balanced_accuracy),
                    _fmt(row.roc_auc),
                ]
            out.append(f"| {label} | " + " | ".join(cells) + " |")
        out.append("")

    def readout(attribute: str) -> Callable[[pd.Series], str]:
        return lambda row: _fmt(
            row.get(f"embeddings.{attribute}.logistic.accuracy", math.nan), percent=True
        )

    def strongest(attribute: str, metric: str) -> Callable[[pd.Series], str]:
        def value(row: pd.Series) -> str:
            if metric == "balanced_accuracy":
                text = _fmt(row.get(f"embeddings.{attribute}.best_balanced_accuracy", math.nan))
                return f"{text} {row.get(f'embeddings.{attribute}.best_attacker', '')}".strip()
            columns = [c for c in row.index if c.startswith(f"embeddings.{attribute}.")]
            values = [row[c] for c in columns if c.endswith(f".{metric}")]
            values = [v for v in values if isinstance(v, float) and not math.isnan(v)]
            return _fmt(max(values)) if values else "–"

        return value

    for number, attribute, title in ((2, "gender", "Gender"), (3, "age_group", "Age-group")):
        if f"embeddings.{attribute}.best_balanced_accuracy" not in frame.columns:
            continue
        out.append(
            f"### Table {number} — {title} readout from the user vectors\n\n"
            "Accuracy in % of the softmax readout (logistic regression; the paper's "
            "metric), the paper's figure in parentheses:\n"
        )
        out.append(_grid_table(frame, config, readout(attribute), paper=attribute))
        out.append(
            "\nBalanced accuracy of the strongest attacker (its name beside it; chance "
            f"{'.500' if attribute == 'gender' else '.143'}):\n"
        )
        out.append(_grid_table(frame, config, strongest(attribute, "balanced_accuracy")))
        out.append("\nBest ROC AUC over the attackers (chance .500):\n")
        out.append(_grid_table(frame, config, strongest(attribute, "roc_auc")))
        out.append("")
    out.append(
        f"### Table 4 — accuracy@{k} (HR@{k}, %), the paper's figure in parentheses\n\n"
        "Full ranking over the items each user did not rate in training.\n"
    )
    out.append(
        _grid_table(frame, config, lambda row: _fmt(row[f"hr@{k}"], percent=True), paper="hr")
    )
    out.append(f"\nNDCG@{k} (%):\n")
    out.append(_grid_table(frame, config, lambda row: _fmt(row[f"ndcg@{k}"], percent=True)))
    rec = [c for c in frame.columns if c.startswith("recommendations.") and "best_bal" in c]
    for column in rec:
        attribute = column.split(".")[1]
        out.append(
            f"\n### Leakage of the top-{k} lists: {attribute}, best balanced accuracy "
            "(not in the paper)\n"
        )
        out.append(
            _grid_table(
                frame,
                config,
                lambda row, c=column: (
                    f"{_fmt(row.get(c, math.nan))} "
                    f"{row.get(c.replace('best_balanced_accuracy', 'best_attacker'), '')}"
                ).strip(),
            )
        )
    return "\n".join(out) + "\n"


def plot(frame: pd.DataFrame, config: SweepConfig, output: Path) -> dict[str, Path]:
    """`tradeoff.png` and `leakage_vs_lambda.png`."""
    import matplotlib

    matplotlib.use("Agg", force=False)
    import matplotlib.pyplot as plt

    k = config.base.k
    attributes = [
        a
        for a in config.base.attributes
        if f"embeddings.{a}.best_balanced_accuracy" in frame.columns
    ]
    colors = dict(zip(config.dims, plt.rcParams["axes.prop_cycle"].by_key()["color"], strict=False))
    written = {}
    figure, axes = plt.subplots(1, len(attributes), figsize=(6 * len(attributes), 4.5))
    axes = np.atleast_1d(axes)
    for axis, attribute in zip(axes, attributes, strict=False):
        column = f"embeddings.{attribute}.best_balanced_accuracy"
        for dim, part in frame.groupby("dim"):
            color = colors.get(dim)
            axis.scatter(part[column], part[f"hr@{k}"] * 100, color=color, label=f"size {dim}")
            for _, row in part.iterrows():
                axis.annotate(
                    f"λ={_lam(row['lambda'])}",
                    (row[column], row[f"hr@{k}"] * 100),
                    fontsize=7,
                    xytext=(3, 3),
                    textcoords="offset points",
                )
            front = pareto_front(part, f"hr@{k}", column)
            axis.plot(front[column], front[f"hr@{k}"] * 100, color=color, alpha=0.6)
        chance = frame[f"embeddings.{attribute}.chance_balanced_accuracy"].iloc[0]
        axis.axvline(chance, color="grey", linestyle=":", label="chance")
        axis.set_xlabel(f"{attribute}: best attacker's balanced accuracy (vectors)")
        axis.set_ylabel(f"HR@{k} (%)")
        axis.set_title(f"Utility vs {attribute} leakage (lines: Pareto fronts)")
        axis.legend(fontsize=8)
    figure.tight_layout()
    written["tradeoff"] = output / "tradeoff.png"
    figure.savefig(written["tradeoff"], dpi=110)
    plt.close(figure)

    figure, axes = plt.subplots(1, len(attributes), figsize=(6 * len(attributes), 4.2))
    axes = np.atleast_1d(axes)
    positions = {lam: index for index, lam in enumerate(config.lambdas)}
    for axis, attribute in zip(axes, attributes, strict=False):
        for source, style in (("embeddings", "-"), ("recommendations", "--")):
            column = f"{source}.{attribute}.best_balanced_accuracy"
            if column not in frame.columns:
                continue
            for dim, part in frame.groupby("dim"):
                part = part.sort_values("lambda")
                axis.plot(
                    [positions[x] for x in part["lambda"]],
                    part[column],
                    style,
                    marker="o",
                    color=colors.get(dim),
                    label=f"size {dim}, {'vectors' if source == 'embeddings' else 'top-k lists'}",
                )
        chance = frame[f"embeddings.{attribute}.chance_balanced_accuracy"].iloc[0]
        axis.axhline(chance, color="grey", linestyle=":", label="chance")
        axis.set_xticks(range(len(config.lambdas)), [_lam(x) for x in config.lambdas])
        axis.set_xlabel("lambda")
        axis.set_ylabel("best attacker's balanced accuracy")
        axis.set_title(f"{attribute} leakage vs lambda")
        axis.legend(fontsize=7)
    figure.tight_layout()
    written["leakage_vs_lambda"] = output / "leakage_vs_lambda.png"
    figure.savefig(written["leakage_vs_lambda"], dpi=110)
    plt.close(figure)
    return written


def results_markdown(
    frame: pd.DataFrame,
    config: SweepConfig,
    output: Path,
    summary: dict[str, Any],
    *,
    command: str | None = None,
    data_description: str = "",
) -> str:
    """The results document (`README.md` of the sweep folder)."""
    base = config.base
    k = base.k
    lines = ["# Privacy-adversarial BPR: the paper's sweep, reproduced\n"]
    commands = list(
        dict.fromkeys(
            run["command"] for run in summary.get("invocations", []) if run.get("command")
        )
    ) or ([command] if command else [])
    if commands:
        lines.append("Produced by " + " then ".join(f"`{c}`" for c in commands) + ".\n")
    lines.append(f"Data: {data_description}.\n" if data_description else "")
    cell_minutes = summary.get("cell_seconds_total", math.nan) / 60
    fit_minutes = summary.get("fit_seconds_total", math.nan) / 60
    runs = "; ".join(
        f"{run['cells_trained']} cells in {run['seconds'] / 60:.1f} min wall clock, "
        f"finished {run['finished']}"
        for run in summary.get("invocations", [])
    )
    lines.append(
        f"Time: {cell_minutes:.1f} min for the {len(frame)} cells ({fit_minutes:.1f} min of "
        f"it training, the rest auditing), on {os.cpu_count()} CPU cores. Invocations: "
        f"{runs}.\n"
    )
    lines.append(
        "## Setting\n\n"
        f"- BPR with item bias, sizes {list(config.dims)}, lambda {list(config.lambdas)}; "
        f"{base.epochs} epochs, batch {base.batch_size}, Adam {base.learning_rate} "
        f"({base.lr_decay} decay), {base.num_negatives} uniform negative(s) per positive, "
        f"L2 {base.l2}, seed {base.seed}.\n"
        f"- Adversary: one head per attribute ({', '.join(base.attributes)}), hidden units "
        f"{list(base.head_hidden_units) or 'none (linear)'}, behind a gradient reversal "
        f"layer; lambda warmed up with the {base.schedule} schedule; heads read a uniform "
        "sample of users per batch.\n"
        + (
            "- Model selection: one random training rating per user is held out as a "
            f"validation split; the epoch with the best validation HR@{k} in the second "
            "half of training is kept. The test holdout is never used for selection.\n"
            if base.validation
            else "- No model selection: the last epoch is evaluated.\n"
        )
        + f"- Utility: HR@{k} (the paper's accuracy@{k}) and NDCG@{k} on the holdout, full "
        "ranking over the items each user did not rate in training.\n"
        f"- Leakage: 5-fold CV over users; attackers on the vectors: "
        f"{_names(base.probe_attackers)}; on the top-{k} lists: "
        f"{_names(base.recommendation_attackers or base.probe_attackers)}"
        + (
            f"; the Table-1 cell (size {config.table1_cell[0]}, lambda "
            f"{_lam(config.table1_cell[1])}) also with "
            f"{_names(config.table1_attackers, suite=True)}.\n"
            if config.table1_cell
            else ".\n"
        )
    )
    stable = stability(frame, base.attributes)
    lines.append("## Stability at large lambda\n")
    if stable.empty:
        lines.append("No protected cell with a lambda-0 reference yet.\n")
    else:
        bad = stable[~stable["ok"]]
        lines.append(
            f"{'Every' if bad.empty else 'Not every'} protected cell leaks at most as much as "
            "the unprotected run of its size (best attacker's balanced accuracy on the "
            f"vectors): {int(stable['ok'].sum())} of {len(stable)} (cell, attribute) pairs.\n"
        )
        if not bad.empty:
            lines.append("Cells that leak more than lambda 0:\n")
            lines.append(bad.to_markdown(index=False, floatfmt=".3f") + "\n")
    target = target_check(frame, k)
    lines.append("## Target at size 10\n")
    if target.empty:
        lines.append("No protected size-10 cell in the grid.\n")
    else:
        lines.append(
            f"Target: HR@{k} >= {TARGET['hr'] * 100:.1f}% with the best attacker's balanced "
            f"accuracy <= {TARGET['gender']} (gender) and <= {TARGET['age_group']} (age group).\n"
        )
        columns = ["lambda", f"hr@{k}"] + [
            c
            for c in (
                "embeddings.gender.best_balanced_accuracy",
                "embeddings.age_group.best_balanced_accuracy",
            )
            if c in target.columns
        ]
        shown = target[columns + ["meets_target"]].rename(
            columns=lambda c: c.replace("embeddings.", "").replace(".best_balanced_accuracy", "")
        )
        lines.append(shown.to_markdown(index=False, floatfmt=".4f") + "\n")
    lines.append("## Tables\n")
    lines.append(tables_markdown(frame, config, output))
    lines.append("## Plots\n\n![trade-off](tradeoff.png)\n\n![leakage](leakage_vs_lambda.png)\n")
    lines.append(
        "## Files\n\n- `cells.csv`: one row per cell; `leakage.csv`: every attacker row; "
        "`tables.md`: the tables above; `cells/<cell>/`: the run folders (model, audit "
        "report), not committed.\n"
    )
    return "\n".join(line for line in lines if line is not None)


def _names(spec: Any, suite: bool = False) -> str:
    if isinstance(spec, str):
        return f"the {spec!r} suite" if suite else spec
    return ", ".join(spec)


def write_outputs(
    config: SweepConfig,
    output: Path,
    frame: pd.DataFrame,
    summary: dict[str, Any],
    *,
    command: str | None = None,
    data_description: str = "",
) -> dict[str, Path]:
    """cells.csv, leakage.csv, tables.md, the plots, summary.json and README.md."""
    written = {}
    if frame.empty:
        return written
    if command is None:
        command = summary.get("command")
    summary = {**summary, "command": command}
    written["cells"] = _write_text(output / "cells.csv", frame.to_csv(index=False))
    long = frame.attrs.get("leakage")
    if long is not None and not long.empty:
        written["leakage"] = _write_text(output / "leakage.csv", long.to_csv(index=False))
    written["tables"] = _write_text(output / "tables.md", tables_markdown(frame, config, output))
    written.update(plot(frame, config, output))
    written["summary"] = _write_json(output / "summary.json", summary)
    written["readme"] = _write_text(
        output / "README.md",
        results_markdown(
            frame,
            config,
            output,
            summary,
            command=command,
            data_description=data_description,
        ),
    )
    return written


def _write_text(path: Path, text: str) -> Path:
    # Write-then-rename: a crash never leaves a truncated table behind.
    handle, staging = tempfile.mkstemp(prefix=f".{path.name}.", dir=path.parent)
    try:
        with os.fdopen(handle, "w") as stream:
            stream.write(text)
        os.chmod(staging, 0o644)  # mkstemp makes it private; these are results to share
        os.replace(staging, path)
    except BaseException:
        Path(staging).unlink(missing_ok=True)
        raise
    return path


def _write_json(path: Path, value: Any) -> Path:
    from tfprivadv.audit.report import _jsonable

    return _write_text(path, json.dumps(_jsonable(value), indent=2))


__all__ = [
    "PAPER_DIMS",
    "PAPER_LAMBDAS",
    "PAPER_TABLES",
    "PAPER_TABLE1",
    "SweepConfig",
    "TARGET",
    "cell_name",
    "collect",
    "pareto_front",
    "run_sweep",
    "stability",
    "target_check",
    "tables_markdown",
    "write_outputs",
]
