"""Attribute heads: small networks that try to read a private attribute from a user
embedding. Each head owns its layers, its masked loss and its metrics, so new attribute
types plug in by subclassing `AttributeHead`."""

from __future__ import annotations

import math
from collections.abc import Sequence
from typing import Any

import numpy as np

from tfprivadv._keras import keras, tf
from tfprivadv._validation import _received, check_choice, check_float, check_int


def _check_hidden_units(hidden_units: Any) -> tuple[int, ...]:
    if isinstance(hidden_units, int | np.integer):
        hidden_units = (hidden_units,)
    if not isinstance(hidden_units, Sequence) or isinstance(hidden_units, str):
        raise TypeError(
            "`hidden_units` must be a sequence of positive ints, e.g. (64,). "
            f"Received: {_received(hidden_units)}"
        )
    return tuple(check_int(f"hidden_units[{i}]", u, minimum=1) for i, u in enumerate(hidden_units))


class AttributeHead(keras.layers.Layer):
    """Base class of attribute heads.

    A head maps user embeddings `[n, dim]` to predictions and scores them against
    labels. Subclasses implement `call`, `per_example_loss` and, optionally,
    `is_valid` (which labels count), `create_metrics` and `update_metrics`.

    Rows whose label is missing (`is_valid` False; by default NaN or negative) are
    masked out of the loss and the metrics, never guessed.

    Args:
        hidden_units: Sizes of the hidden ReLU layers; `()` is a linear readout.
            FINDINGS: a linear adversary drives a linear probe to chance while a
            nonlinear attacker still reads the attribute; prefer e.g. `(64,)`.
        activation: Activation of the hidden layers.
        dropout: Dropout rate after each hidden layer.
        l2: L2 penalty on the head's kernels.
        **kwargs: Standard `Layer` arguments.
    """

    #: Name suffix of the head's main metric, e.g. "accuracy" -> "gender_accuracy".
    metric_name: str = "metric"

    def __init__(
        self,
        hidden_units: Sequence[int] = (),
        *,
        activation: str = "relu",
        dropout: float = 0.0,
        l2: float = 0.0,
        **kwargs: Any,
    ) -> None:
        super().__init__(**kwargs)
        self.hidden_units = _check_hidden_units(hidden_units)
        self.activation = activation
        self.dropout = check_float("dropout", dropout, minimum=0.0, maximum=0.99)
        self.l2 = check_float("l2", l2, minimum=0.0)
        regularizer = keras.regularizers.L2(self.l2) if self.l2 else None
        self.hidden_layers = []
        for units in self.hidden_units:
            self.hidden_layers.append(
                keras.layers.Dense(units, activation=activation, kernel_regularizer=regularizer)
            )
            if self.dropout:
                self.hidden_layers.append(keras.layers.Dropout(self.dropout))
        # float32 output keeps losses stable under a mixed-precision policy.
        self.output_layer = keras.layers.Dense(
            self.output_units, kernel_regularizer=regularizer, dtype="float32"
        )

    @property
    def output_units(self) -> int:
        raise NotImplementedError

    def call(self, embeddings: tf.Tensor, training: bool | None = None) -> tf.Tensor:
        x = embeddings
        for layer in self.hidden_layers:
            x = layer(x, training=training)
        return self.output_layer(x)

    def is_valid(self, labels: tf.Tensor) -> tf.Tensor:
        """Boolean mask of the rows whose label is known."""
        if labels.dtype.is_floating:
            return tf.math.logical_not(tf.math.is_nan(labels))
        return labels >= 0

    def per_example_loss(self, labels: tf.Tensor, predictions: tf.Tensor) -> tf.Tensor:
        """Loss of every row, shape `[n]`; rows with invalid labels may hold any
        finite value (they are masked)."""
        raise NotImplementedError

    def masked_loss(
        self,
        labels: tf.Tensor,
        predictions: tf.Tensor,
        sample_weight: tf.Tensor | None = None,
    ) -> tf.Tensor:
        """Weighted mean loss over the rows with a known label (0 if there are none).

        `sample_weight` (e.g. one weight per distinct user) multiplies the mask.
        """
        weights = tf.cast(self.is_valid(labels), tf.float32)
        if sample_weight is not None:
            weights = weights * tf.cast(sample_weight, tf.float32)
        losses = tf.cast(self.per_example_loss(labels, predictions), tf.float32)
        losses = tf.where(weights > 0, losses, 0.0)
        return tf.math.divide_no_nan(tf.reduce_sum(losses * weights), tf.reduce_sum(weights))

    def confusion_loss(self, predictions: tf.Tensor, mask: tf.Tensor) -> tf.Tensor:
        """How far the predictions of the rows in `mask` are from their mean
        prediction (a constant target): 0 when the head says the same for everyone.

        The user vectors minimise this under `adversary_objective="confusion"`. It
        never reads the labels, so, unlike maximising the head's loss, it cannot
        write the attribute into the vectors when the head lags behind.
        """
        raise NotImplementedError

    def create_metrics(self, attribute: str) -> list[keras.metrics.Metric]:
        """Fresh metric objects for this head, named `<attribute>_<metric>`."""
        return []

    def update_metrics(
        self,
        metrics: Sequence[keras.metrics.Metric],
        labels: tf.Tensor,
        predictions: tf.Tensor,
        sample_weight: tf.Tensor,
    ) -> None:
        """Updates the objects from `create_metrics`; `sample_weight` is the mask."""

    def get_config(self) -> dict[str, Any]:
        config = super().get_config()
        config.update(
            hidden_units=list(self.hidden_units),
            activation=self.activation,
            dropout=self.dropout,
            l2=self.l2,
        )
        return config


@keras.utils.register_keras_serializable(package="tfprivadv")
class CategoricalHead(AttributeHead):
    """Predicts a categorical attribute with a softmax cross-entropy loss.

    Labels are integer class indices in `[0, num_classes)`; `-1` (or NaN) means
    unknown. Binary attributes such as gender use `num_classes=2`.

    Args:
        num_classes: Number of classes (>= 2).
        hidden_units, activation, dropout, l2: See `AttributeHead`.

    Input shape: `[n, dim]`. Output shape: `[n, num_classes]` logits (float32).

    Example:
        >>> head = CategoricalHead(7, hidden_units=(64,))
        >>> head(tf.zeros([3, 10])).shape
        TensorShape([3, 7])
    """

    metric_name = "accuracy"

    def __init__(self, num_classes: int, hidden_units: Sequence[int] = (), **kwargs):
        self.num_classes = check_int("num_classes", num_classes, minimum=2)
        super().__init__(hidden_units, **kwargs)

    @property
    def output_units(self) -> int:
        return self.num_classes

    def per_example_loss(self, labels, predictions):
        labels = tf.cast(labels, tf.float32)
        # Missing labels (NaN / -1) become class 0 here and are masked by the caller.
        safe = tf.where(labels >= 0, labels, 0.0)
        safe = tf.cast(tf.minimum(safe, self.num_classes - 1), tf.int32)
        return keras.losses.sparse_categorical_crossentropy(
            safe, tf.cast(predictions, tf.float32), from_logits=True
        )

    def is_valid(self, labels):
        labels = tf.cast(labels, tf.float32)
        return tf.math.logical_and(labels >= 0, labels < self.num_classes)

    def confusion_loss(self, predictions, mask):
        # Mean KL(mean p || p_i): the head's distributions pulled to their average.
        weights = tf.cast(mask, tf.float32)[:, None]
        log_p = tf.nn.log_softmax(tf.cast(predictions, tf.float32))
        mean_p = tf.math.divide_no_nan(
            tf.reduce_sum(tf.exp(log_p) * weights, axis=0), tf.reduce_sum(weights)
        )
        target = tf.stop_gradient(mean_p)
        kl = tf.reduce_sum(target * (tf.math.log(target + 1e-12) - log_p), axis=-1)
        return tf.math.divide_no_nan(tf.reduce_sum(kl * weights[:, 0]), tf.reduce_sum(weights))

    def create_metrics(self, attribute):
        return [keras.metrics.SparseCategoricalAccuracy(name=f"{attribute}_accuracy")]

    def update_metrics(self, metrics, labels, predictions, sample_weight):
        safe = tf.where(sample_weight > 0, tf.cast(labels, tf.float32), 0.0)
        for metric in metrics:
            metric.update_state(safe, predictions, sample_weight=sample_weight)

    def get_config(self):
        config = super().get_config()
        config["num_classes"] = self.num_classes
        return config


@keras.utils.register_keras_serializable(package="tfprivadv")
class ContinuousHead(AttributeHead):
    """Predicts a continuous attribute (e.g. age in years) by regression.

    Targets are standardised with the training mean and standard deviation, so
    one adversary weight means the same for ages in years as for incomes in
    dollars. Set them with `adapt(values)` or pass `mean=`/`std=`. NaN labels are
    masked out.

    Args:
        hidden_units, activation, dropout, l2: See `AttributeHead`.
        loss: "mse" or "huber" (delta 1 in standardised units).
        mean: Mean of the training targets (set by `adapt`).
        std: Standard deviation of the training targets (set by `adapt`).

    Input shape: `[n, dim]`. Output shape: `[n]` standardised predictions.

    Example:
        >>> head = ContinuousHead(hidden_units=(32,), loss="huber")
        >>> head.adapt([18.0, 25.0, 40.0, np.nan])
        >>> round(head.mean, 2)
        27.67
    """

    metric_name = "mae"
    LOSSES = ("mse", "huber")

    def __init__(
        self,
        hidden_units: Sequence[int] = (),
        *,
        loss: str = "mse",
        mean: float | None = None,
        std: float | None = None,
        **kwargs: Any,
    ) -> None:
        self.loss = check_choice("loss", loss, self.LOSSES)
        self.mean = None if mean is None else check_float("mean", mean)
        self.std = (
            None if std is None else check_float("std", std, minimum=0.0, exclusive_minimum=True)
        )
        super().__init__(hidden_units, **kwargs)

    @property
    def output_units(self) -> int:
        return 1

    def adapt(self, values: Any) -> None:
        """Sets `mean` and `std` from training targets (NaN ignored)."""
        array = np.asarray(values, dtype=np.float64).ravel()
        array = array[~np.isnan(array)]
        if array.size < 2:
            raise ValueError(
                "`values` must hold at least 2 non-NaN numbers to standardise the "
                f"targets. Received {array.size}."
            )
        std = float(array.std())
        self.mean = float(array.mean())
        self.std = std if std > 0 and math.isfinite(std) else 1.0

    def _check_adapted(self) -> None:
        if self.mean is None or self.std is None:
            raise ValueError(
                f"ContinuousHead {self.name!r} has no target statistics: call "
                "`head.adapt(training_values)` or pass `mean=` and `std=` before "
                "training."
            )

    def call(self, embeddings, training=None):
        return tf.squeeze(super().call(embeddings, training=training), axis=-1)

    def per_example_loss(self, labels, predictions):
        self._check_adapted()
        target = (tf.cast(labels, tf.float32) - self.mean) / self.std
        target = tf.where(tf.math.is_nan(target), 0.0, target)
        error = tf.cast(predictions, tf.float32) - target
        if self.loss == "mse":
            return tf.square(error)
        absolute = tf.abs(error)
        return tf.where(absolute <= 1.0, 0.5 * tf.square(error), absolute - 0.5)

    def confusion_loss(self, predictions, mask):
        # Squared distance of each (standardised) prediction to their mean.
        weights = tf.cast(mask, tf.float32)
        predictions = tf.cast(predictions, tf.float32)
        mean = tf.math.divide_no_nan(tf.reduce_sum(predictions * weights), tf.reduce_sum(weights))
        error = tf.square(predictions - tf.stop_gradient(mean))
        return tf.math.divide_no_nan(tf.reduce_sum(error * weights), tf.reduce_sum(weights))

    def predict_original_scale(self, predictions: tf.Tensor) -> tf.Tensor:
        """Maps standardised predictions back to the attribute's units."""
        self._check_adapted()
        return tf.cast(predictions, tf.float32) * self.std + self.mean

    def create_metrics(self, attribute):
        return [keras.metrics.MeanAbsoluteError(name=f"{attribute}_mae")]

    def update_metrics(self, metrics, labels, predictions, sample_weight):
        labels = tf.where(sample_weight > 0, tf.cast(labels, tf.float32), 0.0)
        original = self.predict_original_scale(predictions)
        for metric in metrics:
            # [n, 1]: Keras regression metrics average over the last axis.
            metric.update_state(labels[:, None], original[:, None], sample_weight=sample_weight)

    def get_config(self):
        config = super().get_config()
        config.update(loss=self.loss, mean=self.mean, std=self.std)
        return config


_HEADS = {"categorical": CategoricalHead, "continuous": ContinuousHead}


def get(identifier: Any, **kwargs: Any) -> AttributeHead:
    """Resolves a head from an instance, a serialized config or a short name.

    Args:
        identifier: An `AttributeHead`, a dict from `keras.utils.serialize_keras_object`,
            or one of "categorical", "continuous" (then `**kwargs` go to the class).

    Raises:
        ValueError: for an unknown name. TypeError: for any other type.
    """
    if isinstance(identifier, AttributeHead):
        return identifier
    if isinstance(identifier, dict):
        head = keras.utils.deserialize_keras_object(identifier)
        if not isinstance(head, AttributeHead):
            raise TypeError(f"The config does not describe an AttributeHead: {identifier}")
        return head
    if isinstance(identifier, str):
        check_choice("identifier", identifier, _HEADS)
        return _HEADS[identifier](**kwargs)
    raise TypeError(
        "A head must be an AttributeHead instance, a serialized head config or one "
        f"of {sorted(_HEADS)}. Received: {_received(identifier)}"
    )
