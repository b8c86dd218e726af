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
    return _Ranking(catalog, test, train).evaluate(scores, k)


class _Ranking:
    """The fixed part of a ranking evaluation (who is scored, what is excluded),
    prepared once so that scoring the same users again (every epoch, for
    validation) only costs the matrix product and the rank count."""

    def __init__(self, catalog: np.ndarray, test: pd.DataFrame, train: pd.DataFrame) -> None:
        self.test = test
        users = test["user_id"].to_numpy()
        rows = pd.DataFrame({"user_id": users, "row": np.arange(len(users))})
        seen = train[["user_id", "item_id"]].merge(rows, on="user_id")
        seen_cols = pd.Index(catalog).get_indexer(seen["item_id"].to_numpy())
        self.seen_rows = seen["row"].to_numpy()[seen_cols >= 0]
        self.seen_cols = seen_cols[seen_cols >= 0]
        self.test_cols = pd.Index(catalog).get_indexer(test["item_id"].to_numpy())
        self.in_catalog = self.test_cols >= 0
        self.target_rows = np.flatnonzero(self.in_catalog)

    def evaluate(self, scores: np.ndarray, k: int) -> Evaluation:
        scores = np.array(scores, dtype=np.float64, copy=True)
        target = np.full(len(scores), np.nan)
        target[self.in_catalog] = scores[self.target_rows, self.test_cols[self.in_catalog]]
        scores[self.seen_rows, self.seen_cols] = -np.inf
        # The held-out item stays a candidate even if it also appears in `train`.
        scores[self.target_rows, self.test_cols[self.in_catalog]] = target[self.in_catalog]
        with np.errstate(invalid="ignore"):
            greater = (scores > target[:, None]).sum(axis=1)
            ties = (scores == target[:, None]).sum(axis=1) - 1
        rank = np.where(self.in_catalog, greater + np.maximum(ties, 0) / 2.0, np.nan)
        hit = np.where(self.in_catalog, rank < k, False)
        ndcg = np.where(hit, 1.0 / np.log2(np.nan_to_num(rank, nan=0.0) + 2.0), 0.0)
        per_user = pd.DataFrame(
            {
                "user_id": self.test["user_id"].to_numpy(),
                "item_id": self.test["item_id"].to_numpy(),
                "rank": rank,
                "hit": hit.astype(bool),
                "ndcg": ndcg,
            }
        )
        return _summarise(per_user, k)


class RankingEvaluator:
    """`evaluate` prepared once for fixed `train` / `test` frames, callable on a
    model many times (e.g. after every epoch on a validation split).

    Args:
        catalog: The candidate items (a recommender's `item_vocabulary`).
        train: Interactions excluded from each user's candidates.
        test: One held-out interaction per user.
        k: The cut-off.
        batch_size: Users scored at once (bounds memory at batch x catalog).
    """

    def __init__(
        self,
        catalog: Any,
        train: pd.DataFrame,
        test: pd.DataFrame,
        *,
        k: int = 10,
        batch_size: int = 2048,
    ) -> None:
        self.k = _check(train, test, k)
        self.batch_size = check_int("batch_size", batch_size, minimum=1)
        catalog = np.asarray(catalog)
        test = test.reset_index(drop=True)
        self._chunks = [
            _Ranking(catalog, test.iloc[start : start + self.batch_size], train)
            for start in range(0, len(test), self.batch_size)
        ]

    def __call__(self, model: Any) -> Evaluation:
        model = _unwrap(model)
        parts = []
        for chunk in self._chunks:
            scores = model.score_items(chunk.test["user_id"].to_numpy())
            parts.append(chunk.evaluate(scores, self.k).per_user)
        return _summarise(pd.concat(parts, ignore_index=True), self.k)


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
    model = _unwrap(model)
    return RankingEvaluator(model.item_vocabulary, train, test, k=k, batch_size=batch_size)(model)


def popularity_baseline(train: pd.DataFrame, test: pd.DataFrame, *, k: int = 10) -> Evaluation:
    """The same evaluation for a recommender that ranks items by training count."""
    k = _check(train, test, k)
    counts = train["item_id"].value_counts()
    catalog = counts.index.to_numpy()
    scores = np.broadcast_to(counts.to_numpy(np.float64), (len(test), len(catalog)))
    return rank_items(scores, catalog, test, train, k=k)
