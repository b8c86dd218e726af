"""Training batches streamed from Parquet or CSV shards, in bounded memory.

`file_training_dataset` yields exactly what the in-memory
`tfprivadv.data.training_dataset` yields (same element structure, dtypes and static
shapes), but never holds more than a shuffle window of interactions: a log of tens of
millions of rows trains in the memory of a few row groups.

How an epoch is made (all of it a pure function of the epoch's seed):

1. A scan when the dataset is built reads the id columns once, chunk by chunk:
   it counts rows (so the cardinality is known), collects the users that occur
   (the adversary samples them, as in memory) and checks every item is in the
   catalog, so a bad file fails at build time and not an hour into training.
2. A Python generator (one per epoch) reads the *pieces* (Parquet row groups, CSV
   files read block by block) in an order shuffled per epoch, fills a window of
   `shuffle_buffer` rows, permutes it, and emits blocks of whole batches; rows that
   do not fill a batch carry into the next window. pyarrow decodes outside the GIL,
   and the generator looks ids up once per chunk, so it does no per-row Python work.
3. One vectorized `map` per block draws the negatives and the adversary's user
   sample with stateless RNG (seeded from the epoch and the block index) and gathers
   the labels; `unbatch` then hands out single batches, and `prefetch` keeps the
   reader ahead of the training step.

Remainder: like `training_dataset`, an epoch is `ceil(rows / batch_size)` full
batches; the last one is completed with the first rows of the same epoch (it
*wraps*), so at most `batch_size - 1` interactions appear twice an epoch and every
batch has the same static shape (an XLA-compiled step compiles once).

Shuffling is a windowed approximation of a full permutation: rows far apart in the
files meet only if their pieces land in the same window. Piece order is reshuffled
every epoch, so with files written in random row order (as `generate_synthetic`
writes them) this is as good as a full shuffle; for files sorted by user or time,
raise `shuffle_buffer` or write smaller row groups.
"""

from __future__ import annotations

import glob
import os
from collections.abc import Iterator, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from tfprivadv._keras import tf
from tfprivadv._validation import _received, check_int
from tfprivadv.data import EncodedAttributes, check_stream_arguments, encoded_attributes

__all__ = ["FILE_SUFFIXES", "file_training_dataset"]

#: File name endings read as each format.
FILE_SUFFIXES = {".parquet": "parquet", ".pq": "parquet", ".csv": "csv"}
_COLUMNS = ("user_id", "item_id")
# Rows per block handed from the reader to the map: large enough that per-block
# overhead (a generator step, a dozen TF ops) is negligible, small enough to pipeline.
_BLOCK_ROWS = 131_072
_CSV_BLOCK_BYTES = 4 << 20


# ----------------------------------------------------------------------- files
def _resolve_paths(paths: Any) -> list[tuple[Path, str]]:
    """`paths` (a glob, a file, or a list of them) -> [(file, format)], in order."""
    accepted = (
        "`paths` must be a file path, a glob pattern, or a non-empty list of them, "
        f"naming files ending in {', '.join(FILE_SUFFIXES)}"
    )
    if isinstance(paths, str | os.PathLike):
        items = [paths]
    elif isinstance(paths, Sequence) and not isinstance(paths, bytes):
        items = list(paths)
        if not items:
            raise ValueError(f"{accepted}. Received an empty list.")
    else:
        raise TypeError(f"{accepted}. Received: {_received(paths)}")
    files: list[Path] = []
    for item in items:
        if not isinstance(item, str | os.PathLike):
            raise TypeError(f"{accepted}. Received an entry {_received(item)}")
        text = os.fspath(item)
        if glob.has_magic(text):
            matches = sorted(glob.glob(text))
            if not matches:
                raise FileNotFoundError(f"`paths`: the pattern {text!r} matches no file.")
            files.extend(Path(m) for m in matches)
        else:
            if not Path(text).is_file():
                raise FileNotFoundError(f"`paths`: {text!r} is not a file.")
            files.append(Path(text))
    resolved = []
    for file in files:
        format = FILE_SUFFIXES.get(file.suffix.lower())
        if format is None:
            raise ValueError(f"{accepted}. Received {str(file)!r} (suffix {file.suffix!r}).")
        resolved.append((file, format))
    return resolved


def _csv_reader(path: Path, column_types: dict[str, Any] | None):
    """A block-by-block CSV reader: of the id columns with fixed types, or (no
    types) of all columns with inferred types, to inspect the header."""
    import pyarrow.csv as pcsv

    convert = pcsv.ConvertOptions()
    if column_types is not None:
        convert = pcsv.ConvertOptions(include_columns=list(_COLUMNS), column_types=column_types)
    return pcsv.open_csv(
        path,
        read_options=pcsv.ReadOptions(block_size=_CSV_BLOCK_BYTES),
        convert_options=convert,
    )


@dataclass(frozen=True)
class _Piece:
    """The unit the reader shuffles: a Parquet row group, or a whole CSV file
    (read block by block, so a large file never sits in memory at once)."""

    path: Path
    format: str
    row_group: int  # -1 for CSV


def _read_piece(piece: _Piece, column_types: dict[str, Any]) -> Iterator[Any]:
    """Arrow record batches of a piece, with the id columns only."""
    if piece.format == "parquet":
        import pyarrow.parquet as pq

        table = pq.ParquetFile(piece.path).read_row_group(piece.row_group, columns=list(_COLUMNS))
        for name in _COLUMNS:
            if table.schema.field(name).type != column_types[name]:
                table = table.set_column(
                    table.schema.get_field_index(name), name, table[name].cast(column_types[name])
                )
        yield from table.to_batches()
    else:
        reader = _csv_reader(piece.path, column_types)
        yield from reader


def _id_type(name: str, arrow_type: Any, where: Path):
    import pyarrow as pa

    if pa.types.is_integer(arrow_type):
        return pa.int64()
    if pa.types.is_string(arrow_type) or pa.types.is_large_string(arrow_type):
        return pa.string()
    raise TypeError(
        f"`paths`: column {name!r} of {str(where)!r} must hold integer or string ids. "
        f"Received type {arrow_type}."
    )


def _pieces_and_types(files: list[tuple[Path, str]]) -> tuple[list[_Piece], dict[str, Any]]:
    """Splits files into pieces and fixes one Arrow type per id column (int64 or
    string) so that every file decodes alike."""
    import pyarrow.parquet as pq

    pieces: list[_Piece] = []
    types: dict[str, Any] = {}
    for path, format in files:
        if format == "parquet":
            handle = pq.ParquetFile(path)
            schema = handle.schema_arrow
            pieces.extend(_Piece(path, format, g) for g in range(handle.num_row_groups))
        else:
            reader = _csv_reader(path, None)
            schema = reader.schema
            reader.close()
            pieces.append(_Piece(path, format, -1))
        missing = [c for c in _COLUMNS if c not in schema.names]
        if missing:
            raise ValueError(
                f"`paths`: {str(path)!r} lacks the column(s) {missing}; it has {schema.names}."
            )
        for name in _COLUMNS:
            kind = _id_type(name, schema.field(name).type, path)
            if types.setdefault(name, kind) != kind:
                raise TypeError(
                    f"`paths`: column {name!r} is {types[name]} in earlier files but "
                    f"{kind} in {str(path)!r}; all files must use the same id type."
                )
    return pieces, types


def _to_numpy(column: Any) -> np.ndarray:
    array = column.to_numpy(zero_copy_only=False)
    return array.astype(object) if array.dtype.kind in "OUT" else array


@dataclass(frozen=True)
class _Scan:
    num_rows: int
    users: np.ndarray  # the distinct users that occur, sorted
    items: np.ndarray  # the distinct items that occur, sorted


def _scan(pieces: list[_Piece], types: dict[str, Any], catalog: pd.Index | None) -> _Scan:
    """One pass over the id columns, chunk by chunk (memory: one chunk + the
    distinct ids)."""
    num_rows = 0
    users: list[np.ndarray] = []
    items: list[np.ndarray] = []
    seen_users = np.empty(0, dtype=object if str(types["user_id"]) == "string" else np.int64)
    seen_items = np.empty(0, dtype=object if str(types["item_id"]) == "string" else np.int64)
    for piece in pieces:
        for batch in _read_piece(piece, types):
            if batch.num_rows == 0:
                continue
            if batch.column(0).null_count or batch.column(1).null_count:
                raise ValueError(f"`paths`: {str(piece.path)!r} has missing (null) ids.")
            num_rows += batch.num_rows
            user, item = _to_numpy(batch.column(0)), _to_numpy(batch.column(1))
            users.append(pd.unique(user))
            if catalog is not None:
                outside = catalog.get_indexer(item) < 0
                if outside.any():
                    raise ValueError(
                        f"`paths`: {int(outside.sum())} interactions of "
                        f"{str(piece.path)!r} have items outside `item_ids` (e.g. "
                        f"{item[outside][0]!r}); pass the full catalog."
                    )
            else:
                items.append(pd.unique(item))
            # Fold the distinct ids every few chunks so memory stays ~ distinct ids.
            if len(users) >= 16:
                seen_users = np.union1d(seen_users, np.concatenate(users))
                users = []
            if len(items) >= 16:
                seen_items = np.union1d(seen_items, np.concatenate(items))
                items = []
    seen_users = np.union1d(seen_users, np.concatenate(users)) if users else seen_users
    seen_items = np.union1d(seen_items, np.concatenate(items)) if items else seen_items
    return _Scan(num_rows, seen_users, seen_items)


# -------------------------------------------------------------------- dataset
def _tf_dtype(arrow_type: Any) -> tf.DType:
    return tf.string if str(arrow_type) == "string" else tf.int64


def _epoch_key(seed: int, first: Any, second: Any) -> np.random.SeedSequence:
    # Seeds from `Dataset.random` are any int64; SeedSequence wants non-negative.
    return np.random.SeedSequence([seed % 2**64, int(first) % 2**64, int(second) % 2**64])


def file_training_dataset(
    paths: str | os.PathLike | Sequence[str | os.PathLike],
    users: pd.DataFrame | EncodedAttributes | None = None,
    *,
    attributes: Sequence[str] | Mapping[str, str] = (),
    item_ids: Any = None,
    batch_size: int = 4096,
    num_negatives: int = 1,
    adversary_batch_size: int | None = None,
    shuffle_buffer: int = 1_048_576,
    seed: int = 0,
    epochs: int | None = None,
    initial_epoch: int = 0,
) -> tf.data.Dataset:
    """`training_dataset`'s batches, streamed from Parquet/CSV interaction files.

    Elements are exactly those of `tfprivadv.data.training_dataset` (same keys,
    dtypes and static shapes): `user_id` `[b]`, `item_id` `[b]`, `neg_item_id`
    `[b, num_negatives]` (uniform over the catalog without the positive), one
    label `[b]` per attribute (-1 / NaN for users absent from `users`) and, with
    attributes, `adversary` (`user_id` `[m]` drawn uniformly with replacement from
    the users that occur in the files, and their labels). See the module
    docstring for how rows are read and shuffled.

    One pass is one epoch of `ceil(rows / batch_size)` full batches (the last
    wraps around to the epoch's first rows), reshuffled and with fresh negatives
    on every pass. With `epochs`, the dataset is one stream of the epochs
    `initial_epoch .. epochs - 1`, and each epoch's piece order, window shuffles,
    negatives and user samples are a pure function of `(seed, epoch)`, so a run
    resumed at epoch `e` sees the batches an uninterrupted run saw.

    Args:
        paths: Interaction files (columns `user_id`, `item_id`; others are
            ignored): a path, a glob pattern, or a list of them. `.parquet`/`.pq`
            files are read by row group, `.csv` files (with a header) in blocks.
        users: User attributes (DataFrame with `user_id` + columns, or
            `EncodedAttributes`); needed when `attributes` is set.
        attributes: Attributes to attach (see `tfprivadv.data.encode_attributes`).
        item_ids: The catalog to draw negatives from (default: the sorted
            distinct items in the files); pass the model's `item_vocabulary`.
        batch_size: Interactions per batch.
        num_negatives: Negatives per positive (>= 1).
        adversary_batch_size: Users in each batch's `adversary` sample
            (default `min(batch_size, users that occur, 256)`).
        shuffle_buffer: Rows shuffled together (memory: about 64 bytes a row);
            0 keeps file order (for debugging).
        seed: Seed of the piece order, the shuffles, the negatives and the
            user samples.
        epochs: Stream this many epochs in total; None: one epoch per pass.
        initial_epoch: First epoch of the stream (resuming); needs `epochs`.

    Returns:
        A `tf.data.Dataset` with known cardinality and an attribute
        `steps_per_epoch` (batches per epoch), which the models' `fit` reads.

    Raises:
        TypeError / ValueError / FileNotFoundError: bad arguments, unreadable
            or inconsistent files, items outside `item_ids`.

    Example:
        >>> data = generate_synthetic("/tmp/synth", num_interactions=1_000_000)
        >>> ds = file_training_dataset(data.interaction_files, data.users(),
        ...                            attributes=["gender", "age_group"],
        ...                            item_ids=data.item_ids, epochs=10)
        >>> model.fit(ds, epochs=10)
    """
    files = _resolve_paths(paths)
    batch_size, num_negatives, seed, epochs, initial_epoch = check_stream_arguments(
        batch_size, num_negatives, seed, epochs, initial_epoch
    )
    shuffle_buffer = check_int("shuffle_buffer", shuffle_buffer, minimum=0)
    if adversary_batch_size is not None:
        adversary_batch_size = check_int("adversary_batch_size", adversary_batch_size, minimum=1)
    if isinstance(attributes, str) or not isinstance(attributes, Sequence | Mapping):
        raise TypeError(
            "`attributes` must be a list of column names or a dict name -> kind. "
            f"Received: {_received(attributes)}"
        )

    pieces, column_types = _pieces_and_types(files)
    catalog_index = None
    if item_ids is not None:
        catalog = np.asarray(item_ids)
        if catalog.ndim != 1:
            raise ValueError(f"`item_ids` must be 1-D. Received shape {catalog.shape}.")
        catalog_index = pd.Index(catalog)
    scan = _scan(pieces, column_types, catalog_index)
    if scan.num_rows == 0:
        raise ValueError(f"`paths`: the {len(files)} file(s) hold no interactions.")
    if catalog_index is None:
        catalog = scan.items
        catalog_index = pd.Index(catalog)
    if len(catalog) < 2:
        raise ValueError(f"The catalog must hold at least 2 items. Received {len(catalog)}.")

    # Labels: a table per attribute over the rows of `users`, plus one trailing
    # "unknown" row that users missing from `users` point at.
    names = list(attributes)
    label_tables: dict[str, tf.Tensor] = {}
    user_index = None
    adversary = None
    if names:
        encoded = encoded_attributes(users, attributes)
        user_index = pd.Index(encoded.user_ids)
        for name in names:
            unknown = -1 if encoded.kinds[name] == "categorical" else np.nan
            values = encoded.values[name]
            label_tables[name] = tf.constant(np.append(values, np.asarray(unknown, values.dtype)))
        adversary_users = scan.users
        adversary_labels = encoded.for_users(adversary_users)
        if adversary_batch_size is None:
            adversary_batch_size = min(batch_size, len(adversary_users), 256)
        adversary = {
            "user_id": tf.constant(adversary_users),
            **{name: tf.constant(adversary_labels[name]) for name in names},
        }

    n = scan.num_rows
    num_batches = -(-n // batch_size)
    batches_per_block = max(1, _BLOCK_ROWS // batch_size)
    user_type, item_type = column_types["user_id"], column_types["item_id"]
    unknown_user = len(user_index) if user_index is not None else 0

    def blocks(first: Any, second: Any) -> Iterator[dict[str, np.ndarray]]:
        """One epoch as blocks of whole batches: `[k, batch_size]` arrays."""
        rng = np.random.default_rng(_epoch_key(seed, first, second))
        order = rng.permutation(len(pieces)) if shuffle_buffer else range(len(pieces))
        window: list[dict[str, np.ndarray]] = []
        window_rows = 0
        head: dict[str, np.ndarray] | None = None  # the epoch's first rows, to wrap
        emitted = 0

        def columns_of(batch: Any) -> dict[str, np.ndarray]:
            user, item = _to_numpy(batch.column(0)), _to_numpy(batch.column(1))
            if user_index is not None:
                user_row = user_index.get_indexer(user)
                user_row[user_row < 0] = unknown_user
            else:
                user_row = np.zeros(len(user), np.int64)
            item_row = catalog_index.get_indexer(item)
            return {
                "user_id": user,
                "item_id": item,
                "user_row": user_row.astype(np.int64),
                "item_row": item_row.astype(np.int64),
            }

        def flush(final: bool) -> Iterator[dict[str, np.ndarray]]:
            nonlocal window, window_rows, head, emitted
            if not window:
                return
            rows = {k: np.concatenate([w[k] for w in window]) for k in window[0]}
            total = len(rows["user_id"])
            if shuffle_buffer:
                permutation = rng.permutation(total)
                rows = {k: v[permutation] for k, v in rows.items()}
            if head is None:
                head = {k: v[:batch_size] for k, v in rows.items()}
            whole = total // batch_size * batch_size
            if final and whole < total:  # wrap: complete the last batch from the head
                take = np.arange(batch_size - (total - whole)) % len(head["user_id"])
                rows = {k: np.concatenate([v, head[k][take]]) for k, v in rows.items()}
                whole += batch_size
            step = batches_per_block * batch_size
            for start in range(0, whole, step):
                stop = min(start + step, whole)
                block = {k: v[start:stop].reshape(-1, batch_size) for k, v in rows.items()}
                block["block"] = np.int64(emitted)
                emitted += 1
                yield block
            # Rows short of a batch wait for the next window.
            window = [{k: v[whole:] for k, v in rows.items()}] if whole < total else []
            window_rows = total - whole if whole < total else 0

        for index in order:
            for batch in _read_piece(pieces[index], column_types):
                if batch.num_rows:
                    window.append(columns_of(batch))
                    window_rows += batch.num_rows
                if window_rows >= max(shuffle_buffer, batch_size):
                    yield from flush(final=False)
        yield from flush(final=True)

    signature = {
        "user_id": tf.TensorSpec([None, batch_size], _tf_dtype(user_type)),
        "item_id": tf.TensorSpec([None, batch_size], _tf_dtype(item_type)),
        "user_row": tf.TensorSpec([None, batch_size], tf.int64),
        "item_row": tf.TensorSpec([None, batch_size], tf.int64),
        "block": tf.TensorSpec([], tf.int64),
    }
    catalog_t = tf.constant(catalog)
    num_items = len(catalog)

    def finish(block: dict[str, tf.Tensor], key: tf.Tensor) -> dict[str, tf.Tensor]:
        """Negatives, labels and the adversary sample for a block, vectorized."""
        k = tf.shape(block["user_id"])[0]
        base = tf.random.experimental.stateless_fold_in(key, block["block"])
        draws = tf.random.stateless_uniform(
            tf.stack([k, batch_size, num_negatives]),
            seed=tf.random.experimental.stateless_fold_in(base, 1),
            minval=0,
            maxval=num_items - 1,
            dtype=tf.int64,
        )
        draws += tf.cast(draws >= block["item_row"][:, :, None], tf.int64)
        out = {
            "user_id": block["user_id"],
            "item_id": block["item_id"],
            **{name: tf.gather(table, block["user_row"]) for name, table in label_tables.items()},
            "neg_item_id": tf.gather(catalog_t, draws),
        }
        if adversary is not None:
            sample = tf.random.stateless_uniform(
                tf.stack([k, adversary_batch_size]),
                seed=tf.random.experimental.stateless_fold_in(base, 2),
                minval=0,
                maxval=len(adversary_users),
                dtype=tf.int64,
            )
            out["adversary"] = {name: tf.gather(col, sample) for name, col in adversary.items()}
        return out

    def epoch_batches(first: tf.Tensor, second: tf.Tensor) -> tf.data.Dataset:
        key = tf.stack([tf.cast(first, tf.int64), tf.cast(second, tf.int64)])
        reader = tf.data.Dataset.from_generator(
            blocks, output_signature=signature, args=(first, second)
        )
        # Reading runs ahead of the map, the map ahead of unbatch.
        reader = reader.prefetch(2)
        finished = reader.map(
            lambda block: finish(block, key),
            num_parallel_calls=tf.data.AUTOTUNE,
            deterministic=True,
        )
        return finished.unbatch()

    if epochs is None:
        # A fresh seed per pass (Dataset.random re-draws on every iteration).
        epoch_seeds = tf.data.Dataset.random(seed=seed, rerandomize_each_iteration=True).take(1)
        dataset = epoch_seeds.flat_map(lambda e: epoch_batches(e, tf.constant(-1, tf.int64)))
        cardinality = num_batches
    else:
        epoch_index = tf.data.Dataset.range(initial_epoch, epochs)
        dataset = epoch_index.flat_map(lambda e: epoch_batches(tf.constant(seed, tf.int64), e))
        cardinality = num_batches * (epochs - initial_epoch)
    dataset = dataset.prefetch(tf.data.AUTOTUNE)
    dataset = dataset.apply(tf.data.experimental.assert_cardinality(cardinality))
    dataset.steps_per_epoch = num_batches
    return dataset
