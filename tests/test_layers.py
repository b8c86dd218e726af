"""Tests for tfprivadv.layers: GradientReversal, reverse_gradient and IdLookup."""

from __future__ import annotations

import math

import numpy as np
import pytest

from tfprivadv._keras import keras, tf
from tfprivadv.layers import GradientReversal, IdLookup, reverse_gradient

SCALES = [0.0, 0.5, 1.0, -2.0]
X = np.array([[1.0, -2.0, 3.0], [0.5, 4.0, -1.0]], np.float32)
# A non-uniform upstream gradient (exact in float16 too): dy = W for y = sum(out * W).
W = np.array([[0.25, -1.5, 2.0], [3.0, 0.5, -0.75]], np.float32)


def _input_gradient(fn, x=X, w=W) -> np.ndarray:
    x = tf.constant(x)
    with tf.GradientTape() as tape:
        tape.watch(x)
        y = tf.reduce_sum(tf.cast(fn(x), tf.float32) * w)
    return tape.gradient(y, x).numpy()


# ---------------------------------------------------------------- GradientReversal
@pytest.mark.parametrize("scale", SCALES)
def test_forward_is_identity(scale):
    out = GradientReversal(scale)(X)
    np.testing.assert_array_equal(out.numpy(), X)


@pytest.mark.parametrize("scale", SCALES)
def test_backward_is_minus_scale_times_dy_eagerly(scale):
    layer = GradientReversal(scale)
    np.testing.assert_array_equal(_input_gradient(layer), -scale * W)


@pytest.mark.parametrize("scale", SCALES)
def test_backward_inside_tf_function(scale):
    layer = GradientReversal(scale)

    @tf.function
    def gradient(x):
        with tf.GradientTape() as tape:
            tape.watch(x)
            y = tf.reduce_sum(layer(x) * W)
        return tape.gradient(y, x)

    np.testing.assert_array_equal(gradient(tf.constant(X)).numpy(), -scale * W)


@pytest.mark.parametrize("scale", SCALES)
def test_backward_inside_functional_model(scale):
    inputs = keras.Input((3,))
    model = keras.Model(inputs, GradientReversal(scale)(inputs))
    np.testing.assert_array_equal(model(X).numpy(), X)
    np.testing.assert_array_equal(_input_gradient(model), -scale * W)


@pytest.fixture
def mixed_float16():
    keras.mixed_precision.set_global_policy("mixed_float16")
    try:
        yield
    finally:
        keras.mixed_precision.set_global_policy("float32")


@pytest.mark.parametrize("scale", SCALES)
def test_backward_under_mixed_precision(mixed_float16, scale):
    inputs = keras.Input((3,))
    outputs = GradientReversal(scale)(inputs)
    assert outputs.dtype == tf.float16  # the policy is really in effect
    model = keras.Model(inputs, outputs)
    np.testing.assert_array_equal(model(X).numpy().astype(np.float32), X)
    np.testing.assert_array_equal(_input_gradient(model), -scale * W)


def test_mixed_precision_policy_was_reset():
    assert keras.mixed_precision.global_policy().name == "float32"


def test_no_gradient_flows_to_the_scale():
    layer = GradientReversal(0.5)
    assert layer.trainable_weights == []
    assert len(layer.non_trainable_weights) == 1
    x = tf.constant(X)
    with tf.GradientTape() as tape:
        tape.watch(x)
        tape.watch(layer.scale)
        y = tf.reduce_sum(layer(x) * W)
    grad_x, grad_scale = tape.gradient(y, [x, layer.scale])
    assert grad_scale is None
    np.testing.assert_array_equal(grad_x.numpy(), -0.5 * W)


def test_assign_scale_changes_backward_without_retracing():
    layer = GradientReversal(1.0)
    traces = []

    @tf.function
    def gradient(x):
        traces.append(1)  # runs only while tracing
        with tf.GradientTape() as tape:
            tape.watch(x)
            y = tf.reduce_sum(layer(x) * W)
        return tape.gradient(y, x)

    x = tf.constant(X)
    np.testing.assert_array_equal(gradient(x).numpy(), -W)
    layer.assign_scale(-2.0)
    np.testing.assert_array_equal(gradient(x).numpy(), 2.0 * W)
    layer.assign_scale(0.25)
    np.testing.assert_array_equal(gradient(x).numpy(), -0.25 * W)
    assert len(traces) == 1
    assert layer.get_config()["scale"] == 0.25


def test_config_round_trip():
    layer = GradientReversal(-0.75, name="grl")
    config = layer.get_config()
    assert config["scale"] == -0.75
    clone = GradientReversal.from_config(config)
    assert clone.get_config() == config
    revived = keras.utils.deserialize_keras_object(keras.utils.serialize_keras_object(layer))
    assert isinstance(revived, GradientReversal)
    assert revived.get_config() == config


def test_save_and_load_in_functional_model(tmp_path):
    inputs = keras.Input((3,))
    hidden = keras.layers.Dense(4, name="dense")(inputs)
    reversed_ = GradientReversal(0.5, name="grl")(hidden)
    model = keras.Model(inputs, keras.layers.Dense(2, name="out")(reversed_))
    model.get_layer("grl").assign_scale(-1.5)
    path = tmp_path / "grl.keras"
    model.save(path)
    loaded = keras.models.load_model(path)
    assert isinstance(loaded.get_layer("grl"), GradientReversal)
    assert float(loaded.get_layer("grl").scale.numpy()) == -1.5
    np.testing.assert_array_equal(loaded(X).numpy(), model(X).numpy())
    np.testing.assert_allclose(
        _input_gradient(loaded, w=np.ones((2, 2), np.float32)),
        _input_gradient(model, w=np.ones((2, 2), np.float32)),
        rtol=1e-6,
    )


@pytest.mark.parametrize(
    ("scale", "error"),
    [
        ("0.5", TypeError),
        (None, TypeError),
        (True, TypeError),
        (math.nan, ValueError),
        (math.inf, ValueError),
    ],
)
def test_bad_scale_is_rejected(scale, error):
    with pytest.raises(error, match="`scale`"):
        GradientReversal(scale)
    layer = GradientReversal(1.0)
    with pytest.raises(error, match="`scale`"):
        layer.assign_scale(scale)
    assert float(layer.scale.numpy()) == 1.0


# ---------------------------------------------------------------- reverse_gradient
@pytest.mark.parametrize("scale", SCALES)
def test_reverse_gradient_function(scale):
    out = reverse_gradient(tf.constant(X), scale)
    np.testing.assert_array_equal(out.numpy(), X)
    np.testing.assert_array_equal(_input_gradient(lambda x: reverse_gradient(x, scale)), -scale * W)
    np.testing.assert_array_equal(
        _input_gradient(lambda x: reverse_gradient(x, tf.constant(scale))), -scale * W
    )


def test_reverse_gradient_default_scale_and_float16():
    np.testing.assert_array_equal(_input_gradient(reverse_gradient), -W)
    x16 = tf.constant(X.astype(np.float16))
    with tf.GradientTape() as tape:
        tape.watch(x16)
        y = tf.reduce_sum(reverse_gradient(x16, 0.5) * W.astype(np.float16))
    grad = tape.gradient(y, x16)
    assert grad.dtype == tf.float16
    np.testing.assert_array_equal(grad.numpy().astype(np.float32), -0.5 * W)


# ---------------------------------------------------------------- IdLookup
def _reference(vocabulary, ids):
    rows = {int(v): i + 1 for i, v in enumerate(vocabulary)}
    return np.vectorize(lambda i: rows.get(int(i), 0))(np.asarray(ids))


def test_id_lookup_direct_table():
    layer = IdLookup([10, 30, 20])
    assert layer.direct
    ids = tf.constant([[20, 10, 30], [99, -5, 0]])
    out = layer(ids)
    assert out.dtype == tf.int64
    np.testing.assert_array_equal(out.numpy(), [[3, 1, 2], [0, 0, 0]])


def test_id_lookup_binary_search_for_sparse_ids():
    vocabulary = [10**9, 1, 5000]
    layer = IdLookup(vocabulary)
    assert not layer.direct
    ids = np.array([[1, 10**9], [5000, 2], [-1, 10**9 + 1], [0, -(10**12)]])
    out = layer(tf.constant(ids))
    assert out.dtype == tf.int64
    np.testing.assert_array_equal(out.numpy(), [[2, 1], [3, 0], [0, 0], [0, 0]])


@pytest.mark.parametrize("sparse", [False, True])
def test_id_lookup_matches_dict_reference(sparse):
    rng = np.random.default_rng(0)
    high = 10**12 if sparse else 5000
    vocabulary = rng.choice(high, 300, replace=False)
    layer = IdLookup(vocabulary)
    assert layer.direct is not sparse
    ids = np.concatenate([vocabulary, rng.integers(-10, high + 10, 500)])
    rng.shuffle(ids)
    np.testing.assert_array_equal(layer(ids).numpy(), _reference(vocabulary, ids))


def test_id_lookup_accepts_int32_inputs():
    layer = IdLookup([3, 1, 2])
    out = layer(tf.constant([3, 2, 1, 7], tf.int32))
    np.testing.assert_array_equal(out.numpy(), [1, 3, 2, 0])


@pytest.mark.parametrize("vocabulary", [[10, 30, 20], [10**9, 1, 5000]])
def test_id_lookup_config_round_trip(vocabulary):
    layer = IdLookup(vocabulary, name="lookup")
    config = layer.get_config()
    assert config["vocabulary"] == vocabulary
    clone = IdLookup.from_config(config)
    assert clone.get_config() == config
    assert clone.direct == layer.direct
    ids = tf.constant([1, 10, 20, 30, 5000, 10**9, 7, -1], tf.int64)
    np.testing.assert_array_equal(clone(ids).numpy(), layer(ids).numpy())


def test_id_lookup_direct_path_compiles_with_xla():
    layer = IdLookup([3, 1, 2, 40])
    assert layer.direct
    compiled = tf.function(layer, jit_compile=True)
    ids = tf.constant([[3, 2, 1], [40, -1, 1000]], tf.int64)
    out = compiled(ids)
    np.testing.assert_array_equal(out.numpy(), [[1, 3, 2], [4, 0, 0]])
    np.testing.assert_array_equal(out.numpy(), layer(ids).numpy())


@pytest.mark.parametrize(
    ("vocabulary", "error"),
    [([1.5, 2.0], TypeError), ([[1, 2]], TypeError), ([1, -2], ValueError)],
)
def test_id_lookup_bad_vocabulary(vocabulary, error):
    with pytest.raises(error, match="`vocabulary`"):
        IdLookup(vocabulary)
