"""Tests for tfprivadv.losses.BPRLoss against a NumPy reference."""

from __future__ import annotations

import numpy as np
import pytest
import tensorflow_recommenders as tfrs

from tfprivadv._keras import keras, tf
from tfprivadv.losses import BPRLoss

REMOVED = -1e31


def _softplus(x: np.ndarray) -> np.ndarray:
    return np.logaddexp(0.0, x)


def _bpr_reference(y_true, y_pred, sample_weight=None) -> float:
    """mean over rows of w_i * mean_j softplus(s_ij - s_i,pos), j over the kept
    negatives (a row without any contributes 0); Keras' default reduction divides
    by the number of rows, not by the sum of the weights."""
    y_true = np.asarray(y_true, np.float64)
    y_pred = np.asarray(y_pred, np.float64)
    rows = []
    for labels, scores in zip(y_true, y_pred, strict=True):
        positive = scores[labels == 1][0]
        negatives = scores[(labels == 0) & (scores > -1e30)]
        rows.append(_softplus(negatives - positive).mean() if negatives.size else 0.0)
    rows = np.asarray(rows)
    weights = np.ones_like(rows) if sample_weight is None else np.asarray(sample_weight)
    return float((rows * weights).mean())


def _random_problem(rng, batch: int, candidates: int):
    y_pred = rng.normal(scale=3.0, size=(batch, candidates)).astype(np.float32)
    y_true = np.zeros_like(y_pred)
    y_true[np.arange(batch), rng.integers(0, candidates, batch)] = 1.0
    return y_true, y_pred


def test_docstring_example():
    loss = BPRLoss()(tf.constant([[1.0, 0.0, 0.0]]), tf.constant([[2.0, 0.0, 2.0]]))
    expected = (_softplus(-2.0) + _softplus(0.0)) / 2
    np.testing.assert_allclose(float(loss), expected, rtol=1e-6)


@pytest.mark.parametrize("num_negatives", [1, 3, 10])
def test_matches_numpy_reference(num_negatives):
    rng = np.random.default_rng(num_negatives)
    y_true, y_pred = _random_problem(rng, batch=16, candidates=num_negatives + 1)
    value = BPRLoss()(tf.constant(y_true), tf.constant(y_pred))
    np.testing.assert_allclose(float(value), _bpr_reference(y_true, y_pred), rtol=1e-5)


@pytest.mark.parametrize("num_negatives", [1, 4])
def test_matches_numpy_reference_with_sample_weights(num_negatives):
    rng = np.random.default_rng(10 + num_negatives)
    y_true, y_pred = _random_problem(rng, batch=12, candidates=num_negatives + 1)
    weights = rng.uniform(0.0, 3.0, 12).astype(np.float32)
    value = BPRLoss()(tf.constant(y_true), tf.constant(y_pred), sample_weight=weights)
    expected = _bpr_reference(y_true, y_pred, weights)
    np.testing.assert_allclose(float(value), expected, rtol=1e-5)


def test_removed_candidates_are_excluded_from_sum_and_mean():
    rng = np.random.default_rng(0)
    y_true, y_pred = _random_problem(rng, batch=8, candidates=6)
    removed = (rng.uniform(size=y_pred.shape) < 0.3) & (y_true == 0)
    masked = np.where(removed, np.float32(REMOVED), y_pred)
    value = float(BPRLoss()(tf.constant(y_true), tf.constant(masked)))
    np.testing.assert_allclose(value, _bpr_reference(y_true, masked), rtol=1e-5)
    # Different from treating the removed scores as ordinary (tiny) negatives,
    # which would lower every affected row's mean.
    naive = np.mean(
        [
            _softplus(s[t == 0] - s[t == 1][0]).mean()
            for t, s in zip(y_true.astype(np.float64), masked.astype(np.float64), strict=True)
        ]
    )
    assert abs(value - naive) > 1e-3


def test_removing_a_column_equals_dropping_it():
    rng = np.random.default_rng(1)
    y_pred = rng.normal(size=(10, 5)).astype(np.float32)
    y_true = np.zeros_like(y_pred)
    y_true[:, 0] = 1.0
    removed = y_pred.copy()
    removed[:, 2] = REMOVED
    kept = np.delete(y_pred, 2, axis=1)
    with_removed = BPRLoss()(tf.constant(y_true), tf.constant(removed))
    dropped = BPRLoss()(tf.constant(np.delete(y_true, 2, axis=1)), tf.constant(kept))
    np.testing.assert_allclose(float(with_removed), float(dropped), rtol=1e-6)


def test_tfrs_accidental_hit_score_counts_as_removed():
    y_true = np.array([[1.0, 0.0, 0.0]], np.float32)
    y_pred = np.array([[0.5, 1.0 + tfrs.layers.loss.MIN_FLOAT, -0.5]], np.float32)
    value = BPRLoss()(tf.constant(y_true), tf.constant(y_pred))
    np.testing.assert_allclose(float(value), _softplus(-1.0), rtol=1e-6)


def test_row_without_negatives_contributes_zero_and_is_finite():
    y_true = tf.constant([[1.0, 0.0], [1.0, 0.0]])
    y_pred = tf.Variable([[0.3, REMOVED], [0.0, 2.0]])
    with tf.GradientTape() as tape:
        value = BPRLoss()(y_true, y_pred)
    np.testing.assert_allclose(float(value), _softplus(2.0) / 2, rtol=1e-6)
    gradient = tape.gradient(value, y_pred).numpy()
    assert np.isfinite(gradient).all()
    np.testing.assert_array_equal(gradient[0], 0.0)


def test_large_scores_are_stable():
    y_true = tf.constant([[1.0, 0.0, 0.0]])
    y_pred = tf.constant([[-200.0, 200.0, 0.0]])
    value = float(BPRLoss()(y_true, y_pred))
    np.testing.assert_allclose(value, (400.0 + 200.0) / 2, rtol=1e-6)


def test_config_round_trip():
    loss = BPRLoss(reduction=keras.losses.Reduction.SUM, name="my_bpr")
    config = loss.get_config()
    assert config["name"] == "my_bpr"
    clone = BPRLoss.from_config(config)
    assert clone.get_config() == config
    revived = keras.utils.deserialize_keras_object(keras.utils.serialize_keras_object(loss))
    assert isinstance(revived, BPRLoss)
    assert revived.get_config() == config
    rng = np.random.default_rng(2)
    y_true, y_pred = _random_problem(rng, batch=4, candidates=3)
    np.testing.assert_allclose(
        float(revived(y_true, y_pred)), 4 * _bpr_reference(y_true, y_pred), rtol=1e-5
    )
