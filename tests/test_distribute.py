"""Tests for training under tf.distribute (tfprivadv.distribute and the models' fit).

The end-to-end checks train the same model on ML-100K in subprocesses
(tests/distributed_train.py): single device, MirroredStrategy over two logical
CPUs, and MultiWorkerMirroredStrategy with two worker processes on 127.0.0.1.
Same seed and global batch must give the same embeddings and history.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from tfprivadv import data, distribute
from tfprivadv._keras import tf

SCRIPT = Path(__file__).with_name("distributed_train.py")
TIMEOUT = 300


def _env(**extra: str) -> dict[str, str]:
    env = {**os.environ, "TF_CPP_MIN_LOG_LEVEL": "2", **extra}
    env.pop("TF_CONFIG", None)
    env.update(extra)
    return env


def _train(mode: str, ml100k_path: str, out: Path) -> dict[str, np.ndarray]:
    result = subprocess.run(
        [sys.executable, str(SCRIPT), mode, ml100k_path, str(out)],
        env=_env(),
        capture_output=True,
        text=True,
        timeout=TIMEOUT,
    )
    assert result.returncode == 0, result.stderr[-3000:]
    return dict(np.load(out))


def _train_multiworker(ml100k_path: str, out: Path) -> dict[str, np.ndarray]:
    workers = [f"127.0.0.1:{port}" for port in distribute.free_local_ports(2)]
    processes = []
    for index in range(2):
        tf_config = {"cluster": {"worker": workers}, "task": {"type": "worker", "index": index}}
        processes.append(
            subprocess.Popen(
                [sys.executable, str(SCRIPT), "multiworker", ml100k_path, str(out)],
                env=_env(TF_CONFIG=json.dumps(tf_config)),
                stdout=subprocess.DEVNULL,
                stderr=subprocess.PIPE,
                text=True,
            )
        )
    try:
        errors = [p.communicate(timeout=TIMEOUT)[1] for p in processes]
    finally:
        for p in processes:
            p.kill()
    for p, error in zip(processes, errors, strict=True):
        assert p.returncode == 0, error[-3000:]
    return dict(np.load(out))


@pytest.fixture(scope="module")
def single_device(ml100k_path, tmp_path_factory):
    return _train("single", ml100k_path, tmp_path_factory.mktemp("single") / "out.npz")


def _assert_same_training(result: dict, reference: dict) -> None:
    assert int(result["replicas"]) == 2
    assert int(reference["replicas"]) == 1
    np.testing.assert_allclose(result["users"], reference["users"], atol=1e-4)
    np.testing.assert_allclose(result["items"], reference["items"], atol=1e-4)
    histories = sorted(k for k in reference if k.startswith("history_"))
    assert "history_gender_loss" in histories and "history_rec_loss" in histories
    for key in histories:
        np.testing.assert_allclose(result[key], reference[key], rtol=1e-4, err_msg=key)
    # Training moved the weights: matching would be trivial otherwise.
    assert reference["history_rec_loss"][-1] < reference["history_rec_loss"][0] - 0.05


def test_mirrored_two_logical_cpus_matches_single_device(single_device, ml100k_path, tmp_path):
    mirrored = _train("mirrored", ml100k_path, tmp_path / "out.npz")
    _assert_same_training(mirrored, single_device)


def test_multiworker_two_processes_matches_single_device(single_device, ml100k_path, tmp_path):
    _assert_same_training(_train_multiworker(ml100k_path, tmp_path / "out.npz"), single_device)


def test_multi_worker_example_runs(ml100k_path):
    example = Path(__file__).parents[1] / "examples" / "multi_worker.py"
    result = subprocess.run(
        [sys.executable, str(example), "1"],
        env=_env(TFPRIVADV_DATA_DIR=str(Path(ml100k_path).parent)),
        capture_output=True,
        text=True,
        timeout=TIMEOUT,
    )
    assert result.returncode == 0, result.stderr[-3000:]
    assert "2 replicas, 1 epochs: loss" in result.stdout
    hr = float(result.stdout.split("HR@10 ")[1])
    assert 0.0 < hr < 1.0


def _global_batches(batch_size: int = 8, adversary: int = 4, **kwargs) -> tf.data.Dataset:
    import pandas as pd

    ratings = pd.DataFrame({"user_id": np.arange(40) % 10 + 1, "item_id": np.arange(40) % 7})
    users = pd.DataFrame({"user_id": np.arange(1, 11), "gender": ["F", "M"] * 5})
    return data.training_dataset(
        ratings,
        users,
        attributes=["gender"],
        batch_size=batch_size,
        adversary_batch_size=adversary,
        seed=3,
        **kwargs,
    )


def test_split_for_replicas_gives_each_pipeline_its_replicas_slices():
    dataset = _global_batches(epochs=1)  # the same batches on every pass
    batch = next(iter(dataset))
    # Worker 1 of 2, two replicas each: replicas 2 and 3 of 4, in turn.
    context = tf.distribute.InputContext(
        num_input_pipelines=2, input_pipeline_id=1, num_replicas_in_sync=4
    )
    parts = list(distribute.split_for_replicas(dataset, context).take(2))
    for local, part in enumerate(parts):
        replica = 2 + local
        np.testing.assert_array_equal(
            part["item_id"], batch["item_id"][2 * replica : 2 * replica + 2]
        )
        np.testing.assert_array_equal(
            part["neg_item_id"], batch["neg_item_id"][2 * replica : 2 * replica + 2]
        )
        np.testing.assert_array_equal(
            part["adversary"]["user_id"], batch["adversary"]["user_id"][replica : replica + 1]
        )


def test_uneven_split_names_the_argument():
    with pytest.raises(ValueError, match="adversary_batch_size.*multiple of 4"):
        distribute.check_divisible(_global_batches(batch_size=8, adversary=6), 4)
    with pytest.raises(ValueError, match="`batch_size` must be a multiple of 3"):
        distribute.check_divisible(_global_batches(batch_size=8, adversary=6), 3)


def test_prepare_fit_input_sets_steps_for_a_multi_epoch_stream():
    strategy = tf.distribute.get_strategy()
    stream = _global_batches(epochs=3)
    _, kwargs = distribute.prepare_fit_input(stream, strategy, {"epochs": 3})
    assert kwargs == {"epochs": 3, "steps_per_epoch": 5}
    one_epoch = _global_batches()
    _, kwargs = distribute.prepare_fit_input(one_epoch, strategy, {"epochs": 3})
    assert kwargs == {"epochs": 3}  # Keras reruns a one-epoch dataset itself
