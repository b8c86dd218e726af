"""Probes: attackers on embeddings find planted signal and nothing in noise."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest
from sklearn.tree import DecisionTreeClassifier

from tfprivadv.audit import probe_embeddings


def test_planted_attribute_is_found():
    rng = np.random.default_rng(0)
    labels = rng.integers(0, 2, 400)
    vectors = rng.normal(size=(400, 8))
    vectors[:, 0] += 4.0 * labels
    frame = probe_embeddings(vectors, {"gender": np.where(labels, "M", "F")}, random_state=0)
    row = frame.iloc[0]
    assert row["balanced_accuracy"] > 0.95
    assert row["chance_balanced_accuracy"] == 0.5
    assert row["balanced_accuracy_low"] <= row["balanced_accuracy"] <= row["balanced_accuracy_high"]


def test_noise_interval_contains_chance():
    rng = np.random.default_rng(1)
    vectors = rng.normal(size=(500, 6))
    labels = rng.integers(0, 3, 500)
    frame = probe_embeddings(vectors, pd.DataFrame({"age": labels}), random_state=0)
    row = frame.iloc[0]
    assert row["balanced_accuracy_low"] <= 1 / 3 <= row["balanced_accuracy_high"]
    assert row["chance_accuracy"] == pytest.approx(np.bincount(labels).max() / 500)


def test_missing_labels_are_dropped_and_custom_attackers_work():
    rng = np.random.default_rng(2)
    labels = rng.integers(0, 2, 200).astype(float)
    vectors = rng.normal(size=(200, 4)) + labels[:, None]
    labels[:10] = np.nan
    frame = probe_embeddings(
        vectors, {"g": labels}, attackers={"tree": DecisionTreeClassifier(max_depth=2)}
    )
    assert frame.iloc[0]["users"] == 190
    assert list(frame["attacker"]) == ["tree"]


def test_bad_inputs_name_the_argument():
    vectors = np.zeros((10, 2))
    with pytest.raises(ValueError, match="`attributes` has 9 rows"):
        probe_embeddings(vectors, {"g": [0, 1] * 4 + [0]})
    with pytest.raises(TypeError, match="`embeddings`"):
        probe_embeddings(np.array([["a", "b"]] * 10), {"g": [0, 1] * 5})
    with pytest.raises(ValueError, match="`attackers`"):
        probe_embeddings(vectors, {"g": [0, 1] * 5}, attackers="oracle")
    with pytest.raises(ValueError, match="single class"):
        probe_embeddings(vectors, {"g": [1] * 10})
