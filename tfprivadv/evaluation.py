"""Full-ranking top-k evaluation: HR@k (the paper's accuracy@k) and NDCG@k."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

import numpy as np
import pandas as pd

from tfprivadv._validation import check_columns, check_int


@dataclass(frozen=True)
class Evaluation:
    """Result of `evaluate`.

    Attributes:
        k: The cut-off.
        metrics: `{"hr@k": ..., "ndcg@k": ..., "users": n}` averaged over test users.
        per_user: One row per test user: `user_id`, `item_id` (held out), `rank`
            (0 = best, mid-rank on ties, NaN if the item is not in the catalog),
            `hit`, `ndcg`.
    """

    k: int
    metrics: dict[str, float]
    per_user: pd.DataFrame = field(repr=False)

    @property
    def hr(self) -> float:
        return self.metrics[f"hr@{self.k}"]

    @property
    def ndcg(self) -> float:
        return self.metrics[f"ndcg@{self.k}"]


def _unwrap(model: Any) -> Any:
    # A PrivacyAdversarialModel ranks with the recommender it wraps.
    return getattr(model, "retrieval_model", model)


def rank_items(
    scores: np.ndarray,
    catalog: np.ndarray,
    test: pd.DataFrame,
    train: pd.DataFrame,
    *,
    k: int,
) -> Evaluation:
    """Evaluates a dense score matrix (one row per test user, in `test` order).

    The candidates of a user are all catalog items they did not interact with in
    `train`. Ties count as the mid-rank, so a constant scorer does not score hits.
    A held-out item outside the catalog is a miss.
    """
    users = test["user_id"].to_numpy()
    rows = pd.DataFrame({"user_id": users, "row": np.arange(len(users))})
    seen = train[["user_id", "item_id"]].merge(rows, on="user_id")
    seen_cols = pd.Index(catalog).get_indexer(seen["item_id"].to_numpy())
    seen_rows = seen["row"].to_numpy()[seen_cols >= 0]
    seen_cols = seen_cols[seen_cols >= 0]

    test_cols = pd.Index(catalog).get_indexer(test["item_id"].to_numpy())
    in_catalog = test_cols >= 0
    scores = np.array(scores, dtype=np.float64, copy=True)
    target = np.full(len(users), np.nan)
    target[in_catalog] = scores[np.flatnonzero(in_catalog), test_cols[in_catalog]]
    scores[seen_rows, seen_cols] = -np.inf
    # The held-out item stays a candidate even if it also appears in `train`.
    scores[np.flatnonzero(in_catalog), test_cols[in_catalog]] = target[in_catalog]
    with np.errstate(invalid="ignore"):
        greater = (scores > target[:, None]).sum(axis=1)
        ties = (scores == target[:, None]).sum(axis=1) - 1
    rank = np.where(in_catalog, greater + np.maximum(ties, 0) / 2.0, np.nan)
    hit = np.where(in_catalog, rank < k, False)
    ndcg = np.where(hit, 1.0 / np.log2(np.nan_to_num(rank, nan=0.0) + 2.0), 0.0)
    per_user = pd.DataFrame(
        {
            "user_id": users,
            "item_id": test["item_id"].to_numpy(),
            "rank": rank,
            "hit": hit.astype(bool),
            "ndcg": ndcg,
        }
    )
    return _summarise(per_user, k)


def _summarise(per_user: pd.DataFrame, k: int) -> Evaluation:
    metrics = {
        f"hr@{k}": float(per_user["hit"].mean()),
        f"ndcg@{k}": float(per_user["ndcg"].mean()),
        "users": int(len(per_user)),
    }
    return Evaluation(k, metrics, per_user)


def _check(train: pd.DataFrame, test: pd.DataFrame, k: int) -> int:
    check_columns("train", train, ["user_id", "item_id"])
    check_columns("test", test, ["user_id", "item_id"])
    if test["user_id"].duplicated().any():
        raise ValueError("`test` must hold at most one held-out item per user.")
    return check_int("k", k, minimum=1)


def evaluate(
    model: Any,
    train: pd.DataFrame,
    test: pd.DataFrame,
    *,
    k: int = 10,
    batch_size: int = 2048,
) -> Evaluation:
    """HR@k and NDCG@k by full ranking over the items each user did not see.

    Args:
        model: A `BPRRetrievalModel`, or a `PrivacyAdversarialModel` (its
            recommender is evaluated); anything with `item_vocabulary` and
            `score_items(user_ids)` works.
        train: The training interactions (`user_id`, `item_id`): excluded from
            each user's candidates.
        test: One held-out interaction per user.
        k: The cut-off.
        batch_size: Users scored at once.

    Returns:
        An `Evaluation` with overall metrics and a per-user frame.

    Example:
        >>> result = evaluate(model, train, test, k=10)
        >>> result.metrics["hr@10"]
    """
    k = _check(train, test, k)
    model = _unwrap(model)
    catalog = np.asarray(model.item_vocabulary)
    parts = []
    for start in range(0, len(test), batch_size):
        chunk = test.iloc[start : start + batch_size]
        scores = model.score_items(chunk["user_id"].to_numpy())
        parts.append(rank_items(scores, catalog, chunk, train, k=k).per_user)
    return _summarise(pd.concat(parts, ignore_index=True), k)


def popularity_baseline(train: pd.DataFrame, test: pd.DataFrame, *, k: int = 10) -> Evaluation:
    """The same evaluation for a recommender that ranks items by training count."""
    k = _check(train, test, k)
    counts = train["item_id"].value_counts()
    catalog = counts.index.to_numpy()
    scores = np.broadcast_to(counts.to_numpy(np.float64), (len(test), len(catalog)))
    return rank_items(scores, catalog, test, train, k=k)
