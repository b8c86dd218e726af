"""Tests for tfprivadv.models: BPRRetrievalModel, BPRTask and PrivacyAdversarialModel.

Losses and gradients are checked against NumPy references computed from the models'
own weights; training is a few epochs on the tiny synthetic data of conftest.py.
"""

from __future__ import annotations

import copy
import math

import numpy as np
import pandas as pd
import pytest

from tfprivadv import data
from tfprivadv._keras import keras, tf
from tfprivadv.heads import CategoricalHead, ContinuousHead
from tfprivadv.models import BPRRetrievalModel, PrivacyAdversarialModel

DIM = 8


def _softplus(x):
    return np.logaddexp(0.0, x)


def _bpr(user_ids, item_ids, **kwargs) -> BPRRetrievalModel:
    kwargs = {"embedding_dim": DIM, "seed": 0, **kwargs}
    return BPRRetrievalModel(user_ids, item_ids, **kwargs)


def _perturb(model: keras.Model, seed: int = 0) -> None:
    """Moves every trainable weight (item biases included, which start at 0) to a
    random value, so that nothing a test checks equals the seeded initial state."""
    rng = np.random.default_rng(seed)
    for variable in model.trainable_variables:
        noise = rng.normal(scale=0.5, size=variable.shape).astype(np.float32)
        variable.assign(variable + noise)


def _batch(dataset: tf.data.Dataset) -> dict:
    return next(iter(dataset))


def _tables(model: BPRRetrievalModel):
    users = model.user_embedding.embeddings.numpy().astype(np.float64)
    items = model.item_embedding.embeddings.numpy().astype(np.float64)
    biases = model.item_bias.embeddings.numpy()[:, 0].astype(np.float64)
    user_row = {u: i + 1 for i, u in enumerate(model.user_vocabulary.tolist())}
    item_row = {v: i + 1 for i, v in enumerate(model.item_vocabulary.tolist())}
    return users, items, biases, user_row, item_row


def _bpr_reference(model: BPRRetrievalModel, batch: dict) -> float:
    """Uniform-negative BPR from the model's weights: score = <p_u, q_i> + b_i;
    each row averages softplus(s_neg - s_pos) over negatives != positive."""
    users, items, biases, user_row, item_row = _tables(model)
    u = np.array([user_row.get(x, 0) for x in np.asarray(batch["user_id"]).tolist()])
    pos = np.array([item_row.get(x, 0) for x in np.asarray(batch["item_id"]).tolist()])
    negative_ids = np.asarray(batch["neg_item_id"])
    neg = np.vectorize(lambda x: item_row.get(x, 0))(negative_ids)
    s_pos = (users[u] * items[pos]).sum(-1) + biases[pos]
    s_neg = np.einsum("bd,bnd->bn", users[u], items[neg]) + biases[neg]
    valid = neg != pos[:, None]
    pairwise = np.where(valid, _softplus(s_neg - s_pos[:, None]), 0.0)
    rows = np.divide(pairwise.sum(1), valid.sum(1), out=np.zeros(len(u)), where=valid.sum(1) > 0)
    return float(rows.mean())


def _dense(gradient) -> np.ndarray:
    return tf.convert_to_tensor(gradient).numpy()


# =========================================================== BPRRetrievalModel
def test_embedding_shapes_and_zero_oov_rows(user_ids, item_ids):
    model = _bpr(user_ids, item_ids)
    users = model.user_embeddings([1, 2, 999])
    assert users.shape == (3, DIM)
    np.testing.assert_array_equal(users.numpy()[2], 0.0)
    assert np.abs(users.numpy()[:2]).sum() > 0
    items = model.item_embeddings(np.array([100, 129, -5]))
    assert items.shape == (3, DIM)
    np.testing.assert_array_equal(items.numpy()[2], 0.0)
    assert model.item_biases([100, 101]).shape == (2,)
    assert model.user_embedding.embeddings.shape == (len(user_ids) + 1, DIM)
    np.testing.assert_array_equal(model.user_embedding.embeddings.numpy()[0], 0.0)
    np.testing.assert_array_equal(model.item_embedding.embeddings.numpy()[0], 0.0)
    # call() returns user vectors, for raw ids or a batch dict.
    np.testing.assert_array_equal(model(tf.constant([1, 2])).numpy(), users.numpy()[:2])
    np.testing.assert_array_equal(model({"user_id": tf.constant([2])}).numpy(), users.numpy()[1:2])


def test_seed_makes_initialisation_reproducible(user_ids, item_ids):
    first, second = _bpr(user_ids, item_ids, seed=7), _bpr(user_ids, item_ids, seed=7)
    for a, b in zip(first.weights, second.weights, strict=True):
        np.testing.assert_array_equal(a.numpy(), b.numpy())
    other = _bpr(user_ids, item_ids, seed=8)
    assert not np.array_equal(
        other.user_embedding.embeddings.numpy(), first.user_embedding.embeddings.numpy()
    )


def test_score_items_and_unknown_user_scores_are_item_biases(user_ids, item_ids):
    model = _bpr(user_ids, item_ids)
    _perturb(model)
    model.user_embedding.embeddings[0].assign(tf.zeros([DIM]))  # keep OOV at zero
    users, items, biases, _, _ = _tables(model)
    scores = model.score_items([999])
    np.testing.assert_allclose(scores[0], biases[1:], rtol=1e-6)
    np.testing.assert_allclose(scores[0], model.item_biases(item_ids).numpy(), rtol=1e-6)
    known = model.score_items([1, 5])
    expected = users[[1, 5]] @ items[1:].T + biases[None, 1:]
    np.testing.assert_allclose(known, expected, rtol=1e-5, atol=1e-6)
    subset = model.score_items([1, 5], item_ids=[129, 100])
    np.testing.assert_allclose(subset, expected[:, [29, 0]], rtol=1e-5, atol=1e-6)


@pytest.mark.parametrize("num_negatives", [1, 4])
def test_compute_loss_matches_numpy_bpr(ratings, user_ids, item_ids, num_negatives):
    model = _bpr(user_ids, item_ids)
    _perturb(model)
    batch = _batch(
        data.training_dataset(
            ratings, item_ids=item_ids, batch_size=32, num_negatives=num_negatives
        )
    )
    loss = model.compute_loss(batch, training=True)
    np.testing.assert_allclose(float(loss), _bpr_reference(model, batch), rtol=1e-5)


def test_negative_equal_to_the_positive_is_masked(user_ids, item_ids):
    model = _bpr(user_ids, item_ids)
    _perturb(model)
    users, items = tf.constant([1, 2, 3]), tf.constant([100, 101, 102])
    with_positive = {
        "user_id": users,
        "item_id": items,
        "neg_item_id": tf.constant([[100, 110], [120, 101], [105, 106]]),
    }
    loss = float(model.compute_loss(with_positive))
    np.testing.assert_allclose(loss, _bpr_reference(model, with_positive), rtol=1e-5)
    # Row by row, the masked negative changes nothing.
    for row, kept in [(0, 110), (1, 120)]:
        one = {name: value[row : row + 1] for name, value in with_positive.items()}
        alone = {**one, "neg_item_id": tf.constant([[kept]])}
        np.testing.assert_allclose(
            float(model.compute_loss(one)), float(model.compute_loss(alone)), rtol=1e-6
        )
    # A row whose only negative is its positive contributes 0 (not a NaN).
    only_positive = {
        "user_id": users[:2],
        "item_id": items[:2],
        "neg_item_id": tf.constant([[100], [105]]),
    }
    value = float(model.compute_loss(only_positive))
    assert math.isfinite(value)
    single = {name: v[1:] for name, v in only_positive.items()}
    np.testing.assert_allclose(value, float(model.compute_loss(single)) / 2, rtol=1e-6)


def test_l2_penalty(ratings, user_ids, item_ids):
    batch = _batch(data.training_dataset(ratings, item_ids=item_ids, batch_size=16))
    plain, penalised = _bpr(user_ids, item_ids), _bpr(user_ids, item_ids, l2=0.1)
    users = plain.user_embeddings(batch["user_id"]).numpy()
    augmented = [
        np.concatenate(
            [
                plain.item_embeddings(ids).numpy(),
                plain.item_biases(ids).numpy()[..., None],
            ],
            -1,
        )
        for ids in (batch["item_id"], batch["neg_item_id"])
    ]
    squares = (users**2).sum() + sum((a**2).sum() for a in augmented)
    expected = float(plain.compute_loss(batch)) + 0.1 * squares / 16
    np.testing.assert_allclose(float(penalised.compute_loss(batch)), expected, rtol=1e-5)


def test_in_batch_negatives_run_through_tfrs_retrieval(user_ids, item_ids):
    model = _bpr(user_ids, item_ids, negatives="in_batch")
    _perturb(model)
    batch = {
        "user_id": tf.constant([1, 2, 3, 4]),
        "item_id": tf.constant([100, 101, 100, 102]),  # rows 0 and 2 share an item
    }
    loss = float(model.compute_loss(batch, training=True))
    users, items, biases, user_row, item_row = _tables(model)
    u = [user_row[x] for x in [1, 2, 3, 4]]
    i = [item_row[x] for x in [100, 101, 100, 102]]
    scores = users[u] @ items[i].T + biases[i][None, :]
    rows = []
    for r in range(4):
        # Other rows' positives are negatives, except accidental hits (same item).
        negatives = [c for c in range(4) if c != r and i[c] != i[r]]
        rows.append(_softplus(scores[r, negatives] - scores[r, r]).mean())
    np.testing.assert_allclose(loss, np.mean(rows), rtol=1e-5)


def _fit_losses(model, dataset, epochs=4, **compile_kwargs):
    model.compile(optimizer=keras.optimizers.Adam(0.05), **compile_kwargs)
    return model.fit(dataset, epochs=epochs, verbose=0).history["loss"]


@pytest.mark.parametrize("jit_compile", [None, False])
def test_fit_lowers_the_loss(ratings, user_ids, item_ids, jit_compile):
    model = _bpr(user_ids, item_ids)
    assert model.supports_jit
    dataset = data.training_dataset(ratings, item_ids=model.item_vocabulary, batch_size=64, seed=0)
    losses = _fit_losses(model, dataset, jit_compile=jit_compile)
    assert model.jit_compile is (jit_compile is None)
    assert all(math.isfinite(x) for x in losses)
    assert losses[-1] < losses[0] - 0.05
    assert np.all(np.diff(losses) < 0)


def test_fit_with_string_ids_disables_xla(ratings, user_ids, item_ids):
    as_str = ratings.assign(
        user_id=["u" + str(x) for x in ratings["user_id"]],
        item_id=["i" + str(x) for x in ratings["item_id"]],
    )
    model = _bpr(
        np.array(["u" + str(x) for x in user_ids]),
        np.array(["i" + str(x) for x in item_ids]),
    )
    assert not model.supports_jit
    dataset = data.training_dataset(as_str, item_ids=model.item_vocabulary, batch_size=64, seed=0)
    losses = _fit_losses(model, dataset, epochs=3)
    assert model.jit_compile is False
    assert losses[-1] < losses[0] - 0.02
    np.testing.assert_array_equal(model.user_embeddings(["unknown"]).numpy(), 0.0)
    items, _ = model.recommend(["u1"], k=3)
    assert set(items[0]) <= set(model.item_vocabulary)


def test_sparse_integer_ids_disable_xla(user_ids):
    model = _bpr(user_ids, np.array([1, 10**9]))
    assert not model.supports_jit
    model.compile()
    assert model.jit_compile is False


# ------------------------------------------------------------------- recommend
REQUEST = np.array([1, 5, 7, 12, 40, 999])


def _numpy_top_k(model, users, k, excluded=None):
    scores = model.score_items(users).astype(np.float64)
    if excluded is not None:
        for row, user in enumerate(users):
            for item in excluded.get(user, ()):
                scores[row, list(model.item_vocabulary).index(item)] = -np.inf
    order = np.argsort(-scores, axis=1, kind="stable")[:, :k]
    return model.item_vocabulary[order], np.take_along_axis(scores, order, 1)


def test_recommend_matches_numpy_argsort(user_ids, item_ids):
    model = _bpr(user_ids, item_ids)
    _perturb(model)
    items, scores = model.recommend(REQUEST, k=5)
    assert items.shape == scores.shape == (len(REQUEST), 5)
    assert (np.diff(scores, axis=1) <= 0).all()
    expected_items, expected_scores = _numpy_top_k(model, REQUEST, 5)
    np.testing.assert_array_equal(items, expected_items)
    np.testing.assert_allclose(scores, expected_scores, rtol=1e-5)
    everything, _ = model.recommend([1], k=len(item_ids))
    assert sorted(everything[0]) == sorted(item_ids)


def test_recommend_never_returns_excluded_items(ratings, user_ids, item_ids):
    model = _bpr(user_ids, item_ids)
    _perturb(model)
    seen = ratings.groupby("user_id")["item_id"].apply(set).to_dict()
    # Exclusions of users not requested and of items outside the catalog are ignored.
    extra = pd.DataFrame({"user_id": [1, 2], "item_id": [12345, 100]})
    exclude = pd.concat([ratings, extra], ignore_index=True)
    items, scores = model.recommend(REQUEST, k=10, exclude=exclude)
    for row, user in enumerate(REQUEST):
        assert not set(items[row]) & seen.get(user, set())
    assert np.isfinite(scores).all()
    expected_items, expected_scores = _numpy_top_k(model, REQUEST, 10, seen)
    np.testing.assert_array_equal(items, expected_items)
    np.testing.assert_allclose(scores, expected_scores, rtol=1e-5)
    # The same through a mapping, and with several score batches.
    by_dict, _ = model.recommend(REQUEST, k=10, exclude=seen)
    np.testing.assert_array_equal(by_dict, items)
    batched, batched_scores = model.recommend(REQUEST, k=10, exclude=exclude, batch_size=4)
    np.testing.assert_array_equal(batched, items)
    np.testing.assert_allclose(batched_scores, scores, rtol=1e-6)


# ------------------------------------------------------------------- serialization
def test_config_round_trip(user_ids, item_ids):
    model = _bpr(user_ids, item_ids, l2=0.01, init_stddev=0.2, name="bpr")
    config = model.get_config()
    clone = BPRRetrievalModel.from_config(config)
    assert clone.get_config() == config
    revived = keras.utils.deserialize_keras_object(keras.utils.serialize_keras_object(model))
    assert isinstance(revived, BPRRetrievalModel)
    assert revived.get_config() == config


def test_save_and_load(tmp_path, user_ids, item_ids, ratings):
    model = _bpr(user_ids, item_ids)
    _perturb(model)
    path = tmp_path / "bpr.keras"
    model.save(path)
    loaded = tf.keras.models.load_model(path)
    assert isinstance(loaded, BPRRetrievalModel)
    assert loaded.get_config() == model.get_config()
    np.testing.assert_array_equal(
        loaded.user_embeddings(REQUEST).numpy(), model.user_embeddings(REQUEST).numpy()
    )
    for a, b in zip(
        loaded.recommend(REQUEST, k=5, exclude=ratings),
        model.recommend(REQUEST, k=5, exclude=ratings),
        strict=True,
    ):
        np.testing.assert_array_equal(a, b)


def test_save_and_load_with_string_ids(tmp_path):
    model = _bpr(np.array(["a", "b", "c"]), np.array(["x", "y", "z", "w"]))
    _perturb(model)
    path = tmp_path / "bpr_str.keras"
    model.save(path)
    loaded = tf.keras.models.load_model(path)
    request = np.array(["a", "c", "nobody"])
    for a, b in zip(loaded.recommend(request, k=3), model.recommend(request, k=3), strict=True):
        np.testing.assert_array_equal(a, b)


# ------------------------------------------------------------------- bad inputs
@pytest.mark.parametrize(
    ("kwargs", "error", "match"),
    [
        ({"user_ids": [1, 1, 2]}, ValueError, "`user_ids`.*duplicate"),
        ({"item_ids": ["a", "b", "a"]}, ValueError, "`item_ids`.*duplicate"),
        ({"item_ids": []}, ValueError, "`item_ids`"),
        ({"user_ids": [[1, 2]]}, ValueError, "`user_ids`"),
        ({"user_ids": [1.0, 2.0]}, TypeError, "`user_ids`"),
        ({"user_ids": [1, -2]}, ValueError, "`user_ids`"),
        ({"embedding_dim": 0}, ValueError, "`embedding_dim`"),
        ({"negatives": "hard"}, ValueError, "`negatives`"),
        ({"l2": -0.1}, ValueError, "`l2`"),
        ({"init_stddev": 0.0}, ValueError, "`init_stddev`"),
    ],
)
def test_bad_constructor_arguments(kwargs, error, match):
    arguments = {"user_ids": [1, 2, 3], "item_ids": [10, 20, 30], **kwargs}
    with pytest.raises(error, match=match):
        BPRRetrievalModel(**arguments)


def test_bad_recommend_arguments(user_ids, item_ids):
    model = _bpr(user_ids, item_ids)
    with pytest.raises(ValueError, match="`k`"):
        model.recommend([1], k=len(item_ids) + 1)
    with pytest.raises(ValueError, match="`k`"):
        model.recommend([1], k=0)
    with pytest.raises(TypeError, match="`k`"):
        model.recommend([1], k=2.0)
    with pytest.raises(ValueError, match="`user_ids`"):
        model.recommend([[1, 2]], k=2)
    with pytest.raises(TypeError, match="`exclude`"):
        model.recommend([1], k=2, exclude=[(1, 100)])
    with pytest.raises(TypeError, match="`exclude`"):
        model.recommend([1], k=2, exclude=pd.DataFrame({"user": [1], "item": [100]}))


def test_compute_loss_bad_batches(user_ids, item_ids):
    model = _bpr(user_ids, item_ids)
    with pytest.raises(ValueError, match="neg_item_id"):
        model.compute_loss({"user_id": tf.constant([1]), "item_id": tf.constant([100])})
    with pytest.raises(ValueError, match="'user_id'"):
        model.compute_loss({"item_id": tf.constant([100])})
    with pytest.raises(ValueError, match="'user_id'"):
        model.compute_loss((tf.constant([1]), tf.constant([100])))


# =========================================================== PrivacyAdversarialModel
ATTRIBUTES = ["gender", "age_group", "age"]


@pytest.fixture
def dataset(ratings, users, item_ids):
    return data.training_dataset(
        ratings, users, attributes=ATTRIBUTES, item_ids=item_ids, batch_size=64, seed=0
    )


def _adversarial(user_ids, item_ids, users, *, heads=("gender",), **kwargs):
    made = {
        "gender": CategoricalHead(2, hidden_units=(8,)),
        "age_group": CategoricalHead(7, hidden_units=(8,)),
        "age": ContinuousHead(hidden_units=(8,)),
    }
    made["age"].adapt(users["age"])
    return PrivacyAdversarialModel(
        _bpr(user_ids, item_ids), heads={name: made[name] for name in heads}, **kwargs
    )


def test_fit_logs_recommendation_and_head_metrics(user_ids, item_ids, users, dataset):
    model = _adversarial(
        user_ids, item_ids, users, heads=("gender", "age_group"), adversary_weight=0.5
    )
    model.compile(optimizer=keras.optimizers.Adam(0.05), jit_compile=False)
    history = model.fit(dataset, epochs=2, verbose=0).history
    expected = {
        "loss",
        "rec_loss",
        "gender_loss",
        "gender_accuracy",
        "age_group_loss",
        "age_group_accuracy",
    }
    assert set(history) == expected
    for values in history.values():
        assert len(values) == 2 and all(math.isfinite(v) for v in values)
    for epoch in range(2):
        parts = sum(history[f"{name}_loss"][epoch] for name in ("rec", "gender", "age_group"))
        np.testing.assert_allclose(history["loss"][epoch], parts, rtol=1e-5)
        assert 0.0 <= history["gender_accuracy"][epoch] <= 1.0
    assert history["rec_loss"][1] < history["rec_loss"][0]


def test_fit_logs_continuous_head_mae(user_ids, item_ids, users, dataset):
    model = _adversarial(user_ids, item_ids, users, heads=("gender", "age"))
    model.compile(optimizer=keras.optimizers.Adam(0.05), jit_compile=False)
    history = model.fit(dataset, epochs=1, verbose=0).history
    assert {
        "loss",
        "rec_loss",
        "gender_loss",
        "gender_accuracy",
        "age_loss",
        "age_mae",
    } <= set(history)
    assert math.isfinite(history["age_mae"][0])


def test_fit_compiles_with_xla(user_ids, item_ids, users, dataset):
    model = _adversarial(user_ids, item_ids, users, adversary_weight=1.0)
    assert model.supports_jit
    model.compile(optimizer=keras.optimizers.Adam(0.05))
    assert model.jit_compile is True
    history = model.fit(dataset, epochs=2, verbose=0).history
    assert history["rec_loss"][1] < history["rec_loss"][0]


def _gradients(loss_fn, variables):
    with tf.GradientTape() as tape:
        loss = loss_fn()
    return [_dense(g) if g is not None else None for g in tape.gradient(loss, variables)]


def _head_loss(model, name, source):
    bpr, head = model.retrieval_model, model.heads[name]
    users = bpr.user_embeddings(source["user_id"])
    return head.masked_loss(source[name], head(users, training=True))


def _check_reversed_gradients(model, batch, source, weights):
    """User-table gradient of the wrapper == rec - sum_a lambda_a * head_a; item
    tables follow the recommendation loss only; head weights get their plain
    (unreversed) gradient."""
    bpr = model.retrieval_model
    table = bpr.user_embedding.embeddings
    items = [bpr.item_embedding.embeddings, bpr.item_bias.embeddings]
    variables = [table, *items]
    total = _gradients(lambda: model.compute_loss(batch, training=True), variables)
    rec = _gradients(lambda: bpr.compute_loss(batch, training=True), variables)
    expected = rec[0].copy()
    for name, weight in weights.items():
        head_grad = _gradients(lambda n=name: _head_loss(model, n, source), [table])[0]
        assert np.abs(head_grad).max() > 1e-4  # the check is not vacuous
        expected -= weight * head_grad
    np.testing.assert_allclose(total[0], expected, rtol=1e-5, atol=1e-7)
    for got, want in zip(total[1:], rec[1:], strict=True):
        np.testing.assert_allclose(got, want, rtol=1e-5, atol=1e-7)
    for name, head in model.heads.items():
        head_vars = head.trainable_variables
        via_model = _gradients(lambda: model.compute_loss(batch, training=True), head_vars)
        direct = _gradients(lambda n=name: _head_loss(model, n, source), head_vars)
        for got, want in zip(via_model, direct, strict=True):
            np.testing.assert_allclose(got, want, rtol=1e-5, atol=1e-7)


@pytest.mark.parametrize("weight", [0.0, 0.7, -1.5])
def test_user_gradient_is_rec_minus_lambda_head(user_ids, item_ids, users, dataset, weight):
    model = _adversarial(user_ids, item_ids, users, adversary_weight=weight)
    _perturb(model)
    batch = _batch(dataset)
    _check_reversed_gradients(model, batch, batch["adversary"], {"gender": weight})
    if weight == 0.0:
        # The heads are passive probes: exactly the plain recommender's gradient.
        table = model.retrieval_model.user_embedding.embeddings
        total = _gradients(lambda: model.compute_loss(batch, training=True), [table])
        rec = _gradients(lambda: model.retrieval_model.compute_loss(batch, training=True), [table])
        np.testing.assert_allclose(total[0], rec[0], rtol=1e-6, atol=1e-8)


def test_dict_adversary_weight_per_head(user_ids, item_ids, users, dataset):
    weights = {"gender": 0.5, "age_group": -2.0}
    model = _adversarial(
        user_ids,
        item_ids,
        users,
        heads=("gender", "age_group"),
        adversary_weight=weights,
    )
    _perturb(model)
    assert model.adversary_weight == weights
    assert model.current_adversary_weight == weights
    batch = _batch(dataset)
    _check_reversed_gradients(model, batch, batch["adversary"], weights)


def test_interaction_weighting_trains_heads_on_batch_rows(user_ids, item_ids, users, dataset):
    model = _adversarial(
        user_ids,
        item_ids,
        users,
        adversary_weight=0.8,
        adversary_weighting="interaction",
    )
    _perturb(model)
    batch = _batch(dataset)
    del batch["adversary"]  # not needed: the heads read the batch rows
    _check_reversed_gradients(model, batch, batch, {"gender": 0.8})


def test_adversary_weight_setters(user_ids, item_ids, users):
    model = _adversarial(
        user_ids, item_ids, users, heads=("gender", "age_group"), adversary_weight=1.0
    )
    assert model.adversary_weight == {"gender": 1.0, "age_group": 1.0}
    model.set_adversary_weight(0.25)
    assert (
        model.adversary_weight
        == model.current_adversary_weight
        == {
            "gender": 0.25,
            "age_group": 0.25,
        }
    )
    model.set_adversary_weight({"gender": 2.0, "age_group": -1.0})
    assert model.current_adversary_weight == {"gender": 2.0, "age_group": -1.0}
    model.apply_adversary_schedule(0.5)
    assert model.current_adversary_weight == {"gender": 1.0, "age_group": -0.5}
    assert model.adversary_weight == {"gender": 2.0, "age_group": -1.0}
    assert float(model.reversals["gender"].scale.numpy()) == 1.0
    with pytest.raises(TypeError, match="`adversary_weight`"):
        model.set_adversary_weight("high")
    assert model.adversary_weight == {"gender": 2.0, "age_group": -1.0}
    with pytest.raises(ValueError, match="`factor`"):
        model.apply_adversary_schedule(math.nan)


def test_batch_without_adversary_sample_raises(user_ids, item_ids, users, dataset):
    model = _adversarial(user_ids, item_ids, users)
    batch = _batch(dataset)
    del batch["adversary"]
    with pytest.raises(ValueError, match="'adversary'"):
        model.compute_loss(batch)


def test_missing_label_raises(user_ids, item_ids, users, dataset):
    model = _adversarial(user_ids, item_ids, users)
    batch = _batch(dataset)
    del batch["adversary"]["gender"]
    with pytest.raises(ValueError, match="gender"):
        model.compute_loss(batch)
    interaction = _adversarial(user_ids, item_ids, users, adversary_weighting="interaction")
    del batch["gender"]
    with pytest.raises(ValueError, match="gender"):
        interaction.compute_loss(batch)


@pytest.mark.parametrize(
    ("weight", "error"),
    [
        ("0.5", TypeError),
        (None, TypeError),
        (True, TypeError),
        ([0.5], TypeError),
        (math.nan, ValueError),
        ({"gender": 0.5, "income": 1.0}, ValueError),
        ({"age_group": 0.5}, ValueError),
        ({"gender": "x", "age_group": 0.5}, TypeError),
    ],
)
def test_bad_adversary_weight(user_ids, item_ids, users, weight, error):
    with pytest.raises(error, match="adversary_weight"):
        _adversarial(
            user_ids,
            item_ids,
            users,
            heads=("gender", "age_group"),
            adversary_weight=weight,
        )


def test_numpy_integer_adversary_weight(user_ids, item_ids, users):
    model = _adversarial(user_ids, item_ids, users, adversary_weight=np.int64(2))
    assert model.adversary_weight == {"gender": 2.0}


def test_bad_constructor_arguments_adversarial(user_ids, item_ids):
    bpr = _bpr(user_ids, item_ids)
    with pytest.raises(TypeError, match="`heads`"):
        PrivacyAdversarialModel(bpr, heads={})
    with pytest.raises(ValueError, match="`heads`"):
        PrivacyAdversarialModel(bpr, heads={"not valid": CategoricalHead(2)})
    with pytest.raises(TypeError, match="`retrieval_model`"):
        PrivacyAdversarialModel(object(), heads={"gender": CategoricalHead(2)})
    with pytest.raises(ValueError, match="`adversary_weighting`"):
        PrivacyAdversarialModel(
            bpr, heads={"gender": CategoricalHead(2)}, adversary_weighting="item"
        )


def test_heads_resolve_through_get(user_ids, item_ids):
    model = PrivacyAdversarialModel(
        _bpr(user_ids, item_ids),
        heads={"gender": CategoricalHead(2), "age": "continuous"},
    )
    assert isinstance(model.heads["age"], ContinuousHead)
    assert model({"user_id": tf.constant([1, 2])})["gender"].shape == (2, 2)


def test_adversarial_config_round_trip(user_ids, item_ids, users):
    model = _adversarial(
        user_ids,
        item_ids,
        users,
        heads=("gender", "age"),
        adversary_weight={"gender": 0.5, "age": -1.0},
        adversary_weighting="interaction",
        name="pam",
    )
    config = model.get_config()
    clone = PrivacyAdversarialModel.from_config(copy.deepcopy(config))
    assert clone.get_config() == config
    assert clone.heads["age"].mean == model.heads["age"].mean
    assert clone.current_adversary_weight == {"gender": 0.5, "age": -1.0}


def test_adversarial_save_and_load(tmp_path, user_ids, item_ids, users):
    model = _adversarial(
        user_ids,
        item_ids,
        users,
        heads=("gender", "age"),
        adversary_weight={"gender": 0.5, "age": 2.0},
    )
    _perturb(model)
    model.apply_adversary_schedule(0.25)
    path = tmp_path / "pam.keras"
    model.save(path)
    loaded = tf.keras.models.load_model(path)
    assert isinstance(loaded, PrivacyAdversarialModel)
    assert loaded.get_config() == model.get_config()
    assert loaded.current_adversary_weight == model.current_adversary_weight
    request = tf.constant([1, 2, 3, 999], tf.int64)
    expected, got = model(request), loaded(request)
    for name in ("gender", "age"):
        np.testing.assert_allclose(got[name].numpy(), expected[name].numpy(), rtol=1e-6)
    np.testing.assert_array_equal(
        loaded.retrieval_model.user_embeddings(request).numpy(),
        model.retrieval_model.user_embeddings(request).numpy(),
    )


# ------------------------------------------------------------- confusion objective
def _confusion_loss(model, name, source):
    bpr, head = model.retrieval_model, model.heads[name]
    users = bpr.user_embeddings(source["user_id"])
    mask = head.is_valid(source[name])
    return head.confusion_loss(head(users, training=False), mask)


@pytest.mark.parametrize("heads", [("gender",), ("gender", "age")])
@pytest.mark.parametrize("weight", [0.0, 0.7, 10.0])
def test_confusion_objective_gradients(user_ids, item_ids, users, dataset, heads, weight):
    """User table: rec + lambda * d confusion / d users (the head held fixed); items:
    rec only; heads: their plain loss only (the confusion term cancels there)."""
    model = _adversarial(
        user_ids,
        item_ids,
        users,
        heads=heads,
        adversary_weight=weight,
        adversary_objective="confusion",
    )
    _perturb(model)
    batch = _batch(dataset)
    source = batch["adversary"]
    bpr = model.retrieval_model
    table = bpr.user_embedding.embeddings
    variables = [table, bpr.item_embedding.embeddings, bpr.item_bias.embeddings]
    total = _gradients(lambda: model.compute_loss(batch, training=True), variables)
    rec = _gradients(lambda: bpr.compute_loss(batch, training=True), variables)
    expected = rec[0].copy()
    for name in heads:
        confusion = _gradients(lambda n=name: _confusion_loss(model, n, source), [table])[0]
        assert np.abs(confusion).max() > 1e-6  # the check is not vacuous
        expected += weight * confusion
        # A head's gradient from the confusion term alone is not zero...
        head_vars = model.heads[name].trainable_variables
        alone = _gradients(lambda n=name: _confusion_loss(model, n, source), head_vars)
        assert max(np.abs(g).max() for g in alone) > 1e-6
        # ...but through the model the head sees its plain loss only.
        via_model = _gradients(lambda: model.compute_loss(batch, training=True), head_vars)
        direct = _gradients(lambda n=name: _head_loss(model, n, source), head_vars)
        for got, want in zip(via_model, direct, strict=True):
            np.testing.assert_allclose(got, want, rtol=1e-5, atol=1e-7)
    np.testing.assert_allclose(total[0], expected, rtol=1e-4, atol=1e-7)
    for got, want in zip(total[1:], rec[1:], strict=True):
        np.testing.assert_allclose(got, want, rtol=1e-5, atol=1e-7)


def test_confusion_loss_is_zero_for_constant_predictions():
    head = CategoricalHead(3)
    mask = tf.constant([True, True, False])
    same = tf.constant([[1.0, 2.0, 0.0]] * 3)
    assert float(head.confusion_loss(same, mask)) == pytest.approx(0.0, abs=1e-6)
    # The masked row is ignored, whatever it says.
    varied = tf.constant([[1.0, 2.0, 0.0], [1.0, 2.0, 0.0], [9.0, -9.0, 0.0]])
    assert float(head.confusion_loss(varied, mask)) == pytest.approx(0.0, abs=1e-6)
    spread = tf.constant([[3.0, 0.0, 0.0], [0.0, 3.0, 0.0], [0.0, 0.0, 0.0]])
    p = tf.nn.softmax(spread[:2]).numpy()
    mean = p.mean(axis=0)
    want = np.mean([np.sum(mean * (np.log(mean) - np.log(row))) for row in p])
    assert float(head.confusion_loss(spread, mask)) == pytest.approx(want, rel=1e-5)
    regression = ContinuousHead(mean=0.0, std=1.0)
    values = tf.constant([1.0, 3.0, 100.0])
    assert float(regression.confusion_loss(values, mask)) == pytest.approx(1.0)


def test_confusion_objective_fits_and_round_trips(user_ids, item_ids, users, dataset):
    model = _adversarial(
        user_ids, item_ids, users, adversary_weight=1.0, adversary_objective="confusion"
    )
    model.compile(optimizer=keras.optimizers.Adam(0.05))
    history = model.fit(dataset, epochs=2, verbose=0).history
    assert history["rec_loss"][1] < history["rec_loss"][0]
    assert model.get_config()["adversary_objective"] == "confusion"
    clone = PrivacyAdversarialModel.from_config(model.get_config())
    assert clone.adversary_objective == "confusion"
    with pytest.raises(ValueError, match="`adversary_objective`"):
        _adversarial(user_ids, item_ids, users, adversary_objective="maximise")


def test_interaction_sample_trains_heads_on_the_first_rows(user_ids, item_ids, users, dataset):
    model = _adversarial(
        user_ids,
        item_ids,
        users,
        adversary_weight=0.5,
        adversary_weighting="interaction",
        adversary_sample=16,
    )
    _perturb(model)
    batch = _batch(dataset)
    first = {key: batch[key][:16] for key in ("user_id", "gender")}
    _check_reversed_gradients(model, batch, first, {"gender": 0.5})
    model.head_loss_trackers["gender"].reset_state()
    model.compute_loss(batch, training=True)
    want = float(_head_loss(model, "gender", first))
    assert float(model.head_loss_trackers["gender"].result()) == pytest.approx(want, rel=1e-5)
    assert model.get_config()["adversary_sample"] == 16
    with pytest.raises(ValueError, match="`adversary_sample`"):
        _adversarial(user_ids, item_ids, users, adversary_sample=16)
    with pytest.raises(ValueError, match="`adversary_sample`"):
        _adversarial(
            user_ids, item_ids, users, adversary_weighting="interaction", adversary_sample=0
        )
