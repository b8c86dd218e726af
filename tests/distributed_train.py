"""Trains one PrivacyAdversarialModel on ML-100K under a given strategy; run by
tests/test_distribute.py in a subprocess, because logical devices and a
multi-worker cluster must be set up before TensorFlow starts and cannot be torn
down inside the test process.

    python tests/distributed_train.py {single,mirrored,multiworker} ML100K_DIR OUT.npz

`mirrored` splits the one CPU into two logical devices; `multiworker` reads
TF_CONFIG (one replica per worker) and only the chief writes OUT.npz. Every mode
sees the same global batches (same seed, batch 1024, 256 sampled users).
"""

from __future__ import annotations

import os
import sys

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

import numpy as np  # noqa: E402

from tfprivadv._keras import keras, tf  # noqa: E402

EPOCHS = 2


def main(mode: str, data_dir: str, out: str) -> None:
    if mode == "mirrored":
        cpu = tf.config.list_physical_devices("CPU")[0]
        tf.config.set_logical_device_configuration(
            cpu, [tf.config.LogicalDeviceConfiguration()] * 2
        )
        strategy = tf.distribute.MirroredStrategy(["/cpu:0", "/cpu:1"])
    elif mode == "multiworker":
        strategy = tf.distribute.MultiWorkerMirroredStrategy()
    elif mode == "single":
        strategy = tf.distribute.get_strategy()
    else:
        raise SystemExit(f"unknown mode {mode!r}")

    from tfprivadv import data, heads
    from tfprivadv.datasets import leave_one_out, load_movielens
    from tfprivadv.models import BPRRetrievalModel, PrivacyAdversarialModel

    movielens = load_movielens("100k", path=data_dir)
    train, _ = leave_one_out(movielens.ratings, strategy="random", seed=0)
    encoded = data.encode_attributes(movielens.users, ["gender", "age_group"])
    items = np.sort(train["item_id"].unique())
    dataset = data.training_dataset(
        train,
        encoded,
        attributes=["gender", "age_group"],
        item_ids=items,
        batch_size=1024,
        adversary_batch_size=256,
        seed=0,
        epochs=EPOCHS,
    )
    keras.utils.set_random_seed(0)  # the heads' initial weights
    with strategy.scope():
        recommender = BPRRetrievalModel(
            movielens.users["user_id"].to_numpy(), items, embedding_dim=16, seed=0
        )
        model = PrivacyAdversarialModel(
            recommender,
            {
                "gender": heads.CategoricalHead(2, hidden_units=(16,)),
                "age_group": heads.CategoricalHead(7, hidden_units=(16,)),
            },
            adversary_weight=0.5,
        )
        model.compile(optimizer=keras.optimizers.Adam(0.01))
    history = model.fit(dataset, epochs=EPOCHS, verbose=0)
    if mode == "multiworker" and not strategy.cluster_resolver.task_id == 0:
        return
    np.savez(
        out,
        users=recommender.user_embedding.embeddings.numpy(),
        items=recommender.item_embedding.embeddings.numpy(),
        **{f"history_{k}": np.asarray(v) for k, v in history.history.items()},
        replicas=strategy.num_replicas_in_sync,
    )


if __name__ == "__main__":
    main(*sys.argv[1:])
