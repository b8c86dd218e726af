"""Callbacks for `fit`: adversary weight schedules, validation-based model selection,
divergence guard and checkpoints to resume an interrupted fit."""

from __future__ import annotations

import json
import math
import os
import shutil
import time
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

import numpy as np

from tfprivadv._keras import keras, tf
from tfprivadv._validation import _received, check_choice, check_float, check_int


class GaninSchedule:
    """Ganin & Lempitsky's warm-up `2 / (1 + exp(-gamma * p)) - 1`, p in [0, 1].

    Starts at 0 (the recommender first learns to recommend), reaches ~0.76 of
    lambda at 10% of training with gamma = 10 and ~1 by the end.
    """

    def __init__(self, gamma: float = 10.0) -> None:
        self.gamma = check_float("gamma", gamma, minimum=0.0, exclusive_minimum=True)

    def __call__(self, progress: float) -> float:
        return 2.0 / (1.0 + math.exp(-self.gamma * progress)) - 1.0

    def __repr__(self) -> str:
        return f"GaninSchedule(gamma={self.gamma})"


class LinearSchedule:
    """Linear warm-up from 0 to 1 over the first `warmup` share of training."""

    def __init__(self, warmup: float = 0.5) -> None:
        self.warmup = check_float(
            "warmup", warmup, minimum=0.0, exclusive_minimum=True, maximum=1.0
        )

    def __call__(self, progress: float) -> float:
        return min(1.0, progress / self.warmup)

    def __repr__(self) -> str:
        return f"LinearSchedule(warmup={self.warmup})"


_SCHEDULES: dict[str, Callable[[], Callable[[float], float]]] = {
    "ganin": GaninSchedule,
    "linear": LinearSchedule,
    "constant": lambda: lambda progress: 1.0,
}


def get(identifier: Any) -> Callable[[float], float]:
    """Resolves a schedule: a callable `progress -> factor`, or a name."""
    if isinstance(identifier, str):
        check_choice("schedule", identifier, _SCHEDULES)
        return _SCHEDULES[identifier]()
    if callable(identifier):
        return identifier
    raise TypeError(
        "`schedule` must be a callable progress -> factor or one of "
        f"{sorted(_SCHEDULES)}. Received: {_received(identifier)}"
    )


class AdversaryWeightScheduler(keras.callbacks.Callback):
    """Scales every head's lambda by `schedule(progress)` during `fit`.

    `progress` runs from 0 at the first step to 1 at the last (steps counted by
    the optimizer, so `steps_per_execution` is handled). The model must be a
    `PrivacyAdversarialModel`; its configured `adversary_weight` is the target and
    the reversal layers get `schedule(progress) * lambda` (their variables are
    assigned in place, so nothing is retraced). The current factor is logged as
    `adversary_factor`.

    Args:
        schedule: "ganin" (default), "linear", "constant", or a callable
            `progress -> factor`.

    Example:
        >>> model.fit(ds, epochs=20, callbacks=[AdversaryWeightScheduler("ganin")])
    """

    def __init__(self, schedule: Any = "ganin") -> None:
        super().__init__()
        self.schedule = get(schedule)
        self._start = 0
        self._total = None
        self._factor = 0.0

    def _apply(self, progress: float) -> None:
        self._factor = float(self.schedule(min(max(progress, 0.0), 1.0)))
        self.model.apply_adversary_schedule(self._factor)

    def on_train_begin(self, logs=None):
        if not hasattr(self.model, "apply_adversary_schedule"):
            raise TypeError(
                "AdversaryWeightScheduler needs a PrivacyAdversarialModel. "
                f"Received: {_received(self.model)}"
            )
        steps, epochs = self.params.get("steps"), self.params.get("epochs")
        self._start = None
        self._total = steps * epochs if steps and epochs else None
        self._apply(0.0)

    def on_epoch_begin(self, epoch, logs=None):
        if self._total is None:
            self._apply(epoch / max(self.params.get("epochs") or 1, 1))
        elif self._start is None:
            # Steps are counted from the start of epoch 0, so a fit resumed at
            # `initial_epoch` continues the schedule where it stopped.
            steps = self.params["steps"]
            self._start = int(self.model.optimizer.iterations.numpy()) - epoch * steps
            self._apply((epoch * steps) / self._total)

    def on_train_batch_begin(self, batch, logs=None):
        if self._total is not None:
            done = int(self.model.optimizer.iterations.numpy()) - self._start
            self._apply(done / self._total)

    def on_epoch_end(self, epoch, logs=None):
        if logs is not None:
            logs["adversary_factor"] = self._factor

    def on_train_end(self, logs=None):
        self._apply(1.0)


class RankingValidation(keras.callbacks.Callback):
    """Model selection on a validation split: logs `val_hr@k` / `val_ndcg@k` after
    every epoch and restores the weights of the best epoch at the end.

    The validation interactions must be carved from the training data (e.g.
    `leave_one_out(train, strategy="random")`), never the test holdout, so that
    choosing epochs does not peek at the reported figures.

    Args:
        train: The interactions the model trains on (excluded from candidates).
        validation: One held-out interaction per user.
        k: The cut-off.
        monitor: "hr" or "ndcg" (at `k`).
        start_epoch: Epochs (0-based) before this one are neither evaluated nor
            selected, e.g. while the adversary weight is still warming up; the
            logs carry `val_*` from this epoch on.
        patience: Stop after this many epochs without improvement (None: never).
        restore_best: Restore the best epoch's weights when training ends.

    Attributes:
        best_epoch: 0-based epoch of the selected weights (None before training).
        best: Its validation metrics.

    Example:
        >>> fit_train, valid = leave_one_out(train, strategy="random", seed=0)
        >>> selection = RankingValidation(fit_train, valid, k=10)
        >>> model.fit(training_dataset(fit_train, ...), epochs=20, callbacks=[selection])
        >>> selection.best_epoch
    """

    def __init__(
        self,
        train: Any,
        validation: Any,
        *,
        k: int = 10,
        monitor: str = "hr",
        start_epoch: int = 0,
        patience: int | None = None,
        restore_best: bool = True,
    ) -> None:
        super().__init__()
        self.train, self.validation = train, validation
        self.k = check_int("k", k, minimum=1)
        self.monitor = check_choice("monitor", monitor, ("hr", "ndcg"))
        self.start_epoch = check_int("start_epoch", start_epoch, minimum=0)
        self.patience = None if patience is None else check_int("patience", patience, minimum=1)
        self.restore_best = bool(restore_best)
        self._evaluator = None
        self._resumed = False
        self.best_epoch: int | None = None
        self.best: dict[str, float] | None = None
        self._best_weights = None

    def on_train_begin(self, logs=None):
        from tfprivadv.evaluation import RankingEvaluator

        recommender = getattr(self.model, "retrieval_model", self.model)
        if self._evaluator is None:
            self._evaluator = RankingEvaluator(
                recommender.item_vocabulary, self.train, self.validation, k=self.k
            )
        if not self._resumed:
            self.best_epoch, self.best, self._best_weights = None, None, None
        self._resumed = False

    def get_state(self) -> tuple[dict[str, Any], list[Any]]:
        """`(json-able state, best weights)`: what a resumed fit needs (see
        `TrainingCheckpoint`)."""
        return {"best_epoch": self.best_epoch, "best": self.best}, self._best_weights or []

    def set_state(self, state: dict[str, Any], weights: list[Any]) -> None:
        """Restores `get_state()`; the next `fit` continues the selection."""
        self.best_epoch, self.best = state["best_epoch"], state["best"]
        self._best_weights = list(weights) or None
        self._resumed = True

    def on_epoch_end(self, epoch, logs=None):
        if epoch < self.start_epoch:
            return  # not a candidate: spare the evaluation
        metrics = self._evaluator(self.model).metrics
        scores = {
            f"val_hr@{self.k}": metrics[f"hr@{self.k}"],
            f"val_ndcg@{self.k}": metrics[f"ndcg@{self.k}"],
        }
        if logs is not None:
            logs.update(scores)
        value = scores[f"val_{self.monitor}@{self.k}"]
        if self.best is None or value > self.best[f"val_{self.monitor}@{self.k}"]:
            self.best_epoch, self.best = epoch, scores
            if self.restore_best:
                # Trainable variables only: schedule state (e.g. the reversal scale)
                # is not part of the selected model.
                self._best_weights = [v.numpy() for v in self.model.trainable_variables]
        elif self.patience is not None and epoch - self.best_epoch >= self.patience:
            self.model.stop_training = True

    def on_train_end(self, logs=None):
        if self.restore_best and self._best_weights is not None:
            for variable, value in zip(
                self.model.trainable_variables, self._best_weights, strict=True
            ):
                variable.assign(value)


class NonFiniteLossError(FloatingPointError):
    """Training produced a NaN or infinite loss."""


class StopOnNonFiniteLoss(keras.callbacks.Callback):
    """Stops `fit` at the first NaN/inf loss with an error that names what to change.

    Keras's `TerminateOnNaN` only stops; a sweep would then audit garbage vectors.
    This raises `NonFiniteLossError` naming the epoch, the batch, lambda (configured
    and current, for a `PrivacyAdversarialModel`) and the learning rate, so no
    result is written from a diverged model.
    """

    def __init__(self) -> None:
        super().__init__()
        self._epoch = 0

    def on_epoch_begin(self, epoch, logs=None):
        self._epoch = epoch

    def on_train_batch_end(self, batch, logs=None):
        bad = {
            key: float(value)
            for key, value in (logs or {}).items()
            if key.endswith("loss") and not math.isfinite(float(value))
        }
        if not bad:
            return
        optimizer = self.model.optimizer
        rate = optimizer.learning_rate
        if callable(rate) and not hasattr(rate, "numpy"):
            rate = rate(optimizer.iterations)
        rate = float(keras.backend.get_value(rate))
        weights = ""
        if hasattr(self.model, "adversary_weight"):
            weights = (
                f" with lambda {self.model.adversary_weight} (applied now: "
                f"{self.model.current_adversary_weight})"
            )
        raise NonFiniteLossError(
            f"Training diverged: {bad} at epoch {self._epoch + 1}, batch {batch + 1}{weights} "
            f"and learning rate {rate:.3g}. Lower the learning rate or lambda, or use "
            "adversary_objective='confusion', which stays bounded at large lambda."
        )


class EpochProgress(keras.callbacks.Callback):
    """A transient tqdm bar over epochs showing the loss and validation HR (the
    sweep's per-cell progress, nested under its bar over cells)."""

    def on_train_begin(self, logs=None):
        from tqdm.auto import tqdm

        self.bar = tqdm(total=self.params.get("epochs"), desc="epochs", leave=False)

    def on_epoch_end(self, epoch, logs=None):
        shown = {k: v for k, v in (logs or {}).items() if k == "loss" or k.startswith("val_hr")}
        self.bar.set_postfix({k: f"{v:.4f}" for k, v in shown.items()})
        self.bar.update(1)

    def on_train_end(self, logs=None):
        self.bar.close()


class TrainingCheckpoint(keras.callbacks.Callback):
    """Saves after every epoch what a killed `fit` needs to continue; `restore`
    reads it back before the next `fit`.

    Saved: every model variable (towers, heads, the reversal layers' current
    lambda), the optimizer (step counter, moments; a learning-rate schedule
    follows the step counter), the history so far, the training seconds, and
    the state of the callbacks passed in that have `get_state`/`set_state`
    (e.g. `RankingValidation`'s best epoch and weights). With a dataset whose
    epochs are a function of `(seed, epoch)` (`training_dataset(..., epochs=E,
    initial_epoch=e)`), the resumed run reproduces the uninterrupted one.

    Each epoch is written under a new name, then `state.json` is atomically
    replaced to point to it, then older epochs are deleted: a kill at any point
    leaves the previous complete epoch readable. At most one epoch is lost.

    Args:
        directory: Where to keep the checkpoint (created on the first save).
        fingerprint: Any JSON-able description of the run (e.g. its config);
            `restore` refuses a checkpoint written with another one.
        callbacks: Callbacks whose state is saved and restored with the model.

    Example:
        >>> ckpt = TrainingCheckpoint("ckpt/", fingerprint=config_dict)
        >>> start = ckpt.restore(model)       # 0 on a fresh start
        >>> ds = training_dataset(..., epochs=20, initial_epoch=start, seed=0)
        >>> model.fit(ds, epochs=20, initial_epoch=start, callbacks=[ckpt])
    """

    STATE = "state.json"

    def __init__(
        self,
        directory: str | os.PathLike,
        *,
        fingerprint: Any = None,
        callbacks: Sequence[keras.callbacks.Callback] = (),
    ) -> None:
        super().__init__()
        self.directory = Path(directory)
        self.fingerprint = json.loads(json.dumps(fingerprint, default=str))
        self.stateful = [c for c in callbacks if hasattr(c, "get_state")]
        self.history: dict[str, list[float]] = {}
        self.seconds = 0.0
        self.initial_epoch = 0
        self._epoch_start = 0.0

    @staticmethod
    def _objects(model: keras.Model) -> tf.train.Checkpoint:
        return tf.train.Checkpoint(model=model, optimizer=model.optimizer)

    @classmethod
    def epochs_saved(cls, directory: str | os.PathLike) -> int:
        """Epochs done in the checkpoint in `directory` (0 without one), read
        without restoring anything: to tell the user a run will resume."""
        path = Path(directory) / cls.STATE
        return json.loads(path.read_text())["epochs_done"] if path.is_file() else 0

    def restore(self, model: keras.Model) -> int:
        """Loads the last saved epoch into `model` (compiled) and the callbacks.

        Returns:
            The number of epochs already done (0 without a checkpoint): the
            `initial_epoch` of the resumed `fit`.

        Raises:
            ValueError: the checkpoint was written for another fingerprint.
        """
        path = self.directory / self.STATE
        if not path.is_file():
            return 0
        state = json.loads(path.read_text())
        if state["fingerprint"] != self.fingerprint:
            raise ValueError(
                f"The checkpoint in {self.directory} belongs to another run "
                f"(written for {state['fingerprint']}, this run is {self.fingerprint}); "
                "delete it (or pass --restart) to start over."
            )
        if model.optimizer is None:
            raise ValueError("`model` must be compiled before `restore` (the optimizer).")
        # Slot variables must exist for the restore to fill them.
        model.optimizer.build(model.trainable_variables)
        prefix = str(self.directory / state["checkpoint"])
        self._objects(model).read(prefix).assert_existing_objects_matched()
        with np.load(self.directory / state["callback_weights"]) as arrays:
            for index, callback in enumerate(self.stateful):
                weights = [arrays[f"{index}_{j}"] for j in range(state["callbacks"][index][1])]
                callback.set_state(state["callbacks"][index][0], weights)
        self.history = state["history"]
        self.seconds = state["seconds"]
        self.initial_epoch = state["epochs_done"]
        return self.initial_epoch

    def on_epoch_begin(self, epoch, logs=None):
        self._epoch_start = time.perf_counter()

    def on_epoch_end(self, epoch, logs=None):
        self.seconds += time.perf_counter() - self._epoch_start
        for key, value in (logs or {}).items():
            self.history.setdefault(key, []).append(float(value))
        self.directory.mkdir(parents=True, exist_ok=True)
        name = f"epoch-{epoch + 1:04d}"
        self._objects(self.model).write(str(self.directory / name))
        arrays, callbacks = {}, []
        for index, callback in enumerate(self.stateful):
            state, weights = callback.get_state()
            arrays.update({f"{index}_{j}": np.asarray(w) for j, w in enumerate(weights)})
            callbacks.append([state, len(weights)])
        np.savez(self.directory / f"{name}-callbacks.npz", **arrays)
        state = {
            "fingerprint": self.fingerprint,
            "epochs_done": epoch + 1,
            "checkpoint": name,
            "callback_weights": f"{name}-callbacks.npz",
            "callbacks": callbacks,
            "history": self.history,
            "seconds": self.seconds,
        }
        staging = self.directory / f".{self.STATE}.tmp"
        staging.write_text(json.dumps(state, default=float))
        os.replace(staging, self.directory / self.STATE)
        for old in self.directory.glob("epoch-*"):
            if not old.name.startswith(name):
                old.unlink()

    def delete(self) -> None:
        """Removes the checkpoint (call it once the run's results are written)."""
        shutil.rmtree(self.directory, ignore_errors=True)
