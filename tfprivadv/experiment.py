"""One training run end to end: data -> model -> fit -> evaluation -> probe -> run folder.

Shared by `tfprivadv quickstart`, `tfprivadv train` and the examples' style of use;
everything here is also doable by hand with the public API.
"""

from __future__ import annotations

import json
import os
import shutil
import tempfile
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from tfprivadv._validation import check_choice, check_float, check_int


@dataclass
class RunConfig:
    """Everything that defines a run (written to the run folder as config.json)."""

    dataset: str = "100k"
    data_path: str | None = None
    embedding_dim: int = 10
    adversary_weight: float | dict[str, float] = 0.0
    attributes: tuple[str, ...] = ("gender", "age_group")
    head_hidden_units: tuple[int, ...] = (64,)
    schedule: str = "ganin"
    epochs: int = 20
    batch_size: int = 8192
    learning_rate: float = 0.01
    num_negatives: int = 1
    adversary_batch_size: int | None = None
    l2: float = 0.0
    split: str = "last"
    seed: int = 0
    k: int = 10
    probe_attackers: tuple[str, ...] = ("logistic",)
    n_bootstrap: int = 100
    verbose: int = 1
    extra: dict[str, Any] = field(default_factory=dict)

    def validate(self) -> RunConfig:
        check_choice("dataset", self.dataset, ("100k", "1m"))
        check_int("embedding_dim", self.embedding_dim, minimum=1)
        check_int("epochs", self.epochs, minimum=1)
        check_int("batch_size", self.batch_size, minimum=1)
        check_float("learning_rate", self.learning_rate, minimum=0.0, exclusive_minimum=True)
        check_int("num_negatives", self.num_negatives, minimum=1)
        check_float("l2", self.l2, minimum=0.0)
        check_choice("split", self.split, ("last", "random", "holdout"))
        check_int("seed", self.seed)
        check_int("k", self.k, minimum=1)
        if not self.attributes:
            raise ValueError("`attributes` must name at least one user attribute.")
        return self


def load_split(config: RunConfig):
    """Loads the data set and splits it as the config says.

    ML-1M with its `holdout_last.dat` uses that holdout for `split="last"`
    (the file has no timestamps otherwise).
    """
    from tfprivadv.datasets import leave_one_out, load_movielens

    data = load_movielens(config.dataset, path=config.data_path)
    if config.split in ("last", "holdout") and data.holdout is not None:
        train, test = leave_one_out(data.ratings, holdout=data.holdout)
    elif config.split == "holdout":
        raise ValueError(f"The {config.dataset} data at {data.source} has no holdout file.")
    else:
        train, test = leave_one_out(data.ratings, strategy=config.split, seed=config.seed)
    return data, train, test


def build_model(config: RunConfig, train: pd.DataFrame, users: pd.DataFrame, encoded):
    """The recommender wrapped with one head per attribute."""
    from tfprivadv import heads as heads_lib
    from tfprivadv.models import BPRRetrievalModel, PrivacyAdversarialModel

    recommender = BPRRetrievalModel(
        users["user_id"].to_numpy(),
        np.sort(train["item_id"].unique()),
        embedding_dim=config.embedding_dim,
        l2=config.l2,
        seed=config.seed,
    )
    heads = {}
    for name in config.attributes:
        if encoded.kinds[name] == "categorical":
            heads[name] = heads_lib.CategoricalHead(
                encoded.num_classes(name), hidden_units=config.head_hidden_units
            )
        else:
            head = heads_lib.ContinuousHead(hidden_units=config.head_hidden_units)
            head.adapt(encoded.values[name])
            heads[name] = head
    return PrivacyAdversarialModel(recommender, heads, adversary_weight=config.adversary_weight)


def train_and_evaluate(config: RunConfig, data=None, train=None, test=None) -> dict[str, Any]:
    """Trains one model and audits it (utility, leakage, parity).

    Returns:
        A dict with the model, the fit history, `metrics` (HR@k, NDCG@k,
        popularity baseline, fit time, samples/s), `leakage` (the audit's leakage
        frame) and `report` (the `AuditReport`).
    """
    from tfprivadv._keras import tf
    from tfprivadv.audit import audit
    from tfprivadv.callbacks import AdversaryWeightScheduler
    from tfprivadv.data import encode_attributes, training_dataset
    from tfprivadv.evaluation import popularity_baseline

    config.validate()
    if data is None:
        data, train, test = load_split(config)
    tf.keras.utils.set_random_seed(config.seed)
    attributes = list(config.attributes)
    encoded = encode_attributes(data.users, attributes)
    model = build_model(config, train, data.users, encoded)
    dataset = training_dataset(
        train,
        encoded,
        attributes=attributes,
        item_ids=model.retrieval_model.item_vocabulary,
        batch_size=config.batch_size,
        num_negatives=config.num_negatives,
        adversary_batch_size=config.adversary_batch_size,
        seed=config.seed,
    )
    model.compile(
        tf.keras.optimizers.Adam(config.learning_rate),
        steps_per_execution=max(1, min(16, len(dataset))),
    )
    callbacks = []
    if config.schedule != "constant":
        callbacks.append(AdversaryWeightScheduler(config.schedule))
    start = time.perf_counter()
    history = model.fit(dataset, epochs=config.epochs, verbose=config.verbose, callbacks=callbacks)
    fit_seconds = time.perf_counter() - start
    report = audit(
        model,
        train,
        test,
        data.users,
        attributes=attributes,
        k=config.k,
        attackers=list(config.probe_attackers),
        n_bootstrap=config.n_bootstrap,
        random_state=config.seed,
    )
    baseline = popularity_baseline(train, test, k=config.k)
    samples = len(dataset) * config.batch_size * config.epochs
    return {
        "model": model,
        "history": {k: [float(x) for x in v] for k, v in history.history.items()},
        "report": report,
        "metrics": {
            **report.utility,
            f"popularity_hr@{config.k}": baseline.hr,
            "fit_seconds": fit_seconds,
            "samples_per_second": samples / fit_seconds,
        },
        "leakage": report.leakage,
    }


def write_run(run_dir: str | os.PathLike, config: RunConfig, outcome: dict[str, Any]) -> Path:
    """Writes config.json, metrics.json, leakage.csv, per_user.csv, model.keras and the
    audit report (report.md, report.html, report.json).

    Everything goes to a temporary sibling folder first and is renamed into
    place at the end, so a crash never leaves a half-written run folder.

    Raises:
        FileExistsError: `run_dir` exists already.
    """
    from tfprivadv.audit.report import _jsonable

    run_dir = Path(run_dir)
    if run_dir.exists():
        raise FileExistsError(f"`run_dir` {run_dir} exists; choose another output folder.")
    run_dir.parent.mkdir(parents=True, exist_ok=True)
    staging = Path(tempfile.mkdtemp(prefix=f".{run_dir.name}.", dir=run_dir.parent))
    try:
        (staging / "config.json").write_text(json.dumps(_jsonable(asdict(config)), indent=2))
        metrics = {
            "metrics": outcome["metrics"],
            "history": outcome["history"],
            "leakage": outcome["leakage"].to_dict(orient="records"),
        }
        (staging / "metrics.json").write_text(json.dumps(_jsonable(metrics), indent=2))
        outcome["leakage"].to_csv(staging / "leakage.csv", index=False)
        outcome["report"].per_user.to_csv(staging / "per_user.csv", index=False)
        outcome["report"].save(staging)
        outcome["model"].save(staging / "model.keras")
        os.replace(staging, run_dir)
    except BaseException:
        shutil.rmtree(staging, ignore_errors=True)
        raise
    return run_dir


def leakage_table(leakage: pd.DataFrame) -> str:
    """Fixed-width text table of a leakage frame (categorical attributes)."""
    lines = [
        f"{'source':<16}{'attribute':<11}{'attacker':<19}{'accuracy':>9}{'(chance)':>10}"
        f"{'bal.acc':>9}{'(chance)':>10}{'95% CI':>17}"
    ]
    for row in leakage[leakage["kind"] == "categorical"].itertuples():
        interval = f"[{row.balanced_accuracy_low:.3f}, {row.balanced_accuracy_high:.3f}]"
        lines.append(
            f"{row.source:<16}{row.attribute:<11}{row.attacker:<19}{row.accuracy:>9.3f}"
            f"{row.accuracy_chance:>10.3f}{row.balanced_accuracy:>9.3f}"
            f"{row.balanced_accuracy_chance:>10.3f}{interval:>17}"
        )
    return "\n".join(lines)
