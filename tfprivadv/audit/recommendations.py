"""Leakage carried by the recommendations themselves: attackers on top-k lists.

Protecting the user vectors is not enough if what the service shows a user
still gives the attribute away: an observer who sees a user's top-k list (a
shared screen, a logged feed) is an attacker too. The paper left this to
future work. Here the same attackers and the same cross-validation as
`probe_embeddings` read the attributes from each user's list, encoded as a
multi-hot vector over the recommended items.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from typing import Any

import numpy as np
import pandas as pd

from tfprivadv._validation import _received, check_int
from tfprivadv.audit.probes import _probe_features


def _model_lists(model: Any, user_ids: Any, k: int, exclude: Any) -> list[np.ndarray]:
    if not hasattr(model, "recommend") and hasattr(model, "retrieval_model"):
        # A PrivacyAdversarialModel recommends through the recommender it wraps.
        model = model.retrieval_model
    if user_ids is None:
        raise ValueError(
            "`user_ids` is required when `recommendations` is a model: the users whose "
            "top-k lists to read, in the order of `attributes`."
        )
    users = np.asarray(user_ids)
    if users.ndim != 1:
        raise ValueError(f"`user_ids` must be 1-D. Received shape {users.shape}.")
    result = model.recommend(users, k, exclude=exclude)
    items = result[0] if isinstance(result, tuple) else result
    items = np.asarray(items)
    if isinstance(result, tuple) and len(result) > 1:
        # Users with fewer than k unexcluded items get excluded ones at the end,
        # scored -inf: not recommendations.
        scores = np.asarray(result[1], dtype=float)
        return [row[np.isfinite(score)] for row, score in zip(items, scores, strict=True)]
    return list(items)


def _given_lists(recommendations: Any, k: int) -> list[Any]:
    if isinstance(recommendations, pd.DataFrame):
        recommendations = recommendations.to_numpy()
    elif isinstance(recommendations, pd.Series):  # one list per user, e.g. from a groupby
        recommendations = list(recommendations)
    if isinstance(recommendations, np.ndarray):
        if recommendations.ndim != 2:
            raise ValueError(
                "`recommendations` must be a model or a 2-D array of item ids "
                f"[n_users, k]. Received shape {recommendations.shape}."
            )
        return [row[:k] for row in recommendations]
    if isinstance(recommendations, Sequence) and not isinstance(recommendations, str):
        lists = []
        for row in recommendations:
            if isinstance(row, str) or not isinstance(row, Sequence | np.ndarray):
                raise TypeError(
                    "`recommendations` as a list must hold one list of item ids per user. "
                    f"Received an entry {_received(row)}"
                )
            lists.append(list(row)[:k])
        return lists
    raise TypeError(
        "`recommendations` must be a model with `recommend(user_ids, k, exclude=...)` or a "
        f"2-D array / list of item-id lists [n_users, k]. Received: {_received(recommendations)}"
    )


def recommendation_features(
    lists: Sequence[Any], *, rank_weighted: bool = False
) -> tuple[Any, np.ndarray]:
    """Multi-hot encoding of top-k lists: one column per item that occurs in some list.

    Args:
        lists: Per user, item ids best first (NaN/None entries are padding and
            skipped).
        rank_weighted: Weight the item at rank r (0 = top) by 1 / log2(r + 2),
            the DCG discount, instead of 1.

    Returns:
        `(features, items)`: a `[n_users, n_items]` scipy.sparse CSR matrix and
        the item id of each column. An item listed twice for a user keeps its
        best rank.
    """
    import scipy.sparse as sp

    rows, ranks, flat = [], [], []
    for user, items in enumerate(lists):
        for rank, item in enumerate(items):
            if item is None or (np.ndim(item) == 0 and pd.isna(item)):
                continue
            rows.append(user)
            ranks.append(rank)
            flat.append(item)
    try:
        codes, items = pd.factorize(pd.Series(flat, dtype=object), sort=True)
    except TypeError:  # ids of mixed types cannot be sorted
        codes, items = pd.factorize(pd.Series(flat, dtype=object))
    rows_array = np.asarray(rows, dtype=np.int64)
    ranks_array = np.asarray(ranks, dtype=np.int64)
    # Keep the first (best-ranked) occurrence of each (user, item): CSR would sum them.
    _, first = np.unique(rows_array * max(len(items), 1) + codes, return_index=True)
    rows_array, codes, ranks_array = rows_array[first], codes[first], ranks_array[first]
    values = 1.0 / np.log2(ranks_array + 2.0) if rank_weighted else np.ones(len(first))
    features = sp.csr_matrix((values, (rows_array, codes)), shape=(len(lists), max(len(items), 1)))
    return features, np.asarray(items)


def recommendation_leakage(
    recommendations: Any,
    attributes: pd.DataFrame | pd.Series | Mapping[str, Any],
    *,
    user_ids: Any = None,
    k: int = 10,
    exclude: Any = None,
    rank_weighted: bool = False,
    attackers: str | Sequence[str] | Mapping[str, Any] = "paper",
    cv: int = 5,
    n_repeats: int = 1,
    random_state: int | None = None,
    kinds: Mapping[str, str] | None = None,
    progress: bool | Callable[[dict[str, Any]], None] | None = None,
    n_jobs: int | None = -1,
) -> pd.DataFrame:
    """Cross-validated attackers reading private attributes from users' top-k lists.

    Each user's list becomes a multi-hot vector over the items recommended to
    anyone (optionally weighted by rank), and the attackers of
    `probe_embeddings` read it with the same cross-validation, metrics and
    chance levels (see there). The features are sparse: scale-sensitive
    attackers scale them with `MaxAbsScaler`, the identity on 0/1 columns.

    Args:
        recommendations: A model with `recommend(user_ids, k, exclude=...)`
            returning `(item_ids, scores)` (e.g. `BPRRetrievalModel`; a
            `PrivacyAdversarialModel` is read through its `retrieval_model`),
            or the lists themselves, best first, one per user in the order of
            `attributes`: a 2-D array or DataFrame `[n_users, k]`, a list of
            item-id lists, or a Series of lists. A DataFrame's or Series' index
            must equal that of `attributes` unless the latter is a RangeIndex.
        attributes: One column per attribute, one row per user in the order of
            `user_ids` (model) or of the lists: a DataFrame, a Series, or a dict
            name -> labels. If its index is named "user_id" it must equal
            `user_ids`.
        user_ids: The users to recommend for (required with a model; not
            accepted with lists).
        k: List length: the model's `k`, or the first `k` entries of given lists.
        exclude: Passed to the model's `recommend`, e.g. the training
            interactions (DataFrame with `user_id`, `item_id`), so that lists
            hold unseen items as served. Not accepted with lists.
        rank_weighted: Weight rank r (0 = top) by 1 / log2(r + 2) instead of 1.
        attackers: As in `probe_embeddings` (a suite, a name, names, or a dict
            name -> sklearn estimator that accepts scipy.sparse input).
        cv: Folds per repeat (>= 2).
        n_repeats: Repeats of the k-fold split.
        random_state: Seed of the folds and of the named attackers; None draws
            fresh seeds.
        kinds: Per attribute, "categorical" or "continuous" (default: float
            columns continuous).
        progress: None, a callable called with a dict per finished (attribute,
            attacker), or True for a tqdm bar.
        n_jobs: Threads fitting folds in parallel (-1: all cores).

    Returns:
        The frame of `probe_embeddings` (same columns, `COLUMNS`), with
        `source` = "recommendations".

    Raises:
        TypeError: `recommendations` neither a model nor lists; as in
            `probe_embeddings`.
        ValueError: `user_ids` missing with a model, or `user_ids`/`exclude`
            given with lists; `attributes` not aligned with the users; as in
            `probe_embeddings`.

    Example:
        >>> leakage = recommendation_leakage(  # doctest: +SKIP
        ...     model.retrieval_model,
        ...     users.set_index("user_id").loc[ids, ["gender"]],
        ...     user_ids=ids,
        ...     exclude=train,
        ...     random_state=0,
        ... )
        >>> both = pd.concat([leakage, probe_embeddings(vectors, ...)])  # doctest: +SKIP
    """
    k = check_int("k", k, minimum=1)
    given = isinstance(recommendations, pd.DataFrame | pd.Series | np.ndarray | list | tuple)
    if not given and (
        hasattr(recommendations, "recommend") or hasattr(recommendations, "retrieval_model")
    ):
        lists = _model_lists(recommendations, user_ids, k, exclude)
        if (
            isinstance(attributes, pd.DataFrame | pd.Series)
            and attributes.index.name == "user_id"
            and not np.array_equal(attributes.index.to_numpy(), np.asarray(user_ids))
        ):
            raise ValueError(
                "The index of `attributes` (user_id) differs from `user_ids`; select the "
                "rows in the same order, e.g. `users.set_index('user_id').loc[user_ids]`."
            )
    else:
        if user_ids is not None or exclude is not None:
            raise ValueError(
                "`user_ids` and `exclude` apply only when `recommendations` is a model; "
                "given lists are read as they are, one per row of `attributes`."
            )
        lists = _given_lists(recommendations, k)
    features, _ = recommendation_features(lists, rank_weighted=bool(rank_weighted))
    return _probe_features(
        features,
        attributes,
        source="recommendations",
        features_name="recommendations",
        attackers=attackers,
        cv=cv,
        n_repeats=n_repeats,
        random_state=random_state,
        kinds=kinds,
        progress=progress,
        n_jobs=n_jobs,
        stacklevel=3,
        features_index=(
            recommendations.index if isinstance(recommendations, pd.DataFrame | pd.Series) else None
        ),
    )
