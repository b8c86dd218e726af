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

#: Learning-rate decays: "none" (constant) or "cosine" (to 5% of the rate at the end).
LR_DECAYS = ("none", "cosine")


@dataclass
class RunConfig:
    """Everything that defines a run (written to the run folder as config.json).

    `validation=True` carves one random training interaction per user out as a
    validation split, trains on the rest and keeps the epoch with the best
    validation HR@k among the second half of training (where the adversary
    weight has reached ~99% of lambda under the Ganin schedule); the test holdout
    is only used for the reported figures.
    """

    dataset: str = "100k"
    data_path: str | None = None
    embedding_dim: int = 10
    adversary_weight: float | dict[str, float] = 0.0
    attributes: tuple[str, ...] = ("gender", "age_group")
    head_hidden_units: tuple[int, ...] = (64,)
    schedule: str = "ganin"
    adversary_objective: str = "reversal"
    adversary_weighting: str = "user"
    adversary_sample: int | None = None
    epochs: int = 20
    batch_size: int = 8192
    learning_rate: float = 0.01
    lr_decay: str = "none"
    num_negatives: int = 1
    adversary_batch_size: int | None = None
    l2: float = 0.0
    split: str = "last"
    seed: int = 0
    k: int = 10
    validation: bool = False
    probe_attackers: tuple[str, ...] | str = ("logistic",)
    recommendation_attackers: tuple[str, ...] | str | None = None
    audit_recommendations: bool = True
    n_bootstrap: int = 100
    verbose: int = 1
    extra: dict[str, Any] = field(default_factory=dict)

    def validate(self) -> RunConfig:
        check_choice("dataset", self.dataset, ("100k", "1m"))
        check_int("embedding_dim", self.embedding_dim, minimum=1)
        check_int("epochs", self.epochs, minimum=1)
        check_int("batch_size", self.batch_size, minimum=1)
        check_float("learning_rate", self.learning_rate, minimum=0.0, exclusive_minimum=True)
        check_choice("lr_decay", self.lr_decay, LR_DECAYS)
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
    return PrivacyAdversarialModel(
        recommender,
        heads,
        adversary_weight=config.adversary_weight,
        adversary_objective=config.adversary_objective,
        adversary_weighting=config.adversary_weighting,
        adversary_sample=config.adversary_sample,
    )


def train_and_evaluate(
    config: RunConfig,
    data=None,
    train=None,
    test=None,
    *,
    progress: bool = False,
    checkpoint_dir: str | os.PathLike | None = None,
) -> dict[str, Any]:
    """Trains one model and audits it (utility, leakage, parity).

    Every epoch's batches are a function of `(config.seed, epoch)`. With
    `checkpoint_dir`, the training state is saved there after every epoch and
    a run started again with the same config continues from the last saved
    epoch, reaching the same model as an uninterrupted run (delete the folder
    once the results are written; `tfprivadv train` and `sweep` do).

    Returns:
        A dict with the model, the fit history, `metrics` (HR@k, NDCG@k,
        popularity baseline, fit time, samples/s), `leakage` (the audit's leakage
        frame) and `report` (the `AuditReport`).
    """
    from tfprivadv._keras import tf
    from tfprivadv.audit import audit
    from tfprivadv.callbacks import (
        AdversaryWeightScheduler,
        EpochProgress,
        RankingValidation,
        StopOnNonFiniteLoss,
        TrainingCheckpoint,
    )
    from tfprivadv.data import batches_per_epoch, encode_attributes, training_dataset
    from tfprivadv.datasets import leave_one_out
    from tfprivadv.evaluation import popularity_baseline

    config.validate()
    if data is None:
        data, train, test = load_split(config)
    tf.keras.utils.set_random_seed(config.seed)
    attributes = list(config.attributes)
    encoded = encode_attributes(data.users, attributes)
    model = build_model(config, train, data.users, encoded)
    fit_train, selection = train, None
    if config.validation:
        fit_train, valid = leave_one_out(train, strategy="random", seed=config.seed)
        selection = RankingValidation(fit_train, valid, k=config.k, start_epoch=config.epochs // 2)
    steps = batches_per_epoch(len(fit_train), config.batch_size)
    learning_rate = config.learning_rate
    if config.lr_decay == "cosine":
        learning_rate = tf.keras.optimizers.schedules.CosineDecay(
            config.learning_rate, steps * config.epochs, alpha=0.05
        )
    model.compile(
        tf.keras.optimizers.Adam(learning_rate),
        steps_per_execution=max(1, min(16, steps)),
    )
    callbacks = [StopOnNonFiniteLoss()]
    if config.schedule != "constant":
        callbacks.append(AdversaryWeightScheduler(config.schedule))
    if selection is not None:
        callbacks.append(selection)
    if progress and not config.verbose:
        callbacks.append(EpochProgress())
    checkpoint, initial_epoch, resumed_seconds = None, 0, 0.0
    if checkpoint_dir is not None:
        fingerprint = {k: v for k, v in asdict(config).items() if k != "verbose"}
        checkpoint = TrainingCheckpoint(
            checkpoint_dir, fingerprint=fingerprint, callbacks=callbacks
        )
        initial_epoch = checkpoint.restore(model)
        resumed_seconds = checkpoint.seconds  # the killed process(es)' epochs
        callbacks.append(checkpoint)  # last: it saves what the others logged
    start = time.perf_counter()
    history: dict[str, list[float]] = {}
    if initial_epoch < config.epochs:
        dataset = training_dataset(
            fit_train,
            encoded,
            attributes=attributes,
            item_ids=model.retrieval_model.item_vocabulary,
            batch_size=config.batch_size,
            num_negatives=config.num_negatives,
            adversary_batch_size=config.adversary_batch_size,
            seed=config.seed,
            epochs=config.epochs,
            initial_epoch=initial_epoch,
        )
        fitted = model.fit(
            dataset,
            epochs=config.epochs,
            initial_epoch=initial_epoch,
            verbose=config.verbose,
            callbacks=callbacks,
        )
        history = fitted.history
    elif selection is not None:  # killed after the last epoch: finish the selection
        selection.set_model(model)
        selection.on_train_end()
    # Fit time over all processes: the restored epochs' plus this one's.
    fit_seconds = resumed_seconds + time.perf_counter() - start
    if checkpoint is not None:
        history = checkpoint.history
    report = audit(
        model,
        train,
        test,
        data.users,
        attributes=attributes,
        k=config.k,
        attackers=_attackers(config.probe_attackers),
        recommendation_attackers=_attackers(config.recommendation_attackers),
        recommendations=config.audit_recommendations,
        n_bootstrap=config.n_bootstrap,
        random_state=config.seed,
    )
    baseline = popularity_baseline(train, test, k=config.k)
    epochs_run = len(history.get("loss", [])) or config.epochs
    samples = steps * config.batch_size * epochs_run
    selected = {}
    if selection is not None and selection.best is not None:
        selected = {"best_epoch": selection.best_epoch + 1, **selection.best}
    return {
        "model": model,
        "history": {k: [float(x) for x in v] for k, v in history.items()},
        "report": report,
        "metrics": {
            **report.utility,
            f"popularity_hr@{config.k}": baseline.hr,
            "fit_seconds": fit_seconds,
            "samples_per_second": samples / fit_seconds,
            "epochs_run": epochs_run,
            "resumed_at_epoch": initial_epoch,
            "resumed_seconds": resumed_seconds,
            **selected,
        },
        "leakage": report.leakage,
    }


def _attackers(spec: Any) -> Any:
    # A suite name stays a string; names become a list (what `audit` takes).
    if spec is None or isinstance(spec, str):
        return spec
    return list(spec)


def load_run(run_dir: str | os.PathLike):
    """`(RunConfig, model)` of a run folder written by `write_run`.

    Raises:
        FileNotFoundError: `run_dir` lacks config.json or model.keras.
    """
    import tfprivadv.models  # noqa: F401  (registers the classes load_model needs)
    from tfprivadv._keras import tf

    run_dir = Path(run_dir)
    missing = [n for n in ("config.json", "model.keras") if not (run_dir / n).is_file()]
    if missing:
        raise FileNotFoundError(
            f"RUN_DIR {run_dir} is not a run folder (written by `tfprivadv train` or "
            f"`quickstart`): missing {missing}."
        )
    fields = json.loads((run_dir / "config.json").read_text())
    config = RunConfig(**{key: value for key, value in fields.items() if key != "extra"})
    model = tf.keras.models.load_model(run_dir / "model.keras", compile=False)
    return config, model


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
        for name, frame in outcome.get("extra_frames", {}).items():
            frame.to_csv(staging / name, index=False)
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
