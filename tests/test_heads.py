"""Tests for tfprivadv.heads: shapes, masked losses, standardisation, metrics,
serialization and argument checks."""

from __future__ import annotations

import re

import numpy as np
import pytest

from tfprivadv import heads
from tfprivadv._keras import keras, tf
from tfprivadv.heads import AttributeHead, CategoricalHead, ContinuousHead


def _log_softmax(logits: np.ndarray) -> np.ndarray:
    shifted = logits - logits.max(axis=1, keepdims=True)
    return shifted - np.log(np.exp(shifted).sum(axis=1, keepdims=True))


def _cross_entropy(labels: np.ndarray, logits: np.ndarray) -> np.ndarray:
    return -_log_softmax(logits.astype(np.float64))[np.arange(len(labels)), labels]


# ------------------------------------------------------------------- shapes
@pytest.mark.parametrize("hidden_units", [(), 8, (8, 4)])
def test_categorical_head_output_shape(hidden_units):
    head = CategoricalHead(7, hidden_units=hidden_units)
    out = head(tf.zeros([3, 10]))
    assert out.shape == (3, 7)
    assert out.dtype == tf.float32
    expected = () if hidden_units == () else (8,) if hidden_units == 8 else (8, 4)
    assert head.hidden_units == expected


def test_continuous_head_output_shape():
    head = ContinuousHead(hidden_units=(8,), mean=0.0, std=1.0)
    out = head(tf.zeros([5, 10]))
    assert out.shape == (5,)
    assert out.dtype == tf.float32


def test_heads_are_attribute_heads_with_metric_names():
    assert isinstance(CategoricalHead(2), AttributeHead)
    assert isinstance(ContinuousHead(), AttributeHead)
    assert CategoricalHead.metric_name == "accuracy"
    assert ContinuousHead.metric_name == "mae"


# ------------------------------------------------------------------- masking
LOGITS = np.array(
    [
        [2.0, 0.5, -1.0],
        [0.1, 0.2, 0.3],
        [-1.0, 3.0, 0.0],
        [1.0, 1.0, 4.0],
        [0.0, -2, 2],
    ],
    np.float32,
)


@pytest.mark.parametrize(
    "labels",
    [
        np.array([0, -1, 2, 1, -1], np.int32),
        np.array([0.0, np.nan, 2.0, 1.0, np.nan], np.float32),
        # A class index out of range is no valid label either.
        np.array([0, 3, 2, 1, 7], np.int64),
    ],
)
def test_categorical_masked_loss_is_mean_over_valid_rows(labels):
    head = CategoricalHead(3)
    valid = np.array([True, False, True, True, False])
    expected = _cross_entropy(np.array([0, 2, 1]), LOGITS[valid]).mean()
    loss = head.masked_loss(tf.constant(labels), tf.constant(LOGITS))
    np.testing.assert_allclose(float(loss), expected, rtol=1e-5)
    np.testing.assert_array_equal(head.is_valid(tf.constant(labels)).numpy(), valid)


def test_categorical_masked_loss_with_sample_weight():
    head = CategoricalHead(3)
    labels = np.array([0, -1, 2, 1, 0], np.int32)
    weights = np.array([1.0, 5.0, 2.0, 0.0, 0.5], np.float32)
    per_row = _cross_entropy(np.where(labels < 0, 0, labels), LOGITS)
    mask = (labels >= 0) * weights
    expected = (per_row * mask).sum() / mask.sum()
    loss = head.masked_loss(labels, tf.constant(LOGITS), sample_weight=weights)
    np.testing.assert_allclose(float(loss), expected, rtol=1e-5)


@pytest.mark.parametrize(
    ("head", "labels"),
    [
        (CategoricalHead(3), np.full(5, -1, np.int32)),
        (CategoricalHead(3), np.full(5, np.nan, np.float32)),
        (ContinuousHead(mean=30.0, std=10.0), np.full(5, np.nan, np.float32)),
    ],
)
def test_all_missing_batch_gives_zero_loss_and_finite_gradient(head, labels):
    predictions = tf.Variable(LOGITS if isinstance(head, CategoricalHead) else LOGITS[:, 0])
    with tf.GradientTape() as tape:
        loss = head.masked_loss(tf.constant(labels), predictions)
    assert float(loss) == 0.0
    gradient = tape.gradient(loss, predictions)
    assert np.isfinite(gradient.numpy()).all()
    np.testing.assert_array_equal(gradient.numpy(), 0.0)


def test_masked_rows_get_no_gradient():
    head = CategoricalHead(3)
    predictions = tf.Variable(LOGITS)
    with tf.GradientTape() as tape:
        loss = head.masked_loss(tf.constant([0, -1, 2, 1, -1]), predictions)
    gradient = tape.gradient(loss, predictions).numpy()
    np.testing.assert_array_equal(gradient[[1, 4]], 0.0)
    assert np.abs(gradient[[0, 2, 3]]).sum() > 0


# ------------------------------------------------------------------- continuous
def test_adapt_sets_mean_and_std():
    head = ContinuousHead()
    values = [18.0, 25.0, 40.0, np.nan]
    head.adapt(values)
    np.testing.assert_allclose(head.mean, np.mean([18.0, 25.0, 40.0]))
    np.testing.assert_allclose(head.std, np.std([18.0, 25.0, 40.0]))


def test_adapt_constant_values_uses_unit_std_and_needs_two_values():
    head = ContinuousHead()
    head.adapt([5.0, 5.0, 5.0])
    assert (head.mean, head.std) == (5.0, 1.0)
    with pytest.raises(ValueError, match="`values`"):
        head.adapt([1.0, np.nan])


@pytest.mark.parametrize("loss", ["mse", "huber"])
def test_predicting_the_standardised_target_has_zero_loss(loss):
    head = ContinuousHead(loss=loss, mean=30.0, std=10.0)
    labels = tf.constant([20.0, 45.0, np.nan, 30.0])
    exact = tf.constant([-1.0, 1.5, 123.0, 0.0])
    assert float(head.masked_loss(labels, exact)) == 0.0
    # Raw (unstandardised) predictions are far off: the targets are standardised.
    raw = tf.constant([20.0, 45.0, 0.0, 30.0])
    assert float(head.masked_loss(labels, raw)) > 10.0


@pytest.mark.parametrize("loss", ["mse", "huber"])
def test_continuous_loss_values_match_numpy(loss):
    mean, std = 30.0, 10.0
    labels = np.array([20.0, 45.0, np.nan, 30.0, 12.0, 70.0], np.float32)
    predictions = np.array([-0.5, 1.2, 9.0, 3.0, -1.0, 0.0], np.float32)
    valid = ~np.isnan(labels)
    error = predictions[valid] - (labels[valid] - mean) / std
    if loss == "mse":
        per_row = error**2
    else:
        per_row = np.where(np.abs(error) <= 1.0, 0.5 * error**2, np.abs(error) - 0.5)
    head = ContinuousHead(loss=loss, mean=mean, std=std)
    value = head.masked_loss(tf.constant(labels), tf.constant(predictions))
    np.testing.assert_allclose(float(value), per_row.mean(), rtol=1e-5)


def test_huber_and_mse_differ_on_large_errors():
    labels, predictions = tf.constant([0.0]), tf.constant([3.0])
    mse = ContinuousHead(loss="mse", mean=0.0, std=1.0).masked_loss(labels, predictions)
    huber = ContinuousHead(loss="huber", mean=0.0, std=1.0)
    np.testing.assert_allclose(float(mse), 9.0)
    np.testing.assert_allclose(float(huber.masked_loss(labels, predictions)), 2.5)


def test_unadapted_continuous_head_raises():
    head = ContinuousHead()
    with pytest.raises(ValueError, match="adapt"):
        head.masked_loss(tf.constant([1.0, 2.0]), tf.constant([0.0, 0.0]))
    with pytest.raises(ValueError, match="adapt"):
        head.predict_original_scale(tf.constant([0.0]))


def test_predict_original_scale():
    head = ContinuousHead(mean=30.0, std=10.0)
    out = head.predict_original_scale(tf.constant([-1.0, 0.0, 2.5]))
    np.testing.assert_allclose(out.numpy(), [20.0, 30.0, 55.0])


# ------------------------------------------------------------------- metrics
def test_categorical_metric_name_and_masking():
    head = CategoricalHead(2)
    metrics = head.create_metrics("gender")
    assert [m.name for m in metrics] == ["gender_accuracy"]
    labels = tf.constant([0, 1, -1, -1])
    # Rows 2 and 3 predict class 1; were they counted (as class 0) accuracy would
    # be 0.25, not 0.5.
    predictions = tf.constant([[2.0, 0.0], [1.0, 0.0], [0.0, 3.0], [0.0, 3.0]])
    mask = tf.cast(head.is_valid(labels), tf.float32)
    head.update_metrics(metrics, labels, predictions, mask)
    assert float(metrics[0].result()) == 0.5


def test_continuous_metric_name():
    head = ContinuousHead(mean=0.0, std=1.0)
    assert [m.name for m in head.create_metrics("age")] == ["age_mae"]


def test_continuous_metric_ignores_masked_rows():
    head = ContinuousHead(mean=30.0, std=10.0)
    metrics = head.create_metrics("age")
    labels = tf.constant([20.0, 40.0, np.nan])
    predictions = tf.constant([0.0, 0.0, 100.0])  # original scale 30, 30, 1030
    mask = tf.cast(head.is_valid(labels), tf.float32)
    head.update_metrics(metrics, labels, predictions, mask)
    np.testing.assert_allclose(float(metrics[0].result()), 10.0)


# ------------------------------------------------------------------- serialization
def _categorical():
    return CategoricalHead(
        3, hidden_units=(8, 4), activation="tanh", dropout=0.1, l2=0.01, name="cat"
    )


def _continuous():
    return ContinuousHead(hidden_units=(8,), loss="huber", mean=31.5, std=12.25)


@pytest.mark.parametrize("make_head", [_categorical, _continuous])
def test_config_round_trip(make_head):
    head = make_head()
    config = head.get_config()
    clone = type(head).from_config(config)
    assert clone.get_config() == config
    revived = keras.utils.deserialize_keras_object(keras.utils.serialize_keras_object(head))
    assert type(revived) is type(head)
    assert revived.get_config() == config


@pytest.mark.parametrize("make_head", [_categorical, _continuous])
def test_save_and_load_functional_model_with_head(tmp_path, make_head):
    inputs = keras.Input((5,))
    head = make_head()
    model = keras.Model(inputs, head(keras.layers.Dense(6)(inputs)))
    # Move every weight away from its initial value so a load that re-initialised
    # instead of restoring would be caught.
    for variable in model.trainable_variables:
        variable.assign(variable + tf.random.normal(variable.shape))
    path = tmp_path / "head.keras"
    model.save(path)
    loaded = keras.models.load_model(path)
    x = np.random.default_rng(0).normal(size=(4, 5)).astype(np.float32)
    np.testing.assert_allclose(loaded(x).numpy(), model(x).numpy(), rtol=1e-6)
    loaded_head = loaded.layers[-1]
    assert type(loaded_head) is type(head)
    assert loaded_head.get_config() == head.get_config()


# ------------------------------------------------------------------- get()
def test_get_resolves_instances_names_and_configs():
    head = CategoricalHead(4)
    assert heads.get(head) is head
    by_name = heads.get("categorical", num_classes=3)
    assert isinstance(by_name, CategoricalHead) and by_name.num_classes == 3
    assert isinstance(heads.get("continuous", loss="huber"), ContinuousHead)
    revived = heads.get(keras.utils.serialize_keras_object(_continuous()))
    assert isinstance(revived, ContinuousHead) and revived.mean == 31.5


def test_get_bad_name_lists_the_names():
    with pytest.raises(ValueError, match="categorical") as info:
        heads.get("gaussian")
    assert "continuous" in str(info.value)
    assert "gaussian" in str(info.value)


@pytest.mark.parametrize("identifier", [3, None, ["categorical"]])
def test_get_bad_type(identifier):
    with pytest.raises(TypeError, match="AttributeHead"):
        heads.get(identifier)


def test_get_config_of_a_non_head_is_rejected():
    config = keras.utils.serialize_keras_object(keras.layers.Dense(2))
    with pytest.raises(TypeError, match="AttributeHead"):
        heads.get(config)


# ------------------------------------------------------------------- bad args
@pytest.mark.parametrize(
    ("make", "error", "argument"),
    [
        (lambda: CategoricalHead(1), ValueError, "`num_classes`"),
        (lambda: CategoricalHead(2.0), TypeError, "`num_classes`"),
        (lambda: CategoricalHead(2, hidden_units="64"), TypeError, "`hidden_units`"),
        (
            lambda: CategoricalHead(2, hidden_units=(8, 0)),
            ValueError,
            "hidden_units[1]",
        ),
        (lambda: CategoricalHead(2, dropout=2), ValueError, "`dropout`"),
        (lambda: CategoricalHead(2, dropout="0.1"), TypeError, "`dropout`"),
        (lambda: CategoricalHead(2, l2=-1.0), ValueError, "`l2`"),
        (lambda: ContinuousHead(loss="mae"), ValueError, "`loss`"),
        (lambda: ContinuousHead(std=0.0), ValueError, "`std`"),
        (lambda: ContinuousHead(mean=np.nan), ValueError, "`mean`"),
        (lambda: ContinuousHead(hidden_units=[True]), TypeError, "hidden_units[0]"),
    ],
)
def test_bad_arguments_name_the_argument(make, error, argument):
    with pytest.raises(error, match=re.escape(argument)):
        make()
