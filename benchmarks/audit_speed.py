"""Speed of the attacker suites of `probe_embeddings` on ML-1M-sized user vectors.

Target: the "paper" suite (the paper's Table 1) on 6,040 x 10 vectors, gender
(2 classes) and age group (7 classes), 5-fold CV, in under 60 s on 2 cores.

Two sets of vectors, each 6,040 x 10:

- `synthetic`: Gaussian vectors with a planted gender and age-group signal,
  class shares as in ML-1M (71.7% male; the 7 age groups). No data needed.
- `svd`: a truncated SVD (dim 10) of the ML-1M user x item interaction matrix,
  with the users' real gender and age group: vectors as informative as a
  trained recommender's, without training one. Needs `$TFPRIVADV_DATA_DIR`
  (or `--data-path`) holding ml-1m/.

For each set: wall seconds per attacker (one call per attacker, both
attributes) and its share of the sum, then the whole suite in one call (the
figure the target is about: fits of different attackers overlap in the thread
pool), and the held-out balanced accuracy and ROC AUC per attacker.

Run: `python benchmarks/audit_speed.py [--suite paper] [--n-jobs -1]`
(results: benchmarks/README.md).
"""

from __future__ import annotations

import argparse
import os
import time

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

import numpy as np  # noqa: E402
import pandas as pd  # noqa: E402

from tfprivadv.audit.probes import SUITES, probe_embeddings  # noqa: E402

AGE_GROUPS = (1, 18, 25, 35, 45, 50, 56)
# ML-1M shares of the age groups and of men (PAPER.md).
AGE_SHARES = (0.037, 0.183, 0.347, 0.197, 0.091, 0.082, 0.063)
MALE_SHARE = 0.717
NUM_USERS = 6040


def synthetic_vectors(seed: int = 0) -> tuple[np.ndarray, pd.DataFrame]:
    """6,040 x 10 Gaussian vectors; gender shifts dims 0-1, the age group dims 2-3."""
    rng = np.random.default_rng(seed)
    male = rng.random(NUM_USERS) < MALE_SHARE
    shares = np.asarray(AGE_SHARES) / np.sum(AGE_SHARES)
    age_index = rng.choice(len(AGE_GROUPS), NUM_USERS, p=shares)
    vectors = rng.normal(size=(NUM_USERS, 10))
    # A moderate signal (balanced accuracy around .7), as in unprotected BPR vectors:
    # strong enough to matter, weak enough that the attackers work for it.
    vectors[:, :2] += 0.6 * male[:, None]
    vectors[:, 2] += 0.25 * age_index
    vectors[:, 3] += 0.4 * (age_index >= 3)
    users = pd.DataFrame(
        {
            "gender": np.where(male, "M", "F"),
            "age_group": np.asarray(AGE_GROUPS)[age_index],
        }
    )
    return vectors, users


def svd_vectors(path: str | None) -> tuple[np.ndarray, pd.DataFrame]:
    """Truncated SVD (dim 10) of the binary ML-1M user x item matrix."""
    import scipy.sparse as sp
    from sklearn.decomposition import TruncatedSVD

    from tfprivadv.datasets import load_movielens

    data = load_movielens("1m", path=path, download=False)
    users = data.users.sort_values("user_id").reset_index(drop=True)
    rows = np.searchsorted(users["user_id"].to_numpy(), data.ratings["user_id"].to_numpy())
    _, cols = np.unique(data.ratings["item_id"].to_numpy(), return_inverse=True)
    matrix = sp.csr_matrix(
        (np.ones(len(rows)), (rows, cols)), shape=(len(users), int(cols.max()) + 1)
    )
    vectors = TruncatedSVD(10, random_state=0).fit_transform(matrix)
    return vectors, users[["gender", "age_group"]]


def run(name: str, vectors, users, *, suite: str, n_jobs: int, per_attacker: bool) -> None:
    print(f"\n## {name}: {vectors.shape[0]:,} x {vectors.shape[1]} vectors, suite {suite!r}")
    if per_attacker:
        seconds = {}
        for attacker in SUITES[suite]:
            start = time.perf_counter()
            probe_embeddings(vectors, users, attackers=attacker, random_state=0, n_jobs=n_jobs)
            seconds[attacker] = time.perf_counter() - start
        total = sum(seconds.values())
        print("\n| attacker | seconds (gender + age group) | share |")
        print("|---|---|---|")
        for attacker, value in seconds.items():
            print(f"| {attacker} | {value:.2f} | {value / total:.0%} |")
        print(f"| sum of the separate calls | {total:.2f} | |")
    start = time.perf_counter()
    frame = probe_embeddings(vectors, users, attackers=suite, random_state=0, n_jobs=n_jobs)
    print(f"\nwhole suite in one call (n_jobs={n_jobs}): {time.perf_counter() - start:.2f} s")
    table = frame.pivot(
        index="attacker", columns="attribute", values=["balanced_accuracy", "roc_auc"]
    ).loc[list(SUITES[suite])]
    chance = frame.groupby("attribute")["balanced_accuracy_chance"].first()
    print("\n| attacker | gender BAcc | age BAcc | gender AUC | age AUC |")
    print("|---|---|---|---|---|")
    print(f"| chance | {chance['gender']:.3f} | {chance['age_group']:.3f} | 0.500 | 0.500 |")
    for attacker, row in table.iterrows():
        print(
            f"| {attacker} | {row[('balanced_accuracy', 'gender')]:.3f} "
            f"| {row[('balanced_accuracy', 'age_group')]:.3f} "
            f"| {row[('roc_auc', 'gender')]:.3f} | {row[('roc_auc', 'age_group')]:.3f} |"
        )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--suite", default="paper", choices=sorted(SUITES))
    parser.add_argument("--n-jobs", type=int, default=-1)
    parser.add_argument("--data-path", default=None, help="ML-1M folder (else $TFPRIVADV_DATA_DIR)")
    parser.add_argument("--no-per-attacker", action="store_true", help="only time the whole suite")
    args = parser.parse_args()
    print(f"CPU cores available: {len(os.sched_getaffinity(0))}")
    sets = {"synthetic": synthetic_vectors}
    if args.data_path or os.environ.get("TFPRIVADV_DATA_DIR"):
        sets["svd"] = lambda: svd_vectors(args.data_path)
    else:
        print("(no ML-1M: set $TFPRIVADV_DATA_DIR or --data-path for the SVD vectors)")
    for name, make in sets.items():
        vectors, users = make()
        run(
            name,
            vectors,
            users,
            suite=args.suite,
            n_jobs=args.n_jobs,
            per_attacker=not args.no_per_attacker,
        )


if __name__ == "__main__":
    main()
