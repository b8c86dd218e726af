"""Synthetic implicit-feedback data at any scale, written shard by shard.

Real logs with private attributes large enough to test scale-out (tens of millions
of interactions) are not public, so :func:`generate_synthetic` makes one whose
statistics resemble MovieLens-style data where it matters for this package:

- **Attributes shape taste.** Gender and the seven ML-1M age groups (with ML-1M's
  shares) each add a direction to a user's latent taste vector; tastes pick what is
  consumed. An attacker can therefore read the attributes from interaction
  histories, which is the leak the adversarial training must remove.
- **Power-law item popularity** (Zipf over a random popularity rank) tilted per
  taste, items clustered in genres, and **heavy-tailed (log-normal) user activity**.

Sampling ``softmax(taste . item + log popularity)`` for every user over the whole
catalog would cost users x items; instead each user is a mixture over ``num_tastes``
taste prototypes (weights: a softmax of the user's taste vector against the
prototypes) and each prototype has its own item distribution (popularity tilted by
the prototype's affinity to each item). Drawing an interaction is then two
inverse-CDF look-ups, vectorized over a shard.

Memory is bounded by the tables (users x tastes + tastes x items + one shard), never
by ``num_interactions``: each user's total count is fixed first, then every shard
deals itself a uniformly random part of the remaining counts (a multivariate
hypergeometric draw), so rows of every user are spread over all shards in random
order, as in a time-ordered log. (user, item) pairs may repeat, as repeated plays
or clicks do in implicit-feedback logs.

Only numpy, pandas and pyarrow are used (no TensorFlow).
"""

from __future__ import annotations

import json
import math
import os
import shutil
import tempfile
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from tfprivadv._validation import _received, check_choice, check_float, check_int
from tfprivadv.datasets.movielens import AGE_GROUP_CODES, ML100K_GENRES

__all__ = ["FORMATS", "SyntheticData", "generate_synthetic", "load_synthetic"]

FORMATS = ("parquet", "csv")
MANIFEST = "manifest.json"
#: ML-1M's shares of women (1,709 of 6,040 users) and of each age group.
FEMALE_SHARE = 1709 / 6040
AGE_GROUP_SHARES = tuple(c / 6040 for c in (222, 1103, 2096, 1193, 550, 496, 380))
GENRES = tuple(g for g in ML100K_GENRES if g != "unknown")
# How sharply a user's taste vector selects prototypes (softmax temperature^-1).
_USER_FOCUS = 2.0
# Parquet row groups: the unit the streaming reader shuffles and reads at once.
_ROW_GROUP_ROWS = 131_072
_FORMAT_VERSION = 1


@dataclass(frozen=True)
class SyntheticData:
    """Where a generated data set lives and what it holds.

    Attributes:
        path: The folder.
        format: "parquet" or "csv".
        interaction_files: The interaction shards in order (columns `user_id`,
            `item_id`, int64).
        shard_rows: Rows in each shard.
        users_file: `user_id`, `gender` ("F"/"M"), `age_group` (ML-1M codes).
        items_file: `item_id`, `popularity_rank` (1 = most popular a priori),
            `genre`.
        num_users: Users in the users table (ids 1..num_users).
        num_items: Items in the catalog (ids 1..num_items).
        config: The arguments of `generate_synthetic` that made it.
    """

    path: Path
    format: str
    interaction_files: tuple[Path, ...]
    shard_rows: tuple[int, ...]
    users_file: Path
    items_file: Path
    num_users: int
    num_items: int
    config: dict[str, Any] = field(default_factory=dict)

    @property
    def num_interactions(self) -> int:
        """Rows over all shards."""
        return int(sum(self.shard_rows))

    @property
    def item_ids(self) -> np.ndarray:
        """The catalog, 1..num_items (int64): pass it as `item_ids` to models."""
        return np.arange(1, self.num_items + 1, dtype=np.int64)

    def users(self) -> pd.DataFrame:
        """The users table."""
        return _read_table(self.users_file, self.format)

    def items(self) -> pd.DataFrame:
        """The items table."""
        return _read_table(self.items_file, self.format)

    def interactions(self) -> pd.DataFrame:
        """All interactions in one DataFrame: for small sets and the in-memory
        baseline only (this is what streaming avoids)."""
        frames = [_read_table(path, self.format) for path in self.interaction_files]
        return pd.concat(frames, ignore_index=True)


def _read_table(path: Path, format: str) -> pd.DataFrame:
    if format == "parquet":
        import pyarrow.parquet as pq

        return pq.read_table(path).to_pandas()
    import pyarrow.csv as pcsv

    return pcsv.read_csv(path).to_pandas()


def _write_table(frame: dict[str, np.ndarray], path: Path, format: str) -> None:
    import pyarrow as pa

    table = pa.table(frame)
    if format == "parquet":
        import pyarrow.parquet as pq

        pq.write_table(table, path, row_group_size=_ROW_GROUP_ROWS, compression="snappy")
    else:
        import pyarrow.csv as pcsv

        pcsv.write_csv(table, path, write_options=pcsv.WriteOptions(quoting_style="none"))


def _flat_cdf(logits: np.ndarray) -> np.ndarray:
    """Row-wise softmax CDFs laid end to end, row r shifted by r, so one
    `searchsorted(flat, r + u)` draws from row r for a whole vector of rows."""
    logits = logits - logits.max(axis=1, keepdims=True)
    weights = np.exp(logits)
    cdf = np.cumsum(weights, axis=1)
    cdf /= cdf[:, -1:]
    cdf[:, -1] = 1.0  # exactly 1, so row r's values lie in (r, r + 1]
    cdf += np.arange(len(cdf), dtype=np.float64)[:, None]
    return cdf.ravel()


def _draw(flat_cdf: np.ndarray, rows: np.ndarray, width: int, rng: np.random.Generator):
    """One draw per entry of `rows` from that row's distribution (see `_flat_cdf`)."""
    target = rows + rng.random(len(rows))
    position = np.searchsorted(flat_cdf, target, side="right") - rows * width
    # `r + u` can round up to r + 1 in float64; that is row r's last entry.
    return np.clip(position, 0, width - 1)


def _check_output_dir(output_dir: Any) -> Path:
    if not isinstance(output_dir, str | os.PathLike):
        raise TypeError(
            f"`output_dir` must be a path (str or os.PathLike). Received: {_received(output_dir)}"
        )
    return Path(output_dir)


def generate_synthetic(
    output_dir: str | os.PathLike,
    *,
    num_interactions: int = 20_000_000,
    num_users: int = 100_000,
    num_items: int = 50_000,
    format: str = "parquet",
    shard_size: int = 1_000_000,
    popularity_exponent: float = 1.0,
    activity_sigma: float = 1.0,
    min_user_interactions: int = 1,
    embedding_dim: int = 16,
    num_tastes: int = 32,
    taste_strength: float = 2.0,
    attribute_strength: float = 1.0,
    seed: int = 0,
    overwrite: bool = False,
) -> SyntheticData:
    """Writes a synthetic implicit-feedback data set with taste-correlated attributes.

    The folder gets `interactions-00000-of-000NN.<ext>` shards (`user_id`, `item_id`,
    int64; rows in random order), `users.<ext>`, `items.<ext>` and `manifest.json`
    (arguments and row counts, read by :func:`load_synthetic`). Everything is built in
    a temporary sibling folder renamed into place at the end, so a failure leaves
    nothing half-written. The output is a pure function of the arguments.

    Args:
        output_dir: Folder to create.
        num_interactions: Rows over all shards.
        num_users: Users (ids 1..num_users).
        num_items: Items (ids 1..num_items).
        format: "parquet" or "csv".
        shard_size: Rows per shard (the last may be smaller); bounds memory.
        popularity_exponent: Zipf exponent s of the prior popularity,
            `p(rank r) ~ r^-s` (0 = uniform).
        activity_sigma: Sigma of the log-normal user activity (0 = equal activity).
        min_user_interactions: Interactions every user gets at least.
        embedding_dim: Size of the latent taste and item vectors.
        num_tastes: Taste prototypes each user mixes (memory: 8 bytes x
            num_tastes x (num_users + num_items)).
        taste_strength: How strongly a prototype tilts popularity toward the items
            it likes (0 = popularity only).
        attribute_strength: Scale of the gender and age-group directions in the
            taste vectors against unit per-user noise (0 = attributes independent
            of taste, nothing to leak).
        seed: Seed of everything.
        overwrite: Replace an existing `output_dir` (else FileExistsError).

    Returns:
        A `SyntheticData` with the paths and counts.

    Raises:
        TypeError / ValueError: an argument of the wrong type or out of range.
        FileExistsError: `output_dir` exists and `overwrite` is False.

    Example:
        >>> data = generate_synthetic("/tmp/synth", num_interactions=100_000,
        ...                           num_users=2_000, num_items=1_000)
        >>> data.users().columns.tolist()
        ['user_id', 'gender', 'age_group']
    """
    target = _check_output_dir(output_dir)
    num_interactions = check_int("num_interactions", num_interactions, minimum=1)
    num_users = check_int("num_users", num_users, minimum=2)
    num_items = check_int("num_items", num_items, minimum=2)
    format = check_choice("format", format, FORMATS)
    shard_size = check_int("shard_size", shard_size, minimum=1)
    popularity_exponent = check_float("popularity_exponent", popularity_exponent, minimum=0.0)
    activity_sigma = check_float("activity_sigma", activity_sigma, minimum=0.0, maximum=5.0)
    min_user_interactions = check_int("min_user_interactions", min_user_interactions, minimum=0)
    embedding_dim = check_int("embedding_dim", embedding_dim, minimum=1)
    num_tastes = check_int("num_tastes", num_tastes, minimum=1)
    taste_strength = check_float("taste_strength", taste_strength, minimum=0.0)
    attribute_strength = check_float("attribute_strength", attribute_strength, minimum=0.0)
    seed = check_int("seed", seed, minimum=0)
    if not isinstance(overwrite, bool):
        raise TypeError(f"`overwrite` must be a bool. Received: {_received(overwrite)}")
    if num_users * min_user_interactions > num_interactions:
        raise ValueError(
            "`num_interactions` must be >= num_users * min_user_interactions "
            f"({num_users} * {min_user_interactions} = {num_users * min_user_interactions}) "
            f"so every user gets their minimum. Received: {num_interactions}"
        )
    if num_interactions >= 10**9:
        # numpy's hypergeometric sampler, which deals counts to shards, stops there.
        raise ValueError(f"`num_interactions` must be < 10**9. Received: {num_interactions}")
    if target.exists() and not overwrite:
        raise FileExistsError(
            f"`output_dir` {str(target)!r} exists; pass overwrite=True to replace it, or "
            "read it with load_synthetic()."
        )
    config = {
        "num_interactions": num_interactions,
        "num_users": num_users,
        "num_items": num_items,
        "format": format,
        "shard_size": shard_size,
        "popularity_exponent": popularity_exponent,
        "activity_sigma": activity_sigma,
        "min_user_interactions": min_user_interactions,
        "embedding_dim": embedding_dim,
        "num_tastes": num_tastes,
        "taste_strength": taste_strength,
        "attribute_strength": attribute_strength,
        "seed": seed,
    }
    target.parent.mkdir(parents=True, exist_ok=True)
    staging = Path(tempfile.mkdtemp(prefix=f".{target.name}.", suffix=".tmp", dir=target.parent))
    try:
        shard_rows = _generate_into(staging, config)
        manifest = {"version": _FORMAT_VERSION, "config": config, "shard_rows": shard_rows}
        (staging / MANIFEST).write_text(json.dumps(manifest, indent=2) + "\n")
        if target.exists():  # overwrite=True: swap, then drop the old copy
            retired = Path(
                tempfile.mkdtemp(prefix=f".{target.name}.", suffix=".old", dir=target.parent)
            )
            os.replace(target, retired / "data")
            os.replace(staging, target)
            shutil.rmtree(retired, ignore_errors=True)
        else:
            os.replace(staging, target)
    except BaseException:
        shutil.rmtree(staging, ignore_errors=True)
        raise
    return load_synthetic(target)


def _generate_into(folder: Path, config: dict[str, Any]) -> list[int]:
    """Writes tables and shards into `folder`; returns the rows per shard."""
    n, num_users, num_items = (
        config["num_interactions"],
        config["num_users"],
        config["num_items"],
    )
    dim, num_tastes, ext = config["embedding_dim"], config["num_tastes"], config["format"]
    root = np.random.SeedSequence(config["seed"])
    world_seq, user_seq, item_seq, shard_seq = root.spawn(4)
    world = np.random.default_rng(world_seq)
    scale = 1.0 / math.sqrt(dim)

    # The latent world: genre centres, taste prototypes, attribute directions.
    genre_centres = world.normal(size=(len(GENRES), dim))
    prototypes = world.normal(size=(num_tastes, dim))
    gender_directions = world.normal(size=(2, dim))
    age_directions = world.normal(size=(len(AGE_GROUP_CODES), dim))

    # Items: genre (Zipf-ish shares, like Drama/Comedy dominating ML), a latent
    # vector near the genre centre, and a prior popularity rank in random id order.
    items_rng = np.random.default_rng(item_seq)
    genre_share = 1.0 / np.arange(1, len(GENRES) + 1) ** 0.8
    genre_share = items_rng.permutation(genre_share / genre_share.sum())
    genre = items_rng.choice(len(GENRES), size=num_items, p=genre_share)
    item_vectors = genre_centres[genre] + 0.8 * items_rng.normal(size=(num_items, dim))
    rank = items_rng.permutation(num_items) + 1
    log_popularity = -config["popularity_exponent"] * np.log(rank)
    affinity = (prototypes @ item_vectors.T) * scale
    item_cdf = _flat_cdf(log_popularity[None, :] + config["taste_strength"] * affinity)
    del affinity

    # Users: attributes with ML-1M's shares, taste = attribute directions + noise,
    # a mixture over prototypes, and a heavy-tailed number of interactions.
    users_rng = np.random.default_rng(user_seq)
    is_male = users_rng.random(num_users) >= FEMALE_SHARE
    age_index = users_rng.choice(len(AGE_GROUP_CODES), size=num_users, p=AGE_GROUP_SHARES)
    taste = config["attribute_strength"] * (
        gender_directions[is_male.astype(np.int64)] + age_directions[age_index]
    ) + users_rng.normal(size=(num_users, dim))
    user_cdf = _flat_cdf(_USER_FOCUS * (taste @ prototypes.T) * scale)
    del taste
    activity = users_rng.lognormal(0.0, config["activity_sigma"], size=num_users)
    floor = config["min_user_interactions"]
    counts = floor + users_rng.multinomial(n - floor * num_users, activity / activity.sum())

    _write_table(
        {
            "user_id": np.arange(1, num_users + 1, dtype=np.int64),
            "gender": np.where(is_male, "M", "F"),
            "age_group": np.asarray(AGE_GROUP_CODES, np.int64)[age_index],
        },
        folder / f"users.{ext}",
        ext,
    )
    _write_table(
        {
            "item_id": np.arange(1, num_items + 1, dtype=np.int64),
            "popularity_rank": rank.astype(np.int64),
            "genre": np.asarray(GENRES)[genre],
        },
        folder / f"items.{ext}",
        ext,
    )

    num_shards = -(-n // config["shard_size"])
    width = max(5, len(str(num_shards)))
    shard_rows = []
    remaining = counts
    for index, sequence in enumerate(shard_seq.spawn(num_shards)):
        rng = np.random.default_rng(sequence)
        size = min(config["shard_size"], n - index * config["shard_size"])
        if index == num_shards - 1:
            dealt = remaining
        else:
            # A uniformly random `size` of the rows still to write, as counts per user.
            dealt = rng.multivariate_hypergeometric(remaining, size, method="marginals")
        remaining = remaining - dealt
        user_index = np.repeat(np.arange(num_users, dtype=np.int64), dealt)
        taste_index = _draw(user_cdf, user_index, num_tastes, rng)
        item_index = _draw(item_cdf, taste_index, num_items, rng)
        order = rng.permutation(size)
        name = f"interactions-{index:0{width}d}-of-{num_shards:0{width}d}.{ext}"
        _write_table(
            {"user_id": user_index[order] + 1, "item_id": item_index[order] + 1},
            folder / name,
            ext,
        )
        shard_rows.append(int(size))
    if remaining.any():  # pragma: no cover - guards the dealing arithmetic
        raise AssertionError("Not every interaction was written.")
    return shard_rows


def load_synthetic(path: str | os.PathLike) -> SyntheticData:
    """Opens a folder written by :func:`generate_synthetic` (reads only its manifest).

    Raises:
        FileNotFoundError: no manifest, or a file it lists is missing.
        ValueError: the manifest is from an unknown format version.
    """
    folder = _check_output_dir(path)
    manifest_path = folder / MANIFEST
    if not manifest_path.is_file():
        raise FileNotFoundError(
            f"{str(folder)!r} holds no {MANIFEST}; it was not written by generate_synthetic."
        )
    manifest = json.loads(manifest_path.read_text())
    if manifest.get("version") != _FORMAT_VERSION:
        raise ValueError(
            f"{manifest_path} has format version {manifest.get('version')!r}; this tfprivadv "
            f"reads version {_FORMAT_VERSION}. Regenerate the data."
        )
    config = manifest["config"]
    ext = config["format"]
    rows = tuple(int(r) for r in manifest["shard_rows"])
    width = max(5, len(str(len(rows))))
    shards = tuple(
        folder / f"interactions-{i:0{width}d}-of-{len(rows):0{width}d}.{ext}"
        for i in range(len(rows))
    )
    data = SyntheticData(
        path=folder,
        format=ext,
        interaction_files=shards,
        shard_rows=rows,
        users_file=folder / f"users.{ext}",
        items_file=folder / f"items.{ext}",
        num_users=config["num_users"],
        num_items=config["num_items"],
        config=config,
    )
    missing = [p for p in (*shards, data.users_file, data.items_file) if not p.is_file()]
    if missing:
        raise FileNotFoundError(f"{str(folder)!r} lacks {[p.name for p in missing]}.")
    return data
