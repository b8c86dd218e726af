"""SavedModel export for TF Serving: the user tower and the item index, no heads.

`export_for_serving` copies what serving needs out of a trained recommender (the
id -> row lookups, the user and item tables, the item biases and, if asked, each
user's training items) into a plain `tf.Module` and saves that. The export holds
no Keras object, so it loads with TensorFlow alone (no tfprivadv, no custom
objects), and no adversary: the attribute heads and gradient reversals of a
`PrivacyAdversarialModel` are absent by construction, not merely unused.

Layout (what `tensorflow_model_server --model_base_path=EXPORT_DIR` polls)::

    EXPORT_DIR/
      1/                         one folder per version, positive integers
        saved_model.pb
        variables/
        assets.extra/tf_serving_warmup_requests
      2/ ...

Signatures (raw ids in, as in the training data):

- `serving_default`: `user_id` [batch] -> `item_ids` [batch, k], `scores` [batch, k]
- `user_embedding`: `user_id` [batch] -> `embedding` [batch, dim]
- `score`: `user_id`, `item_id` [batch] -> `score` [batch]

Unknown ids are answered, never rejected: an unknown user gets the model's
out-of-vocabulary vector (all zeros unless unknown ids occurred in training), so
its top-k is the items ranked by bias alone, a popularity-like list; an unknown
item in `score` is scored with the out-of-vocabulary item row (score 0 when that
row is untrained). These are exactly the answers of `BPRRetrievalModel.recommend`
and `score_items`.
"""

from __future__ import annotations

import os
import shutil
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np

from tfprivadv._keras import tf
from tfprivadv._validation import _received, check_int
from tfprivadv.models import BPRRetrievalModel, PrivacyAdversarialModel, _exclusion_pairs

#: The warm-up file TF Serving replays before it marks a version as available.
WARMUP_FILE = Path("assets.extra") / "tf_serving_warmup_requests"
SIGNATURES = ("serving_default", "user_embedding", "score")


def export_for_serving(
    model: Any,
    export_dir: str | os.PathLike,
    *,
    version: int | None = None,
    k: int = 10,
    exclude_seen: Any = None,
    warmup_user_ids: Sequence[Any] | None = None,
    allow_untrained: bool = False,
) -> Path:
    """Writes a TF Serving SavedModel of a recommender into `export_dir/<version>/`.

    The version is staged in a hidden sibling folder (`export_dir/.tmp-...`, which
    TF Serving ignores) and renamed into place only once the SavedModel and the
    warm-up file are complete, so a server polling `export_dir` never loads a
    half-written version, and a failure leaves no version folder behind.

    The served top-k equals `model.recommend(user_ids, k, exclude=exclude_seen)`:
    same scores `<p_u, q_i> + b_i`, excluded items scored `-inf`, ties broken by
    `tf.math.top_k` (lower catalog position first).

    Args:
        model: A trained `BPRRetrievalModel`, or a `PrivacyAdversarialModel`, of
            which only the wrapped recommender is exported.
        export_dir: The model's base folder (TF Serving's `model_base_path`);
            created if missing. `tfprivadv export` uses `saved_models/NAME`.
        version: The version folder, a positive int. None takes the highest
            numeric version present plus one (1 in an empty folder). Versions are
            never overwritten: TF Serving does not reload a version it has loaded.
        k: Items per user in `serving_default`, fixed at export (1 to the catalog size).
        exclude_seen: Items never to serve to a user, baked into the export:
            a DataFrame with `user_id` and `item_id` columns (e.g. the training
            interactions) or a mapping user id -> item ids, as `recommend`'s
            `exclude`. Only users in the model's vocabulary keep exclusions (the
            others share the OOV row). None serves every catalog item.
        warmup_user_ids: Users of the warm-up requests; default the first 8 of
            the model's user vocabulary.
        allow_untrained: Export a model that looks untrained (see Raises), e.g.
            a randomly initialised one for a benchmark.

    Returns:
        The version folder, `export_dir/<version>`.

    Raises:
        TypeError: `model` is neither model class, or an argument has the wrong type.
        ValueError: `k` is out of range, `export_dir` is not a folder, or the
            model is untrained: its optimizer has taken no step (or it has none)
            and every item bias is still exactly 0, their initial value. Any
            training step moves the biases, so a trained model, reloaded with or
            without its optimizer, passes.
        FileExistsError: `version` exists in `export_dir`.
        ImportError: `tensorflow-serving-api` (for the warm-up file) is missing.

    Example:
        >>> path = export_for_serving(model, "saved_models/movielens", exclude_seen=train)
        >>> served = tf.saved_model.load(str(path)).signatures["serving_default"]
        >>> served(user_id=tf.constant([1, 2], tf.int64))["item_ids"].shape
        TensorShape([2, 10])
    """
    recommender = _recommender(model)
    if version is not None:
        version = check_int("version", version, minimum=1)
    k = check_int("k", k, minimum=1)
    catalog = len(recommender.item_vocabulary)
    if k > catalog:
        raise ValueError(f"`k` must be <= the catalog size {catalog}. Received: {k}")
    if not isinstance(allow_untrained, bool):
        raise TypeError(f"`allow_untrained` must be a bool. Received: {_received(allow_untrained)}")
    if not allow_untrained and not _looks_trained(model, recommender):
        raise ValueError(
            "`model` looks untrained: its optimizer has taken no step and every item bias "
            "is still 0, so the export would serve random vectors. Train it with `fit` (or "
            "load a trained model, e.g. RUN_DIR/model.keras) first, or pass "
            "allow_untrained=True to export it anyway."
        )
    warmup_users = _warmup_users(recommender, warmup_user_ids)
    # Validate (and convert) the exclusions before anything touches the disk.
    seen = _seen_rows(recommender, exclude_seen)
    _serving_api()  # fail before writing if the warm-up file cannot be written

    export_dir = _export_folder(export_dir)
    created = not export_dir.exists()
    try:
        export_dir.mkdir(parents=True, exist_ok=True)
    except OSError as error:
        raise ValueError(
            f"`export_dir` must be a folder or a path where one can be created. "
            f"Received: {str(export_dir)!r} ({error.strerror or error})"
        ) from None
    if version is None:
        version = _next_version(export_dir)
    target = export_dir / str(version)
    if target.exists():
        raise FileExistsError(
            f"Version {version} exists in {export_dir}; TF Serving versions are immutable "
            f"(a loaded version is never reloaded). Pass another `version` or version=None "
            f"for the next one ({_next_version(export_dir)})."
        )
    staging = export_dir / f".tmp-{version}-{os.getpid()}"
    try:
        shutil.rmtree(staging, ignore_errors=True)
        module = ServingModule(recommender, k=k, seen=seen)
        tf.saved_model.save(
            module,
            str(staging),
            signatures={
                "serving_default": module.recommend,
                "user_embedding": module.user_embedding,
                "score": module.score,
            },
        )
        _write_warmup(staging / WARMUP_FILE, export_dir.resolve().name, warmup_users, recommender)
        if target.exists():  # another exporter took this version meanwhile
            raise FileExistsError(f"Version {version} appeared in {export_dir} during the export.")
        os.replace(staging, target)
    except BaseException:
        shutil.rmtree(staging, ignore_errors=True)
        if created:
            _remove_if_empty(export_dir)
        raise
    return target


def _recommender(model: Any) -> BPRRetrievalModel:
    if isinstance(model, PrivacyAdversarialModel):
        model = model.retrieval_model
    if not isinstance(model, BPRRetrievalModel):
        raise TypeError(
            "`model` must be a BPRRetrievalModel or a PrivacyAdversarialModel wrapping "
            f"one. Received: {_received(model)}"
        )
    return model


def _looks_trained(model: Any, recommender: BPRRetrievalModel) -> bool:
    for owner in (model, recommender):
        optimizer = getattr(owner, "optimizer", None)
        iterations = getattr(optimizer, "iterations", None)
        if iterations is not None and int(iterations.numpy()) > 0:
            return True
    return bool(np.any(recommender.item_bias.embeddings.numpy() != 0))


def _export_folder(export_dir: Any) -> Path:
    if not isinstance(export_dir, str | os.PathLike):
        raise TypeError(
            f"`export_dir` must be a path (str or os.PathLike). Received: {_received(export_dir)}"
        )
    path = Path(export_dir)
    if path.exists() and not path.is_dir():
        raise ValueError(
            f"`export_dir` must be a folder (TF Serving's model_base_path) or a path "
            f"where one can be created. Received: {str(path)!r}, an existing file."
        )
    return path


def _next_version(export_dir: Path) -> int:
    numbers = [int(p.name) for p in export_dir.iterdir() if p.name.isdigit() and p.is_dir()]
    return max(numbers, default=0) + 1


def _remove_if_empty(folder: Path) -> None:
    try:
        folder.rmdir()
    except OSError:
        pass


def _warmup_users(recommender: BPRRetrievalModel, user_ids: Any) -> np.ndarray:
    if user_ids is None:
        return recommender.user_vocabulary[:8]
    users = np.asarray(user_ids)
    kind = recommender.user_vocabulary.dtype.kind
    if users.ndim != 1 or users.size == 0 or (users.dtype.kind in "iu") != (kind == "i"):
        raise ValueError(
            "`warmup_user_ids` must be a non-empty 1-D sequence of user ids of the model's "
            f"id type ({'int' if kind == 'i' else 'str'}). Received: {_received(user_ids)}"
        )
    return users.astype(recommender.user_vocabulary.dtype)


def _seen_rows(
    recommender: BPRRetrievalModel, exclude: Any
) -> tuple[np.ndarray, np.ndarray] | None:
    """Each known user's excluded catalog columns as CSR over embedding rows (row 0 = OOV)."""
    if exclude is None:
        return None
    try:
        rows, columns = _exclusion_pairs(
            exclude, recommender.user_vocabulary, recommender.item_vocabulary
        )
    except TypeError:
        raise TypeError(
            "`exclude_seen` must be None, a DataFrame with 'user_id' and 'item_id' columns "
            f"or a mapping user id -> item ids. Received: {_received(exclude)}"
        ) from None
    rows = rows + 1  # vocabulary position -> embedding row
    order = np.lexsort((columns, rows))
    rows, columns = rows[order], columns[order]
    counts = np.bincount(rows, minlength=len(recommender.user_vocabulary) + 1)
    splits = np.concatenate([[0], np.cumsum(counts)]).astype(np.int64)
    return splits, columns.astype(np.int64)


def _serving_api():
    try:
        from tensorflow_serving.apis import predict_pb2, prediction_log_pb2
    except ImportError as error:
        raise ImportError(
            "Writing the TF Serving warm-up file needs `tensorflow-serving-api` (a "
            "dependency of tfprivadv): pip install tensorflow-serving-api==2.21.0. "
            f"({error})"
        ) from error
    return predict_pb2, prediction_log_pb2


class _IdIndex(tf.Module):
    """Raw id -> table row (vocabulary position + 1; unknown ids -> 0, the OOV row).

    Integer ids: a binary search over the sorted vocabulary, held in variables, so
    the graph has no table to initialise and the ids live in `variables/`.
    String ids: a `StaticHashTable` (tf.searchsorted does not take strings).
    """

    def __init__(self, vocabulary: np.ndarray, name: str) -> None:
        super().__init__(name=name)
        rows = np.arange(1, len(vocabulary) + 1, dtype=np.int64)
        self.id_dtype = tf.int64 if vocabulary.dtype.kind == "i" else tf.string
        if self.id_dtype == tf.int64:
            order = np.argsort(vocabulary, kind="stable")
            self.sorted_ids = tf.Variable(vocabulary[order], trainable=False, name="sorted_ids")
            self.sorted_rows = tf.Variable(rows[order], trainable=False, name="sorted_rows")
        else:
            self.table = tf.lookup.StaticHashTable(
                tf.lookup.KeyValueTensorInitializer(
                    tf.constant(vocabulary.astype(str).tolist(), tf.string), tf.constant(rows)
                ),
                default_value=0,
            )

    def __call__(self, ids: tf.Tensor) -> tf.Tensor:
        if self.id_dtype == tf.string:
            return self.table.lookup(ids)
        size = tf.shape(self.sorted_ids, out_type=tf.int64)[0]
        position = tf.minimum(tf.searchsorted(self.sorted_ids, ids, out_type=tf.int64), size - 1)
        found = tf.equal(tf.gather(self.sorted_ids, position), ids)
        return tf.where(found, tf.gather(self.sorted_rows, position), tf.zeros_like(ids))


class ServingModule(tf.Module):
    """What the SavedModel holds: copies of the serving tensors of a recommender.

    Only tables are copied (as non-trainable variables), never layers, so nothing
    of Keras, of the heads or of the optimizer is reachable from it. Item tables
    are kept in catalog order without the OOV row, so `top_k` positions are
    catalog positions as in `recommend` and the OOV item can never be served;
    the OOV item row is kept apart for `score`.

    Args:
        recommender: The trained `BPRRetrievalModel`.
        k: Items per user of `recommend`.
        seen: Optional `(row_splits, catalog_columns)` CSR over user rows of the
            items to exclude (see `export_for_serving`'s `exclude_seen`).
    """

    def __init__(
        self,
        recommender: BPRRetrievalModel,
        *,
        k: int,
        seen: tuple[np.ndarray, np.ndarray] | None = None,
    ) -> None:
        super().__init__(name="tfprivadv_recommender")
        self.k = k
        users = recommender.user_embedding.embeddings.numpy().astype(np.float32)
        items = recommender.item_embedding.embeddings.numpy().astype(np.float32)
        biases = recommender.item_bias.embeddings.numpy()[:, 0].astype(np.float32)
        self.user_index = _IdIndex(recommender.user_vocabulary, "user_index")
        self.item_index = _IdIndex(recommender.item_vocabulary, "item_index")
        self.user_vectors = tf.Variable(users, trainable=False, name="user_vectors")
        self.item_vectors = tf.Variable(items[1:], trainable=False, name="item_vectors")
        self.item_biases = tf.Variable(biases[1:], trainable=False, name="item_biases")
        self.oov_item_vector = tf.Variable(items[0], trainable=False, name="oov_item_vector")
        self.oov_item_bias = tf.Variable(biases[0], trainable=False, name="oov_item_bias")
        vocabulary = recommender.item_vocabulary
        if vocabulary.dtype.kind != "i":
            vocabulary = vocabulary.astype(str).astype(object)
        self.catalog = tf.Variable(
            tf.constant(vocabulary, dtype=self.item_index.id_dtype), trainable=False, name="catalog"
        )
        self.has_seen = seen is not None
        if self.has_seen:
            self.seen_row_splits = tf.Variable(seen[0], trainable=False, name="seen_row_splits")
            self.seen_items = tf.Variable(seen[1], trainable=False, name="seen_items")
        user_spec = tf.TensorSpec([None], self.user_index.id_dtype, name="user_id")
        item_spec = tf.TensorSpec([None], self.item_index.id_dtype, name="item_id")
        self.recommend = tf.function(self._recommend, input_signature=[user_spec])
        self.user_embedding = tf.function(self._user_embedding, input_signature=[user_spec])
        self.score = tf.function(self._score, input_signature=[user_spec, item_spec])

    def _user_vectors(self, user_id: tf.Tensor) -> tf.Tensor:
        return tf.gather(self.user_vectors, self.user_index(user_id))

    def _recommend(self, user_id: tf.Tensor) -> dict[str, tf.Tensor]:
        rows = self.user_index(user_id)
        scores = tf.matmul(tf.gather(self.user_vectors, rows), self.item_vectors, transpose_b=True)
        scores = scores + self.item_biases[None, :]
        if self.has_seen:
            starts = tf.gather(self.seen_row_splits, rows)
            stops = tf.gather(self.seen_row_splits, rows + 1)
            positions = tf.ragged.range(starts, stops)
            columns = tf.gather(self.seen_items, positions.flat_values)
            indices = tf.stack([positions.value_rowids(), columns], axis=1)
            scores = tf.tensor_scatter_nd_update(
                scores, indices, tf.fill(tf.shape(columns), tf.constant(-np.inf, scores.dtype))
            )
        values, index = tf.math.top_k(scores, k=self.k)
        return {"item_ids": tf.gather(self.catalog, index), "scores": values}

    def _user_embedding(self, user_id: tf.Tensor) -> dict[str, tf.Tensor]:
        return {"embedding": self._user_vectors(user_id)}

    def _score(self, user_id: tf.Tensor, item_id: tf.Tensor) -> dict[str, tf.Tensor]:
        # Pairs, not a cross product: without this a batch of one item would
        # silently broadcast against every user.
        tf.debugging.assert_equal(
            tf.size(user_id),
            tf.size(item_id),
            message="`score` scores (user_id[i], item_id[i]) pairs: both inputs must have "
            "the same length",
        )
        rows = self.item_index(item_id)
        known = rows > 0
        position = tf.maximum(rows - 1, 0)
        vectors = tf.where(
            known[:, None], tf.gather(self.item_vectors, position), self.oov_item_vector[None, :]
        )
        biases = tf.where(known, tf.gather(self.item_biases, position), self.oov_item_bias)
        users = self._user_vectors(user_id)
        return {"score": tf.reduce_sum(users * vectors, axis=-1) + biases}


def _tensor_proto(values: np.ndarray):
    if values.dtype.kind in "iu":
        return tf.make_tensor_proto(values.astype(np.int64), dtype=tf.int64)
    return tf.make_tensor_proto(values.astype(str).astype(object).tolist(), dtype=tf.string)


def _write_warmup(
    path: Path, model_name: str, users: np.ndarray, recommender: BPRRetrievalModel
) -> None:
    """TFRecord of PredictionLogs that TF Serving replays before serving a version:
    each signature at batch 1, and `serving_default` at the full warm-up batch, so
    the first real requests do not pay for graph optimisation."""
    predict_pb2, prediction_log_pb2 = _serving_api()
    requests = [
        ("serving_default", {"user_id": users[:1]}),
        ("serving_default", {"user_id": users}),
        ("user_embedding", {"user_id": users[:1]}),
        ("score", {"user_id": users[:1], "item_id": recommender.item_vocabulary[:1]}),
    ]
    path.parent.mkdir(parents=True, exist_ok=True)
    with tf.io.TFRecordWriter(str(path)) as writer:
        for signature, inputs in requests:
            request = predict_pb2.PredictRequest()
            request.model_spec.name = model_name
            request.model_spec.signature_name = signature
            for key, values in inputs.items():
                request.inputs[key].CopyFrom(_tensor_proto(np.asarray(values)))
            log = prediction_log_pb2.PredictionLog(
                predict_log=prediction_log_pb2.PredictLog(request=request)
            )
            writer.write(log.SerializeToString())


def signature_summary(version_dir: str | os.PathLike) -> str:
    """One line per signature of a SavedModel: inputs and outputs with dtype and
    shape (-1 = any batch). Loads it with TensorFlow alone, as TF Serving would."""
    loaded = tf.saved_model.load(str(version_dir))
    lines = []
    for name in sorted(loaded.signatures, key=lambda n: (n != "serving_default", n)):
        function = loaded.signatures[name]
        specs = function.structured_input_signature[1]
        outputs = function.structured_outputs

        def text(specs):
            return ", ".join(
                f"{key} {spec.dtype.name}{_shape(spec.shape)}"
                for key, spec in sorted(specs.items())
            )

        lines.append(f"{name}: {text(specs)} -> {text(outputs)}")
    return "\n".join(lines)


def _shape(shape: tf.TensorShape) -> str:
    return "[" + ", ".join("-1" if d is None else str(d) for d in shape.as_list()) + "]"


__all__ = [
    "SIGNATURES",
    "ServingModule",
    "WARMUP_FILE",
    "export_for_serving",
    "signature_summary",
]
