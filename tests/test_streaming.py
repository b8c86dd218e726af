"""Tests for tfprivadv.streaming.file_training_dataset: same elements as the
in-memory `training_dataset`, every interaction once an epoch (plus the documented
wrap), resumable epochs, negatives, labels, Parquet = CSV, errors, and training a
model on the stream. Data: a tiny synthetic log (5,000 interactions)."""

from __future__ import annotations

import math
from collections import Counter

import numpy as np
import pandas as pd
import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from tfprivadv._keras import keras
from tfprivadv.data import encode_attributes, training_dataset
from tfprivadv.datasets import SyntheticData, generate_synthetic
from tfprivadv.heads import CategoricalHead
from tfprivadv.models import BPRRetrievalModel, PrivacyAdversarialModel
from tfprivadv.streaming import file_training_dataset

N = 5_000
ATTRIBUTES = ["gender", "age_group"]
SIZES = {"num_interactions": N, "num_users": 200, "num_items": 100, "shard_size": 1_500}


@pytest.fixture(scope="module")
def parquet(tmp_path_factory) -> SyntheticData:
    return generate_synthetic(tmp_path_factory.mktemp("stream") / "pq", seed=5, **SIZES)


@pytest.fixture(scope="module")
def csv(tmp_path_factory) -> SyntheticData:
    return generate_synthetic(
        tmp_path_factory.mktemp("stream") / "csv", format="csv", seed=5, **SIZES
    )


def _stream(data: SyntheticData, **kwargs):
    kwargs = {
        "attributes": ATTRIBUTES,
        "item_ids": data.item_ids,
        "batch_size": 512,
        "shuffle_buffer": 2_000,
        "seed": 1,
        **kwargs,
    }
    return file_training_dataset(data.interaction_files, data.users(), **kwargs)


def _numpy(batches) -> list[dict]:
    def convert(value):
        return (
            {k: convert(v) for k, v in value.items()} if isinstance(value, dict) else value.numpy()
        )

    return [convert(batch) for batch in batches]


def _pairs(batches: list[dict]) -> Counter:
    users = np.concatenate([b["user_id"] for b in batches]).tolist()
    items = np.concatenate([b["item_id"] for b in batches]).tolist()
    return Counter(zip(users, items, strict=True))


def _assert_same_batches(left: list[dict], right: list[dict]) -> None:
    assert len(left) == len(right)
    for a, b in zip(left, right, strict=True):
        assert a.keys() == b.keys()
        for key in a:
            if key == "adversary":
                _assert_same_batches([a[key]], [b[key]])
            else:
                np.testing.assert_array_equal(a[key], b[key])


@pytest.mark.parametrize(
    "kwargs",
    [
        {},
        {"num_negatives": 3, "adversary_batch_size": 32},
        {"attributes": []},
        {"epochs": 3, "initial_epoch": 1},
    ],
)
def test_element_spec_matches_training_dataset(parquet, kwargs):
    streamed = _stream(parquet, **kwargs)
    options = {k: v for k, v in kwargs.items()}
    in_memory = training_dataset(
        parquet.interactions(),
        parquet.users(),
        attributes=options.pop("attributes", ATTRIBUTES),
        item_ids=parquet.item_ids,
        batch_size=512,
        **options,
    )
    assert streamed.element_spec == in_memory.element_spec
    assert int(streamed.cardinality()) == int(in_memory.cardinality())
    assert streamed.steps_per_epoch == in_memory.steps_per_epoch == math.ceil(N / 512)


def test_every_interaction_once_per_epoch_plus_wrap(parquet):
    batches = _numpy(_stream(parquet))
    assert len(batches) == math.ceil(N / 512) == 10
    assert all(len(b["user_id"]) == 512 for b in batches)
    want = Counter(zip(*parquet.interactions().to_numpy().T.tolist(), strict=True))
    got = _pairs(batches)
    assert not want - got  # nothing missing
    assert sum((got - want).values()) == 10 * 512 - N  # only the wrap repeats
    # The wrap completes the last batch with the epoch's first rows.
    tail = 10 * 512 - N
    np.testing.assert_array_equal(batches[-1]["user_id"][-tail:], batches[0]["user_id"][:tail])
    np.testing.assert_array_equal(batches[-1]["item_id"][-tail:], batches[0]["item_id"][:tail])


def test_rows_are_shuffled_across_files(parquet):
    first = _numpy(_stream(parquet, batch_size=1_000).take(1))[0]["user_id"]
    file_order = pd.read_parquet(parquet.interaction_files[0])["user_id"].to_numpy()[:1_000]
    assert not np.array_equal(first, file_order)
    unshuffled = _numpy(_stream(parquet, batch_size=1_000, shuffle_buffer=0).take(1))[0]
    np.testing.assert_array_equal(unshuffled["user_id"], file_order)


def test_resumed_epoch_equals_uninterrupted(parquet):
    full = _numpy(_stream(parquet, epochs=3))
    resumed = _numpy(_stream(parquet, epochs=3, initial_epoch=2))
    per_epoch = math.ceil(N / 512)
    assert len(full) == 3 * per_epoch and len(resumed) == per_epoch
    _assert_same_batches(full[2 * per_epoch :], resumed)
    # Epochs differ from one another, and another seed gives another stream.
    assert not np.array_equal(full[0]["user_id"], full[per_epoch]["user_id"])
    other = _numpy(_stream(parquet, epochs=3, initial_epoch=2, seed=2))
    assert not np.array_equal(other[0]["user_id"], resumed[0]["user_id"])


def test_passes_rerandomize_but_are_fixed_by_seed(parquet):
    dataset = _stream(parquet)
    first, second = _numpy(dataset), _numpy(dataset)
    assert not np.array_equal(first[0]["user_id"], second[0]["user_id"])
    want = Counter(zip(*parquet.interactions().to_numpy().T.tolist(), strict=True))
    assert not want - _pairs(first) and not want - _pairs(second)
    _assert_same_batches(first, _numpy(_stream(parquet)))


def test_negatives_are_uniform_over_the_catalog_without_the_positive(parquet):
    batches = _numpy(_stream(parquet, num_negatives=4, epochs=2))
    negatives = np.concatenate([b["neg_item_id"] for b in batches])
    positives = np.concatenate([b["item_id"] for b in batches])
    assert negatives.shape == (len(positives), 4)
    assert (negatives != positives[:, None]).all()
    counts = np.bincount(negatives.ravel(), minlength=101)[1:]
    assert counts.min() > 0 and counts.max() < 2 * counts.mean()  # ~uniform, all 100 items


def test_labels_match_the_users_table(parquet):
    users = parquet.users()
    users = users[users["user_id"] % 10 != 0]  # users missing from the table: unknown
    encoded = encode_attributes(users, ATTRIBUTES)
    dataset = file_training_dataset(
        parquet.interaction_files, users, attributes=ATTRIBUTES, batch_size=500, seed=0
    )
    seen_unknown = False
    for batch in _numpy(dataset):
        for part in (batch, batch["adversary"]):
            expected = encoded.for_users(part["user_id"])
            for name in ATTRIBUTES:
                np.testing.assert_array_equal(part[name], expected[name])
            seen_unknown |= bool((part["gender"] == -1).any())
    assert seen_unknown
    # The adversary samples the users that occur in the files.
    sample = np.concatenate([b["adversary"]["user_id"] for b in _numpy(dataset)])
    assert set(sample) <= set(parquet.interactions()["user_id"])


def test_parquet_and_csv_give_the_same_interactions(parquet, csv):
    kwargs = {"batch_size": 500}  # divides N: no wrap
    from_parquet = _pairs(_numpy(_stream(parquet, **kwargs)))
    from_csv = _pairs(_numpy(_stream(csv, **kwargs)))
    assert from_parquet == from_csv
    assert sum(from_csv.values()) == N


def test_glob_row_groups_and_string_ids(tmp_path):
    rows = 3_000
    rng = np.random.default_rng(0)
    frame = pd.DataFrame(
        {
            "user_id": [f"u{i}" for i in rng.integers(0, 50, rows)],
            "item_id": rng.integers(0, 40, rows).astype(np.int32),
            "rating": rng.random(rows),
        }
    )
    for part in range(2):
        table = pa.Table.from_pandas(frame.iloc[part::2], preserve_index=False)
        pq.write_table(table, tmp_path / f"part-{part}.parquet", row_group_size=300)
    users = pd.DataFrame({"user_id": [f"u{i}" for i in range(50)], "gender": ["F", "M"] * 25})
    kwargs = {"attributes": ["gender"], "batch_size": 256, "seed": 0}
    streamed = file_training_dataset(str(tmp_path / "*.parquet"), users, **kwargs)
    ratings = frame.astype({"item_id": np.int64})
    in_memory = training_dataset(ratings, users, **kwargs)
    assert streamed.element_spec == in_memory.element_spec
    got = Counter({(u.decode(), i): c for (u, i), c in _pairs(_numpy(streamed)).items()})
    want = Counter(zip(ratings["user_id"].tolist(), ratings["item_id"].tolist(), strict=True))
    assert not want - got and sum(got.values()) == math.ceil(rows / 256) * 256


def test_fit_on_a_streamed_dataset(parquet):
    users = parquet.users()
    encoded = encode_attributes(users, ATTRIBUTES)
    dataset = _stream(parquet, epochs=2, batch_size=256)
    recommender = BPRRetrievalModel(
        users["user_id"].to_numpy(), parquet.item_ids, embedding_dim=8, seed=0
    )
    heads = {
        name: CategoricalHead(encoded.num_classes(name), hidden_units=(8,)) for name in ATTRIBUTES
    }
    model = PrivacyAdversarialModel(recommender, heads, adversary_weight=0.5)
    model.compile(optimizer=keras.optimizers.Adam(0.05), jit_compile=False)
    history = model.fit(dataset, epochs=2, verbose=0).history
    assert len(history["loss"]) == 2
    assert all(np.isfinite(v) for v in history["loss"])
    assert history["loss"][1] < history["loss"][0]


@pytest.mark.parametrize(
    ("paths", "kwargs", "error", "match"),
    [
        ([], {}, ValueError, "`paths` must be .* Received an empty list"),
        (123, {}, TypeError, "`paths` must be a file path, a glob pattern"),
        ("missing/*.parquet", {}, FileNotFoundError, "matches no file"),
        ("missing.parquet", {}, FileNotFoundError, "is not a file"),
        (None, {"batch_size": 0}, ValueError, "`batch_size` must be an int >= 1"),
        (None, {"shuffle_buffer": 1.5}, TypeError, "`shuffle_buffer` must be an int"),
        (None, {"initial_epoch": 1}, ValueError, "`initial_epoch` .* needs `epochs`"),
        (None, {"epochs": 2, "initial_epoch": 2}, ValueError, "`epochs` must be an int >= 3"),
        (None, {"attributes": "gender"}, TypeError, "`attributes` must be a list"),
        (None, {"item_ids": [1, 2, 3]}, ValueError, "items outside `item_ids`"),
        (None, {"users": None}, ValueError, "`users` is None"),
    ],
)
def test_bad_arguments(parquet, tmp_path, paths, kwargs, error, match):
    if isinstance(paths, str):
        paths = str(tmp_path / paths)
    elif paths is None:
        paths = parquet.interaction_files
    arguments = {"users": parquet.users(), "attributes": ATTRIBUTES, **kwargs}
    with pytest.raises(error, match=match):
        file_training_dataset(paths, **arguments)


def test_bad_files(tmp_path):
    (tmp_path / "log.json").write_text("{}")
    with pytest.raises(ValueError, match=r"suffix '\.json'"):
        file_training_dataset(tmp_path / "log.json")
    pd.DataFrame({"user": [1], "item_id": [2]}).to_csv(tmp_path / "a.csv", index=False)
    with pytest.raises(ValueError, match=r"lacks the column\(s\) \['user_id'\]"):
        file_training_dataset(tmp_path / "a.csv")
    pd.DataFrame({"user_id": [1.5], "item_id": [2]}).to_csv(tmp_path / "b.csv", index=False)
    with pytest.raises(TypeError, match="integer or string ids"):
        file_training_dataset(tmp_path / "b.csv")
    pd.DataFrame({"user_id": [1], "item_id": [2]}).to_csv(tmp_path / "c.csv", index=False)
    pd.DataFrame({"user_id": ["x"], "item_id": [2]}).to_csv(tmp_path / "d.csv", index=False)
    with pytest.raises(TypeError, match="same id type"):
        file_training_dataset([tmp_path / "c.csv", tmp_path / "d.csv"])
