"""Probes: attackers on embeddings find planted signal, nothing in noise, and say clearly
what is wrong with their inputs."""

from __future__ import annotations

import warnings

import numpy as np
import pandas as pd
import pytest
import scipy.sparse as sp
from sklearn.linear_model import Ridge
from sklearn.svm import LinearSVC
from sklearn.tree import DecisionTreeClassifier

from tfprivadv._keras import tf
from tfprivadv.audit.probes import (
    ATTACKERS,
    COLUMNS,
    SUITES,
    best_attackers,
    make_attacker,
    probe_embeddings,
)

PAPER = [
    "logistic",
    "linear_svm_c0.1",
    "linear_svm_c1",
    "linear_svm_c10",
    "rbf_svm",
    "decision_tree",
    "random_forest",
    "gradient_boosting",
]


def _planted(n: int = 300, seed: int = 0) -> tuple[np.ndarray, pd.DataFrame]:
    """Vectors where gender (2 classes) and age group (3 classes) are plainly written."""
    rng = np.random.default_rng(seed)
    gender = rng.integers(0, 2, n)
    group = rng.integers(0, 3, n)
    vectors = rng.normal(size=(n, 6))
    vectors[:, 0] += 6.0 * gender
    vectors[:, 1] += 6.0 * group
    users = pd.DataFrame(
        {"gender": np.where(gender, "M", "F"), "age_group": np.array([18, 25, 35])[group]}
    )
    return vectors, users


# --------------------------------------------------------------------------- leakage


def test_paper_suite_finds_planted_attributes():
    vectors, users = _planted()
    frame = probe_embeddings(vectors, users, attackers="paper", random_state=0)
    assert list(frame.columns) == list(COLUMNS)
    assert list(frame["attacker"]) == PAPER * 2
    assert set(frame["source"]) == {"embeddings"} and set(frame["kind"]) == {"categorical"}
    assert (frame["folds"] == 5).all() and (frame["users"] == 300).all()
    best = best_attackers(frame).set_index("attribute")
    for attribute, classes in (("gender", 2), ("age_group", 3)):
        row = best.loc[attribute]
        assert row["balanced_accuracy"] > 0.95, row
        assert row["roc_auc"] > 0.98, row
        assert row["balanced_accuracy_chance"] == pytest.approx(1 / classes)
        assert row["roc_auc_chance"] == 0.5
        assert row["balanced_accuracy_low"] <= row["balanced_accuracy"]
        assert row["balanced_accuracy"] <= row["balanced_accuracy_high"]
        assert row["balanced_accuracy_gap"] == pytest.approx(row["balanced_accuracy"] - 1 / classes)
    majority = users["gender"].value_counts(normalize=True).max()
    assert frame.loc[0, "accuracy_chance"] == pytest.approx(majority)
    # Every paper attacker yields an AUC, from probabilities or a decision function.
    assert frame["roc_auc"].notna().all()
    assert frame[["r2", "mae", "r2_chance", "mae_low"]].isna().all().all()


def test_noise_intervals_contain_chance():
    rng = np.random.default_rng(1)
    vectors = rng.normal(size=(600, 6))
    labels = np.repeat([0, 1, 2], 200)  # balanced: majority share = 1 / classes
    rng.shuffle(labels)
    frame = probe_embeddings(
        vectors,
        pd.DataFrame({"age": labels}),
        attackers=["logistic", "linear_svm_c1", "decision_tree"],
        random_state=0,
    )
    for row in frame.itertuples():
        for metric in ("accuracy", "balanced_accuracy", "roc_auc"):
            chance = getattr(row, f"{metric}_chance")
            low, high = getattr(row, f"{metric}_low"), getattr(row, f"{metric}_high")
            assert low <= chance <= high, (row.attacker, metric, low, chance, high)
    assert frame["accuracy_chance"].iloc[0] == pytest.approx(1 / 3)


def test_continuous_attribute_is_regressed():
    rng = np.random.default_rng(2)
    vectors = rng.normal(size=(300, 5))
    age = 35.0 + 10.0 * vectors[:, 0] + rng.normal(scale=0.5, size=300)
    frame = probe_embeddings(
        vectors, {"age": age}, attackers=["logistic", "random_forest"], random_state=0
    )
    assert list(frame["kind"]) == ["continuous"] * 2  # float column -> continuous
    linear = frame.set_index("attacker").loc["logistic"]  # ridge on a continuous attribute
    assert linear["r2"] > 0.98 and linear["r2_chance"] == 0.0
    assert linear["r2_low"] <= linear["r2"] <= linear["r2_high"]
    assert linear["mae"] < 0.1 * linear["mae_chance"]
    assert linear["mae_chance"] == pytest.approx(8.0, rel=0.15)  # ~ E|N(0, 10)| = 7.98
    assert linear["mae_gap"] == pytest.approx(linear["mae"] - linear["mae_chance"])
    assert np.isnan(linear["balanced_accuracy"]) and np.isnan(linear["roc_auc_chance"])
    best = best_attackers(frame).iloc[0]
    assert best["attacker"] == "logistic"


def test_kinds_override_the_column_type():
    rng = np.random.default_rng(3)
    vectors = rng.normal(size=(200, 3))
    years = np.round(40 + 10 * vectors[:, 0]).astype(np.int64)  # ints: categorical by default
    codes = rng.integers(0, 2, 200).astype(float)  # floats: continuous by default
    frame = probe_embeddings(
        vectors,
        {"age": years, "gender": codes},
        attackers="logistic",
        kinds={"age": "continuous", "gender": "categorical"},
        random_state=0,
    )
    assert list(frame["kind"]) == ["continuous", "categorical"]
    assert frame.loc[0, "r2"] > 0.9


def test_custom_estimators_pass_through():
    rng = np.random.default_rng(4)
    labels = rng.integers(0, 2, 200)
    vectors = rng.normal(size=(200, 4)) + 2.0 * labels[:, None]
    age = vectors[:, 0] * 3.0
    frame = probe_embeddings(
        vectors,
        {"g": labels, "age": age},
        attackers={
            "tree": DecisionTreeClassifier(max_depth=2),
            "svm": LinearSVC(),  # no predict_proba: AUC from decision_function
            "ridge": Ridge(),
        },
        random_state=0,
    )
    # Classifiers read the categorical attribute, the regressor the continuous one.
    assert list(zip(frame["attribute"], frame["attacker"], strict=True)) == [
        ("g", "tree"),
        ("g", "svm"),
        ("age", "ridge"),
    ]
    assert frame.loc[0, "roc_auc"] > 0.8 and frame.loc[1, "roc_auc"] > 0.95
    assert frame.loc[2, "r2"] > 0.99

    class NoScores:  # an estimator with neither predict_proba nor decision_function
        def fit(self, x, y):
            self.value_ = np.bincount(y).argmax()
            return self

        def predict(self, x):
            return np.full(len(x), self.value_)

        def get_params(self, deep=True):
            return {}

        def set_params(self, **params):
            return self

    frame = probe_embeddings(vectors, {"g": labels}, attackers={"const": NoScores()})
    assert np.isnan(frame.loc[0, "roc_auc"])
    assert frame.loc[0, "balanced_accuracy"] == pytest.approx(0.5)


def test_suites_resolve_to_documented_names():
    assert SUITES["paper"] == tuple(PAPER)
    assert SUITES["strong"] == (*PAPER, "mlp", "hist_gradient_boosting")
    assert ATTACKERS == SUITES["strong"]
    vectors, users = _planted(n=100)
    frame = probe_embeddings(
        vectors,
        users[["gender"]],
        attackers=["logistic", "decision_tree", "logistic"],  # duplicates dropped
        random_state=0,
    )
    assert list(frame["attacker"]) == ["logistic", "decision_tree"]
    for name in ATTACKERS:
        for kind in ("categorical", "continuous"):
            estimator = make_attacker(name, kind=kind, random_state=7)
            assert hasattr(estimator, "fit"), (name, kind)
    # Every named attacker that takes a seed gets the one derived from random_state.
    forest = make_attacker("random_forest", random_state=7)
    assert forest.random_state == 7 and forest.n_estimators == 100


def test_attackers_get_fixed_seeds_and_results_reproduce():
    vectors, users = _planted(n=120)
    users = pd.DataFrame(
        {
            "gender": users["gender"],
            "age": vectors[:, 0] + np.random.default_rng(0).normal(size=120),
        }
    )
    # Attackers with randomness in their fit, on both kinds of attribute.
    kwargs = {"attackers": ["random_forest", "mlp"], "cv": 3}
    first = probe_embeddings(vectors, users, random_state=11, **kwargs)
    again = probe_embeddings(vectors, users, random_state=11, **kwargs)
    pd.testing.assert_frame_equal(first, again)
    serial = probe_embeddings(vectors, users, random_state=11, n_jobs=1, **kwargs)
    pd.testing.assert_frame_equal(first, serial)
    other = probe_embeddings(vectors, users, random_state=12, **kwargs)
    assert not first[["r2", "accuracy"]].equals(other[["r2", "accuracy"]])


def test_repeats_multiply_folds():
    vectors, users = _planted(n=120)
    frame = probe_embeddings(
        vectors, users[["gender"]], attackers="logistic", cv=3, n_repeats=2, random_state=0
    )
    assert frame.loc[0, "folds"] == 6


def test_embeddings_in_other_containers():
    vectors, users = _planted(n=120)
    expected = probe_embeddings(vectors, users, attackers="logistic", random_state=0)
    for container in (tf.constant(vectors, tf.float32), pd.DataFrame(vectors), vectors.tolist()):
        frame = probe_embeddings(container, users, attackers="logistic", random_state=0)
        assert frame["balanced_accuracy"].to_numpy() == pytest.approx(
            expected["balanced_accuracy"].to_numpy(), abs=0.02
        ), type(container)
    # Sparse features are scaled by MaxAbsScaler (centering would densify them).
    frame = probe_embeddings(sp.csr_matrix(vectors), users, attackers="logistic", random_state=0)
    assert (frame["balanced_accuracy"] > 0.9).all()
    series = probe_embeddings(vectors, users["gender"], attackers="logistic", random_state=0)
    assert list(series["attribute"]) == ["gender"]


def test_missing_labels_are_dropped_with_a_warning():
    rng = np.random.default_rng(5)
    labels = rng.integers(0, 2, 200).astype(float)
    vectors = rng.normal(size=(200, 4)) + labels[:, None]
    labels[:10] = np.nan
    with pytest.warns(UserWarning, match=r"Attribute 'g': dropped 10 of 200 users") as record:
        frame = probe_embeddings(
            vectors,
            {"g": labels},
            attackers={"tree": DecisionTreeClassifier(max_depth=2)},
            kinds={"g": "categorical"},
        )
    assert record[0].filename == __file__  # points at the caller's line
    assert frame.iloc[0]["users"] == 190
    assert list(frame["attacker"]) == ["tree"]


def test_progress_is_called_once_per_attribute_and_attacker(capsys):
    vectors, users = _planted(n=120)
    calls = []
    probe_embeddings(
        vectors,
        users,
        attackers=["logistic", "decision_tree", "linear_svm_c1"],
        progress=calls.append,
        random_state=0,
    )
    assert [(c["attribute"], c["attacker"]) for c in calls] == [
        (attribute, attacker)
        for attribute in ("gender", "age_group")
        for attacker in ("logistic", "decision_tree", "linear_svm_c1")
    ]
    assert [c["done"] for c in calls] == list(range(1, 7))
    assert all(c["total"] == 6 and c["seconds"] >= 0 for c in calls)
    assert all(c["metric"] == "balanced_accuracy" and 0 <= c["score"] <= 1 for c in calls)
    probe_embeddings(vectors, users, attackers="logistic", progress=True, random_state=0)
    assert "2/2" in capsys.readouterr().err  # the tqdm bar


def test_best_attackers_per_source_and_metric():
    frame = pd.DataFrame(
        {
            "source": ["embeddings"] * 3 + ["recommendations"] * 2 + ["embeddings"] * 2,
            "attribute": ["gender"] * 5 + ["age"] * 2,
            "kind": ["categorical"] * 5 + ["continuous"] * 2,
            "attacker": ["a", "b", "c", "a", "b", "a", "b"],
            "balanced_accuracy": [0.6, 0.7, 0.65, 0.55, np.nan, np.nan, np.nan],
            "roc_auc": [0.9, 0.7, 0.8, 0.5, 0.6, np.nan, np.nan],
            "r2": [np.nan] * 5 + [0.2, 0.1],
            "mae": [np.nan] * 5 + [5.0, 4.0],
        }
    )
    best = best_attackers(frame)
    assert list(zip(best["source"], best["attribute"], best["attacker"], strict=True)) == [
        ("embeddings", "gender", "b"),
        ("recommendations", "gender", "a"),
        ("embeddings", "age", "a"),
    ]
    by_auc = best_attackers(frame, "roc_auc", continuous_metric="mae")
    assert list(by_auc["attacker"]) == ["a", "b", "b"]
    with pytest.raises(ValueError, match="`metric`"):
        best_attackers(frame, "f1")


# --------------------------------------------------------------------------- errors


def test_bad_embeddings_name_the_argument():
    labels = {"g": [0, 1] * 5}
    with pytest.raises(TypeError, match="`embeddings` must be a 2-D numeric"):
        probe_embeddings(np.array([["a", "b"]] * 10), labels)
    with pytest.raises(TypeError, match=r"`embeddings` must be numeric.*\['name'\]"):
        probe_embeddings(pd.DataFrame({"x": np.zeros(10), "name": ["u"] * 10}), labels)
    with pytest.raises(ValueError, match="`embeddings` must be a 2-D array"):
        probe_embeddings(np.zeros(10), labels)
    with pytest.raises(ValueError, match=r"`embeddings` must be finite; .* 2 NaN or infinite"):
        vectors = np.zeros((10, 2))
        vectors[0, 0], vectors[3, 1] = np.nan, np.inf
        probe_embeddings(vectors, labels)


def test_mismatched_rows_and_indices():
    vectors = np.zeros((10, 2))
    with pytest.raises(ValueError, match="`attributes` has 9 rows but `embeddings` has 10"):
        probe_embeddings(vectors, {"g": [0, 1] * 4 + [0]})
    attributes = pd.DataFrame({"g": [0, 1] * 5}, index=np.arange(100, 110))
    frame = pd.DataFrame(np.random.default_rng(0).normal(size=(10, 2)), index=np.arange(10))
    with pytest.raises(ValueError, match="index of `attributes` does not match .*`embeddings`"):
        probe_embeddings(frame, attributes, cv=2)
    # Same index: accepted; a RangeIndex on `attributes` is positional and never checked.
    frame.index = attributes.index
    probe_embeddings(frame, attributes, attackers="logistic", cv=2)
    probe_embeddings(frame, attributes.reset_index(drop=True), attackers="logistic", cv=2)
    with pytest.raises(TypeError, match="`attributes` must be a DataFrame"):
        probe_embeddings(vectors, [0, 1] * 5)


def test_bad_kinds_attackers_and_cv():
    vectors = np.random.default_rng(0).normal(size=(10, 2))
    labels = {"g": [0, 1] * 5}
    with pytest.raises(ValueError, match=r"`kinds` names attribute\(s\) \['age'\]"):
        probe_embeddings(vectors, labels, kinds={"age": "continuous"})
    with pytest.raises(ValueError, match="`kinds\\['g'\\]` must be one of"):
        probe_embeddings(vectors, labels, kinds={"g": "ordinal"})
    with pytest.raises(ValueError, match="`attackers` must be .*'linear_svm_c0.1'.*'paper'"):
        probe_embeddings(vectors, labels, attackers="oracle")
    with pytest.raises(ValueError, match="`attackers`"):
        probe_embeddings(vectors, labels, attackers=["logistic", "oracle"])
    with pytest.raises(TypeError, match="`attackers`"):
        probe_embeddings(vectors, labels, attackers=42)
    with pytest.raises(ValueError, match="no estimator for the continuous attribute 'age'"):
        probe_embeddings(
            vectors, {"age": np.arange(10.0)}, attackers={"tree": DecisionTreeClassifier()}
        )
    with pytest.raises(ValueError, match="`cv` must be an int >= 2"):
        probe_embeddings(vectors, labels, cv=1)
    with pytest.raises(TypeError, match="`progress`"):
        probe_embeddings(vectors, labels, attackers="logistic", cv=2, progress="yes")


def test_bad_labels():
    vectors = np.random.default_rng(0).normal(size=(12, 2))
    with pytest.raises(ValueError, match=r"'g' has a single class \('M'\)"):
        probe_embeddings(vectors, {"g": ["M"] * 12})
    with pytest.raises(ValueError, match="'g' in `attributes` has no labels"):
        probe_embeddings(vectors, {"g": [None] * 12})
    with pytest.raises(ValueError, match=r"'age': class\(es\) 56 \(2 users\) have fewer .*`cv`=5"):
        probe_embeddings(vectors, {"age": [18] * 5 + [25] * 5 + [56] * 2})
    with pytest.raises(ValueError, match="'age' has a single value"):
        probe_embeddings(vectors, {"age": np.full(12, 30.0)})
    with pytest.raises(TypeError, match="'g' is continuous .* not numeric"):
        probe_embeddings(vectors, {"g": ["a", "b"] * 6}, kinds={"g": "continuous"})
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # no missing labels: no warning
        probe_embeddings(vectors, {"g": ["a", "b"] * 6}, attackers="logistic", cv=2)
