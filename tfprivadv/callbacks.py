"""Callbacks for `fit`: adversary weight schedules and validation-based model selection."""

from __future__ import annotations

import math
from collections.abc import Callable
from typing import Any

from tfprivadv._keras import keras
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
        self._start = int(self.model.optimizer.iterations.numpy())
        self._total = steps * epochs if steps and epochs else None
        self._apply(0.0)

    def on_epoch_begin(self, epoch, logs=None):
        if self._total is None:
            self._apply(epoch / max(self.params.get("epochs") or 1, 1))

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
        self.best_epoch, self.best, self._best_weights = None, None, None

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
