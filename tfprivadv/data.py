"""DataFrames -> `tf.data` training pipeline with vectorized negative sampling.

The pipeline is the throughput path, so nothing in it runs per example: each epoch
draws one permutation of the interactions (stateless, from a per-epoch seed), cuts
it into batches of indices, and one batched `map` gathers ids and labels and draws
the negatives for a whole batch.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np
import pandas as pd

from tfprivadv._keras import tf
from tfprivadv._validation import _received, check_choice, check_columns, check_int

KINDS = ("categorical", "continuous")


@dataclass(frozen=True)
class EncodedAttributes:
    """Per-user attribute labels ready for heads.

    Attributes:
        user_ids: The users, in the order of the label arrays.
        values: Attribute -> labels: int32 class indices (-1 = unknown) for
            categorical attributes, float32 (NaN = unknown) for continuous ones.
        kinds: Attribute -> "categorical" or "continuous".
        vocabularies: Attribute -> the class values in index order (categorical).
    """

    user_ids: np.ndarray
    values: dict[str, np.ndarray]
    kinds: dict[str, str]
    vocabularies: dict[str, list[Any]]

    def num_classes(self, attribute: str) -> int:
        """Number of classes of a categorical attribute."""
        return len(self.vocabularies[attribute])

    def for_users(self, user_ids: Any) -> dict[str, np.ndarray]:
        """Labels of `user_ids` (unknown users get -1 / NaN)."""
        position = pd.Index(self.user_ids).get_indexer(np.asarray(user_ids))
        out = {}
        for name, values in self.values.items():
            missing = -1 if self.kinds[name] == "categorical" else np.nan
            taken = values[np.maximum(position, 0)].copy()
            taken[position < 0] = missing
            out[name] = taken
        return out


def _infer_kind(series: pd.Series) -> str:
    if pd.api.types.is_float_dtype(series.dtype):
        return "continuous"
    return "categorical"


def encode_attributes(
    users: pd.DataFrame,
    attributes: Sequence[str] | Mapping[str, str],
) -> EncodedAttributes:
    """Encodes user attribute columns into head labels.

    Args:
        users: One row per user with a `user_id` column and the attribute columns.
        attributes: Column names, or a mapping name -> "categorical"/"continuous".
            Without a kind, float columns are continuous and all others (strings,
            ints such as ML-1M's age-group codes, bools) categorical.

    Returns:
        EncodedAttributes. Categorical classes are sorted values; missing values
        (NaN/None) get -1.

    Raises:
        ValueError: a missing column, a duplicated user, or an unknown kind.
    """
    if isinstance(attributes, str) or not isinstance(attributes, Sequence | Mapping):
        raise TypeError(
            "`attributes` must be a list of column names or a dict name -> kind. "
            f"Received: {_received(attributes)}"
        )
    names = list(attributes)
    check_columns("users", users, ["user_id", *names])
    if users["user_id"].duplicated().any():
        raise ValueError("`users` must have one row per user_id; some ids repeat.")
    values, kinds, vocabularies = {}, {}, {}
    for name in names:
        column = users[name]
        kind = attributes[name] if isinstance(attributes, Mapping) else _infer_kind(column)
        kinds[name] = check_choice(f"attributes[{name!r}]", kind, KINDS)
        if kind == "continuous":
            values[name] = pd.to_numeric(column, errors="raise").to_numpy(np.float32)
        else:
            codes, classes = pd.factorize(column, sort=True, use_na_sentinel=True)
            values[name] = codes.astype(np.int32)
            vocabularies[name] = [c.item() if hasattr(c, "item") else c for c in classes]
            if len(classes) < 2:
                raise ValueError(
                    f"Attribute {name!r} has fewer than 2 classes ({list(classes)}); "
                    "a head cannot learn from it."
                )
    return EncodedAttributes(users["user_id"].to_numpy(), values, kinds, vocabularies)


def training_dataset(
    ratings: pd.DataFrame,
    users: pd.DataFrame | EncodedAttributes | None = None,
    *,
    attributes: Sequence[str] | Mapping[str, str] = (),
    item_ids: Any = None,
    batch_size: int = 4096,
    num_negatives: int = 1,
    adversary_batch_size: int | None = None,
    shuffle: bool = True,
    seed: int = 0,
    epochs: int | None = None,
    initial_epoch: int = 0,
) -> tf.data.Dataset:
    """Builds the training `tf.data.Dataset` for BPR with attribute labels.

    Each element is a dict: `user_id` `[b]`, `item_id` `[b]` (the positive),
    `neg_item_id` `[b, num_negatives]` drawn uniformly from the catalog without
    the positive itself (draw from `n - 1` items and skip past the positive:
    exactly uniform, no rejection loop), and one label array `[b]` per attribute.
    With attributes it also holds `adversary`: a dict with `user_id` `[m]`, users
    drawn uniformly (with replacement) from the users in `ratings`, and their
    labels: the sample on which `PrivacyAdversarialModel` trains its heads by
    default, so every user weighs the same in the adversary loss.

    One pass is one epoch: `ceil(len(ratings) / batch_size)` batches, all of
    exactly `batch_size` rows (the last wraps around); the order is reshuffled
    and the negatives redrawn on every pass, and the whole sequence of epochs is
    fixed by `seed`.

    With `epochs`, the dataset is instead one stream of the epochs
    `initial_epoch .. epochs - 1`, and each epoch's order, negatives and user
    sample are a pure function of `(seed, epoch)`. A run resumed at epoch `e`
    then sees exactly the batches the uninterrupted run saw, and every replica
    of a distributed run can rebuild the same global stream. Pass
    `steps_per_epoch=batches_per_epoch(...)` (or `dataset.steps_per_epoch`) to
    `fit` with it; the models in this package fill it in themselves.

    Args:
        ratings: Interactions with `user_id` and `item_id` columns.
        users: User attributes (DataFrame with `user_id` + columns, or
            `EncodedAttributes`); needed when `attributes` is set.
        attributes: Attributes to attach (see `encode_attributes`). Users absent
            from `users` get unknown labels (-1 / NaN), which heads mask out.
        item_ids: The catalog to draw negatives from (default: the items in
            `ratings`); pass the model's `item_vocabulary`.
        batch_size: Interactions per batch.
        num_negatives: Negatives per positive (>= 1).
        adversary_batch_size: Users in the `adversary` sample of each batch
            (default `min(batch_size, users, 256)`).
        shuffle: Reshuffle every epoch (False keeps file order, for debugging).
        seed: Seed of the shuffles and the negatives.
        epochs: Stream this many epochs in total (see above); None: one epoch
            per pass, re-randomized on every pass.
        initial_epoch: First epoch of the stream (resuming); needs `epochs`.

    Returns:
        A `tf.data.Dataset` with known cardinality (batches per epoch, or
        batches per epoch times the epochs streamed) and an attribute
        `steps_per_epoch`.

    Example:
        >>> ds = training_dataset(train, users, attributes=["gender"], seed=0)
        >>> model.fit(ds, epochs=10)
    """
    check_columns("ratings", ratings, ["user_id", "item_id"])
    batch_size, num_negatives, seed, epochs, initial_epoch = check_stream_arguments(
        batch_size, num_negatives, seed, epochs, initial_epoch
    )
    if len(ratings) == 0:
        raise ValueError("`ratings` is empty.")
    user_array = ratings["user_id"].to_numpy()
    item_array = ratings["item_id"].to_numpy()
    catalog = pd.unique(item_array) if item_ids is None else np.asarray(item_ids)
    if len(catalog) < 2:
        raise ValueError(f"The catalog must hold at least 2 items. Received {len(catalog)}.")
    positive_index = pd.Index(catalog).get_indexer(item_array)
    if (positive_index < 0).any():
        example = item_array[positive_index < 0][0]
        raise ValueError(
            f"{int((positive_index < 0).sum())} interactions have items outside "
            f"`item_ids` (e.g. {example!r}); pass the full catalog."
        )

    labels: dict[str, np.ndarray] = {}
    if attributes:
        encoded = encoded_attributes(users, attributes)
        per_row = encoded.for_users(user_array)
        labels = {name: per_row[name] for name in attributes}

    n = len(user_array)
    num_batches = -(-n // batch_size)
    columns = {
        "user_id": tf.constant(user_array),
        "item_id": tf.constant(item_array),
        **{name: tf.constant(value) for name, value in labels.items()},
    }
    positive_index_t = tf.constant(positive_index.astype(np.int64))
    catalog_t = tf.constant(catalog)
    num_items = len(catalog)
    adversary = None
    if labels:
        adversary_users = pd.unique(user_array)
        adversary_labels = encoded.for_users(adversary_users)
        adversary_batch_size = (
            min(batch_size, len(adversary_users), 256)
            if adversary_batch_size is None
            else check_int("adversary_batch_size", adversary_batch_size, minimum=1)
        )
        adversary = {
            "user_id": tf.constant(adversary_users),
            **{name: tf.constant(adversary_labels[name]) for name in labels},
        }

    padded = num_batches * batch_size

    def epoch_batches(epoch_seed: tf.Tensor, stateless: bool) -> tf.data.Dataset:
        # The whole epoch is drawn with a few vectorized ops and then sliced into
        # batches, so producing a batch costs a memcpy, not a dozen small ops
        # competing with the training step for the same two cores.
        if stateless:  # epoch_seed is the epoch index; one distinct pair per draw
            seeds = [tf.stack([tf.constant(seed, tf.int64), 3 * epoch_seed + i]) for i in range(3)]
        else:
            seeds = [tf.stack([epoch_seed, tf.constant(seed + i, tf.int64)]) for i in range(3)]
        order = tf.range(n, dtype=tf.int64)
        if shuffle:
            order = tf.random.experimental.stateless_shuffle(order, seed=seeds[0])
        # Every batch has exactly `batch_size` rows (the last one wraps around to
        # the start of this epoch's order), so an XLA-compiled step never sees a
        # second shape; at most batch_size - 1 interactions appear twice an epoch.
        order = tf.gather(order, tf.range(padded, dtype=tf.int64) % n)
        epoch = {name: tf.gather(column, order) for name, column in columns.items()}
        draws = tf.random.stateless_uniform(
            [padded, num_negatives],
            seed=seeds[1],
            minval=0,
            maxval=num_items - 1,
            dtype=tf.int64,
        )
        draws += tf.cast(draws >= tf.gather(positive_index_t, order)[:, None], tf.int64)
        epoch["neg_item_id"] = tf.gather(catalog_t, draws)
        epoch = {
            name: tf.reshape(value, tf.concat([[num_batches, batch_size], tf.shape(value)[1:]], 0))
            for name, value in epoch.items()
        }
        if adversary is not None:
            sample = tf.random.stateless_uniform(
                [num_batches, adversary_batch_size],
                seed=seeds[2],
                minval=0,
                maxval=len(adversary_users),
                dtype=tf.int64,
            )
            epoch["adversary"] = {
                name: tf.gather(column, sample) for name, column in adversary.items()
            }
        return tf.data.Dataset.from_tensor_slices(epoch)

    if epochs is None:
        # Dataset.random re-draws its stream on every pass: one fresh seed per
        # epoch, reproducible from `seed`.
        epoch_seeds = tf.data.Dataset.random(seed=seed, rerandomize_each_iteration=True).take(1)
        dataset = epoch_seeds.flat_map(lambda e: epoch_batches(e, stateless=False))
        cardinality = num_batches
    else:
        epoch_index = tf.data.Dataset.range(initial_epoch, epochs)
        dataset = epoch_index.flat_map(lambda e: epoch_batches(e, stateless=True))
        cardinality = num_batches * (epochs - initial_epoch)
    dataset = dataset.prefetch(tf.data.AUTOTUNE)
    dataset = dataset.apply(tf.data.experimental.assert_cardinality(cardinality))
    dataset.steps_per_epoch = num_batches
    return dataset


def encoded_attributes(
    users: pd.DataFrame | EncodedAttributes | None, attributes: Sequence[str] | Mapping[str, str]
) -> EncodedAttributes:
    """`users` encoded for `attributes` (already encoded `users` pass through, if
    they hold every attribute)."""
    if users is None:
        raise ValueError("`attributes` were requested but `users` is None.")
    encoded = (
        users if isinstance(users, EncodedAttributes) else encode_attributes(users, attributes)
    )
    missing = [a for a in attributes if a not in encoded.values]
    if missing:
        raise ValueError(f"`users` has no encoded attribute(s) {missing}.")
    return encoded


def check_stream_arguments(
    batch_size: Any, num_negatives: Any, seed: Any, epochs: Any, initial_epoch: Any
) -> tuple[int, int, int, int | None, int]:
    """Validates the arguments every training stream shares (in memory or from
    files); returns them as ints."""
    batch_size = check_int("batch_size", batch_size, minimum=1)
    num_negatives = check_int("num_negatives", num_negatives, minimum=1)
    seed = check_int("seed", seed)
    initial_epoch = check_int("initial_epoch", initial_epoch, minimum=0)
    if epochs is not None:
        epochs = check_int("epochs", epochs, minimum=initial_epoch + 1)
    elif initial_epoch:
        raise ValueError(
            f"`initial_epoch` ({initial_epoch}) needs `epochs` (the stream's last epoch + 1)."
        )
    return batch_size, num_negatives, seed, epochs, initial_epoch


def batches_per_epoch(num_interactions: int, batch_size: int) -> int:
    """Batches in one epoch of `training_dataset`: `ceil(num_interactions / batch_size)`."""
    num_interactions = check_int("num_interactions", num_interactions, minimum=1)
    return -(-num_interactions // check_int("batch_size", batch_size, minimum=1))
