"""Group fairness of a recommender: quality by user group and exposure parity of top-k lists.

Two questions, asked per sensitive attribute (gender, age group, ...):

1. Quality parity: are HR@k and NDCG@k the same for every group? One fairlearn
   `MetricFrame` per attribute holds the group means of the per-user outcomes, their
   between-group difference and ratio, and percentile-bootstrap intervals for all of
   them, computed by fairlearn itself (`n_boot`, `ci_quantiles`, `random_state`).
2. Exposure parity (with `recommendations`): is an item as likely to be in the top-k
   list of a user from one group as from another? Per item this is fairlearn's
   demographic parity difference of the indicator "item in the user's list"; over
   the catalog it is summarised, and each group's share of recommendation slots is
   compared as a distribution over items (total variation, Jensen-Shannon).

The module needs pandas, numpy, scipy and fairlearn; it never imports TensorFlow.
"""

from __future__ import annotations

import itertools
import math
import numbers
import warnings
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import pandas as pd

from tfprivadv._validation import _received, check_columns, check_float, check_int

__all__ = ["FairnessReport", "fairness_report"]

#: Columns of `FairnessReport.by_group`.
BY_GROUP_COLUMNS = ("attribute", "group", "metric", "value", "low", "high", "users")
#: Columns of `FairnessReport.summary`.
SUMMARY_COLUMNS = (
    "attribute",
    "metric",
    "overall",
    "overall_low",
    "overall_high",
    "difference",
    "difference_low",
    "difference_high",
    "ratio",
    "ratio_low",
    "ratio_high",
    "worst_group",
    "best_group",
    "users",
)
#: Columns of `FairnessReport.exposure`.
EXPOSURE_COLUMNS = ("attribute", "statistic", "value")
#: Columns of `FairnessReport.exposure_items`.
EXPOSURE_ITEM_COLUMNS = (
    "attribute",
    "rank",
    "item_id",
    "dp_difference",
    "exposure",
    "group",
    "users",
    "recommended",
    "selection_rate",
)
#: Columns of `FairnessReport.to_frame()`.
FRAME_COLUMNS = (
    "section",
    "attribute",
    "metric",
    "group",
    "statistic",
    "value",
    "low",
    "high",
    "users",
)

# Joins attribute names (and group values) of an intersection: "gender & age_group".
_JOIN = " & "


@dataclass(frozen=True, eq=False, repr=False)
class FairnessReport:
    """Result of `fairness_report`; DataFrames make value equality meaningless.

    Larger metric values are taken to be better (HR@k, NDCG@k): `worst_group` is the
    group with the smallest mean. Interval bounds are NaN when `n_bootstrap` is 0,
    and a ratio bound is NaN when some bootstrap resample leaves the ratio undefined
    (a group mean of 0 in the denominator).

    Attributes:
        by_group: One row per (attribute, group, metric): `attribute`, `group` (the
            attribute's value; `"F & 25"` for an intersection), `metric`, `value`
            (group mean of the per-user metric), `low`/`high` (bootstrap interval)
            and `users` (users in the group).
        summary: One row per (attribute, metric): `attribute`, `metric`, `overall`
            (mean over all compared users) with `overall_low`/`overall_high`,
            `difference` (largest minus smallest group mean, fairlearn's
            `difference(method="between_groups")`) with `difference_low`/
            `difference_high`, `ratio` (smallest over largest group mean,
            `ratio(method="between_groups")`) with `ratio_low`/`ratio_high`,
            `worst_group`, `best_group` and `users` (users compared).
        exposure: With `recommendations`: one row per (attribute, statistic), columns
            `attribute`, `statistic`, `value`; see `fairness_report` for the
            statistics and their `_chance` levels. Otherwise None.
        exposure_items: With `recommendations`: the items with the largest
            demographic parity difference, one row per (attribute, item, group):
            `attribute`, `rank` (1 = largest difference), `item_id`,
            `dp_difference`, `exposure` (users who got the item), `group`, `users`
            (users in the group), `recommended` (of them, users who got the item)
            and `selection_rate` (`recommended / users`). Otherwise None.
        metrics: The outcome columns compared.
        n_bootstrap: Bootstrap resamples behind the intervals (0: none).
        confidence: Coverage of the intervals.
        metric_frames: The fairlearn `MetricFrame` of each attribute (by name), for
            plots or other comparisons; its metrics are the outcome columns.
    """

    by_group: pd.DataFrame
    summary: pd.DataFrame
    exposure: pd.DataFrame | None
    exposure_items: pd.DataFrame | None
    metrics: tuple[str, ...]
    n_bootstrap: int
    confidence: float
    metric_frames: dict[str, Any] = field(default_factory=dict)

    @property
    def attributes(self) -> tuple[str, ...]:
        """The attributes compared, intersections last."""
        return tuple(dict.fromkeys(self.summary["attribute"]))

    def __repr__(self) -> str:
        return (
            f"FairnessReport(attributes={list(self.attributes)}, metrics={list(self.metrics)}, "
            f"n_bootstrap={self.n_bootstrap}, confidence={self.confidence}, "
            f"exposure={self.exposure is not None})"
        )

    def to_frame(self) -> pd.DataFrame:
        """All numbers in one tidy frame (the item table `exposure_items` aside).

        Returns:
            A DataFrame with the columns `section` (`"by_group"`, `"summary"` or
            `"exposure"`), `attribute`, `metric`, `group`, `statistic`, `value`,
            `low`, `high` and `users`. By-group rows have `statistic="mean"`.
            Summary rows have `statistic` `"overall"`, `"difference"`, `"ratio"`,
            `"worst_group"` or `"best_group"`; the last two name the group in
            `group` and give its mean in `value`. Exposure rows fill `attribute`,
            `statistic` and `value` only.
        """
        parts = [self.by_group.assign(section="by_group", statistic="mean")]
        summary = self.summary
        for statistic in ("overall", "difference", "ratio"):
            parts.append(
                pd.DataFrame(
                    {
                        "section": "summary",
                        "attribute": summary["attribute"],
                        "metric": summary["metric"],
                        "statistic": statistic,
                        "value": summary[statistic],
                        "low": summary[f"{statistic}_low"],
                        "high": summary[f"{statistic}_high"],
                        "users": summary["users"] if statistic == "overall" else np.nan,
                    }
                )
            )
        for statistic in ("worst_group", "best_group"):
            rows = summary[["attribute", "metric", statistic]].rename(columns={statistic: "group"})
            rows = rows.merge(self.by_group, on=["attribute", "metric", "group"], how="left")
            parts.append(
                rows[["attribute", "metric", "group", "value", "users"]].assign(
                    section="summary", statistic=statistic
                )
            )
        if self.exposure is not None:
            parts.append(self.exposure.assign(section="exposure"))
        frame = pd.concat(
            [p.astype({"users": "float64"}) if "users" in p else p for p in parts],
            ignore_index=True,
        )
        return frame.reindex(columns=list(FRAME_COLUMNS))

    def to_dict(self) -> dict[str, Any]:
        """A JSON-able dict: settings and each frame as a list of records.

        NaN becomes None and numpy scalars become Python numbers, so
        `json.dumps(report.to_dict(), allow_nan=False)` works.

        Returns:
            `{"metrics", "n_bootstrap", "confidence", "by_group", "summary",
            "exposure", "exposure_items"}`; the last two are None without
            recommendations.
        """
        return {
            "metrics": list(self.metrics),
            "n_bootstrap": self.n_bootstrap,
            "confidence": self.confidence,
            "by_group": _records(self.by_group),
            "summary": _records(self.summary),
            "exposure": None if self.exposure is None else _records(self.exposure),
            "exposure_items": (
                None if self.exposure_items is None else _records(self.exposure_items)
            ),
        }


def fairness_report(
    outcomes: pd.DataFrame,
    sensitive_features: pd.DataFrame,
    *,
    metrics: str | Sequence[str] = ("hit", "ndcg"),
    attributes: Sequence[str] | None = None,
    intersections: bool = False,
    n_bootstrap: int = 200,
    confidence: float = 0.95,
    random_state: int | np.random.RandomState | np.random.Generator | None = None,
    recommendations: Any = None,
    top_items: int = 10,
    n_permutations: int = 20,
) -> FairnessReport:
    """Recommendation quality and exposure by user group, with bootstrap intervals.

    For each attribute separately (and, with `intersections`, for all of them
    jointly) the per-user outcomes go into one fairlearn `MetricFrame` whose metrics
    are the means of the outcome columns (so `hit` gives HR@k and `ndcg` NDCG@k per
    group). Its `by_group`, `overall`, `difference()` and `ratio()` (both
    `method="between_groups"`) are reported with the percentile-bootstrap intervals
    fairlearn computes from `n_boot=n_bootstrap` user resamples
    (`by_group_ci`, `overall_ci`, `difference_ci()`, `ratio_ci()`).

    Users are matched on `user_id`. A user in `outcomes` without a value for an
    attribute (absent from `sensitive_features` or NaN there) is left out of that
    attribute's comparison, with a warning that says how many were.

    With `recommendations`, exposure parity is measured per attribute over the users
    who got a list and have a value. For each item, the selection rate of a group is
    the share of its users whose list holds the item, and the item's demographic
    parity (DP) difference is the largest minus the smallest group rate (fairlearn's
    `demographic_parity_difference` of that indicator). The `exposure` statistics
    are: `users`, `groups`, `items` (distinct items recommended; items nobody got
    have DP difference 0 and are left out), `dp_difference_mean`/`_median`/`_p90`/
    `_max` over items, the same weighted by item exposure (users who got the item)
    as `dp_difference_mean_weighted`/`_median_weighted`/`_p90_weighted` (the max is
    the same either way), and distances between the groups' exposure distributions
    (each group's share of its recommendation slots going to each item):
    `tvd_max_pair` and `js_distance_max_pair` (largest over pairs of groups),
    `tvd_to_overall_mean` and `js_distance_to_overall_mean` (mean over groups of
    the distance to the distribution of all slots). Quantiles are inverted-CDF
    (the smallest value whose, possibly weighted, share of items reaches q), so the
    weighted and unweighted ones agree when all weights are equal. `js_distance`
    is `scipy.spatial.distance.jensenshannon(p, q, base=2)`: the square root of the
    Jensen-Shannon divergence in bits, in [0, 1]. Each of these statistics also
    has a `<statistic>_chance` row: its mean over `n_permutations` shuffles of the
    group labels among the users (group sizes kept). Sparse counts push all of
    them above 0 even for lists that ignore the attribute (uniformly random top-10
    lists over 3,706 items give a gender TVD near 0.2), so read a value against
    its chance level, as leakage is read against the majority share.

    Args:
        outcomes: One row per user: `user_id` and numeric outcome columns, e.g.
            `Evaluation.per_user` (`hit` is HR@k's per-user value, `ndcg` NDCG@k's).
            An object with a `per_user` DataFrame (an `Evaluation`) is accepted too.
        sensitive_features: One row per user: a `user_id` column (or an index named
            `user_id`) and one column per attribute, e.g. `MovieLens.users`.
        metrics: Outcome column(s) to compare; larger is taken to be better.
        attributes: Columns of `sensitive_features` to compare by; default all but
            `user_id`. Pass this when the frame also holds identifiers or
            continuous columns (`MovieLens.users` has `zip_code` and `age`).
        intersections: Also compare the intersection of all `attributes` (groups
            like `"F & 25"`). Needs at least two attributes.
        n_bootstrap: Bootstrap resamples of the users; 0 skips the bootstrap and
            leaves every interval bound NaN. fairlearn's bootstrap costs roughly
            n_bootstrap x users x metrics; about 10 s per attribute for 6,040 users,
            2 metrics and 200 resamples.
        confidence: Coverage of the percentile intervals, in (0, 1).
        random_state: Seed (int), `np.random.RandomState`, `np.random.Generator`
            (a seed is drawn from it) or None (fresh entropy) for fairlearn's
            resampling. An int gives every attribute the same user resamples.
        recommendations: Each user's top-k list, as a DataFrame with `user_id` and
            `item_id` (one row per list entry), a mapping user id -> item ids, or a
            pair `(user_ids, item_ids)` with `item_ids` shaped `[n_users, k]` (what
            `BPRRetrievalModel.recommend(user_ids, k)[0]` returns). A repeated
            (user, item) pair counts once. None skips the exposure analysis.
        top_items: Items per attribute in `exposure_items`.
        n_permutations: Label shuffles behind the `_chance` exposure statistics;
            0 leaves them NaN. Drawn from `random_state`.

    Returns:
        A `FairnessReport`.

    Raises:
        TypeError: If an argument has the wrong type, or an outcome column is not
            numeric.
        ValueError: If a required column is missing, `metrics` names a column
            `outcomes` lacks, `outcomes` or `sensitive_features` repeats a user id,
            an outcome is missing or infinite, an attribute has a single group among
            the matched users (nothing to compare), `confidence` is outside (0, 1),
            `n_bootstrap` or `n_permutations` < 0, `top_items` < 1, or
            `recommendations` is empty or malformed.

    Example:
        >>> from tfprivadv.datasets import leave_one_out, load_movielens
        >>> from tfprivadv.evaluation import popularity_baseline
        >>> data = load_movielens("100k")  # doctest: +SKIP
        >>> train, test = leave_one_out(data.ratings, strategy="last")  # doctest: +SKIP
        >>> result = popularity_baseline(train, test, k=10)  # doctest: +SKIP
        >>> report = fairness_report(
        ...     result.per_user, data.users, attributes=["gender", "age_group"],
        ...     random_state=0,
        ... )  # doctest: +SKIP
        >>> report.summary[["attribute", "metric", "difference"]]  # doctest: +SKIP
    """
    frame, metric_names = _check_outcomes(outcomes, metrics)
    features, attribute_names = _check_sensitive_features(sensitive_features, attributes)
    n_bootstrap = check_int("n_bootstrap", n_bootstrap, minimum=0)
    confidence = check_float("confidence", confidence, minimum=0.0, exclusive_minimum=True)
    if confidence >= 1.0:
        raise ValueError(f"`confidence` must be in (0, 1). Received: {confidence}")
    random_state = _check_random_state(random_state)
    rng = _permutation_rng(random_state)
    if not isinstance(intersections, bool):
        raise TypeError(f"`intersections` must be a bool. Received: {_received(intersections)}")
    if intersections and len(attribute_names) < 2:
        raise ValueError(
            "`intersections=True` needs at least two attributes to intersect. "
            f"Received attributes: {list(attribute_names)}"
        )
    top_items = check_int("top_items", top_items, minimum=1)
    n_permutations = check_int("n_permutations", n_permutations, minimum=0)
    served = None if recommendations is None else _check_recommendations(recommendations)

    units = [(name, [name]) for name in attribute_names]
    if intersections:
        units.append((_JOIN.join(attribute_names), list(attribute_names)))

    # Everything fast (checks, exposure) runs for every unit before any bootstrap: a
    # bad attribute should fail in milliseconds, not after minutes of resampling.
    prepared = []
    exposure, exposure_items = [], []
    for name, columns in units:
        groups = _integral_codes(features[columns].dropna())
        # stacklevel 2: the warning points at the caller of fairness_report.
        rows = _matched_rows(frame["user_id"], groups.index, name, "outcomes", stacklevel=2)
        labels = groups.loc[frame["user_id"].to_numpy()[rows]]
        _check_groups(labels, name)
        prepared.append((name, rows, labels))
        if served is not None:
            stats, items = _exposure(
                served,
                _group_labels(groups, columns),
                name,
                top_items=top_items,
                n_permutations=n_permutations,
                rng=rng,
            )
            exposure.append(stats)
            exposure_items.append(items)

    by_group, summary, frames = [], [], {}
    values = frame[list(metric_names)].to_numpy(np.float64)
    for name, rows, labels in prepared:
        mf, users = _metric_frames(
            values[rows],
            metric_names,
            labels.reset_index(drop=True),
            n_bootstrap=n_bootstrap,
            confidence=confidence,
            random_state=random_state,
        )
        frames[name] = mf
        group_rows, summary_rows = _tabulate(mf, users, name, metric_names, n_bootstrap)
        by_group.append(group_rows)
        summary.append(summary_rows)

    return FairnessReport(
        by_group=pd.concat(by_group, ignore_index=True),
        summary=pd.concat(summary, ignore_index=True),
        exposure=None if served is None else pd.concat(exposure, ignore_index=True),
        exposure_items=None if served is None else pd.concat(exposure_items, ignore_index=True),
        metrics=metric_names,
        n_bootstrap=n_bootstrap,
        confidence=confidence,
        metric_frames=frames,
    )


# --- argument checks ---------------------------------------------------------------------


def _check_outcomes(outcomes: Any, metrics: Any) -> tuple[pd.DataFrame, tuple[str, ...]]:
    per_user = getattr(outcomes, "per_user", None)
    if not isinstance(outcomes, pd.DataFrame) and isinstance(per_user, pd.DataFrame):
        outcomes = per_user
    check_columns("outcomes", outcomes, ["user_id"])
    if isinstance(metrics, str):
        metrics = (metrics,)
    if not isinstance(metrics, Sequence) or not all(isinstance(m, str) for m in metrics):
        raise TypeError(
            "`metrics` must be a column name or a sequence of column names of `outcomes`. "
            f"Received: {_received(metrics)}"
        )
    metrics = tuple(metrics)
    if not metrics:
        raise ValueError("`metrics` must name at least one column of `outcomes`. Received: ()")
    if len(set(metrics)) != len(metrics):
        raise ValueError(f"`metrics` must not repeat a name. Received: {list(metrics)}")
    unknown = [m for m in metrics if m not in outcomes.columns or m == "user_id"]
    if unknown:
        columns = [c for c in outcomes.columns if c != "user_id"]
        raise ValueError(
            f"`metrics` names column(s) {unknown} that `outcomes` lacks; `outcomes` has {columns}."
        )
    for name in metrics:
        column = outcomes[name]
        if not pd.api.types.is_numeric_dtype(column):
            raise TypeError(
                f"`outcomes` column {name!r} must be numeric (or bool). "
                f"Received dtype: {column.dtype}"
            )
        bad = int((~np.isfinite(column.to_numpy(np.float64, na_value=np.nan))).sum())
        if bad:
            raise ValueError(
                f"`outcomes` column {name!r} has {bad} missing or infinite value(s); "
                "every user needs a finite outcome."
            )
    duplicated = outcomes["user_id"].duplicated()
    if duplicated.any():
        examples = outcomes.loc[duplicated, "user_id"].unique()[:5].tolist()
        raise ValueError(
            f"`outcomes` must hold one row per user; {int(duplicated.sum())} user id(s) "
            f"repeat, e.g. {examples}."
        )
    return outcomes[["user_id", *metrics]].reset_index(drop=True), metrics


def _check_sensitive_features(
    features: Any, attributes: Any
) -> tuple[pd.DataFrame, tuple[str, ...]]:
    if not isinstance(features, pd.DataFrame):
        raise TypeError(
            "`sensitive_features` must be a pandas DataFrame with a `user_id` column (or "
            f"index) and one column per attribute. Received: {_received(features)}"
        )
    if "user_id" in features.columns:
        features = features.set_index("user_id")
    elif features.index.name != "user_id":
        raise ValueError(
            "`sensitive_features` needs a `user_id` column or an index named `user_id`; "
            f"it has the columns {list(features.columns)} and index {features.index.name!r}."
        )
    if features.index.hasnans:
        raise ValueError("`sensitive_features` has missing user ids.")
    if features.index.duplicated().any():
        repeated = features.index[features.index.duplicated()].unique()[:5].tolist()
        raise ValueError(
            f"`sensitive_features` must hold one row per user; user ids repeat, e.g. {repeated}."
        )
    available = [c for c in features.columns if isinstance(c, str)]
    if attributes is None:
        attributes = tuple(available)
    elif isinstance(attributes, str):
        attributes = (attributes,)
    elif isinstance(attributes, Sequence) and all(isinstance(a, str) for a in attributes):
        attributes = tuple(attributes)
    else:
        raise TypeError(
            "`attributes` must be None or column names of `sensitive_features`. "
            f"Received: {_received(attributes)}"
        )
    if not attributes:
        raise ValueError(
            "`sensitive_features` must have at least one attribute column besides `user_id`."
        )
    missing = [a for a in attributes if a not in available]
    if missing:
        raise ValueError(
            f"`attributes` names column(s) {missing} that `sensitive_features` lacks; "
            f"it has {available}."
        )
    if len(set(attributes)) != len(attributes):
        raise ValueError(f"`attributes` must not repeat a name. Received: {list(attributes)}")
    return features[list(attributes)], attributes


def _check_random_state(random_state: Any) -> int | np.random.RandomState | None:
    if random_state is None or isinstance(random_state, np.random.RandomState):
        return random_state
    if isinstance(random_state, np.random.Generator):
        # fairlearn takes an int or a RandomState; a drawn seed keeps the Generator's
        # stream the single source of randomness.
        return int(random_state.integers(np.iinfo(np.uint32).max))
    if isinstance(random_state, numbers.Integral) and not isinstance(random_state, bool):
        return int(random_state)
    raise TypeError(
        "`random_state` must be None, an int, a np.random.RandomState or a "
        f"np.random.Generator. Received: {_received(random_state)}"
    )


def _permutation_rng(random_state: int | np.random.RandomState | None) -> np.random.Generator:
    if isinstance(random_state, np.random.RandomState):
        return np.random.default_rng(random_state.randint(np.iinfo(np.int32).max))
    return np.random.default_rng(random_state)


def _check_recommendations(recommendations: Any) -> tuple[pd.DataFrame, np.ndarray]:
    """Returns the distinct (user_id, item_id) pairs and the users who got a list."""
    if isinstance(recommendations, pd.DataFrame):
        check_columns("recommendations", recommendations, ["user_id", "item_id"])
        pairs = recommendations[["user_id", "item_id"]]
        users = pairs["user_id"].unique()
    elif isinstance(recommendations, Mapping):
        users = np.asarray(list(recommendations.keys()))
        lists = [np.asarray(list(v)) for v in recommendations.values()]
        pairs = pd.DataFrame(
            {
                "user_id": np.repeat(users, [len(v) for v in lists]),
                "item_id": np.concatenate(lists) if lists else np.array([]),
            }
        )
    elif isinstance(recommendations, tuple) and len(recommendations) == 2:
        users, items = (np.asarray(a) for a in recommendations)
        if users.ndim != 1 or items.ndim != 2 or len(users) != len(items):
            raise ValueError(
                "`recommendations` as a pair must be (user_ids [n_users], item_ids "
                f"[n_users, k]). Received shapes {users.shape} and {items.shape}."
            )
        pairs = pd.DataFrame(
            {"user_id": np.repeat(users, items.shape[1]), "item_id": items.reshape(-1)}
        )
    else:
        raise TypeError(
            "`recommendations` must be a DataFrame with `user_id` and `item_id`, a mapping "
            "user id -> item ids, or a pair (user_ids, item_ids [n_users, k]). "
            f"Received: {_received(recommendations)}"
        )
    if len(pairs) == 0:
        raise ValueError("`recommendations` must hold at least one (user, item) pair.")
    if pairs.isna().any().any():
        raise ValueError("`recommendations` has missing user or item ids.")
    if pd.Index(users).has_duplicates:
        raise ValueError("`recommendations` lists a user id twice.")
    return pairs.drop_duplicates(ignore_index=True), np.asarray(users)


def _matched_rows(
    user_ids: pd.Series, known: pd.Index, attribute: str, argument: str, *, stacklevel: int
) -> np.ndarray:
    """Positions of the users that have a value; warns about the others."""
    rows = np.flatnonzero(user_ids.isin(known).to_numpy())
    dropped = len(user_ids) - len(rows)
    if dropped:
        warnings.warn(
            f"`sensitive_features` has no {attribute!r} value for {dropped} of "
            f"{len(user_ids)} users in `{argument}`; they are left out of the "
            f"{attribute!r} comparison.",
            UserWarning,
            stacklevel=stacklevel + 1,
        )
    return rows


def _integral_codes(groups: pd.DataFrame) -> pd.DataFrame:
    # Integer codes (age_group) become floats in a column with NaN; once the missing
    # rows are gone, 25 reads better than 25.0 as a group name.
    for column in groups.columns:
        values = groups[column]
        if pd.api.types.is_float_dtype(values) and np.all(np.mod(values, 1) == 0):
            groups = groups.astype({column: np.int64})
    return groups


def _check_groups(labels: pd.DataFrame, attribute: str) -> None:
    if len(labels) == 0:
        raise ValueError(
            f"No user in `outcomes` has a {attribute!r} value in `sensitive_features`; "
            "check that both use the same user ids."
        )
    found = labels.drop_duplicates()
    if len(found) < 2:
        value = _format_group(tuple(found.iloc[0]))
        raise ValueError(
            f"`sensitive_features` attribute {attribute!r} has a single group ({value!r}) "
            "among the users in `outcomes`: nothing to compare."
        )


# --- quality parity ----------------------------------------------------------------------


def _column_mean(column: int) -> Any:
    def metric(y_true: np.ndarray, y_pred: np.ndarray) -> float:
        # fairlearn squeezes a one-metric matrix to a vector; reshape restores it.
        return float(np.mean(np.reshape(y_true, (len(y_true), -1))[:, column]))

    return metric


def _metric_frames(
    values: np.ndarray,
    metric_names: tuple[str, ...],
    labels: pd.DataFrame,
    *,
    n_bootstrap: int,
    confidence: float,
    random_state: Any,
) -> tuple[Any, Any]:
    """The attribute's MetricFrame (group means + bootstrap) and one of user counts."""
    from fairlearn.metrics import MetricFrame, count

    sensitive = labels.iloc[:, 0] if labels.shape[1] == 1 else labels
    # The outcomes are per-user scores, not labels and predictions. The users x
    # metrics matrix rides in y_true (y_pred is required but unused; it gets the same
    # matrix) so that one MetricFrame, and so one set of bootstrap resamples, covers
    # every metric. fairlearn's bootstrap is Python-level work per row, per metric
    # call and per resample; this layout measured about 1.5x faster than one
    # `sample_params` column per metric.
    bootstrap: dict[str, Any] = {}
    if n_bootstrap:
        low = (1.0 - confidence) / 2.0
        bootstrap = {
            "n_boot": n_bootstrap,
            "ci_quantiles": [low, 1.0 - low],
            "random_state": random_state,
        }
    frame = MetricFrame(
        metrics={name: _column_mean(j) for j, name in enumerate(metric_names)},
        y_true=values,
        y_pred=values,
        sensitive_features=sensitive,
        **bootstrap,
    )
    # Counts come from fairlearn too, so they share the group index (for an
    # intersection, every combination; absent ones are NaN).
    users = MetricFrame(
        metrics=count, y_true=values[:, 0], y_pred=values[:, 0], sensitive_features=sensitive
    ).by_group
    return frame, users


def _tabulate(
    mf: Any,
    users: pd.Series,
    attribute: str,
    metric_names: tuple[str, ...],
    n_bootstrap: int,
) -> tuple[pd.DataFrame, pd.DataFrame]:
    by_group = mf.by_group
    present = users.fillna(0).to_numpy() > 0
    nan_frame = by_group * np.nan
    nan_series = pd.Series(np.nan, index=list(metric_names))
    # Bootstrap frames cover the groups seen in some resample; align them to by_group.
    low, high = (
        [ci.reindex(by_group.index) for ci in mf.by_group_ci]
        if n_bootstrap
        else (nan_frame, nan_frame)
    )
    overall_low, overall_high = mf.overall_ci if n_bootstrap else (nan_series, nan_series)
    difference = mf.difference(method="between_groups")
    ratio = mf.ratio(method="between_groups")
    if n_bootstrap:
        difference_low, difference_high = mf.difference_ci(method="between_groups")
        ratio_low, ratio_high = mf.ratio_ci(method="between_groups")
    else:
        difference_low = difference_high = ratio_low = ratio_high = nan_series

    groups = [_format_group(g) for g in by_group.index]
    group_rows, summary_rows = [], []
    for metric in metric_names:
        group_rows.append(
            pd.DataFrame(
                {
                    "attribute": attribute,
                    "group": groups,
                    "metric": metric,
                    "value": by_group[metric].to_numpy(np.float64),
                    "low": low[metric].to_numpy(np.float64),
                    "high": high[metric].to_numpy(np.float64),
                    "users": users.fillna(0).to_numpy(np.int64),
                }
            )[present]
        )
        column = by_group[metric]
        summary_rows.append(
            {
                "attribute": attribute,
                "metric": metric,
                "overall": float(mf.overall[metric]),
                "overall_low": float(overall_low[metric]),
                "overall_high": float(overall_high[metric]),
                "difference": float(difference[metric]),
                "difference_low": float(difference_low[metric]),
                "difference_high": float(difference_high[metric]),
                "ratio": float(ratio[metric]),
                "ratio_low": float(ratio_low[metric]),
                "ratio_high": float(ratio_high[metric]),
                "worst_group": _format_group(column.idxmin()),
                "best_group": _format_group(column.idxmax()),
                "users": int(users.sum()),
            }
        )
    by_group_frame = pd.concat(group_rows, ignore_index=True)
    by_group_frame["group"] = by_group_frame["group"].astype(object)
    return by_group_frame, pd.DataFrame(summary_rows, columns=list(SUMMARY_COLUMNS))


def _format_group(group: Any) -> Any:
    """A plain Python label: the value itself, or "a & b" for an intersection."""
    if isinstance(group, tuple):
        if len(group) == 1:
            return _plain(group[0])
        return _JOIN.join(str(_plain(g)) for g in group)
    return _plain(group)


def _group_labels(groups: pd.DataFrame, columns: list[str]) -> pd.Series:
    """One label per user (indexed by user id), as `by_group` writes it."""
    if len(columns) == 1:
        return groups[columns[0]]
    return pd.Series(
        [_format_group(tuple(row)) for row in groups.itertuples(index=False)], index=groups.index
    )


# --- exposure parity ---------------------------------------------------------------------


def _exposure(
    served: tuple[pd.DataFrame, np.ndarray],
    labels: pd.Series,
    attribute: str,
    *,
    top_items: int,
    n_permutations: int,
    rng: np.random.Generator,
) -> tuple[pd.DataFrame, pd.DataFrame]:
    pairs, all_users = served
    rows = _matched_rows(
        pd.Series(all_users), labels.index, attribute, "recommendations", stacklevel=3
    )
    users = all_users[rows]
    if len(users) == 0:
        raise ValueError(
            f"No user in `recommendations` has a {attribute!r} value in "
            "`sensitive_features`; check that both use the same user ids."
        )
    user_codes, group_values = pd.factorize(labels.loc[users].to_numpy(), sort=True)
    n_groups = len(group_values)
    if n_groups < 2:
        raise ValueError(
            f"`sensitive_features` attribute {attribute!r} has a single group "
            f"({_plain(group_values[0])!r}) among the users in `recommendations`: "
            "nothing to compare."
        )
    group_sizes = np.bincount(user_codes, minlength=n_groups)

    position = pd.Index(users).get_indexer(pairs["user_id"].to_numpy())
    kept = position >= 0
    item_codes, item_ids = pd.factorize(pairs["item_id"].to_numpy()[kept])
    pair_groups = user_codes[position[kept]]
    # One pass over the (user, item) pairs gives the item x group count matrix. The
    # per-item DP difference is fairlearn's demographic_parity_difference of the
    # indicator "item in the user's list" (max minus min group selection rate);
    # calling it once per item (thousands of MetricFrames) takes minutes, so the
    # same definition is applied to the count matrix here, and the tests check it
    # against fairlearn item by item.
    counts = np.bincount(
        item_codes * n_groups + pair_groups, minlength=len(item_ids) * n_groups
    ).reshape(len(item_ids), n_groups)
    rates = counts / group_sizes[None, :]
    dp = rates.max(axis=1) - rates.min(axis=1)
    exposure = counts.sum(axis=1)

    stats = {"users": float(len(users)), "groups": float(n_groups), "items": float(len(item_ids))}
    observed = _exposure_statistics(counts, group_sizes)
    stats.update(observed)
    # With ~10 slots per user spread over thousands of items, most item counts are
    # small, so DP differences and distances between the groups' empirical
    # distributions are well above 0 even when lists ignore the attribute. The
    # chance level (the same statistic with the group labels shuffled over users,
    # sizes kept) is the value to read them against.
    chance = {name: [] for name in observed}
    pair_users = position[kept]
    for _ in range(n_permutations):
        shuffled = rng.permutation(user_codes)
        permuted = np.bincount(
            item_codes * n_groups + shuffled[pair_users], minlength=len(item_ids) * n_groups
        ).reshape(len(item_ids), n_groups)
        for name, value in _exposure_statistics(permuted, group_sizes).items():
            chance[name].append(value)
    for name, values in chance.items():
        stats[f"{name}_chance"] = float(np.mean(values)) if values else float("nan")
    stats_frame = pd.DataFrame(
        {"attribute": attribute, "statistic": list(stats), "value": list(stats.values())}
    )

    # Largest DP difference first; ties go to the more exposed, then smaller id.
    order = np.lexsort((np.arange(len(dp)), -exposure, -dp))[:top_items]
    n_top = len(order)
    items_frame = pd.DataFrame(
        {
            "attribute": attribute,
            "rank": np.repeat(np.arange(1, n_top + 1), n_groups),
            "item_id": np.repeat(np.asarray(item_ids)[order], n_groups),
            "dp_difference": np.repeat(dp[order], n_groups),
            "exposure": np.repeat(exposure[order], n_groups),
            "group": pd.Series([_plain(g) for g in group_values] * n_top, dtype=object),
            "users": np.tile(group_sizes, n_top),
            "recommended": counts[order].reshape(-1),
            "selection_rate": rates[order].reshape(-1),
        }
    )
    return stats_frame, items_frame


def _exposure_statistics(counts: np.ndarray, group_sizes: np.ndarray) -> dict[str, float]:
    """DP-difference summaries and exposure distances from an item x group count matrix."""
    rates = counts / group_sizes[None, :]
    dp = rates.max(axis=1) - rates.min(axis=1)
    weights = counts.sum(axis=1).astype(np.float64)

    def quantile(q: float, w: np.ndarray | None = None) -> float:
        return float(np.quantile(dp, q, weights=w, method="inverted_cdf"))

    # Each group's share of its recommendation slots going to each item.
    shares = counts / np.maximum(counts.sum(axis=0, keepdims=True), 1)
    overall = weights / weights.sum()
    pairs = list(itertools.combinations(range(counts.shape[1]), 2))
    groups = range(counts.shape[1])
    return {
        "dp_difference_mean": float(dp.mean()),
        "dp_difference_median": quantile(0.5),
        "dp_difference_p90": quantile(0.9),
        "dp_difference_max": float(dp.max()),
        "dp_difference_mean_weighted": float(np.average(dp, weights=weights)),
        "dp_difference_median_weighted": quantile(0.5, weights),
        "dp_difference_p90_weighted": quantile(0.9, weights),
        "tvd_max_pair": max(_tvd(shares[:, a], shares[:, b]) for a, b in pairs),
        "js_distance_max_pair": max(_js(shares[:, a], shares[:, b]) for a, b in pairs),
        "tvd_to_overall_mean": float(np.mean([_tvd(shares[:, g], overall) for g in groups])),
        "js_distance_to_overall_mean": float(np.mean([_js(shares[:, g], overall) for g in groups])),
    }


def _tvd(p: np.ndarray, q: np.ndarray) -> float:
    return float(0.5 * np.abs(p - q).sum())


def _js(p: np.ndarray, q: np.ndarray) -> float:
    from scipy.spatial.distance import jensenshannon

    with np.errstate(invalid="ignore"):
        distance = float(jensenshannon(p, q, base=2))
    # Rounding can push the divergence of near-equal distributions a hair below 0,
    # whose square root is NaN; the distance there is 0.
    return 0.0 if math.isnan(distance) and p.sum() > 0 and q.sum() > 0 else distance


# --- serialisation -----------------------------------------------------------------------


def _plain(value: Any) -> Any:
    if isinstance(value, np.generic):
        value = value.item()
    if isinstance(value, float) and math.isnan(value):
        return None
    return value


def _records(frame: pd.DataFrame) -> list[dict[str, Any]]:
    return [
        {str(k): _plain(v) for k, v in row.items()}
        for row in frame.astype(object).to_dict(orient="records")
    ]
