"""Scale: training from Parquet shards at 1 M, 5 M and 20 M interactions.

For each size (100 k users and 50 k items at every size, so only the number of
interactions grows) the script generates a synthetic log with `generate_synthetic`
(cached under --data-dir; reused when its manifest matches), then measures, each in
a fresh subprocess so that peak RSS belongs to that configuration alone:

- `generate`: generating the shards (wall time, peak RSS);
- `stream`: `file_training_dataset` over the Parquet shards: the pipeline alone
  (iterated inside TF, no model) and one full epoch of `model.fit` of a
  PrivacyAdversarialModel (dim 32, gender + age-group heads with 64 hidden units,
  lambda 1, batch 4096, Adam, `steps_per_execution=16`, XLA);
- `memory`: the same with the in-memory `training_dataset` over
  `data.interactions()` (the baseline of the ratios).

Each worker compiles on a short warm-up first, then times `--rounds` passes (median
reported). Samples/s = interactions per second of wall time. Peak RSS is the
worker's `ru_maxrss`, TensorFlow's own ~0.6 GiB included. Ratios streaming /
in-memory come from the same run.

Run: `python benchmarks/scale.py [--sizes 1000000,5000000,20000000] [--data-dir DIR]`
Results: benchmarks/README.md.
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import statistics
import subprocess
import sys
import time

NUM_USERS = 100_000
NUM_ITEMS = 50_000
ATTRIBUTES = ["gender", "age_group"]


def _peak_rss_mib() -> float:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024  # KiB on Linux


def _data_path(data_dir: str, size: int) -> str:
    return os.path.join(data_dir, f"synthetic-{size}")


def worker_generate(args) -> dict:
    from tfprivadv.datasets import generate_synthetic, load_synthetic

    path = _data_path(args.data_dir, args.size)
    config = {"num_interactions": args.size, "num_users": NUM_USERS, "num_items": NUM_ITEMS}
    try:
        cached = load_synthetic(path)
        if all(cached.config.get(k) == v for k, v in {**config, "seed": 0}.items()):
            return {"cached": True}
    except (FileNotFoundError, ValueError):
        pass
    start = time.perf_counter()
    generate_synthetic(path, seed=0, overwrite=True, **config)
    return {"cached": False, "seconds": time.perf_counter() - start, "peak_rss": _peak_rss_mib()}


def worker_train(args) -> dict:
    os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
    import tfprivadv  # noqa: F401  (Keras 2 first)
    from tfprivadv._keras import tf
    from tfprivadv.data import encode_attributes, training_dataset
    from tfprivadv.datasets import load_synthetic
    from tfprivadv.heads import CategoricalHead
    from tfprivadv.models import BPRRetrievalModel, PrivacyAdversarialModel
    from tfprivadv.streaming import file_training_dataset

    data = load_synthetic(_data_path(args.data_dir, args.size))
    users = data.users()
    encoded = encode_attributes(users, ATTRIBUTES)
    recommender = BPRRetrievalModel(
        users["user_id"].to_numpy(), data.item_ids, embedding_dim=32, seed=0
    )
    heads = {
        name: CategoricalHead(encoded.num_classes(name), hidden_units=(64,)) for name in ATTRIBUTES
    }
    model = PrivacyAdversarialModel(recommender, heads, adversary_weight=1.0)
    model.compile(tf.keras.optimizers.Adam(0.01), steps_per_execution=16)
    rss_before_data = _peak_rss_mib()

    kwargs = {
        "attributes": ATTRIBUTES,
        "item_ids": data.item_ids,
        "batch_size": args.batch_size,
        "seed": 0,
    }
    start = time.perf_counter()
    if args.worker == "stream":
        dataset = file_training_dataset(data.interaction_files, encoded, **kwargs)
    else:
        dataset = training_dataset(data.interactions(), encoded, **kwargs)
    build_seconds = time.perf_counter() - start
    steps = dataset.steps_per_epoch
    samples = steps * args.batch_size

    count = tf.function(lambda ds: ds.reduce(tf.constant(0, tf.int64), lambda n, _: n + 1))
    pipeline = []
    for _ in range(args.rounds):
        start = time.perf_counter()
        assert int(count(dataset)) == steps
        pipeline.append(samples / (time.perf_counter() - start))

    model.fit(dataset.take(64), epochs=1, verbose=0)  # compile + warm up
    training = []
    for _ in range(args.rounds):
        start = time.perf_counter()
        history = model.fit(dataset, epochs=1, verbose=0).history
        training.append(samples / (time.perf_counter() - start))
    return {
        "interactions": data.num_interactions,
        "steps": steps,
        "build_seconds": build_seconds,
        "pipeline": statistics.median(pipeline),
        "pipeline_runs": pipeline,
        "train": statistics.median(training),
        "train_runs": training,
        "loss": float(history["loss"][-1]),
        "rss_before_data": rss_before_data,
        "peak_rss": _peak_rss_mib(),
    }


def _run_worker(kind: str, size: int, args) -> dict:
    command = [
        sys.executable,
        __file__,
        "--worker",
        kind,
        "--size",
        str(size),
        "--data-dir",
        args.data_dir,
        "--batch-size",
        str(args.batch_size),
        "--rounds",
        str(args.rounds),
    ]
    done = subprocess.run(command, capture_output=True, text=True, check=False)
    if done.returncode:
        sys.stderr.write(done.stderr[-4000:])
        raise RuntimeError(f"worker {kind} {size} failed (exit {done.returncode})")
    return json.loads(done.stdout.strip().splitlines()[-1])


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--sizes", default="1000000,5000000,20000000")
    parser.add_argument(
        "--baseline-sizes",
        default=None,
        help="sizes also run in memory (default: all of --sizes)",
    )
    parser.add_argument("--data-dir", default="/tmp/tfprivadv-scale")
    parser.add_argument("--batch-size", type=int, default=4096)
    parser.add_argument("--rounds", type=int, default=2, help="timed passes per worker")
    parser.add_argument("--json", default=None, help="also write the results here")
    parser.add_argument(
        "--worker", choices=["generate", "stream", "memory"], help=argparse.SUPPRESS
    )
    parser.add_argument("--size", type=int, help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.worker:
        run = worker_generate if args.worker == "generate" else worker_train
        print(json.dumps(run(args)))
        return

    sizes = [int(s) for s in args.sizes.split(",")]
    baseline = (
        sizes if args.baseline_sizes is None else [int(s) for s in args.baseline_sizes.split(",")]
    )
    results: dict[int, dict] = {}
    for size in sizes:
        results[size] = {"generate": _run_worker("generate", size, args)}
        results[size]["stream"] = _run_worker("stream", size, args)
        if size in baseline:
            results[size]["memory"] = _run_worker("memory", size, args)
        print(f"{size:,}: {json.dumps(results[size])}", file=sys.stderr)

    print(
        f"{NUM_USERS:,} users, {NUM_ITEMS:,} items, batch {args.batch_size}, dim 32, "
        f"2 heads, {args.rounds} timed passes (median), {os.cpu_count()} CPU cores\n"
    )
    print(
        "| interactions | generate (s) | generate peak RSS (MiB) | pipeline samples/s "
        "(stream / in-memory) | train samples/s stream | train samples/s in-memory "
        "| train ratio | peak RSS stream (MiB) | peak RSS in-memory (MiB) |"
    )
    print("|---|---|---|---|---|---|---|---|---|")
    for size in sizes:
        r = results[size]
        gen = r["generate"]
        gen_s = "cached" if gen["cached"] else f"{gen['seconds']:.1f}"
        gen_rss = "-" if gen["cached"] else f"{gen['peak_rss']:,.0f}"
        stream, memory = r["stream"], r.get("memory")
        pipe = f"{stream['pipeline']:,.0f}"
        if memory:
            pipe += f" / {memory['pipeline']:,.0f}"
        mem_train = f"{memory['train']:,.0f}" if memory else "-"
        ratio = f"{stream['train'] / memory['train']:.2f}" if memory else "-"
        mem_rss = f"{memory['peak_rss']:,.0f}" if memory else "-"
        print(
            f"| {size:,} | {gen_s} | {gen_rss} | {pipe} | {stream['train']:,.0f} | {mem_train} "
            f"| {ratio} | {stream['peak_rss']:,.0f} | {mem_rss} |"
        )
    if args.json:
        with open(args.json, "w") as handle:
            json.dump(results, handle, indent=2)


if __name__ == "__main__":
    main()
