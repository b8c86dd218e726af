"""Tests for tfprivadv.evaluation: full-ranking HR@k and NDCG@k."""

from __future__ import annotations

import math

import numpy as np
import pandas as pd
import pytest

from tfprivadv.evaluation import Evaluation, evaluate, popularity_baseline, rank_items
from tfprivadv.heads import CategoricalHead
from tfprivadv.models import BPRRetrievalModel, PrivacyAdversarialModel

CATALOG = np.array([10, 20, 30, 40, 50])
TRAIN = pd.DataFrame({"user_id": [1, 2, 2, 9], "item_id": [20, 10, 30, 40]})
TEST = pd.DataFrame({"user_id": [1, 2, 3], "item_id": [30, 40, 99]})
SCORES = np.array(
    [
        # User 1 saw item 20 (score 5.0, excluded): only 10 and 40 beat item 30.
        [0.9, 5.0, 0.5, 0.7, 0.1],
        # User 2 saw 10 and 30 (excluded): nothing beats item 40.
        [9.0, 1.0, 9.0, 3.0, 2.0],
        # User 3's held-out item 99 is not in the catalog: a miss.
        [1.0, 2.0, 3.0, 4.0, 5.0],
    ]
)


def test_hand_computed_ranks_hits_and_ndcg():
    result = rank_items(SCORES, CATALOG, TEST, TRAIN, k=3)
    assert isinstance(result, Evaluation)
    per_user = result.per_user
    assert per_user["user_id"].tolist() == [1, 2, 3]
    assert per_user["item_id"].tolist() == [30, 40, 99]
    np.testing.assert_array_equal(per_user["rank"].to_numpy()[:2], [2.0, 0.0])
    assert math.isnan(per_user["rank"].iloc[2])
    assert per_user["hit"].tolist() == [True, True, False]
    np.testing.assert_allclose(per_user["ndcg"], [1 / math.log2(4), 1.0, 0.0])
    assert result.metrics == pytest.approx({"hr@3": 2 / 3, "ndcg@3": (0.5 + 1.0) / 3, "users": 3})
    assert result.hr == pytest.approx(2 / 3)
    assert result.ndcg == pytest.approx(0.5)
    assert result.k == 3


def test_cut_off_one():
    result = rank_items(SCORES, CATALOG, TEST, TRAIN, k=1)
    assert result.per_user["hit"].tolist() == [False, True, False]
    assert result.metrics["hr@1"] == pytest.approx(1 / 3)
    assert result.metrics["ndcg@1"] == pytest.approx(1 / 3)


def test_seen_items_are_not_candidates():
    without_train = rank_items(SCORES, CATALOG, TEST, TRAIN.iloc[:0], k=3)
    # Counted as a candidate, user 1's seen item 20 (score 5.0) would push 30 to 3rd.
    assert without_train.per_user["rank"].iloc[0] == 3.0
    assert not without_train.per_user["hit"].iloc[0]
    # Seen items of *other* users are not excluded (user 9's item 40 still counts).
    assert rank_items(SCORES, CATALOG, TEST, TRAIN, k=3).per_user["rank"].iloc[0] == 2.0
    # The scores passed in are not modified.
    assert SCORES[0, 1] == 5.0


def test_ties_count_as_mid_rank():
    scores = np.array([[1.0, 2.0, 2.0, 2.0, 0.0]])
    test = pd.DataFrame({"user_id": [1], "item_id": [20]})
    result = rank_items(scores, CATALOG, test, TRAIN.iloc[:0], k=2)
    # Two other candidates tie with item 20: rank 0 + 2 / 2 = 1.
    assert result.per_user["rank"].iloc[0] == 1.0
    assert result.per_user["ndcg"].iloc[0] == pytest.approx(1 / math.log2(3))
    assert not rank_items(scores, CATALOG, test, TRAIN.iloc[:0], k=1).per_user["hit"][0]


def test_constant_scorer_scores_no_hits():
    rng = np.random.default_rng(0)
    catalog = np.arange(100)
    test = pd.DataFrame({"user_id": np.arange(20), "item_id": rng.choice(100, 20)})
    train = pd.DataFrame({"user_id": np.arange(20), "item_id": (test["item_id"] + 1) % 100})
    result = rank_items(np.zeros((20, 100)), catalog, test, train, k=10)
    # 98 tied other candidates: every held-out item sits at rank 49, not 0.
    np.testing.assert_array_equal(result.per_user["rank"], 49.0)
    assert result.metrics["hr@10"] == 0.0
    assert result.metrics["ndcg@10"] == 0.0
    # With k above the mid-rank every user is a hit, at the mid-rank's NDCG.
    wide = rank_items(np.zeros((20, 100)), catalog, test, train, k=50)
    assert wide.metrics["hr@50"] == 1.0
    assert wide.metrics["ndcg@50"] == pytest.approx(1 / math.log2(51))


def test_random_scorer_hit_rate_is_about_k_over_candidates():
    rng = np.random.default_rng(1)
    users, items, k = 2000, 50, 5
    test = pd.DataFrame({"user_id": np.arange(users), "item_id": rng.choice(items, users)})
    scores = rng.normal(size=(users, items))
    result = rank_items(scores, np.arange(items), test, test.iloc[:0], k=k)
    assert result.metrics[f"hr@{k}"] == pytest.approx(k / items, abs=0.03)


# ------------------------------------------------------------------- evaluate
@pytest.fixture
def model(user_ids, item_ids):
    model = BPRRetrievalModel(user_ids, item_ids, embedding_dim=6, seed=0)
    rng = np.random.default_rng(0)
    for variable in model.trainable_variables:
        variable.assign(rng.normal(size=variable.shape).astype(np.float32))
    return model


@pytest.fixture
def split(ratings):
    test = ratings.groupby("user_id").tail(1)
    train = ratings.drop(test.index)
    return train, test.reset_index(drop=True)


def test_evaluate_equals_rank_items_on_score_items(model, split):
    train, test = split
    result = evaluate(model, train, test, k=5, batch_size=7)
    scores = model.score_items(test["user_id"].to_numpy())
    expected = rank_items(scores, model.item_vocabulary, test, train, k=5)
    pd.testing.assert_frame_equal(result.per_user, expected.per_user)
    assert result.metrics == pytest.approx(expected.metrics)
    assert result.metrics["users"] == len(test)
    # Seen items never count: ranks are below the number of unseen items.
    seen = train.groupby("user_id").size()
    limit = len(model.item_vocabulary) - test["user_id"].map(seen).fillna(0).to_numpy()
    assert (result.per_user["rank"].to_numpy() < limit).all()


def test_evaluate_unwraps_the_adversarial_model(model, split):
    train, test = split
    wrapped = PrivacyAdversarialModel(model, heads={"gender": CategoricalHead(2)})
    a = evaluate(wrapped, train, test, k=10)
    b = evaluate(model, train, test, k=10)
    pd.testing.assert_frame_equal(a.per_user, b.per_user)
    assert a.metrics == b.metrics


def test_popularity_baseline():
    train = pd.DataFrame(
        {
            "user_id": [1, 2, 3, 1, 2, 3, 4],
            "item_id": ["A", "A", "A", "B", "B", "C", "D"],
        }
    )
    # Counts: A 3, B 2, C 1, D 1 (C and D tie).
    test = pd.DataFrame({"user_id": [4, 5, 3, 1], "item_id": ["B", "C", "B", "Z"]})
    result = popularity_baseline(train, test, k=2)
    ranks = result.per_user["rank"].to_numpy()
    # User 4 saw D: candidates A, B, C -> B is 2nd (rank 1).
    # User 5 saw nothing: C ties with D behind A and B -> 2 + 1 / 2.
    # User 3 saw A and C: B is first among B, D.
    np.testing.assert_array_equal(ranks[:3], [1.0, 2.5, 0.0])
    assert math.isnan(ranks[3])  # Z was never trained on: not in the catalog
    assert result.per_user["hit"].tolist() == [True, False, True, False]
    assert result.metrics["hr@2"] == pytest.approx(0.5)
    assert result.metrics["ndcg@2"] == pytest.approx((1 / math.log2(3) + 1.0) / 4)


# ------------------------------------------------------------------- errors
def test_errors(model, split):
    train, test = split
    duplicated = pd.concat([test, test.iloc[:1]], ignore_index=True)
    with pytest.raises(ValueError, match="`test`"):
        evaluate(model, train, duplicated)
    with pytest.raises(ValueError, match="`test`"):
        popularity_baseline(train, duplicated)
    with pytest.raises(ValueError, match="item_id"):
        evaluate(model, train, test.drop(columns="item_id"))
    with pytest.raises(ValueError, match="`train`"):
        evaluate(model, train.rename(columns={"user_id": "user"}), test)
    with pytest.raises(TypeError, match="`train`"):
        popularity_baseline(train.to_numpy(), test)
    with pytest.raises(ValueError, match="`k`"):
        evaluate(model, train, test, k=0)
    with pytest.raises(TypeError, match="`k`"):
        popularity_baseline(train, test, k=2.0)
