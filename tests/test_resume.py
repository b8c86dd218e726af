"""Kill `tfprivadv train` / `sweep` mid-training (SIGKILL, no clean-up), run the
same command again, and compare with an uninterrupted run: the resumed run must
continue from its last finished epoch and end with the same model and results.
Real ML-100K; skipped without $TFPRIVADV_DATA_DIR.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from tfprivadv import cli

EPOCHS = 6
TIMEOUT = 300


def _train_args(ml100k_path: str, output: Path) -> list[str]:
    return [
        "train",
        "--data-path",
        ml100k_path,
        "--epochs",
        str(EPOCHS),
        "--batch-size",
        "256",
        "--adversary-weight",
        "0.5",
        "--lr-decay",
        "cosine",
        "--attackers",
        "logistic",
        "--verbose",
        "0",
        "--output",
        str(output),
    ]


def _kill_after_first_checkpoint(argv: list[str], state: Path) -> int:
    """Runs `tfprivadv ARGV` in a subprocess and SIGKILLs it as soon as `state`
    records a finished epoch. Returns the epochs that were done."""
    env = {**os.environ, "TF_CPP_MIN_LOG_LEVEL": "2"}
    process = subprocess.Popen(
        [sys.executable, "-m", "tfprivadv", *argv],
        env=env,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.PIPE,
        text=True,
    )
    deadline = time.monotonic() + TIMEOUT
    try:
        while not state.is_file():
            if process.poll() is not None:
                error = process.stderr.read()[-2000:]
                pytest.fail(f"exited ({process.returncode}) before a checkpoint: {error}")
            if time.monotonic() > deadline:
                pytest.fail("no checkpoint within the timeout")
            time.sleep(0.02)
        process.send_signal(signal.SIGKILL)
        process.wait(timeout=30)
    finally:
        process.kill()
        process.stderr.close()
    return json.loads(state.read_text())["epochs_done"]


def _user_vectors(run: Path) -> np.ndarray:
    from tfprivadv._keras import tf

    model = tf.keras.models.load_model(run / "model.keras")
    return model.retrieval_model.user_embedding.embeddings.numpy()


def _assert_same_results(resumed: Path, reference: Path) -> None:
    got = json.loads((resumed / "metrics.json").read_text())
    want = json.loads((reference / "metrics.json").read_text())
    assert got["history"].keys() == want["history"].keys()
    assert len(want["history"]["loss"]) == EPOCHS
    for key, values in want["history"].items():
        np.testing.assert_allclose(got["history"][key], values, rtol=1e-5, err_msg=key)
    for key in ("hr@10", "ndcg@10"):
        assert got["metrics"][key] == pytest.approx(want["metrics"][key], abs=1e-9), key
    leak_got = pd.read_csv(resumed / "leakage.csv")
    leak_want = pd.read_csv(reference / "leakage.csv")
    for column in ("accuracy", "balanced_accuracy"):
        np.testing.assert_allclose(leak_got[column], leak_want[column], atol=1e-9)
    np.testing.assert_allclose(_user_vectors(resumed), _user_vectors(reference), atol=1e-5)


@pytest.mark.integration
def test_killed_train_resumes_to_the_uninterrupted_result(ml100k_path, tmp_path, capsys):
    reference = tmp_path / "reference"
    assert cli.main(_train_args(ml100k_path, reference)) == 0
    assert not (tmp_path / ".reference.checkpoint").exists()  # removed once written

    resumed = tmp_path / "resumed"
    checkpoint = cli.checkpoint_dir(resumed)
    done = _kill_after_first_checkpoint(
        _train_args(ml100k_path, resumed), checkpoint / "state.json"
    )
    assert 1 <= done < EPOCHS, "killed too late to test resuming"
    assert not resumed.exists()  # nothing half-written
    # At most the epoch in progress is lost: only the last finished one is kept.
    assert len(list(checkpoint.glob("epoch-*.index"))) == 1

    capsys.readouterr()
    assert cli.main(_train_args(ml100k_path, resumed)) == 0
    assert f"Resuming after epoch {done}" in capsys.readouterr().out
    assert not checkpoint.exists()
    metrics = json.loads((resumed / "metrics.json").read_text())["metrics"]
    assert metrics["resumed_at_epoch"] == done
    _assert_same_results(resumed, reference)


@pytest.mark.integration
def test_a_changed_command_does_not_resume_a_foreign_checkpoint(ml100k_path, tmp_path, capsys):
    output = tmp_path / "run"
    state = cli.checkpoint_dir(output) / "state.json"
    _kill_after_first_checkpoint(_train_args(ml100k_path, output), state)
    changed = _train_args(ml100k_path, output)
    changed[changed.index("--adversary-weight") + 1] = "0.25"
    assert cli.main(changed) == 2
    error = capsys.readouterr().err
    assert "belongs to another run" in error and "--restart" in error
    assert not output.exists()
    # --restart discards it and trains from scratch.
    assert cli.main([*changed, "--restart", "--epochs", "1"]) == 0
    metrics = json.loads((output / "metrics.json").read_text())["metrics"]
    assert metrics["resumed_at_epoch"] == 0


def _sweep_args(ml100k_path: str, output: Path) -> list[str]:
    return [
        "sweep",
        "--dataset",
        "100k",
        "--data-path",
        ml100k_path,
        "--dims",
        "8",
        "--lambdas",
        "0",
        "--epochs",
        str(EPOCHS),
        "--batch-size",
        "256",
        "--attackers",
        "logistic",
        "--recommendation-attackers",
        "logistic",
        "--no-table1",
        "--no-progress",
        "--output",
        str(output),
    ]


@pytest.mark.integration
def test_killed_sweep_resumes_its_cell_to_the_uninterrupted_result(ml100k_path, tmp_path, capsys):
    reference = tmp_path / "reference"
    assert cli.main(_sweep_args(ml100k_path, reference)) == 0
    assert not (reference / "checkpoints").exists()

    resumed = tmp_path / "resumed"
    cell = "dim8-lambda0"
    state = resumed / "checkpoints" / cell / "state.json"
    done = _kill_after_first_checkpoint(_sweep_args(ml100k_path, resumed), state)
    assert 1 <= done < EPOCHS, "killed too late to test resuming"
    assert not (resumed / "cells" / cell).exists()

    capsys.readouterr()
    assert cli.main(_sweep_args(ml100k_path, resumed)) == 0
    assert f"cell {cell} continues after epoch {done}" in capsys.readouterr().out
    assert not (resumed / "checkpoints").exists()
    _assert_same_results(resumed / "cells" / cell, reference / "cells" / cell)
