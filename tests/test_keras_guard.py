"""The Keras-2 guard: tfprivadv makes tf.keras tf_keras, or says how to fix it."""

from __future__ import annotations

import os
import subprocess
import sys

import pytest


def _run(code: str, **env: str) -> subprocess.CompletedProcess:
    environment = {k: v for k, v in os.environ.items() if k != "TF_USE_LEGACY_KERAS"}
    environment.update(env)
    environment.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
    return subprocess.run(
        [sys.executable, "-c", code],
        capture_output=True,
        text=True,
        env=environment,
        timeout=300,
    )


def test_import_first_gives_keras_2():
    result = _run(
        "import tfprivadv, os, tensorflow as tf\n"
        "print(os.environ['TF_USE_LEGACY_KERAS'], tf.keras.__name__)\n"
        "import tensorflow_recommenders\n"
        "print(tfprivadv.GradientReversal.__mro__[1].__module__)"
    )
    assert result.returncode == 0, result.stderr
    assert "1 tf_keras" in result.stdout
    assert "tf_keras" in result.stdout.splitlines()[-1]


def test_keras_3_first_raises_import_error_with_fix():
    result = _run("import tensorflow as tf\ntf.keras.layers\nimport tfprivadv")
    assert result.returncode != 0
    assert "ImportError" in result.stderr
    assert "Keras 3" in result.stderr and "TF_USE_LEGACY_KERAS=1" in result.stderr


def test_explicit_opt_out_raises_import_error():
    result = _run("import tfprivadv.models", TF_USE_LEGACY_KERAS="0")
    assert result.returncode != 0
    assert "TF_USE_LEGACY_KERAS='0'" in result.stderr


@pytest.mark.parametrize("module", ["tfprivadv", "tfprivadv.datasets"])
def test_light_imports_do_not_load_tensorflow(module):
    result = _run(f"import sys, {module}\nprint('tensorflow' in sys.modules)")
    assert result.returncode == 0, result.stderr
    assert result.stdout.strip() == "False"
