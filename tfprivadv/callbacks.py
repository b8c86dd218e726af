"""Schedules for the adversary weight lambda during `fit`."""

from __future__ import annotations

import math
from collections.abc import Callable
from typing import Any

from tfprivadv._keras import keras
from tfprivadv._validation import _received, check_choice, check_float


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
