"""Makes `tf.keras` resolve to Keras 2 (tf_keras), which TFRS 0.7.x requires.

Imported first by `tfprivadv/__init__.py`; every other module imports TensorFlow only
after this has run.
"""

from __future__ import annotations

import os

_FIX = (
    "Import tfprivadv (or tensorflow_recommenders) before anything touches "
    "`tf.keras`, or set the environment variable TF_USE_LEGACY_KERAS=1 before "
    "starting Python, and make sure `tf-keras` is installed."
)

if os.environ.get("TF_USE_LEGACY_KERAS", "1") not in ("1", "true", "True"):
    raise ImportError(
        "tfprivadv needs Keras 2 (tf_keras) because tensorflow-recommenders 0.7 does "
        f"not run on Keras 3, but TF_USE_LEGACY_KERAS={os.environ['TF_USE_LEGACY_KERAS']!r}. "
        + _FIX
    )
# TensorFlow reads this when `tf.keras` is first accessed, not when it is imported.
os.environ["TF_USE_LEGACY_KERAS"] = "1"

import tensorflow as tf  # noqa: E402

if not tf.keras.__name__.startswith("tf_keras"):
    raise ImportError(
        "`tf.keras` already resolved to Keras 3 "
        f"({tf.keras.__name__}) before tfprivadv was imported; tfprivadv and "
        "tensorflow-recommenders need Keras 2. " + _FIX
    )

import tensorflow_recommenders as tfrs  # noqa: E402  (only after the check above)

keras = tf.keras

__all__ = ["keras", "tf", "tfrs"]
