"""fairness_report: group quality parity (fairlearn MetricFrame + bootstrap) and exposure
parity of top-k lists.

Unit tests use small synthetic per-user outcomes with a known gap between groups; the
integration test reads ML-100K from $TFPRIVADV_DATA_DIR (skipped without it).
"""

from __future__ import annotations

import json
import os
import warnings

import numpy as np
import pandas as pd
import pytest
from fairlearn.metrics import MetricFrame, demographic_parity_difference, mean_prediction

from tfprivadv.audit.fairness import (
    BY_GROUP_COLUMNS,
    EXPOSURE_COLUMNS,
    EXPOSURE_ITEM_COLUMNS,
    FRAME_COLUMNS,
    SUMMARY_COLUMNS,
    FairnessReport,
    fairness_report,
)

NUM_USERS = 300


def _synthetic(seed: int = 0) -> tuple[pd.DataFrame, pd.DataFrame]:
    """Outcomes where women hit 4x as often as men; age groups differ less."""
    rng = np.random.default_rng(seed)
    user_ids = np.arange(1000, 1000 + NUM_USERS)
    gender = rng.choice(["F", "M"], NUM_USERS)
    age_group = rng.choice([1, 18, 25], NUM_USERS)
    hit = rng.random(NUM_USERS) < np.where(gender == "F", 0.4, 0.1)
    ndcg = np.where(hit, 1.0 / np.log2(rng.integers(0, 10, NUM_USERS) + 2.0), 0.0)
    outcomes = pd.DataFrame({"user_id": user_ids, "hit": hit, "ndcg": ndcg})
    users = pd.DataFrame({"user_id": user_ids, "gender": gender, "age_group": age_group})
    return outcomes, users


def _direct_metric_frame(outcomes, users, attribute, metric, **bootstrap) -> MetricFrame:
    """The textbook MetricFrame: mean of the per-user values, by group."""
    joined = outcomes.merge(users, on="user_id")
    values = joined[metric].to_numpy(np.float64)
    return MetricFrame(
        metrics={metric: mean_prediction},
        y_true=values,
        y_pred=values,
        sensitive_features=joined[attribute],
        **bootstrap,
    )


def _rows(report: FairnessReport, attribute: str, metric: str) -> pd.DataFrame:
    frame = report.by_group
    return frame[(frame["attribute"] == attribute) & (frame["metric"] == metric)].set_index("group")


def _summary(report: FairnessReport, attribute: str, metric: str) -> pd.Series:
    frame = report.summary
    rows = frame[(frame["attribute"] == attribute) & (frame["metric"] == metric)]
    assert len(rows) == 1
    return rows.iloc[0]


def _exposure(report: FairnessReport, attribute: str) -> pd.Series:
    frame = report.exposure
    return frame[frame["attribute"] == attribute].set_index("statistic")["value"]


# --- quality parity ----------------------------------------------------------------------


@pytest.mark.parametrize("attribute", ["gender", "age_group"])
@pytest.mark.parametrize("metric", ["hit", "ndcg"])
def test_numbers_equal_a_direct_metric_frame(attribute, metric):
    outcomes, users = _synthetic()
    report = fairness_report(outcomes, users, n_bootstrap=0)
    direct = _direct_metric_frame(outcomes, users, attribute, metric)

    rows = _rows(report, attribute, metric)
    expected = direct.by_group[metric]
    assert list(rows.index) == [g.item() if hasattr(g, "item") else g for g in expected.index]
    np.testing.assert_allclose(rows["value"].to_numpy(), expected.to_numpy(), rtol=1e-12)
    hand = outcomes.merge(users, on="user_id").groupby(attribute)[metric].agg(["mean", "size"])
    np.testing.assert_allclose(rows["value"].to_numpy(), hand["mean"].to_numpy(), rtol=1e-12)
    assert rows["users"].tolist() == hand["size"].tolist()

    summary = _summary(report, attribute, metric)
    assert summary["overall"] == pytest.approx(direct.overall[metric], rel=1e-12)
    assert summary["difference"] == pytest.approx(direct.difference()[metric], rel=1e-12)
    assert summary["ratio"] == pytest.approx(direct.ratio()[metric], rel=1e-12)
    assert summary["users"] == NUM_USERS


def test_hand_computed_gap_worst_and_best_group():
    outcomes = pd.DataFrame({"user_id": range(8), "hit": [1, 1, 1, 0, 1, 0, 0, 0]})
    users = pd.DataFrame({"user_id": range(8), "gender": ["F"] * 4 + ["M"] * 4})
    report = fairness_report(outcomes, users, metrics="hit", n_bootstrap=0)

    rows = _rows(report, "gender", "hit")
    assert rows.loc["F", "value"] == 0.75
    assert rows.loc["M", "value"] == 0.25
    summary = _summary(report, "gender", "hit")
    assert summary["overall"] == 0.5
    assert summary["difference"] == pytest.approx(0.5)
    assert summary["ratio"] == pytest.approx(1 / 3)
    assert (summary["worst_group"], summary["best_group"]) == ("M", "F")


def test_known_gap_is_found_with_an_interval_that_excludes_zero():
    outcomes, users = _synthetic()
    report = fairness_report(outcomes, users, n_bootstrap=100, random_state=0)
    summary = _summary(report, "gender", "hit")
    assert (summary["worst_group"], summary["best_group"]) == ("M", "F")
    assert summary["difference_low"] > 0.1
    assert summary["ratio_high"] < 0.6


def test_intersection_matches_metric_frame_on_both_columns():
    outcomes, users = _synthetic()
    report = fairness_report(outcomes, users, intersections=True, n_bootstrap=0)
    joined = outcomes.merge(users, on="user_id")
    direct = MetricFrame(
        metrics={"hit": mean_prediction},
        y_true=joined["hit"].to_numpy(np.float64),
        y_pred=joined["hit"].to_numpy(np.float64),
        sensitive_features=joined[["gender", "age_group"]],
    )
    rows = _rows(report, "gender & age_group", "hit")
    assert list(rows.index) == [f"{g} & {a}" for g, a in direct.by_group.index]
    np.testing.assert_allclose(rows["value"].to_numpy(), direct.by_group["hit"].to_numpy())
    summary = _summary(report, "gender & age_group", "hit")
    assert summary["difference"] == pytest.approx(direct.difference()["hit"])
    assert report.attributes == ("gender", "age_group", "gender & age_group")


# --- bootstrap ---------------------------------------------------------------------------


def test_intervals_are_fairlearns_and_contain_the_point_estimate():
    outcomes, users = _synthetic()
    report = fairness_report(outcomes, users, n_bootstrap=40, confidence=0.9, random_state=3)
    direct = _direct_metric_frame(
        outcomes, users, "gender", "hit", n_boot=40, ci_quantiles=[0.05, 0.95], random_state=3
    )
    # Same rows and seed, so fairlearn draws the same resamples: equal bounds.
    rows = _rows(report, "gender", "hit")
    low, high = direct.by_group_ci
    np.testing.assert_allclose(rows["low"].to_numpy(), low["hit"].to_numpy())
    np.testing.assert_allclose(rows["high"].to_numpy(), high["hit"].to_numpy())
    summary = _summary(report, "gender", "hit")
    assert summary["difference_low"] == pytest.approx(direct.difference_ci()[0]["hit"])
    assert summary["difference_high"] == pytest.approx(direct.difference_ci()[1]["hit"])
    assert summary["ratio_low"] == pytest.approx(direct.ratio_ci()[0]["hit"])
    assert summary["overall_high"] == pytest.approx(direct.overall_ci[1]["hit"])

    groups = report.by_group
    assert (groups["low"] <= groups["value"]).all() and (groups["value"] <= groups["high"]).all()
    for name in ("overall", "difference", "ratio"):
        assert summary[f"{name}_low"] <= summary[name] <= summary[f"{name}_high"]


def test_intervals_are_reproducible_with_random_state():
    outcomes, users = _synthetic()
    first = fairness_report(outcomes, users, n_bootstrap=20, random_state=7)
    again = fairness_report(outcomes, users, n_bootstrap=20, random_state=7)
    other = fairness_report(outcomes, users, n_bootstrap=20, random_state=8)
    pd.testing.assert_frame_equal(first.by_group, again.by_group)
    pd.testing.assert_frame_equal(first.summary, again.summary)
    assert not np.allclose(first.by_group["low"], other.by_group["low"])


def test_zero_bootstrap_leaves_nan_bounds():
    outcomes, users = _synthetic()
    report = fairness_report(outcomes, users, n_bootstrap=0)
    assert report.by_group[["low", "high"]].isna().all().all()
    bounds = [c for c in SUMMARY_COLUMNS if c.endswith(("_low", "_high"))]
    assert report.summary[bounds].isna().all().all()
    assert report.summary["difference"].notna().all()


def test_higher_confidence_gives_wider_intervals():
    outcomes, users = _synthetic()
    narrow = fairness_report(outcomes, users, n_bootstrap=40, confidence=0.5, random_state=0)
    wide = fairness_report(outcomes, users, n_bootstrap=40, confidence=0.95, random_state=0)
    width = lambda r: (r.by_group["high"] - r.by_group["low"]).to_numpy()  # noqa: E731
    assert (width(wide) >= width(narrow)).all()
    assert (width(wide) > width(narrow)).any()


# --- exposure ----------------------------------------------------------------------------


def _lists(groups: dict[str, list[int]], users_per_group: int = 10) -> tuple:
    """Top-k lists: every user of group g gets the items groups[g]."""
    users, recs = [], []
    for g, (name, items) in enumerate(groups.items()):
        for u in range(users_per_group):
            user_id = 100 * g + u
            users.append({"user_id": user_id, "group": name})
            recs += [{"user_id": user_id, "item_id": i} for i in items]
    users = pd.DataFrame(users)
    outcomes = pd.DataFrame({"user_id": users["user_id"], "hit": np.arange(len(users)) % 2})
    return outcomes, users, pd.DataFrame(recs)


def test_disjoint_lists_give_full_disparity():
    outcomes, users, recs = _lists({"A": list(range(10)), "B": list(range(10, 20))})
    report = fairness_report(
        outcomes, users, metrics="hit", n_bootstrap=0, recommendations=recs, random_state=0
    )
    stats = _exposure(report, "group")
    assert stats["dp_difference_max"] == 1.0
    assert stats["dp_difference_mean"] == 1.0
    assert stats["dp_difference_median_weighted"] == 1.0
    assert stats["tvd_max_pair"] == pytest.approx(1.0)
    assert stats["js_distance_max_pair"] == pytest.approx(1.0)
    # Each group holds half the slots, so each is 0.5 from the pooled distribution.
    assert stats["tvd_to_overall_mean"] == pytest.approx(0.5)
    assert stats["items"] == 20 and stats["users"] == 20 and stats["groups"] == 2
    # Shuffled labels mix the lists, so chance disparity is well below 1.
    assert stats["tvd_max_pair_chance"] < 0.8


def test_identical_lists_give_zero_disparity():
    outcomes, users, recs = _lists({"A": list(range(10)), "B": list(range(10))})
    report = fairness_report(
        outcomes, users, metrics="hit", n_bootstrap=0, recommendations=recs, random_state=0
    )
    stats = _exposure(report, "group")
    assert (stats.drop(["users", "groups", "items"]) == 0.0).all()


def test_more_than_two_groups_take_max_pair_and_mean_to_overall():
    outcomes, users, recs = _lists(
        {"A": list(range(10)), "B": list(range(10)), "C": list(range(10, 20))}
    )
    report = fairness_report(outcomes, users, metrics="hit", n_bootstrap=0, recommendations=recs)
    stats = _exposure(report, "group")
    assert stats["tvd_max_pair"] == pytest.approx(1.0)
    assert stats["js_distance_max_pair"] == pytest.approx(1.0)
    # Pooled: items 0-9 get 2/30 each, 10-19 get 1/30; A and B are 1/3 away, C 2/3.
    assert stats["tvd_to_overall_mean"] == pytest.approx(4 / 9)


def _random_lists(seed: int = 0):
    rng = np.random.default_rng(seed)
    n_users, n_items, k = 90, 30, 5
    users = pd.DataFrame(
        {"user_id": np.arange(n_users), "age_group": rng.choice([1, 18, 25], n_users)}
    )
    # Group-dependent popularity, so items differ in their DP difference.
    weights = rng.random((3, n_items)) ** 3
    code = users["age_group"].map({1: 0, 18: 1, 25: 2}).to_numpy()
    items = np.stack(
        [rng.choice(n_items, k, replace=False, p=weights[c] / weights[c].sum()) for c in code]
    )
    outcomes = pd.DataFrame({"user_id": users["user_id"], "hit": rng.random(n_users) < 0.2})
    return outcomes, users, items


def test_per_item_dp_difference_equals_fairlearn():
    outcomes, users, items = _random_lists()
    report = fairness_report(
        outcomes,
        users,
        metrics="hit",
        n_bootstrap=0,
        recommendations=(users["user_id"].to_numpy(), items),
        top_items=1000,
    )
    table = report.exposure_items.drop_duplicates("item_id").set_index("item_id")
    assert len(table) == len(np.unique(items))
    assert table["dp_difference"].is_monotonic_decreasing
    groups = users["age_group"].to_numpy()
    for item_id in table.index[:: max(1, len(table) // 8)]:
        indicator = (items == item_id).any(axis=1).astype(int)
        expected = demographic_parity_difference(indicator, indicator, sensitive_features=groups)
        assert table.loc[item_id, "dp_difference"] == pytest.approx(expected, abs=1e-12)
        assert table.loc[item_id, "exposure"] == indicator.sum()

    # Summaries over the full per-item table.
    dp, exposure = table["dp_difference"].to_numpy(), table["exposure"].to_numpy()
    stats = _exposure(report, "age_group")
    assert stats["dp_difference_mean"] == pytest.approx(dp.mean())
    assert stats["dp_difference_max"] == pytest.approx(dp.max())
    assert stats["dp_difference_mean_weighted"] == pytest.approx(np.average(dp, weights=exposure))
    assert stats["dp_difference_p90"] == pytest.approx(np.quantile(dp, 0.9, method="inverted_cdf"))


def test_exposure_items_rates_per_group():
    outcomes, users, items = _random_lists()
    report = fairness_report(
        outcomes,
        users,
        metrics="hit",
        n_bootstrap=0,
        recommendations=(users["user_id"].to_numpy(), items),
        top_items=3,
    )
    table = report.exposure_items
    assert list(table.columns) == list(EXPOSURE_ITEM_COLUMNS)
    assert table["rank"].tolist() == [1, 1, 1, 2, 2, 2, 3, 3, 3]
    assert table["group"].tolist() == [1, 18, 25] * 3
    np.testing.assert_allclose(table["selection_rate"], table["recommended"] / table["users"])
    spread = table.groupby("rank")["selection_rate"].agg(lambda r: r.max() - r.min())
    np.testing.assert_allclose(spread.to_numpy(), table.groupby("rank")["dp_difference"].first())


def test_recommendation_forms_agree():
    outcomes, users, items = _random_lists()
    user_ids = users["user_id"].to_numpy()
    forms = [
        (user_ids, items),
        {u: list(row) for u, row in zip(user_ids, items, strict=True)},
        pd.DataFrame({"user_id": np.repeat(user_ids, items.shape[1]), "item_id": items.ravel()}),
    ]
    reports = [
        fairness_report(
            outcomes, users, metrics="hit", n_bootstrap=0, recommendations=f, random_state=1
        )
        for f in forms
    ]
    for other in reports[1:]:
        pd.testing.assert_frame_equal(reports[0].exposure, other.exposure)
        pd.testing.assert_frame_equal(reports[0].exposure_items, other.exposure_items)


def test_no_recommendations_no_exposure():
    outcomes, users = _synthetic()
    report = fairness_report(outcomes, users, n_bootstrap=0)
    assert report.exposure is None and report.exposure_items is None


# --- frames and serialisation ------------------------------------------------------------


def test_frames_have_the_documented_columns_and_serialise():
    outcomes, users = _synthetic()
    recs = pd.DataFrame({"user_id": np.repeat(outcomes["user_id"], 3), "item_id": 7})
    recs["item_id"] = np.tile([1, 2, 3], NUM_USERS)
    report = fairness_report(outcomes, users, n_bootstrap=5, random_state=0, recommendations=recs)
    assert list(report.by_group.columns) == list(BY_GROUP_COLUMNS)
    assert list(report.summary.columns) == list(SUMMARY_COLUMNS)
    assert list(report.exposure.columns) == list(EXPOSURE_COLUMNS)

    frame = report.to_frame()
    assert list(frame.columns) == list(FRAME_COLUMNS)
    assert set(frame["section"]) == {"by_group", "summary", "exposure"}
    worst = frame[(frame["statistic"] == "worst_group") & (frame["metric"] == "hit")]
    assert worst.set_index("attribute").loc["gender", "group"] == "M"

    payload = json.loads(json.dumps(report.to_dict(), allow_nan=False))
    assert payload["metrics"] == ["hit", "ndcg"]
    assert len(payload["by_group"]) == len(report.by_group)
    assert {"group": 1, "metric": "hit"}.items() <= payload["by_group"][4].items()
    assert "gender" in repr(report)


def test_accepts_an_evaluation_like_object_and_indexed_features():
    outcomes, users = _synthetic()

    class Result:
        per_user = outcomes

    report = fairness_report(Result(), users.set_index("user_id"), n_bootstrap=0)
    assert report.attributes == ("gender", "age_group")


# --- validation --------------------------------------------------------------------------


def test_missing_sensitive_values_warn_and_drop():
    outcomes, users = _synthetic()
    users = users.iloc[3:].copy()  # three users unknown
    users["age_group"] = users["age_group"].astype(float)
    users.iloc[:2, users.columns.get_loc("age_group")] = np.nan  # two more lack an age
    with pytest.warns(UserWarning) as caught:
        report = fairness_report(outcomes, users, n_bootstrap=0)
    messages = [str(w.message) for w in caught]
    assert any("'gender' value for 3 of 300 users in `outcomes`" in m for m in messages)
    assert any("'age_group' value for 5 of 300 users in `outcomes`" in m for m in messages)
    assert _summary(report, "gender", "hit")["users"] == 297
    assert _summary(report, "age_group", "hit")["users"] == 295
    # Codes stay integers once the missing rows are gone.
    assert set(_rows(report, "age_group", "hit").index) == {1, 18, 25}


def test_no_warning_when_every_user_has_values():
    outcomes, users = _synthetic()
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        fairness_report(outcomes, users, n_bootstrap=0)


def _call(**changes):
    outcomes, users = _synthetic()
    kwargs = {"n_bootstrap": 0}
    kwargs.update(changes)
    return fairness_report(
        kwargs.pop("outcomes", outcomes), kwargs.pop("sensitive_features", users), **kwargs
    )


@pytest.mark.parametrize(
    "changes, error, match",
    [
        ({"outcomes": pd.DataFrame({"hit": [1, 0]})}, ValueError, r"`outcomes` lacks.*user_id"),
        ({"outcomes": [1, 2]}, TypeError, "`outcomes` must be a pandas DataFrame"),
        ({"metrics": ("hit", "recall")}, ValueError, r"`metrics` names column\(s\) \['recall'\]"),
        ({"metrics": ()}, ValueError, "`metrics` must name at least one"),
        ({"metrics": 3}, TypeError, "`metrics` must be a column name"),
        ({"metrics": ("hit", "hit")}, ValueError, "`metrics` must not repeat"),
        ({"confidence": 0.0}, ValueError, "`confidence` must be > 0"),
        ({"confidence": 1.0}, ValueError, r"`confidence` must be in \(0, 1\)"),
        ({"confidence": 1.5}, ValueError, r"`confidence` must be in \(0, 1\)"),
        ({"n_bootstrap": -1}, ValueError, "`n_bootstrap` must be an int >= 0"),
        ({"n_bootstrap": 2.5}, TypeError, "`n_bootstrap` must be an int"),
        ({"top_items": 0}, ValueError, "`top_items` must be an int >= 1"),
        ({"n_permutations": -1}, ValueError, "`n_permutations` must be an int >= 0"),
        ({"random_state": "seed"}, TypeError, "`random_state` must be None, an int"),
        ({"attributes": ["income"]}, ValueError, r"`attributes` names column\(s\) \['income'\]"),
        ({"attributes": ["gender"], "intersections": True}, ValueError, "at least two"),
        ({"intersections": "yes"}, TypeError, "`intersections` must be a bool"),
        ({"recommendations": [1, 2]}, TypeError, "`recommendations` must be a DataFrame"),
        ({"recommendations": pd.DataFrame({"user_id": [1]})}, ValueError, "lacks"),
        (
            {"recommendations": (np.arange(3), np.arange(3))},
            ValueError,
            r"`recommendations` as a pair must be",
        ),
        (
            {"sensitive_features": pd.DataFrame({"gender": ["F", "M"]})},
            ValueError,
            "`sensitive_features` needs a `user_id` column",
        ),
    ],
)
def test_invalid_arguments_raise_naming_the_argument(changes, error, match):
    with pytest.raises(error, match=match):
        _call(**changes)


def test_non_numeric_metric_column_raises():
    outcomes, users = _synthetic()
    outcomes["hit"] = outcomes["hit"].map({True: "yes", False: "no"})
    with pytest.raises(TypeError, match="`outcomes` column 'hit' must be numeric"):
        fairness_report(outcomes, users, n_bootstrap=0)


def test_missing_outcome_raises():
    outcomes, users = _synthetic()
    outcomes.loc[0, "ndcg"] = np.nan
    with pytest.raises(ValueError, match="`outcomes` column 'ndcg' has 1 missing"):
        fairness_report(outcomes, users, n_bootstrap=0)


def test_duplicated_users_raise():
    outcomes, users = _synthetic()
    with pytest.raises(ValueError, match="`outcomes` must hold one row per user"):
        fairness_report(pd.concat([outcomes, outcomes.head(2)]), users, n_bootstrap=0)
    with pytest.raises(ValueError, match="`sensitive_features` must hold one row per user"):
        fairness_report(outcomes, pd.concat([users, users.head(1)]), n_bootstrap=0)


def test_single_group_attribute_raises():
    outcomes, users = _synthetic()
    users["country"] = "NL"
    with pytest.raises(ValueError, match="'country' has a single group.*nothing to compare"):
        fairness_report(outcomes, users, n_bootstrap=0)


def test_unmatched_user_ids_raise():
    outcomes, users = _synthetic()
    users["user_id"] = users["user_id"].astype(str)
    with pytest.raises(ValueError, match="No user in `outcomes` has a 'gender' value"):
        with pytest.warns(UserWarning):
            fairness_report(outcomes, users, n_bootstrap=0)


# --- real data ---------------------------------------------------------------------------


@pytest.mark.integration
def test_popularity_baseline_on_movielens_100k_matches_metric_frame():
    root = os.environ.get("TFPRIVADV_DATA_DIR")
    if not root:
        pytest.skip("TFPRIVADV_DATA_DIR not set; point it at a folder holding ml-100k/.")
    from tfprivadv.datasets import leave_one_out, load_movielens
    from tfprivadv.evaluation import popularity_baseline

    data = load_movielens("100k", download=False)
    train, test = leave_one_out(data.ratings, strategy="last")
    result = popularity_baseline(train, test, k=10)
    report = fairness_report(
        result, data.users, attributes=["gender", "age_group"], n_bootstrap=20, random_state=0
    )
    assert set(report.summary["attribute"]) == {"gender", "age_group"}
    assert set(_rows(report, "gender", "hit").index) == {"F", "M"}
    for attribute in ("gender", "age_group"):
        for metric in ("hit", "ndcg"):
            direct = _direct_metric_frame(
                result.per_user,
                data.users,
                attribute,
                metric,
                n_boot=20,
                ci_quantiles=[0.025, 0.975],
                random_state=0,
            )
            rows = _rows(report, attribute, metric)
            np.testing.assert_allclose(rows["value"], direct.by_group[metric], rtol=1e-12)
            np.testing.assert_allclose(rows["low"], direct.by_group_ci[0][metric], rtol=1e-12)
            summary = _summary(report, attribute, metric)
            assert summary["overall"] == pytest.approx(direct.overall[metric], rel=1e-12)
            assert summary["difference"] == pytest.approx(direct.difference()[metric])
            assert summary["ratio"] == pytest.approx(direct.ratio()[metric])
            assert summary["users"] == data.users["user_id"].nunique()
    # The overall HR@10 is the evaluation's own.
    assert _summary(report, "gender", "hit")["overall"] == pytest.approx(result.hr)
