"""Privacy-adversarial BPR under MultiWorkerMirroredStrategy.

    python examples/multi_worker.py [EPOCHS]   # two workers on this machine (127.0.0.1)
    TF_CONFIG='{...}' python examples/multi_worker.py --worker [EPOCHS]   # one of a cluster

Without `--worker` the script starts two copies of itself with a TF_CONFIG that
names two workers on free localhost ports, waits for them and prints the chief's
result: the same weights a single device reaches with the same seed and global
batch (tests/test_distribute.py checks this). On a real cluster, start one
`--worker` per machine with its own TF_CONFIG, e.g. for the first of two:

    {"cluster": {"worker": ["host1:12345", "host2:12345"]},
     "task": {"type": "worker", "index": 0}}

Every worker builds the same global stream from the same seed and keeps its own
replicas' slices of each batch (`tfprivadv.distribute`), so no data is sent
between workers; only gradients are all-reduced.
"""

from __future__ import annotations

import json
import os
import socket
import subprocess
import sys

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")


def worker(epochs: int) -> None:
    import tfprivadv  # first: tf.keras is Keras 2, as TFRS needs
    from tfprivadv._keras import keras, tf
    from tfprivadv.data import encode_attributes, training_dataset
    from tfprivadv.datasets import leave_one_out, load_movielens

    # Create the strategy before anything else touches TensorFlow's runtime.
    strategy = tf.distribute.MultiWorkerMirroredStrategy()
    data = load_movielens("100k")
    train, test = leave_one_out(data.ratings, strategy="last")
    attributes = ["gender", "age_group"]
    labels = encode_attributes(data.users, attributes)
    items = sorted(train["item_id"].unique())
    # The global batch: each of the replicas gets an equal slice of the 4096
    # interactions and of the 256 users the heads read (both must divide evenly).
    dataset = training_dataset(
        train, labels, attributes=attributes, item_ids=items,
        batch_size=4096, adversary_batch_size=256, seed=0, epochs=epochs,
    )  # fmt: skip
    keras.utils.set_random_seed(0)
    with strategy.scope():
        recommender = tfprivadv.BPRRetrievalModel(
            data.users["user_id"], items, embedding_dim=10, seed=0
        )
        model = tfprivadv.PrivacyAdversarialModel(
            recommender,
            heads={
                "gender": tfprivadv.CategoricalHead(2, hidden_units=(64,)),
                "age_group": tfprivadv.CategoricalHead(7, hidden_units=(64,)),
            },
            adversary_weight=0.03,
        )
        model.compile(keras.optimizers.Adam(0.01))
    history = model.fit(
        dataset, epochs=epochs, verbose=0,
        callbacks=[tfprivadv.AdversaryWeightScheduler("ganin")],
    )  # fmt: skip
    if strategy.cluster_resolver.task_id == 0:  # the chief reports
        from tfprivadv.evaluation import evaluate

        hr = evaluate(recommender, train, test, k=10).metrics["hr@10"]
        print(
            f"{strategy.num_replicas_in_sync} replicas, {epochs} epochs: "
            f"loss {history.history['loss'][-1]:.4f}, HR@10 {hr:.4f}"
        )


def launch(epochs: int, num_workers: int = 2) -> int:
    """Starts `num_workers` local workers on free 127.0.0.1 ports and waits."""
    sockets = [socket.socket() for _ in range(num_workers)]
    for s in sockets:
        s.bind(("127.0.0.1", 0))
    addresses = [f"127.0.0.1:{s.getsockname()[1]}" for s in sockets]
    for s in sockets:
        s.close()
    processes = []
    for index in range(num_workers):
        config = {"cluster": {"worker": addresses}, "task": {"type": "worker", "index": index}}
        env = {**os.environ, "TF_CONFIG": json.dumps(config)}
        processes.append(
            subprocess.Popen([sys.executable, __file__, "--worker", str(epochs)], env=env)
        )
    return max(p.wait() for p in processes)


if __name__ == "__main__":
    args = sys.argv[1:]
    epochs = int(next((a for a in args if a.isdigit()), 10))
    if "--worker" in args:
        worker(epochs)
    else:
        sys.exit(launch(epochs))
