"""Tests for tfprivadv.data: encode_attributes and the training_dataset pipeline."""

from __future__ import annotations

import math
from collections import Counter

import numpy as np
import pandas as pd
import pytest

from tfprivadv import data
from tfprivadv._keras import tf
from tfprivadv.data import EncodedAttributes, encode_attributes, training_dataset

ATTRIBUTES = ["gender", "age_group", "age"]


def _epoch(dataset: tf.data.Dataset) -> dict[str, np.ndarray]:
    """One pass over `dataset`, batches concatenated (the adversary sample too)."""
    batches = list(dataset)
    out = {
        name: np.concatenate([b[name].numpy() for b in batches])
        for name in batches[0]
        if name != "adversary"
    }
    if "adversary" in batches[0]:
        out["adversary"] = {
            name: np.stack([b["adversary"][name].numpy() for b in batches])
            for name in batches[0]["adversary"]
        }
    return out


def _pairs(epoch) -> list[tuple]:
    return list(zip(epoch["user_id"].tolist(), epoch["item_id"].tolist(), strict=True))


def _assert_epochs_equal(first, second):
    assert first.keys() == second.keys()
    for name in first:
        if name == "adversary":
            _assert_epochs_equal(first[name], second[name])
        else:
            np.testing.assert_array_equal(first[name], second[name])


# ------------------------------------------------------------------- structure
def test_element_structure_dtypes_and_shapes(ratings, users, item_ids):
    dataset = training_dataset(
        ratings,
        users,
        attributes=ATTRIBUTES,
        item_ids=item_ids,
        batch_size=64,
        num_negatives=3,
    )
    spec = dataset.element_spec
    assert set(spec) == {"user_id", "item_id", "neg_item_id", *ATTRIBUTES, "adversary"}
    assert spec["user_id"] == tf.TensorSpec((64,), tf.int64)
    assert spec["item_id"] == tf.TensorSpec((64,), tf.int64)
    assert spec["neg_item_id"] == tf.TensorSpec((64, 3), tf.int64)
    assert spec["gender"] == tf.TensorSpec((64,), tf.int32)
    assert spec["age_group"] == tf.TensorSpec((64,), tf.int32)
    assert spec["age"] == tf.TensorSpec((64,), tf.float32)
    adversary_size = min(64, ratings["user_id"].nunique(), 1024)
    assert spec["adversary"] == {
        "user_id": tf.TensorSpec((adversary_size,), tf.int64),
        "gender": tf.TensorSpec((adversary_size,), tf.int32),
        "age_group": tf.TensorSpec((adversary_size,), tf.int32),
        "age": tf.TensorSpec((adversary_size,), tf.float32),
    }
    expected_batches = math.ceil(len(ratings) / 64)
    assert int(dataset.cardinality()) == expected_batches == len(dataset)
    batches = list(dataset)
    assert len(batches) == expected_batches
    for batch in batches:
        assert batch["user_id"].shape == (64,)
        assert batch["neg_item_id"].shape == (64, 3)
        assert batch["adversary"]["user_id"].shape == (adversary_size,)


def test_without_attributes_there_are_no_labels(ratings):
    dataset = training_dataset(ratings, batch_size=50)
    assert set(dataset.element_spec) == {"user_id", "item_id", "neg_item_id"}
    assert len(dataset) == 8


@pytest.mark.parametrize("batch_size", [1, 7, 399, 400, 401, 800])
def test_every_batch_is_full(ratings, batch_size):
    dataset = training_dataset(ratings, batch_size=batch_size)
    expected = math.ceil(len(ratings) / batch_size)
    assert len(dataset) == expected
    sizes = [int(b["user_id"].shape[0]) for b in dataset]
    assert sizes == [batch_size] * expected


def test_batch_larger_than_twice_the_data(ratings):
    small = ratings.iloc[:10]
    dataset = training_dataset(small, batch_size=32)
    (batch,) = list(dataset)
    assert batch["user_id"].shape == (32,)
    pairs = Counter(_pairs(_epoch(dataset)))
    assert set(pairs) == set(_pairs(small)) and sum(pairs.values()) == 32


# ------------------------------------------------------------------- negatives
@pytest.mark.parametrize("num_items", [2, 3])
def test_negative_is_never_the_positive(num_items):
    rng = np.random.default_rng(num_items)
    ratings = pd.DataFrame(
        {
            "user_id": rng.integers(0, 20, 300),
            "item_id": rng.integers(0, num_items, 300),
        }
    )
    dataset = training_dataset(ratings, batch_size=64, num_negatives=5, seed=3)
    for _ in range(4):
        epoch = _epoch(dataset)
        negatives, positives = epoch["neg_item_id"], epoch["item_id"][:, None]
        assert (negatives != positives).all()
        assert np.isin(negatives, np.arange(num_items)).all()
        if num_items == 2:
            assert (negatives == 1 - positives).all()


def test_negatives_are_uniform_over_the_other_items():
    num_items = 5
    rng = np.random.default_rng(0)
    ratings = pd.DataFrame(
        {
            "user_id": rng.integers(0, 50, 1000),
            "item_id": rng.integers(0, num_items, 1000),
        }
    )
    catalog = np.arange(num_items) * 10 + 7
    ratings["item_id"] = catalog[ratings["item_id"]]
    epoch = _epoch(training_dataset(ratings, item_ids=catalog, batch_size=100, num_negatives=8))
    for positive in catalog:
        negatives = epoch["neg_item_id"][epoch["item_id"] == positive].ravel()
        counts = np.array([(negatives == item).sum() for item in catalog])
        assert counts[catalog == positive] == 0
        observed = counts[catalog != positive]
        expected = negatives.size / (num_items - 1)
        chi_square = ((observed - expected) ** 2 / expected).sum()
        assert chi_square < 25.0  # 3 degrees of freedom: p < 2e-5


def test_catalog_items_absent_from_ratings_are_drawn(ratings, item_ids):
    wider = np.concatenate([item_ids, [500, 501]])
    epoch = _epoch(training_dataset(ratings, item_ids=wider, batch_size=100))
    assert {500, 501} <= set(epoch["neg_item_id"].ravel().tolist())


# ------------------------------------------------------------------- order and seeds
def test_each_epoch_is_a_permutation_plus_wrap_around(ratings):
    batch_size = 64
    n = len(ratings)
    padded = math.ceil(n / batch_size) * batch_size
    dataset = training_dataset(ratings, batch_size=batch_size, seed=5)
    rows = sorted(_pairs(ratings))
    epochs = [_pairs(_epoch(dataset)) for _ in range(2)]
    for pairs in epochs:
        assert len(pairs) == padded
        assert sorted(pairs[:n]) == rows
        assert pairs[n:] == pairs[: padded - n]
    assert epochs[0] != epochs[1]


def test_shuffle_false_keeps_file_order(ratings):
    dataset = training_dataset(ratings, batch_size=64, shuffle=False)
    pairs = _pairs(_epoch(dataset))
    rows = _pairs(ratings)
    assert pairs[: len(rows)] == rows
    assert pairs[len(rows) :] == rows[: len(pairs) - len(rows)]


def test_same_seed_same_batches_different_seed_differs(ratings, users):
    def build(seed):
        return training_dataset(
            ratings,
            users,
            attributes=["gender"],
            batch_size=64,
            num_negatives=2,
            seed=seed,
        )

    first, second, other = build(11), build(11), build(12)
    first_epochs = [_epoch(first) for _ in range(2)]
    second_epochs = [_epoch(second) for _ in range(2)]
    for a, b in zip(first_epochs, second_epochs, strict=True):
        _assert_epochs_equal(a, b)
    # The two epochs of one dataset differ (order, negatives and user sample).
    for name in ("user_id", "neg_item_id"):
        assert not np.array_equal(first_epochs[0][name], first_epochs[1][name])
    assert not np.array_equal(
        first_epochs[0]["adversary"]["user_id"], first_epochs[1]["adversary"]["user_id"]
    )
    other_epoch = _epoch(other)
    assert not np.array_equal(other_epoch["user_id"], first_epochs[0]["user_id"])
    assert not np.array_equal(other_epoch["neg_item_id"], first_epochs[0]["neg_item_id"])


def _split_epochs(dataset: tf.data.Dataset) -> list[dict]:
    """A multi-epoch stream's batches, stacked per epoch."""
    steps = dataset.steps_per_epoch
    batches = list(dataset.as_numpy_iterator())
    assert len(batches) % steps == 0
    return [
        tf.nest.map_structure(lambda *b: np.concatenate(b), *batches[i : i + steps])
        for i in range(0, len(batches), steps)
    ]


def test_epoch_stream_resumes_with_the_same_batches(ratings, users):
    def build(**kwargs):
        return training_dataset(
            ratings, users, attributes=["gender"], batch_size=64, seed=4, **kwargs
        )

    full = build(epochs=4)
    assert (
        full.steps_per_epoch
        == math.ceil(len(ratings) / 64)
        == data.batches_per_epoch(len(ratings), 64)
    )
    assert int(full.cardinality()) == 4 * full.steps_per_epoch
    epochs = _split_epochs(full)
    resumed = _split_epochs(build(epochs=4, initial_epoch=2))
    assert len(epochs) == 4 and len(resumed) == 2
    for a, b in zip(epochs[2:], resumed, strict=True):
        _assert_epochs_equal(a, b)
    # Each epoch of the stream is a fresh permutation with fresh negatives.
    rows = sorted(_pairs(ratings))
    for epoch in epochs:
        assert sorted(_pairs(epoch)[: len(ratings)]) == rows
    assert not np.array_equal(epochs[0]["user_id"], epochs[1]["user_id"])
    assert not np.array_equal(epochs[0]["neg_item_id"], epochs[1]["neg_item_id"])
    # A stream is the same on every pass (a one-epoch dataset is not).
    _assert_epochs_equal(_split_epochs(full)[3], epochs[3])


def test_epoch_stream_arguments(ratings):
    with pytest.raises(ValueError, match="`initial_epoch` \\(2\\) needs `epochs`"):
        training_dataset(ratings, initial_epoch=2)
    with pytest.raises(ValueError, match="`epochs`"):
        training_dataset(ratings, epochs=2, initial_epoch=2)
    with pytest.raises(ValueError, match="`initial_epoch`"):
        training_dataset(ratings, epochs=2, initial_epoch=-1)
    with pytest.raises(ValueError, match="`num_interactions`"):
        data.batches_per_epoch(0, 64)


# ------------------------------------------------------------------- labels
def _expected_labels(users: pd.DataFrame) -> dict[str, dict]:
    """Attribute -> {user_id: label} as encode_attributes should produce them."""
    genders = {"F": 0, "M": 1}
    groups = {g: i for i, g in enumerate(sorted(users["age_group"].unique()))}
    rows = users.set_index("user_id")
    return {
        "gender": rows["gender"].map(genders).to_dict(),
        "age_group": rows["age_group"].map(groups).to_dict(),
        "age": rows["age"].astype(np.float32).to_dict(),
    }


def test_labels_match_the_users_frame(ratings, users):
    expected = _expected_labels(users)
    dataset = training_dataset(ratings, users, attributes=ATTRIBUTES, batch_size=64)
    epoch = _epoch(dataset)
    for name in ATTRIBUTES:
        want = np.array([expected[name][u] for u in epoch["user_id"].tolist()])
        np.testing.assert_array_equal(epoch[name], want)
        adversary = epoch["adversary"]
        sampled = [expected[name][u] for u in adversary["user_id"].ravel().tolist()]
        np.testing.assert_array_equal(adversary[name].ravel(), sampled)
    assert np.isnan(epoch["age"]).any()  # the user with an unknown age is included


def test_users_missing_from_users_frame_get_unknown_labels(ratings, users):
    extra = pd.DataFrame({"user_id": [99, 99], "item_id": [100, 101]})
    dataset = training_dataset(
        pd.concat([ratings, extra], ignore_index=True),
        users,
        attributes=ATTRIBUTES,
        batch_size=64,
    )
    epoch = _epoch(dataset)
    unknown = epoch["user_id"] == 99
    assert unknown.sum() >= 2
    assert (epoch["gender"][unknown] == -1).all()
    assert (epoch["age_group"][unknown] == -1).all()
    assert np.isnan(epoch["age"][unknown]).all()


def test_adversary_sample_draws_only_rated_users(ratings, users):
    rated = ratings[ratings["user_id"] <= 15]
    dataset = training_dataset(
        rated, users, attributes=["gender"], batch_size=32, adversary_batch_size=10
    )
    assert dataset.element_spec["adversary"]["user_id"].shape == (10,)
    seen = set()
    for _ in range(3):
        sample = _epoch(dataset)["adversary"]["user_id"].ravel().tolist()
        seen.update(sample)
    assert seen <= set(rated["user_id"])
    assert len(seen) > 10  # drawn across users, not a fixed subset


def test_default_adversary_batch_size_is_capped_by_users(ratings, users):
    rated = ratings[ratings["user_id"] <= 5]
    dataset = training_dataset(rated, users, attributes=["gender"], batch_size=16)
    assert dataset.element_spec["adversary"]["user_id"].shape == (5,)


def test_encoded_attributes_can_be_passed(ratings, users):
    encoded = encode_attributes(users, ["gender"])
    kwargs = {"attributes": ["gender"], "batch_size": 64, "seed": 1}
    from_frame = _epoch(training_dataset(ratings, users, **kwargs))
    from_encoded = _epoch(training_dataset(ratings, encoded, **kwargs))
    _assert_epochs_equal(from_frame, from_encoded)


# ------------------------------------------------------------------- encode_attributes
def test_encode_attributes_codes_and_kinds(users):
    users.loc[5, "gender"] = None
    encoded = encode_attributes(users, ATTRIBUTES)
    assert isinstance(encoded, EncodedAttributes)
    assert encoded.kinds == {
        "gender": "categorical",
        "age_group": "categorical",
        "age": "continuous",
    }
    assert encoded.vocabularies["gender"] == ["F", "M"]
    groups = sorted(users["age_group"].unique().tolist())
    assert encoded.vocabularies["age_group"] == groups
    assert encoded.num_classes("age_group") == len(groups)
    gender = encoded.values["gender"]
    assert gender.dtype == np.int32
    assert gender[5] == -1
    want = users["gender"].map({"F": 0, "M": 1}).fillna(-1).to_numpy()
    np.testing.assert_array_equal(gender, want)
    np.testing.assert_array_equal(
        encoded.values["age_group"], [groups.index(g) for g in users["age_group"]]
    )
    age = encoded.values["age"]
    assert age.dtype == np.float32
    np.testing.assert_array_equal(age, users["age"].to_numpy(np.float32))
    assert np.isnan(age[3])


def test_encode_attributes_explicit_kinds(users):
    encoded = encode_attributes(users, {"age_group": "continuous", "age": "continuous"})
    assert encoded.kinds["age_group"] == "continuous"
    np.testing.assert_array_equal(
        encoded.values["age_group"], users["age_group"].to_numpy(np.float32)
    )
    with pytest.raises(ValueError, match="age"):
        encode_attributes(users, {"age": "ordinal"})


def test_for_users_unknown_users(users):
    encoded = encode_attributes(users, ["gender", "age"])
    labels = encoded.for_users([2, 12345, 1])
    assert labels["gender"][1] == -1
    assert np.isnan(labels["age"][1])
    np.testing.assert_array_equal(labels["gender"][[0, 2]], encoded.values["gender"][[1, 0]])


def test_encode_attributes_errors(users):
    with pytest.raises(ValueError, match="income"):
        encode_attributes(users, ["income"])
    with pytest.raises(TypeError, match="`attributes`"):
        encode_attributes(users, "gender")
    with pytest.raises(ValueError, match="one row per user"):
        encode_attributes(pd.concat([users, users.iloc[:1]]), ["gender"])
    with pytest.raises(ValueError, match="fewer than 2 classes"):
        encode_attributes(users.assign(gender="F"), ["gender"])
    with pytest.raises(TypeError, match="`users`"):
        encode_attributes(users.to_dict(), ["gender"])


# ------------------------------------------------------------------- errors
def test_training_dataset_errors(ratings, users, item_ids):
    with pytest.raises(ValueError, match="item_id"):
        training_dataset(ratings.drop(columns="item_id"))
    with pytest.raises(TypeError, match="`ratings`"):
        training_dataset(ratings.to_numpy())
    with pytest.raises(ValueError, match="empty"):
        training_dataset(ratings.iloc[:0])
    with pytest.raises(ValueError, match="item_ids"):
        training_dataset(ratings, item_ids=item_ids[:-3])
    with pytest.raises(ValueError, match="`users`"):
        training_dataset(ratings, attributes=["gender"])
    with pytest.raises(ValueError, match="fewer than 2 classes"):
        training_dataset(ratings, users.assign(gender="M"), attributes=["gender"])
    with pytest.raises(ValueError, match="at least 2 items"):
        training_dataset(ratings.assign(item_id=100))
    encoded = encode_attributes(users, ["gender"])
    with pytest.raises(ValueError, match="age"):
        training_dataset(ratings, encoded, attributes=["age"])


@pytest.mark.parametrize(
    ("kwargs", "error", "match"),
    [
        ({"batch_size": 0}, ValueError, "`batch_size`"),
        ({"batch_size": 1.5}, TypeError, "`batch_size`"),
        ({"batch_size": "64"}, TypeError, "`batch_size`"),
        ({"num_negatives": 0}, ValueError, "`num_negatives`"),
        ({"seed": 0.5}, TypeError, "`seed`"),
    ],
)
def test_bad_numeric_arguments(ratings, kwargs, error, match):
    with pytest.raises(error, match=match):
        training_dataset(ratings, **kwargs)


def test_bad_adversary_batch_size(ratings, users):
    with pytest.raises(ValueError, match="`adversary_batch_size`"):
        training_dataset(ratings, users, attributes=["gender"], adversary_batch_size=0)


def test_module_exports():
    assert data.KINDS == ("categorical", "continuous")
