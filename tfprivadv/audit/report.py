"""`audit(model, ...)` -> `AuditReport`: leakage from user vectors and from top-k lists,
outcome and exposure parity, as tables, plots, Markdown, HTML and JSON."""

from __future__ import annotations

import base64
import io
import json
import math
import os
import tempfile
import time
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from tfprivadv._validation import _received, check_columns, check_int

#: The leakage score shown first per kind of attribute (the stronger measure).
PRIMARY_METRIC = {"categorical": "balanced_accuracy", "continuous": "r2"}


def _primary(row: pd.Series) -> str:
    return PRIMARY_METRIC.get(row.get("kind", "categorical"), "balanced_accuracy")


@dataclass
class AuditReport:
    """What an attacker can read, and how evenly the recommender serves groups.

    Attributes:
        leakage: Attackers' held-out scores, one row per source ("embeddings" or
            "recommendations") x attribute x attacker (see `probe_embeddings`).
        fairness: Outcome and exposure parity (`FairnessReport`), or None.
        utility: Overall `hr@k`, `ndcg@k`, `users`.
        context: How the audit was run (model, k, attackers, folds, time, ...).
        per_user: Per-user outcomes behind the parity numbers (`Evaluation.per_user`).
    """

    leakage: pd.DataFrame
    fairness: Any = None
    utility: dict[str, float] = field(default_factory=dict)
    context: dict[str, Any] = field(default_factory=dict)
    per_user: pd.DataFrame | None = field(default=None, repr=False)

    # ------------------------------------------------------------ tables
    def best_attackers(self) -> pd.DataFrame:
        """The strongest attacker per source x attribute (by its primary metric)."""
        from tfprivadv.audit.probes import best_attackers

        return best_attackers(
            self.leakage,
            PRIMARY_METRIC["categorical"],
            continuous_metric=PRIMARY_METRIC["continuous"],
        ).reset_index(drop=True)

    def leakage_table(self, best_only: bool = False) -> pd.DataFrame:
        """Readable leakage table: score, chance, gap and 95% interval per row."""
        frame = self.best_attackers() if best_only else self.leakage
        rows = []
        for _, row in frame.iterrows():
            metric = _primary(row)
            entry = {
                "source": row["source"],
                "attribute": row["attribute"],
                "attacker": row["attacker"],
                "metric": metric,
                "score": row[metric],
                "chance": row[f"{metric}_chance"],
                "gap": row[f"{metric}_gap"],
                "95% interval": f"[{row[f'{metric}_low']:.3f}, {row[f'{metric}_high']:.3f}]",
            }
            if metric == "balanced_accuracy":
                entry["accuracy (chance)"] = f"{row['accuracy']:.3f} ({row['accuracy_chance']:.3f})"
                if "roc_auc" in row and not pd.isna(row["roc_auc"]):
                    entry["ROC AUC"] = row["roc_auc"]
            rows.append(entry)
        return pd.DataFrame(rows)

    def to_frame(self) -> pd.DataFrame:
        """Everything as one tidy frame: section, source, attribute, name, metric,
        value, chance, low, high."""
        rows = []
        for _, row in self.leakage.iterrows():
            metrics = (
                ("accuracy", "balanced_accuracy", "roc_auc")
                if row.get("kind", "categorical") == "categorical"
                else ("r2", "mae")
            )
            for metric in metrics:
                if metric not in row or pd.isna(row[metric]):
                    continue
                rows.append(
                    {
                        "section": "leakage",
                        "source": row["source"],
                        "attribute": row["attribute"],
                        "name": row["attacker"],
                        "metric": metric,
                        "value": row[metric],
                        "chance": row.get(f"{metric}_chance", np.nan),
                        "low": row.get(f"{metric}_low", np.nan),
                        "high": row.get(f"{metric}_high", np.nan),
                    }
                )
        for metric, value in self.utility.items():
            rows.append({"section": "utility", "name": "overall", "metric": metric, "value": value})
        if self.fairness is not None:
            for _, row in self.fairness.by_group.iterrows():
                rows.append(
                    {
                        "section": "outcome_parity",
                        "attribute": row["attribute"],
                        "name": str(row["group"]),
                        "metric": row["metric"],
                        "value": row["value"],
                        "low": row["low"],
                        "high": row["high"],
                    }
                )
            if self.fairness.exposure is not None:
                for _, row in self.fairness.exposure.iterrows():
                    rows.append(
                        {
                            "section": "exposure_parity",
                            "attribute": row["attribute"],
                            "name": row["statistic"],
                            "metric": "value",
                            "value": row["value"],
                        }
                    )
        return pd.DataFrame(
            rows,
            columns=[
                "section",
                "source",
                "attribute",
                "name",
                "metric",
                "value",
                "chance",
                "low",
                "high",
            ],
        )

    # ----------------------------------------------------------- summary
    def summary(self) -> str:
        """A few lines: utility, the strongest attacker per attribute, parity gaps."""
        k = self.context.get("k", 10)
        lines = [
            f"HR@{k} {self.utility.get(f'hr@{k}', float('nan')):.4f}, "
            f"NDCG@{k} {self.utility.get(f'ndcg@{k}', float('nan')):.4f} "
            f"over {self.utility.get('users', 0):,} users"
        ]
        for _, row in self.best_attackers().iterrows():
            metric = _primary(row)
            lines.append(
                f"{row['source']:<15} {row['attribute']:<10} best attacker {row['attacker']:<22} "
                f"{metric} {row[metric]:.3f} (chance {row[f'{metric}_chance']:.3f}, "
                f"95% [{row[f'{metric}_low']:.3f}, {row[f'{metric}_high']:.3f}])"
            )
        if self.fairness is not None:
            summary = self.fairness.summary
            for _, row in summary[summary["metric"] == "hit"].iterrows():
                lines.append(
                    f"HR@{k} by {row['attribute']:<10} difference {row['difference']:.4f} "
                    f"[{row['difference_low']:.4f}, {row['difference_high']:.4f}], "
                    f"ratio {row['ratio']:.3f} (worst group: {row['worst_group']})"
                )
        return "\n".join(lines)

    # ----------------------------------------------------------- renders
    def plot(self):
        """Figure: leakage vs chance per attacker (with 95% intervals) and utility
        by group (with bootstrap intervals)."""
        import matplotlib

        matplotlib.use("Agg", force=False)
        import matplotlib.pyplot as plt

        attributes = list(dict.fromkeys(self.leakage["attribute"]))
        parity = self.fairness.by_group if self.fairness is not None else None
        columns = len(attributes)
        rows = 2 if parity is not None else 1
        figure, axes = plt.subplots(
            rows, columns, figsize=(5.5 * columns, 4.2 * rows), squeeze=False
        )
        colors = {"embeddings": "#1f77b4", "recommendations": "#ff7f0e"}
        for column, attribute in enumerate(attributes):
            axis = axes[0, column]
            frame = self.leakage[self.leakage["attribute"] == attribute]
            metric = _primary(frame.iloc[0])
            labels, offset = list(dict.fromkeys(frame["attacker"])), 0.0
            sources = list(dict.fromkeys(frame["source"]))
            height = 0.8 / len(sources)
            for index, source in enumerate(sources):
                part = frame[frame["source"] == source].set_index("attacker").reindex(labels)
                positions = np.arange(len(labels)) + index * height - 0.4 + height / 2
                values = part[metric].to_numpy(float)
                errors = np.vstack(
                    [
                        values - part[f"{metric}_low"].to_numpy(float),
                        part[f"{metric}_high"].to_numpy(float) - values,
                    ]
                )
                axis.barh(
                    positions,
                    values,
                    height=height,
                    xerr=np.nan_to_num(errors),
                    color=colors.get(source),
                    label=source,
                    capsize=2,
                )
                offset = float(part[f"{metric}_chance"].dropna().iloc[0]) if len(part) else offset
            axis.axvline(offset, color="black", linestyle="--", linewidth=1, label="chance")
            axis.set_yticks(np.arange(len(labels)), labels)
            axis.invert_yaxis()
            axis.set_xlabel(metric.replace("_", " "))
            axis.set_title(f"Leakage of {attribute}")
            axis.legend(loc="upper center", bbox_to_anchor=(0.5, -0.14), ncol=3, fontsize=8)
            if parity is not None:
                axis = axes[1, column]
                part = parity[(parity["attribute"] == attribute) & (parity["metric"] == "hit")]
                values = part["value"].to_numpy(float)
                errors = np.vstack(
                    [values - part["low"].to_numpy(float), part["high"].to_numpy(float) - values]
                )
                axis.bar(
                    part["group"].astype(str),
                    values,
                    yerr=np.nan_to_num(errors),
                    color="#2ca02c",
                    capsize=3,
                )
                axis.axhline(
                    self.utility.get(f"hr@{self.context.get('k', 10)}", np.nan),
                    color="black",
                    linestyle="--",
                    linewidth=1,
                    label="overall",
                )
                axis.set_ylabel(f"HR@{self.context.get('k', 10)}")
                axis.set_title(f"Utility by {attribute}")
                axis.legend(fontsize=8)
        figure.tight_layout()
        return figure

    def _plot_png(self) -> bytes:
        import matplotlib.pyplot as plt

        figure = self.plot()
        buffer = io.BytesIO()
        figure.savefig(buffer, format="png", dpi=110)
        plt.close(figure)
        return buffer.getvalue()

    def _sections(self) -> list[tuple[str, str, pd.DataFrame | None]]:
        """(title, prose, table) in reading order, shared by Markdown and HTML."""
        k = self.context.get("k", 10)
        sections: list[tuple[str, str, pd.DataFrame | None]] = []
        context = pd.DataFrame(
            [{"item": key, "value": str(value)} for key, value in self.context.items()]
        )
        sections.append(("How this audit was run", "", context))
        utility = pd.DataFrame(
            [
                {"metric": key, "value": f"{value:.4f}" if isinstance(value, float) else value}
                for key, value in self.utility.items()
            ]
        )
        sections.append(
            (
                "Utility",
                f"HR@{k} and NDCG@{k} by full ranking over the items each user did not see in "
                "training.",
                utility,
            )
        )
        sections.append(
            (
                "Strongest attacker per attribute",
                "Held-out users only: each score comes from attackers fitted on the other "
                "folds. Chance: 1 / number of classes for balanced accuracy, 0 for R^2. "
                "The interval is a 95% t-interval across folds.",
                self.leakage_table(best_only=True),
            )
        )
        for source, prose in (
            ("embeddings", "Attackers reading the attributes from the user vectors."),
            (
                "recommendations",
                "Attackers reading the attributes from each user's top-k "
                "list (multi-hot of recommended items).",
            ),
        ):
            table = self.leakage_table()
            table = table[table["source"] == source]
            if len(table):
                sections.append((f"Leakage from {source}", prose, table.drop(columns="source")))
        if self.fairness is not None:
            sections.append(
                (
                    "Outcome parity (fairlearn MetricFrame)",
                    "Per-user HR@k (`hit`) and NDCG@k (`ndcg`) averaged by group; difference "
                    "and ratio between the best and worst group, with bootstrap intervals.",
                    self.fairness.summary,
                )
            )
            sections.append(("Outcomes by group", "", self.fairness.by_group))
            if self.fairness.exposure is not None:
                sections.append(
                    (
                        "Exposure parity",
                        "How differently the groups' top-k lists are spread over items: "
                        "per-item demographic parity difference of 'item in top-k', and the "
                        "distance between the groups' exposure distributions.",
                        self.fairness.exposure,
                    )
                )
        return sections

    def to_markdown(self) -> str:
        """The report as Markdown (tables via pandas/tabulate)."""
        parts = ["# tfprivadv audit report", "", self.summary().replace("\n", "  \n"), ""]
        for title, prose, table in self._sections():
            parts += [f"## {title}", ""]
            if prose:
                parts += [prose, ""]
            if table is not None and len(table):
                parts += [table.to_markdown(index=False, floatfmt=".4f"), ""]
        return "\n".join(parts)

    def to_html(self) -> str:
        """One self-contained HTML page: tables and the plot embedded as PNG."""
        image = base64.b64encode(self._plot_png()).decode("ascii")
        body = [
            "<h1>tfprivadv audit report</h1>",
            f"<pre>{self.summary()}</pre>",
            f'<img alt="leakage and utility plots" src="data:image/png;base64,{image}">',
        ]
        for title, prose, table in self._sections():
            body.append(f"<h2>{title}</h2>")
            if prose:
                body.append(f"<p>{prose}</p>")
            if table is not None and len(table):
                body.append(
                    table.to_html(
                        index=False, float_format=lambda x: f"{x:.4f}", border=0, classes="table"
                    )
                )
        style = (
            "body{font-family:system-ui,sans-serif;max-width:1100px;margin:2em auto;"
            "padding:0 1em;color:#222}table{border-collapse:collapse;margin:.5em 0 1.5em}"
            "th,td{padding:.25em .7em;border-bottom:1px solid #ddd;text-align:right}"
            "th{background:#f4f4f4}img{max-width:100%}pre{background:#f8f8f8;padding:1em}"
        )
        return (
            "<!DOCTYPE html><html><head><meta charset='utf-8'>"
            f"<title>tfprivadv audit report</title><style>{style}</style></head>"
            f"<body>{''.join(body)}</body></html>"
        )

    def to_dict(self) -> dict[str, Any]:
        """JSON-able dict of every number in the report."""
        return _jsonable(
            {
                "context": self.context,
                "utility": self.utility,
                "leakage": self.leakage.to_dict(orient="records"),
                "fairness": None if self.fairness is None else self.fairness.to_dict(),
            }
        )

    def to_json(self) -> str:
        return json.dumps(self.to_dict(), indent=2, allow_nan=True)

    def save(self, folder: str | os.PathLike) -> dict[str, Path]:
        """Writes report.md, report.html and report.json into `folder`.

        Each file is written to a temporary name first and renamed into place, so
        an interrupted save never leaves a truncated report.
        """
        folder = Path(folder)
        if not folder.is_dir():
            raise FileNotFoundError(f"`folder` {folder} is not an existing directory.")
        contents = {
            "report.md": self.to_markdown(),
            "report.html": self.to_html(),
            "report.json": self.to_json(),
        }
        written = {}
        for name, text in contents.items():
            handle, temporary = tempfile.mkstemp(prefix=f".{name}.", dir=folder)
            with os.fdopen(handle, "w", encoding="utf-8") as stream:
                stream.write(text)
            os.replace(temporary, folder / name)
            written[name] = folder / name
        return written


def _jsonable(value: Any) -> Any:
    """Plain JSON types (NaN/inf become null, so the files are strict JSON)."""
    if isinstance(value, dict):
        return {str(k): _jsonable(v) for k, v in value.items()}
    if isinstance(value, list | tuple):
        return [_jsonable(v) for v in value]
    if isinstance(value, np.generic):
        value = value.item()
    if isinstance(value, float) and not math.isfinite(value):
        return None
    if isinstance(value, pd.Timestamp):
        return value.isoformat()
    return value


def audit(
    model: Any,
    train: pd.DataFrame,
    test: pd.DataFrame,
    users: pd.DataFrame,
    *,
    attributes: Sequence[str] = ("gender", "age_group"),
    k: int = 10,
    attackers: Any = "paper",
    recommendation_attackers: Any = None,
    cv: int = 5,
    n_bootstrap: int = 200,
    recommendations: bool = True,
    random_state: int | None = 0,
    progress: bool = False,
) -> AuditReport:
    """Audits a trained recommender: leakage, utility and parity.

    Args:
        model: A `BPRRetrievalModel` or `PrivacyAdversarialModel` (its recommender
            is audited).
        train: Training interactions (`user_id`, `item_id`); excluded from the
            top-k lists and the evaluation candidates.
        test: One held-out interaction per user (for HR@k / NDCG@k).
        users: `user_id` and the attribute columns.
        attributes: Attributes to audit.
        k: List length for utility, recommendation leakage and exposure.
        attackers: Attackers on the user vectors (see `probe_embeddings`).
        recommendation_attackers: Attackers on the top-k lists (default: the same).
        cv: Folds of the attackers' cross-validation.
        n_bootstrap: Bootstrap resamples for the parity intervals (0: none).
        recommendations: Also audit the top-k lists (leakage and exposure).
        random_state: Seed of folds, attackers and bootstrap.
        progress: Show a progress bar over the attackers.

    Returns:
        An `AuditReport`.

    Example:
        >>> report = audit(model, train, test, data.users)
        >>> print(report.summary())
        >>> report.save("runs/my-run")
    """
    from tfprivadv.audit.fairness import fairness_report
    from tfprivadv.audit.probes import probe_embeddings
    from tfprivadv.audit.recommendations import recommendation_leakage
    from tfprivadv.evaluation import evaluate

    recommender = getattr(model, "retrieval_model", model)
    if not hasattr(recommender, "user_embeddings") or not hasattr(recommender, "recommend"):
        raise TypeError(
            "`model` must be a BPRRetrievalModel or PrivacyAdversarialModel (anything with "
            f"`user_embeddings` and `recommend`). Received: {_received(model)}"
        )
    if isinstance(attributes, str):
        attributes = [attributes]
    attributes = list(attributes)
    check_columns("users", users, ["user_id", *attributes])
    k = check_int("k", k, minimum=1)
    start = time.perf_counter()

    audited = users[users["user_id"].isin(train["user_id"])].reset_index(drop=True)
    labels = audited[attributes]
    bar = None
    if progress:
        from tqdm.auto import tqdm

        from tfprivadv.audit.probes import SUITES

        def count(spec: Any) -> int | None:
            if isinstance(spec, str):
                return len(SUITES.get(spec, (spec,)))
            return len(spec) if isinstance(spec, list | tuple | dict) else None

        per_source = [count(attackers)]
        if recommendations:
            per_source.append(count(recommendation_attackers or attackers))
        total = None if None in per_source else sum(per_source) * len(attributes)
        bar = tqdm(desc="attackers", unit="fit", total=total)

    def tick(info: dict[str, Any]) -> None:
        if bar is not None:
            bar.set_postfix_str(f"{info.get('attribute')}: {info.get('attacker')}")
            bar.update(1)

    try:
        vectors = recommender.user_embeddings(audited["user_id"].to_numpy()).numpy()
        frames = [
            probe_embeddings(
                vectors,
                labels,
                attackers=attackers,
                cv=cv,
                random_state=random_state,
                progress=tick,
            )
        ]
        evaluation = evaluate(recommender, train, test, k=k)
        top_k = None
        if recommendations:
            items, _ = recommender.recommend(audited["user_id"].to_numpy(), k=k, exclude=train)
            top_k = pd.DataFrame(
                {"user_id": np.repeat(audited["user_id"].to_numpy(), k), "item_id": items.ravel()}
            )
            frames.append(
                recommendation_leakage(
                    items,
                    labels,
                    attackers=attackers
                    if recommendation_attackers is None
                    else recommendation_attackers,
                    cv=cv,
                    random_state=random_state,
                    progress=tick,
                )
            )
    finally:
        if bar is not None:
            bar.close()
    fairness = fairness_report(
        evaluation.per_user,
        users[["user_id", *attributes]],
        n_bootstrap=n_bootstrap,
        random_state=random_state,
        recommendations=top_k,
    )
    context = {
        "model": getattr(model, "name", type(model).__name__),
        "adversary_weight": getattr(model, "adversary_weight", None),
        "embedding_dim": getattr(recommender, "embedding_dim", None),
        "users_audited": int(len(audited)),
        "attributes": attributes,
        "k": k,
        "attackers": attackers if isinstance(attackers, str | list | tuple) else "custom",
        "cv_folds": cv,
        "bootstrap_resamples": n_bootstrap,
        "random_state": random_state,
        "seconds": round(time.perf_counter() - start, 1),
        "created": time.strftime("%Y-%m-%d %H:%M:%S"),
    }
    return AuditReport(
        leakage=pd.concat(frames, ignore_index=True),
        fairness=fairness,
        utility=dict(evaluation.metrics),
        context=context,
        per_user=evaluation.per_user,
    )
