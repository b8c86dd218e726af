"""Serving speed of the exported SavedModel on ML-1M-sized catalogs.

The model is the shape of an ML-1M recommender (6,040 users x 3,706 items, dim 10
and 50) with random weights: serving cost depends on the shapes, not on what the
weights learned. With ML-1M present (--data-path or $TFPRIVADV_DATA_DIR) the ids
and the excluded items are ML-1M's (each user's rated items, 1,000,209 in all);
otherwise synthetic ids with as many random exclusions per user.

For each dim the model is exported with `export_for_serving(..., k=10,
exclude_seen=...)`, loaded back with `tf.saved_model.load` in this process, and
its `serving_default` signature is timed:

- latency at batch 1: one call per random user, median and p95 over `--calls`;
- throughput at batch 256: users per second over `--batches` calls.

Baselines, in the same process on the same users (the ratio is what to compare,
since absolute figures move with the machine's load):

- `numpy`: the same computation hand-written in NumPy on copies of the tables
  (matmul, -inf on the user's CSR row of excluded items, argpartition + sort);
- `recommend`: `BPRRetrievalModel.recommend(users, 10, exclude=ratings)`, the
  in-process Python path (it joins the exclusion frame on every call).

Run: `python benchmarks/serving_latency.py [--data-path DIR] [--dims 10,50]`
(results: benchmarks/README.md).
"""

from __future__ import annotations

import argparse
import os
import tempfile
import time

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

import numpy as np  # noqa: E402
import pandas as pd  # noqa: E402

import tfprivadv  # noqa: E402,F401  (Keras 2 first)
from tfprivadv._keras import tf  # noqa: E402
from tfprivadv.export import export_for_serving  # noqa: E402
from tfprivadv.models import BPRRetrievalModel  # noqa: E402

NUM_USERS, NUM_ITEMS, NUM_RATINGS = 6040, 3706, 1_000_209
K = 10


def catalog(path: str | None) -> tuple[np.ndarray, np.ndarray, pd.DataFrame, str]:
    """User ids, item ids and the (user_id, item_id) pairs to exclude."""
    if path or os.environ.get("TFPRIVADV_DATA_DIR"):
        from tfprivadv.datasets import load_movielens

        data = load_movielens("1m", path=path, download=False)
        ratings = data.ratings[["user_id", "item_id"]]
        users = np.sort(data.users["user_id"].to_numpy())
        items = np.sort(ratings["item_id"].unique())
        return users, items, ratings, f"ML-1M from {data.source}"
    rng = np.random.default_rng(0)
    pairs = rng.choice(NUM_USERS * NUM_ITEMS, NUM_RATINGS, replace=False)
    ratings = pd.DataFrame({"user_id": pairs // NUM_ITEMS + 1, "item_id": pairs % NUM_ITEMS + 1})
    users = np.arange(1, NUM_USERS + 1)
    items = np.arange(1, NUM_ITEMS + 1)
    return users, items, ratings, "synthetic ids (no ML-1M found)"


def random_model(users, items, dim: int) -> BPRRetrievalModel:
    model = BPRRetrievalModel(users, items, embedding_dim=dim, seed=0)
    rng = np.random.default_rng(dim)
    biases = rng.normal(scale=0.5, size=model.item_bias.embeddings.shape)
    model.item_bias.embeddings.assign(biases.astype(np.float32))
    return model


class NumpyRecommender:
    """The serving computation in NumPy: the best a hand-written CPU path does."""

    def __init__(self, model: BPRRetrievalModel, exclude: pd.DataFrame) -> None:
        self.users = model.user_embedding.embeddings.numpy()
        self.items, self.biases = model._catalog_tables()
        self.catalog = model.item_vocabulary
        self.user_row = pd.Index(model.user_vocabulary)
        rows = self.user_row.get_indexer(exclude["user_id"].to_numpy()) + 1
        cols = pd.Index(self.catalog).get_indexer(exclude["item_id"].to_numpy())
        keep = (rows > 0) & (cols >= 0)
        order = np.argsort(rows[keep], kind="stable")
        self.seen = cols[keep][order]
        counts = np.bincount(rows[keep], minlength=len(self.users))
        self.splits = np.concatenate([[0], np.cumsum(counts)])

    def __call__(self, user_ids: np.ndarray) -> np.ndarray:
        rows = self.user_row.get_indexer(user_ids) + 1
        scores = self.users[rows] @ self.items.T + self.biases
        for i, row in enumerate(rows):
            scores[i, self.seen[self.splits[row] : self.splits[row + 1]]] = -np.inf
        top = np.argpartition(-scores, K, axis=1)[:, :K]
        order = np.argsort(-np.take_along_axis(scores, top, 1), axis=1, kind="stable")
        return self.catalog[np.take_along_axis(top, order, 1)]


def batch1(call, users: np.ndarray) -> tuple[float, float]:
    times = []
    for user in users:
        start = time.perf_counter()
        call(user[None])
        times.append(time.perf_counter() - start)
    return float(np.median(times)) * 1e3, float(np.percentile(times, 95)) * 1e3


def throughput(call, batches: list[np.ndarray]) -> float:
    start = time.perf_counter()
    for batch in batches:
        call(batch)
    return sum(len(b) for b in batches) / (time.perf_counter() - start)


def in_graph_ms(signature, users: np.ndarray, calls: int = 1000) -> float:
    """Per-call time of the signature at batch 1 inside one `tf.while_loop`: the
    graph's own cost, without Python's per-call overhead (which a C++ server such
    as TF Serving does not pay). Loop overhead included, so an upper bound."""
    ids = tf.constant(users, tf.int64)

    @tf.function
    def loop():
        def body(i, total):
            user = tf.reshape(ids[i % tf.size(ids)], [1])
            return i + 1, total + signature(user_id=user)["item_ids"][0, 0]

        start = (tf.constant(0), tf.constant(0, tf.int64))
        return tf.while_loop(lambda i, _: i < calls, body, start)

    loop()  # trace and warm up
    start = time.perf_counter()
    loop()
    return (time.perf_counter() - start) / calls * 1e3


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--data-path", default=None, help="ML-1M folder (else $TFPRIVADV_DATA_DIR)")
    parser.add_argument("--dims", default="10,50")
    parser.add_argument("--calls", type=int, default=500, help="batch-1 calls per path")
    parser.add_argument("--batches", type=int, default=40, help="batch-256 calls per path")
    parser.add_argument(
        "--recommend-calls", type=int, default=30, help="batch-1 calls of the slow recommend"
    )
    args = parser.parse_args()
    print(f"CPU cores available: {len(os.sched_getaffinity(0))}")
    users, items, exclude, source = catalog(args.data_path)
    print(f"{source}: {len(users):,} users x {len(items):,} items, {len(exclude):,} excluded")
    rng = np.random.default_rng(0)
    singles = rng.choice(users, args.calls)
    batches = [rng.choice(users, 256) for _ in range(args.batches)]
    rows, graph_ms = [], {}
    with tempfile.TemporaryDirectory() as folder:
        for dim in (int(d) for d in args.dims.split(",")):
            model = random_model(users, items, dim)
            path = export_for_serving(
                model, f"{folder}/dim{dim}", k=K, exclude_seen=exclude, allow_untrained=True
            )
            loaded = tf.saved_model.load(str(path))  # keep: it owns the variables
            signature = loaded.signatures["serving_default"]

            def serve(ids, signature=signature):
                return signature(user_id=tf.constant(ids, tf.int64))["item_ids"].numpy()

            numpy_path = NumpyRecommender(model, exclude)

            def recommend(ids, model=model):
                return model.recommend(ids, K, exclude=exclude)[0]

            check = batches[0][:32]
            assert (serve(check) == recommend(check)).all(), "export disagrees with recommend"
            assert (numpy_path(check) == recommend(check)).all(), "numpy disagrees"
            for call in (serve, numpy_path):  # warm-up (graph optimisation, caches)
                batch1(call, singles[:20])
                throughput(call, batches[:2])
            paths = {
                "SavedModel signature": (serve, singles, batches),
                "numpy": (numpy_path, singles, batches),
                "model.recommend": (
                    recommend,
                    singles[: args.recommend_calls],
                    batches[: max(2, args.batches // 10)],
                ),
            }
            for name, (call, single, many) in paths.items():
                median, p95 = batch1(call, single)
                rows.append((dim, name, median, p95, throughput(call, many)))
            graph_ms[dim] = in_graph_ms(signature, singles)
    print("\n| dim | path | batch 1 median ms | batch 1 p95 ms | batch 256 users/s |", end="")
    print(" latency ratio | throughput ratio |")
    print("|---|---|---|---|---|---|---|")
    for dim, name, median, p95, rate in rows:
        base = next(r for r in rows if r[0] == dim and r[1] == "SavedModel signature")
        print(
            f"| {dim} | {name} | {median:.3f} | {p95:.3f} | {rate:,.0f} "
            f"| {median / base[2]:.2f} | {rate / base[4]:.2f} |"
        )
    for dim, value in graph_ms.items():
        print(
            f"\ndim {dim}: signature at batch 1 inside a tf.while_loop (no Python): "
            f"{value:.3f} ms per call"
        )
    print("\nratios are relative to the SavedModel signature of the same dim (> 1 latency")
    print("ratio: slower than the signature; < 1 throughput ratio: fewer users/s).")


if __name__ == "__main__":
    main()
