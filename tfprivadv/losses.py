"""Bayesian Personalized Ranking loss as a tf.keras Loss."""

from __future__ import annotations

from typing import Any

from tfprivadv._keras import keras, tf

# Scores at or below this are "removed" candidates (TFRS writes its MIN_FLOAT there).
_REMOVED_SCORE = -1e30


@keras.utils.register_keras_serializable(package="tfprivadv")
class BPRLoss(keras.losses.Loss):
    """BPR loss `-log sigmoid(s_pos - s_neg)`, averaged over each row's negatives.

    It takes the `(y_true, y_pred)` pair that `tfrs.tasks.Retrieval` builds: a
    `[batch, candidates]` score matrix with one positive per row marked in
    `y_true`. Every other candidate in the row is a negative, except candidates
    whose score was set to a huge negative number (TFRS's accidental-hit removal,
    or a sampled negative equal to the positive): those count in neither the sum
    nor the mean.

    Args:
        reduction: Keras reduction over rows.
        name: Loss name.

    Example:
        >>> loss = BPRLoss()
        >>> y_true = tf.constant([[1.0, 0.0, 0.0]])
        >>> y_pred = tf.constant([[2.0, 0.0, 2.0]])
        >>> round(float(loss(y_true, y_pred)), 4)  # (softplus(-2) + softplus(0)) / 2
        0.4133
    """

    def __init__(
        self,
        reduction: str = keras.losses.Reduction.AUTO,
        name: str = "bpr_loss",
    ) -> None:
        super().__init__(reduction=reduction, name=name)

    def call(self, y_true: tf.Tensor, y_pred: tf.Tensor) -> tf.Tensor:
        y_pred = tf.cast(y_pred, tf.float32)
        y_true = tf.cast(y_true, tf.float32)
        positive = tf.reduce_sum(y_true * y_pred, axis=-1, keepdims=True)
        negative = (1.0 - y_true) * tf.cast(y_pred > _REMOVED_SCORE, tf.float32)
        # softplus(-(s_pos - s_neg)) == -log sigmoid(s_pos - s_neg), computed stably.
        pairwise = tf.nn.softplus(y_pred - positive) * negative
        return tf.math.divide_no_nan(
            tf.reduce_sum(pairwise, axis=-1), tf.reduce_sum(negative, axis=-1)
        )

    def get_config(self) -> dict[str, Any]:
        return super().get_config()
