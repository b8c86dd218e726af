"""Shared fixtures for the unit tests: a fresh Keras session and fixed seeds before
every test, and a tiny synthetic interaction log with user attributes.

The synthetic data is 40 users x 30 items with 400 distinct (user, item) pairs, small
enough that a few epochs of `fit` take well under a second without XLA.
"""

from __future__ import annotations

import os
from pathlib import Path

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

import numpy as np  # noqa: E402
import pandas as pd  # noqa: E402
import pytest  # noqa: E402

# Importing tfprivadv first makes `tf.keras` resolve to Keras 2 (tf_keras).
import tfprivadv  # noqa: E402, F401
from tfprivadv._keras import keras, tf  # noqa: E402

NUM_USERS = 40
NUM_ITEMS = 30
NUM_INTERACTIONS = 400
AGE_GROUPS = (1, 18, 25, 35, 45, 50, 56)
FIRST_ITEM_ID = 100


@pytest.fixture(autouse=True)
def _fresh_session():
    """Clears Keras state (layer names, graphs) and seeds TF and NumPy."""
    keras.backend.clear_session()
    tf.random.set_seed(0)
    np.random.seed(0)
    yield


def _synthetic_data() -> tuple[pd.DataFrame, pd.DataFrame]:
    rng = np.random.default_rng(1234)
    pairs = rng.choice(NUM_USERS * NUM_ITEMS, NUM_INTERACTIONS, replace=False)
    ratings = pd.DataFrame(
        {
            "user_id": (pairs // NUM_ITEMS + 1).astype(np.int64),
            "item_id": (pairs % NUM_ITEMS + FIRST_ITEM_ID).astype(np.int64),
        }
    )
    gender = np.array(["F", "M"] * (NUM_USERS // 2))
    rng.shuffle(gender)
    age = rng.uniform(18.0, 60.0, NUM_USERS)
    age[3] = np.nan
    users = pd.DataFrame(
        {
            "user_id": np.arange(1, NUM_USERS + 1, dtype=np.int64),
            "gender": gender,
            "age_group": rng.choice(AGE_GROUPS, NUM_USERS).astype(np.int64),
            "age": age,
        }
    )
    return ratings, users


_RATINGS, _USERS = _synthetic_data()


@pytest.fixture
def ratings() -> pd.DataFrame:
    """400 distinct (user_id, item_id) interactions; ids are int64."""
    return _RATINGS.copy()


@pytest.fixture
def users() -> pd.DataFrame:
    """One row per user: `user_id`, `gender` (F/M), `age_group`, `age` (one NaN)."""
    return _USERS.copy()


@pytest.fixture
def user_ids() -> np.ndarray:
    return np.arange(1, NUM_USERS + 1, dtype=np.int64)


@pytest.fixture
def item_ids() -> np.ndarray:
    return np.arange(FIRST_ITEM_ID, FIRST_ITEM_ID + NUM_ITEMS, dtype=np.int64)


@pytest.fixture(scope="session")
def ml100k_path() -> str:
    """The real ML-100K folder under $TFPRIVADV_DATA_DIR; skips the test without it."""
    root = os.environ.get("TFPRIVADV_DATA_DIR")
    if not root or not (Path(root) / "ml-100k").is_dir():
        pytest.skip("TFPRIVADV_DATA_DIR not set or without ml-100k/")
    return str(Path(root) / "ml-100k")
