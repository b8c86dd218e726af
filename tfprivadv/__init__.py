"""tfprivadv: privacy-adversarial user representations for TensorFlow Recommenders.

TFRS 0.7 needs Keras 2: importing tfprivadv sets TF_USE_LEGACY_KERAS=1 so that
`tf.keras` resolves to tf_keras, and raises ImportError if `tf.keras` already
resolved to Keras 3. Public names load lazily, so `tfprivadv.datasets` imports
without TensorFlow.
"""

from __future__ import annotations

import importlib
import os
import sys
from typing import Any

__version__ = "0.1.0"

if os.environ.get("TF_USE_LEGACY_KERAS") is None:
    os.environ["TF_USE_LEGACY_KERAS"] = "1"
if "tensorflow" in sys.modules:
    # TensorFlow is loaded already, so `tf.keras` may have resolved: check now.
    importlib.import_module("tfprivadv._keras")

_EXPORTS = {
    "AdversaryWeightScheduler": "callbacks",
    "GaninSchedule": "callbacks",
    "TrainingCheckpoint": "callbacks",
    "AttributeHead": "heads",
    "CategoricalHead": "heads",
    "ContinuousHead": "heads",
    "GradientReversal": "layers",
    "IdLookup": "layers",
    "reverse_gradient": "layers",
    "BPRLoss": "losses",
    "BPRRetrievalModel": "models",
    "BPRTask": "models",
    "PrivacyAdversarialModel": "models",
}

__all__ = sorted(_EXPORTS)


def __getattr__(name: str) -> Any:
    if name in _EXPORTS:
        value = getattr(importlib.import_module(f"tfprivadv.{_EXPORTS[name]}"), name)
        globals()[name] = value
        return value
    raise AttributeError(f"module 'tfprivadv' has no attribute {name!r}")


def __dir__() -> list[str]:
    return sorted([*globals(), *_EXPORTS])
