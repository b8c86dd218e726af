"""Tests for tfprivadv.datasets.synthetic: determinism, shards, the statistics the
generator promises (power-law popularity, attributes readable from histories), the
atomic write and argument errors. Sizes are tiny (<= 20k interactions)."""

from __future__ import annotations

import json

import numpy as np
import pandas as pd
import pytest
import scipy.sparse as sp
from sklearn.linear_model import LogisticRegression
from sklearn.metrics import roc_auc_score

from tfprivadv.datasets import SyntheticData, generate_synthetic, load_synthetic
from tfprivadv.datasets import synthetic as synthetic_module

SMALL = {"num_interactions": 20_000, "num_users": 1_000, "num_items": 300}


@pytest.fixture(scope="module")
def small(tmp_path_factory) -> SyntheticData:
    return generate_synthetic(
        tmp_path_factory.mktemp("synth") / "data", shard_size=6_000, seed=3, **SMALL
    )


def _tables(data: SyntheticData) -> list[pd.DataFrame]:
    return [data.interactions(), data.users(), data.items()]


def test_same_seed_same_data_other_seed_other_data(tmp_path, small):
    again = generate_synthetic(tmp_path / "again", shard_size=6_000, seed=3, **SMALL)
    for left, right in zip(_tables(small), _tables(again), strict=True):
        pd.testing.assert_frame_equal(left, right)
    other = generate_synthetic(tmp_path / "other", shard_size=6_000, seed=4, **SMALL)
    assert not small.interactions().equals(other.interactions())


def test_shards_columns_and_ids(small):
    assert small.shard_rows == (6_000, 6_000, 6_000, 2_000)
    assert small.num_interactions == 20_000
    assert [p.name for p in small.interaction_files][0] == "interactions-00000-of-00004.parquet"
    ratings = small.interactions()
    assert list(ratings.columns) == ["user_id", "item_id"]
    assert ratings.dtypes.tolist() == [np.int64, np.int64]
    assert ratings["user_id"].between(1, 1_000).all()
    assert ratings["item_id"].between(1, 300).all()
    # Every user has at least min_user_interactions (1) rows.
    assert ratings["user_id"].nunique() == 1_000
    users = small.users()
    assert list(users.columns) == ["user_id", "gender", "age_group"]
    assert set(users["gender"]) == {"F", "M"}
    assert set(users["age_group"]) <= {1, 18, 25, 35, 45, 50, 56}
    np.testing.assert_array_equal(small.item_ids, np.arange(1, 301))
    manifest = json.loads((small.path / "manifest.json").read_text())
    assert manifest["shard_rows"] == list(small.shard_rows)
    assert manifest["config"]["seed"] == 3


def test_rows_of_a_user_spread_over_shards(small):
    """Shards are random parts of the log, not blocks of users."""
    first = pd.read_parquet(small.interaction_files[0])
    assert first["user_id"].nunique() > 600
    assert not first["user_id"].is_monotonic_increasing


def test_popularity_is_heavy_tailed(small):
    counts = small.interactions()["item_id"].value_counts().to_numpy()
    top = counts[: max(1, len(counts) // 100)].sum() / counts.sum()
    assert top > 0.08  # top 1% of items: far more than 1% of the interactions
    activity = small.interactions()["user_id"].value_counts().to_numpy()
    assert activity.max() > 8 * np.median(activity)  # heavy-tailed users too


def _attacker_scores(data: SyntheticData) -> tuple[float, float, float, float]:
    """Gender AUC and age-group accuracy of a logistic regression on held-out
    users' normalized item-count vectors, and the majority-class accuracies."""
    ratings, users = data.interactions(), data.users()
    shape = (data.num_users, data.num_items)
    counts = sp.csr_matrix(
        (np.ones(len(ratings)), (ratings["user_id"] - 1, ratings["item_id"] - 1)), shape=shape
    )
    x = sp.csr_matrix(counts.multiply(1.0 / np.asarray(counts.sum(1))))
    half = data.num_users // 2
    gender = users["gender"].to_numpy() == "M"
    fitted = LogisticRegression(C=10.0, max_iter=2000).fit(x[:half], gender[:half])
    auc = roc_auc_score(gender[half:], fitted.predict_proba(x[half:])[:, 1])
    age = users["age_group"].to_numpy()
    fitted = LogisticRegression(C=10.0, max_iter=2000).fit(x[:half], age[:half])
    accuracy = fitted.score(x[half:], age[half:])
    values, frequency = np.unique(age[:half], return_counts=True)
    majority = float(np.mean(age[half:] == values[frequency.argmax()]))
    return auc, accuracy, majority, float(np.mean(gender[half:]))


def test_attributes_are_readable_from_histories(tmp_path, small):
    auc, accuracy, majority, _ = _attacker_scores(small)
    assert auc > 0.7, auc  # chance: 0.5 (seeds 0, 3, 7 give 0.83-0.95)
    assert accuracy > majority + 0.07, (accuracy, majority)
    # Control: without the attribute directions the same attacker is at chance.
    blind = generate_synthetic(tmp_path / "blind", seed=3, attribute_strength=0.0, **SMALL)
    auc, accuracy, majority, _ = _attacker_scores(blind)
    assert auc < 0.6, auc
    assert accuracy < majority + 0.03, (accuracy, majority)


def test_csv_matches_parquet(tmp_path, small):
    csv = generate_synthetic(tmp_path / "csv", format="csv", shard_size=6_000, seed=3, **SMALL)
    assert csv.interaction_files[0].suffix == ".csv"
    for left, right in zip(_tables(small), _tables(csv), strict=True):
        pd.testing.assert_frame_equal(left, right, check_dtype=False)


def test_existing_folder_needs_overwrite(tmp_path):
    kwargs = {"num_interactions": 500, "num_users": 50, "num_items": 20}
    target = tmp_path / "data"
    generate_synthetic(target, seed=0, **kwargs)
    with pytest.raises(FileExistsError, match="overwrite=True"):
        generate_synthetic(target, seed=1, **kwargs)
    replaced = generate_synthetic(target, seed=1, overwrite=True, **kwargs)
    assert replaced.config["seed"] == 1
    assert load_synthetic(target).config["seed"] == 1
    assert sorted(p.name for p in tmp_path.iterdir()) == ["data"]  # no leftovers


def test_failure_leaves_nothing_behind(tmp_path, monkeypatch):
    calls = []
    write = synthetic_module._write_table

    def failing(frame, path, format):
        calls.append(path)
        if len(calls) == 3:  # users and items written, then the first shard fails
            raise OSError("disk full")
        write(frame, path, format)

    monkeypatch.setattr(synthetic_module, "_write_table", failing)
    with pytest.raises(OSError, match="disk full"):
        generate_synthetic(tmp_path / "data", num_interactions=500, num_users=50, num_items=20)
    assert list(tmp_path.iterdir()) == []


def test_memory_is_bounded_by_shards_not_rows(tmp_path, monkeypatch):
    """The largest array written never exceeds one shard."""
    sizes = []
    write = synthetic_module._write_table

    def recording(frame, path, format):
        sizes.append(max(len(v) for v in frame.values()))
        write(frame, path, format)

    monkeypatch.setattr(synthetic_module, "_write_table", recording)
    generate_synthetic(
        tmp_path / "data", num_interactions=10_000, num_users=100, num_items=50, shard_size=1_000
    )
    assert len(sizes) == 2 + 10
    assert max(sizes[2:]) == 1_000


@pytest.mark.parametrize(
    ("kwargs", "error", "match"),
    [
        ({"num_interactions": 0}, ValueError, "`num_interactions` must be an int >= 1"),
        ({"num_interactions": 1.5}, TypeError, "`num_interactions` must be an int"),
        ({"num_users": 1}, ValueError, "`num_users`"),
        ({"format": "json"}, ValueError, "`format` must be one of 'parquet', 'csv'"),
        ({"shard_size": 0}, ValueError, "`shard_size`"),
        ({"popularity_exponent": -1.0}, ValueError, "`popularity_exponent`"),
        ({"seed": -1}, ValueError, "`seed`"),
        ({"overwrite": "yes"}, TypeError, "`overwrite` must be a bool"),
        ({"min_user_interactions": 20}, ValueError, "every user gets their minimum"),
    ],
)
def test_bad_arguments(tmp_path, kwargs, error, match):
    arguments = {"num_interactions": 500, "num_users": 50, "num_items": 20, **kwargs}
    with pytest.raises(error, match=match):
        generate_synthetic(tmp_path / "data", **arguments)
    assert list(tmp_path.iterdir()) == []


def test_bad_paths(tmp_path):
    with pytest.raises(TypeError, match="`output_dir` must be a path"):
        generate_synthetic(123)
    with pytest.raises(FileNotFoundError, match="manifest.json"):
        load_synthetic(tmp_path)
