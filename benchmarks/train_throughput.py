"""Training throughput through `model.fit` on MovieLens 1M.

Measures samples/s (interactions per second of wall time, one positive and one
uniformly sampled negative each) for, in the same process and interleaved over
several rounds so that machine noise hits all of them alike:

- `bpr`: the plain BPRRetrievalModel (the baseline of every ratio);
- `heads_lambda0`: PrivacyAdversarialModel with gender + age-group MLP heads, lambda 0;
- `heads_lambda1`: the same with lambda 1 (gradient reversal active);
- `bpr_no_xla`: the plain model with `jit_compile=False`, for reference.

Each configuration compiles on a warm-up epoch first; then each round times
`epochs` epochs. Reported: median samples/s and ratio to `bpr`.

Run: `python benchmarks/train_throughput.py [--data-path DIR] [--rounds 3]`
(needs ML-1M: --data-path or $TFPRIVADV_DATA_DIR). Results: benchmarks/README.md.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import time

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

import numpy as np  # noqa: E402

import tfprivadv  # noqa: E402,F401  (Keras 2 first)
from tfprivadv._keras import tf  # noqa: E402
from tfprivadv.data import encode_attributes, training_dataset  # noqa: E402
from tfprivadv.datasets import leave_one_out, load_movielens  # noqa: E402
from tfprivadv.heads import CategoricalHead  # noqa: E402
from tfprivadv.models import BPRRetrievalModel, PrivacyAdversarialModel  # noqa: E402

ATTRIBUTES = ["gender", "age_group"]


def build(kind: str, train, users, encoded):
    recommender = BPRRetrievalModel(
        users["user_id"].to_numpy(),
        np.sort(train["item_id"].unique()),
        embedding_dim=10,
        seed=0,
    )
    if kind.startswith("bpr"):
        model = recommender
    else:
        heads = {
            name: CategoricalHead(encoded.num_classes(name), hidden_units=(64,))
            for name in ATTRIBUTES
        }
        weight = 0.0 if kind == "heads_lambda0" else 1.0
        model = PrivacyAdversarialModel(recommender, heads, adversary_weight=weight)
    model.compile(
        tf.keras.optimizers.Adam(0.01),
        steps_per_execution=16,
        jit_compile=False if kind == "bpr_no_xla" else None,
    )
    return model


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--data-path", default=None)
    parser.add_argument("--batch-size", type=int, default=8192)
    parser.add_argument("--epochs", type=int, default=3, help="epochs timed per round")
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--json", default=None, help="also write the results here")
    args = parser.parse_args()

    data = load_movielens("1m", path=args.data_path)
    train, _ = leave_one_out(data.ratings, holdout=data.holdout)
    encoded = encode_attributes(data.users, ATTRIBUTES)
    kinds = ["bpr", "heads_lambda0", "heads_lambda1", "bpr_no_xla"]
    models, datasets = {}, {}
    for kind in kinds:
        models[kind] = build(kind, train, data.users, encoded)
        datasets[kind] = training_dataset(
            train,
            encoded,
            attributes=[] if kind.startswith("bpr") else ATTRIBUTES,
            item_ids=np.sort(train["item_id"].unique()),
            batch_size=args.batch_size,
            seed=0,
        )
        models[kind].fit(datasets[kind], epochs=1, verbose=0)  # compile + warm up
    samples = len(datasets["bpr"]) * args.batch_size * args.epochs
    timings: dict[str, list[float]] = {kind: [] for kind in kinds}
    for _ in range(args.rounds):
        for kind in kinds:
            start = time.perf_counter()
            models[kind].fit(datasets[kind], epochs=args.epochs, verbose=0)
            timings[kind].append(samples / (time.perf_counter() - start))
    base = statistics.median(timings["bpr"])
    results = {}
    print(
        f"ML-1M, {len(train):,} training interactions, batch {args.batch_size}, "
        f"{args.epochs} epochs x {args.rounds} rounds, {os.cpu_count()} CPU cores"
    )
    print(f"{'configuration':<16}{'samples/s (median)':>20}{'min':>12}{'max':>12}{'ratio':>8}")
    for kind in kinds:
        median = statistics.median(timings[kind])
        results[kind] = {
            "median": median,
            "runs": timings[kind],
            "ratio": median / base,
        }
        print(
            f"{kind:<16}{median:>20,.0f}{min(timings[kind]):>12,.0f}"
            f"{max(timings[kind]):>12,.0f}{median / base:>8.2f}"
        )
    if args.json:
        with open(args.json, "w") as handle:
            json.dump(results, handle, indent=2)


if __name__ == "__main__":
    main()
