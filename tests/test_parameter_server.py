"""ParameterServerStrategy on an in-process localhost cluster (2 workers, 2 ps).

TensorFlow cannot shut down a `tf.distribute.Server` or forget a cluster once the
eager context knows it, so the cluster lives in a subprocess that trains, reports
JSON on its last line and exits. The test then checks what the issue asks:
the embedding tables are split across both parameter servers, training runs and
lowers the recommendation loss, whole-table reads (ranking, export) work, and
the workers read disjoint batches. About 15 s on 2 CPU cores, most of it the
TensorFlow import and the first trace.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import textwrap

import pytest

TIMEOUT_S = 120

SCRIPT = textwrap.dedent(
    """
    import json, os, sys, tempfile, time
    start = time.time()
    import numpy as np
    import pandas as pd
    from tfprivadv import data, distribute, evaluation, export
    from tfprivadv._keras import keras, tf
    from tfprivadv.heads import CategoricalHead
    from tfprivadv.models import BPRRetrievalModel, PrivacyAdversarialModel

    ports = distribute.free_local_ports(4)
    cluster = tf.train.ClusterSpec({
        "worker": [f"127.0.0.1:{p}" for p in ports[:2]],
        "ps": [f"127.0.0.1:{p}" for p in ports[2:]],
    })
    config = tf.compat.v1.ConfigProto()
    config.inter_op_parallelism_threads = 4  # 1 deadlocks the in-process servers
    servers = [
        tf.distribute.Server(cluster, job_name=job, task_index=i, protocol="grpc",
                             config=config, start=True)
        for job in ("worker", "ps") for i in range(2)
    ]
    resolver = tf.distribute.cluster_resolver.SimpleClusterResolver(cluster, rpc_layer="grpc")
    strategy = tf.distribute.experimental.ParameterServerStrategy(
        resolver,
        variable_partitioner=tf.distribute.experimental.partitioners.FixedShardsPartitioner(2),
    )

    # 60 users in two taste groups (each likes one half of 40 items): BPR learns
    # it within a few epochs, so the loss falls clearly despite async updates.
    rng = np.random.default_rng(0)
    user_ids = np.arange(1, 61)
    item_ids = np.arange(100, 140)
    group = user_ids % 2
    rows = [(u, 100 + 20 * g + i) for u, g in zip(user_ids, group)
            for i in rng.choice(20, 12, replace=False)]
    ratings = pd.DataFrame(rows, columns=["user_id", "item_id"])
    test = ratings.groupby("user_id").tail(1)
    train = ratings.drop(test.index)
    users = pd.DataFrame({"user_id": user_ids, "gender": np.where(rng.random(60) < .5, "F", "M")})

    with strategy.scope():
        bpr = BPRRetrievalModel(user_ids, item_ids, embedding_dim=8, seed=0)
        model = PrivacyAdversarialModel(
            bpr, heads={"gender": CategoricalHead(2, hidden_units=(8,))}, adversary_weight=0.1)
        model.compile(optimizer=keras.optimizers.Adam(0.02))

    def shards(variable):
        return [[v.device, list(v.shape)] for v in getattr(variable, "variables", [variable])]

    epochs = 3
    history = model.fit(
        lambda: data.training_dataset(train, users, attributes=["gender"], item_ids=item_ids,
                                      batch_size=48, seed=0, epochs=epochs),
        epochs=epochs, verbose=0,
    ).history

    # The workers' input pipelines: same stream, every other element each.
    coordinator = model._cluster_coordinator
    creator = distribute.worker_dataset_creator(lambda: tf.data.Dataset.range(1000), strategy)
    iterator = iter(coordinator.create_per_worker_dataset(
        lambda: strategy.distribute_datasets_from_function(creator)))
    take = tf.function(lambda it: next(it))
    taken = [coordinator.schedule(take, args=(iterator,)) for _ in range(24)]
    coordinator.join()

    vectors = bpr.user_embeddings(user_ids).numpy()
    with tempfile.TemporaryDirectory() as folder:
        exported = export.export_for_serving(model, folder, exclude_seen=train)
        exported_ok = (exported / "saved_model.pb").is_file()
    print(json.dumps({
        "jit_compile": bool(model.jit_compile),
        "user_shards": shards(bpr.user_embedding.embeddings),
        "item_shards": shards(bpr.item_embedding.embeddings),
        "history": history,
        "user_vectors": list(vectors.shape),
        "finite_vectors": bool(np.isfinite(vectors).all()),
        "oov_row": bpr.user_embedding.embeddings.numpy()[0].tolist(),
        "recommend": list(bpr.recommend(user_ids[:5], k=3, exclude=train)[0].shape),
        "hr": evaluation.evaluate(model, train, test, k=10).hr,
        "exported": exported_ok,
        "worker_elements": [int(t.fetch()) for t in taken],
        "seconds": time.time() - start,
    }))
    sys.stdout.flush()
    os._exit(0)  # the servers' threads would keep a normal exit waiting
    """
)


@pytest.fixture(scope="module")
def result() -> dict:
    env = {**os.environ, "TF_CPP_MIN_LOG_LEVEL": "2"}
    try:
        done = subprocess.run(
            [sys.executable, "-c", SCRIPT],
            capture_output=True,
            text=True,
            timeout=TIMEOUT_S,
            env=env,
        )
    except subprocess.TimeoutExpired as error:
        pytest.fail(f"the localhost cluster did not finish in {TIMEOUT_S} s:\n{error.stderr}")
    assert done.returncode == 0, done.stderr[-5000:]
    return json.loads(done.stdout.strip().splitlines()[-1])


def test_embedding_tables_are_sharded_across_both_parameter_servers(result):
    for name in ("user_shards", "item_shards"):
        devices = sorted(device for device, _ in result[name])
        assert devices == [
            "/job:ps/replica:0/task:0/device:CPU:0",
            "/job:ps/replica:0/task:1/device:CPU:0",
        ], name
    # 60 users + the OOV row, 40 items + OOV, split into halves by rows.
    assert sorted(rows for _, (rows, _) in result["user_shards"]) == [30, 31]
    assert sorted(rows for _, (rows, _) in result["item_shards"]) == [20, 21]


def test_training_is_finite_and_lowers_the_loss(result):
    history = result["history"]
    assert result["jit_compile"] is False  # XLA cannot read variables on the ps
    for values in history.values():
        assert len(values) == 3 and all(map(lambda v: v == v and abs(v) < 1e6, values))
    assert history["rec_loss"][-1] < history["rec_loss"][0] - 0.05


def test_whole_table_reads_after_training(result):
    assert result["user_vectors"] == [60, 8] and result["finite_vectors"]
    assert result["oov_row"] == [0.0] * 8  # zeroed through the sharded variable
    assert result["recommend"] == [5, 3]
    assert result["hr"] > 0.5  # random ranking: about 10 / 29; the taste groups were learned
    assert result["exported"]


def test_workers_read_disjoint_shards_of_the_stream(result):
    elements = result["worker_elements"]
    assert len(set(elements)) == len(elements)  # no element read by both workers
    assert {e % 2 for e in elements} == {0, 1}  # both workers took part
