"""The BPR retrieval model (a `tfrs.Model`) and the privacy-adversarial wrapper."""

from __future__ import annotations

import numbers
from collections.abc import Mapping
from typing import Any

import numpy as np
import pandas as pd

from tfprivadv import distribute
from tfprivadv import heads as heads_lib
from tfprivadv._keras import keras, tf, tfrs
from tfprivadv._validation import _received, check_choice, check_float, check_int
from tfprivadv.layers import GradientReversal, IdLookup
from tfprivadv.losses import _REMOVED_SCORE, BPRLoss

NEGATIVE_MODES = ("uniform", "in_batch")


@keras.utils.register_keras_serializable(package="tfprivadv")
class BPRTask(tfrs.tasks.Retrieval):
    """`tfrs.tasks.Retrieval` with a second, pairwise path for sampled negatives.

    Without `negative_embeddings` it is the TFRS in-batch task: a `[batch, batch]`
    score matrix where every other positive in the batch is a negative. With
    `negative_embeddings` of shape `[batch, n, dim]` it scores only the
    `(query, positive)` and `(query, negative_j)` pairs, O(batch * n), which is the
    BPR of Rendle et al. with uniformly sampled negatives. Both paths feed the same
    Loss object (`BPRLoss` by default) and the task's loss metrics.

    Args:
        loss: A Keras Loss taking `(y_true, y_pred)` score matrices. Default BPRLoss.
        **kwargs: Passed to `tfrs.tasks.Retrieval` (e.g. `remove_accidental_hits`).
    """

    def __init__(self, loss: keras.losses.Loss | None = None, **kwargs: Any) -> None:
        super().__init__(loss=loss if loss is not None else BPRLoss(), **kwargs)
        # Keras refuses a mean-reduced loss under a strategy unless the training
        # loop scales it per replica, as `_MeanLossModel.train_step` does.
        self._loss._allow_sum_over_batch_size = True

    def call(
        self,
        query_embeddings: tf.Tensor,
        candidate_embeddings: tf.Tensor,
        sample_weight: tf.Tensor | None = None,
        *,
        negative_embeddings: tf.Tensor | None = None,
        negative_mask: tf.Tensor | None = None,
        compute_metrics: bool = False,
        training: bool | None = None,
        **kwargs: Any,
    ) -> tf.Tensor:
        # `training` is Keras's (it passes it to every layer call); TFRS takes none.
        if negative_embeddings is None:
            return super().call(
                query_embeddings,
                candidate_embeddings,
                sample_weight=sample_weight,
                compute_metrics=compute_metrics,
                **kwargs,
            )
        query = tf.cast(query_embeddings, tf.float32)
        positive = tf.reduce_sum(
            query * tf.cast(candidate_embeddings, tf.float32), axis=-1, keepdims=True
        )
        negative = tf.einsum("bd,bnd->bn", query, tf.cast(negative_embeddings, tf.float32))
        if negative_mask is not None:
            negative = tf.where(negative_mask, negative, _REMOVED_SCORE * 10.0)
        scores = tf.concat([positive, negative], axis=1)
        labels = tf.one_hot(tf.zeros_like(scores[:, 0], tf.int32), tf.shape(scores)[1])
        loss = self._loss(y_true=labels, y_pred=scores, sample_weight=sample_weight)
        updates = [metric.update_state(loss) for metric in self._loss_metrics]
        with tf.control_dependencies([u for u in updates if u is not None]):
            return tf.identity(loss)


class _MeanLossModel(tfrs.Model):
    """`tfrs.Model` whose logged `loss` is the running mean over the epoch (TFRS logs
    the last batch's loss) and which supports loss-scale optimizers."""

    def __init__(self, **kwargs: Any) -> None:
        super().__init__(**kwargs)
        self.loss_tracker = keras.metrics.Mean(name="loss")

    def _step(self, inputs, training: bool):
        loss = self.compute_loss(inputs, training=training)
        if self.losses:
            loss = loss + tf.add_n([tf.reduce_sum(x) for x in self.losses])
        self.loss_tracker.update_state(loss)
        return loss

    def compile(self, optimizer="adam", *, jit_compile: bool | None = None, **kwargs):
        """`Model.compile`, with XLA on by default when every op supports it.

        A BPR step is dozens of tiny ops; compiled, it runs about twice as fast on
        CPU. Pass `jit_compile=False` to debug eagerly-traced code. Under a
        strategy with several replicas the default is off: XLA's per-replica
        function cannot reach the other replicas' variables on CPU devices. Nor
        under `ParameterServerStrategy`: the variables live on the parameter
        servers, and an XLA cluster only reads variables on its own device.
        """
        if jit_compile is None:
            strategy = self.distribute_strategy
            jit_compile = (
                self.supports_jit
                and strategy.num_replicas_in_sync == 1
                and not distribute.uses_coordinator(strategy)
            )
        super().compile(optimizer=optimizer, jit_compile=jit_compile, **kwargs)

    @property
    def supports_jit(self) -> bool:
        """Whether a training step compiles with XLA."""
        return False

    def fit(self, x=None, y=None, *args, **kwargs):
        """`Model.fit`; a `training_dataset` also works under a multi-replica
        strategy and as a multi-epoch stream, and under `ParameterServerStrategy`
        `x` may be a function building it (see `tfprivadv.distribute`)."""
        if not args:
            x, kwargs = distribute.prepare_fit_input(x, self.distribute_strategy, kwargs)
        return super().fit(x, y, *args, **kwargs)

    def train_step(self, inputs):
        # A LossScaleOptimizer (mixed precision) needs the loss scaled on the tape.
        scaled = hasattr(self.optimizer, "get_scaled_loss")
        # Replicas' gradients are summed; each replica's loss is the mean over its
        # equal share of the global batch, so dividing by the replica count makes
        # the sum the gradient of the global mean.
        replicas = tf.distribute.get_strategy().num_replicas_in_sync
        with tf.GradientTape() as tape:
            loss = self._step(inputs, training=True)
            target = loss / replicas if replicas > 1 else loss
            target = self.optimizer.get_scaled_loss(target) if scaled else target
        variables = self.trainable_variables
        gradients = tape.gradient(target, variables)
        if scaled:
            gradients = self.optimizer.get_unscaled_gradients(gradients)
        # Embedding gradients arrive as IndexedSlices. tf_keras's Adam decays the
        # moments of every row on every step anyway, so a dense gradient costs the
        # optimizer nothing extra and skips the sparse de-duplication (about half
        # the step time on ML-1M).
        gradients = [None if g is None else tf.convert_to_tensor(g) for g in gradients]
        self.optimizer.apply_gradients(zip(gradients, variables, strict=True))
        return {metric.name: metric.result() for metric in self.metrics}

    def test_step(self, inputs):
        self._step(inputs, training=False)
        return {metric.name: metric.result() for metric in self.metrics}


def _vocabulary(name: str, ids: Any) -> np.ndarray:
    array = np.asarray(ids)
    if array.ndim != 1 or array.size == 0:
        raise ValueError(
            f"`{name}` must be a non-empty 1-D array of ids. Received shape {array.shape}."
        )
    if array.dtype.kind in "iu":
        array = array.astype(np.int64)
        if (array < 0).any():
            raise ValueError(f"`{name}` must hold non-negative integer ids (-1 marks OOV).")
    elif array.dtype.kind in "OUS":
        array = array.astype(str)
    else:
        raise TypeError(f"`{name}` must hold integer or string ids. Received dtype {array.dtype}.")
    if pd.Index(array).has_duplicates:
        raise ValueError(f"`{name}` must not contain duplicate ids.")
    return array


def _lookup(vocabulary: np.ndarray, name: str) -> keras.layers.Layer:
    # Index 0 is the out-of-vocabulary slot; known ids map to 1..n in given order.
    if vocabulary.dtype.kind == "i":
        return IdLookup(vocabulary, name=name)
    return keras.layers.StringLookup(
        vocabulary=vocabulary.tolist(), mask_token=None, num_oov_indices=1, name=name
    )


@keras.utils.register_keras_serializable(package="tfprivadv")
class BPRRetrievalModel(_MeanLossModel):
    """Latent-factor recommender trained with BPR, as a `tfrs.Model`.

    Raw user and item ids go in; lookup layers inside the model map them to rows
    of the embedding tables (row 0 is the out-of-vocabulary slot, initialised to
    zeros and never trained unless unknown ids occur in training, so an unknown
    user is ranked by item bias alone, i.e. a popularity-like ranking). The score
    of a pair is `<p_u, q_i> + b_i`.

    Training batches are dicts with `user_id` and `item_id` (the positive) and,
    for `negatives="uniform"`, `neg_item_id` of shape `[batch, num_negatives]`
    (see `tfprivadv.data.training_dataset`, which samples them uniformly and never
    returns the positive itself; the model also masks any negative equal to the
    positive). `negatives="in_batch"` uses the TFRS in-batch form instead: the
    other positives of the batch are the negatives (popularity-sampled), with
    accidental hits removed.

    Args:
        user_ids: The user vocabulary (raw ids, unique).
        item_ids: The item catalog (raw ids, unique); the candidates of
            `recommend` and of the evaluation.
        embedding_dim: Size of user and item vectors.
        negatives: "uniform" (BPR, default) or "in_batch".
        l2: L2 penalty on the embeddings and biases used in each batch, per example.
        init_stddev: Standard deviation of the normal initialiser of the vectors.
        seed: Seed of the initialiser.
        **kwargs: Standard `Model` arguments (`name`).

    Example:
        >>> model = BPRRetrievalModel([1, 2, 3], [10, 20], embedding_dim=4, seed=0)
        >>> model.user_embeddings([1, 99]).shape  # 99 is unknown: the OOV row
        TensorShape([2, 4])
    """

    def __init__(
        self,
        user_ids: Any,
        item_ids: Any,
        *,
        embedding_dim: int = 10,
        negatives: str = "uniform",
        l2: float = 0.0,
        init_stddev: float = 0.1,
        seed: int | None = None,
        **kwargs: Any,
    ) -> None:
        super().__init__(**kwargs)
        self.user_vocabulary = _vocabulary("user_ids", user_ids)
        self.item_vocabulary = _vocabulary("item_ids", item_ids)
        self.embedding_dim = check_int("embedding_dim", embedding_dim, minimum=1)
        self.negatives = check_choice("negatives", negatives, NEGATIVE_MODES)
        self.l2 = check_float("l2", l2, minimum=0.0)
        self.init_stddev = check_float(
            "init_stddev", init_stddev, minimum=0.0, exclusive_minimum=True
        )
        self.seed = None if seed is None else check_int("seed", seed)

        self.user_lookup = _lookup(self.user_vocabulary, "user_lookup")
        self.item_lookup = _lookup(self.item_vocabulary, "item_lookup")
        seeds = (None, None) if seed is None else (seed, seed + 1)
        self.user_embedding = keras.layers.Embedding(
            len(self.user_vocabulary) + 1,
            self.embedding_dim,
            embeddings_initializer=keras.initializers.RandomNormal(
                stddev=self.init_stddev, seed=seeds[0]
            ),
            name="user_embedding",
        )
        self.item_embedding = keras.layers.Embedding(
            len(self.item_vocabulary) + 1,
            self.embedding_dim,
            embeddings_initializer=keras.initializers.RandomNormal(
                stddev=self.init_stddev, seed=seeds[1]
            ),
            name="item_embedding",
        )
        self.item_bias = keras.layers.Embedding(
            len(self.item_vocabulary) + 1,
            1,
            embeddings_initializer="zeros",
            name="item_bias",
        )
        # Variables exist from construction on, so `from_config` + weight loading and
        # optimizer slot creation never depend on a first call.
        for table in (self.user_embedding, self.item_embedding, self.item_bias):
            table.build((None,))
        for table in (self.user_embedding, self.item_embedding):
            # A whole-table assign (not `embeddings[0].assign`) also works on the
            # mirrored and sharded variables of a distribution strategy.
            zeros = tf.zeros([1, self.embedding_dim], table.embeddings.dtype)
            table.embeddings.assign(tf.tensor_scatter_nd_update(table.embeddings, [[0]], zeros))
        self.task = BPRTask(remove_accidental_hits=self.negatives == "in_batch")
        self.built = True  # every variable exists already

    @property
    def supports_jit(self) -> bool:
        # String ids go through a hash table and sparse integer ids through a binary
        # search; XLA compiles neither (well), only direct-address tables.
        return all(
            getattr(lookup, "direct", False) for lookup in (self.user_lookup, self.item_lookup)
        )

    # ----------------------------------------------------------------- towers
    def _ids(self, ids: Any, vocabulary: np.ndarray) -> tf.Tensor:
        dtype = tf.int64 if vocabulary.dtype.kind == "i" else tf.string
        if isinstance(ids, tf.Tensor | tf.RaggedTensor):
            return tf.cast(ids, dtype) if ids.dtype != dtype and dtype == tf.int64 else ids
        return tf.convert_to_tensor(np.asarray(ids), dtype=dtype)

    def user_embeddings(self, user_ids: Any) -> tf.Tensor:
        """User vectors `[n, dim]` for raw user ids (unknown ids: the OOV row)."""
        return self.user_embedding(self.user_lookup(self._ids(user_ids, self.user_vocabulary)))

    def item_embeddings(self, item_ids: Any) -> tf.Tensor:
        """Item vectors `[n, dim]` for raw item ids (unknown ids: the OOV row)."""
        return self.item_embedding(self.item_lookup(self._ids(item_ids, self.item_vocabulary)))

    def item_biases(self, item_ids: Any) -> tf.Tensor:
        """Item biases `[n]` for raw item ids."""
        index = self.item_lookup(self._ids(item_ids, self.item_vocabulary))
        return tf.squeeze(self.item_bias(index), axis=-1)

    def call(self, inputs: Any, training: bool | None = None) -> tf.Tensor:
        """User vectors for `inputs` (user ids, or a dict with `user_id`)."""
        if isinstance(inputs, Mapping):
            inputs = inputs["user_id"]
        return self.user_embeddings(inputs)

    # ------------------------------------------------------------------ loss
    def _augmented_items(self, index: tf.Tensor) -> tf.Tensor:
        # [q_i, b_i] against [p_u, 1]: one dot product gives <p_u, q_i> + b_i.
        vectors = self.item_embedding(index)
        return tf.concat([vectors, tf.cast(self.item_bias(index), vectors.dtype)], -1)

    def compute_loss(self, inputs: Mapping[str, tf.Tensor], training: bool = False):
        if not isinstance(inputs, Mapping) or "user_id" not in inputs or "item_id" not in inputs:
            raise ValueError(
                "BPRRetrievalModel expects batches that are dicts with 'user_id' and "
                "'item_id' (and 'neg_item_id' for negatives='uniform'); build them with "
                f"tfprivadv.data.training_dataset. Received: {_received(inputs)}"
            )
        users = self.user_embeddings(inputs["user_id"])
        query = tf.concat([users, tf.ones_like(users[:, :1])], axis=-1)
        positive_index = self.item_lookup(self._ids(inputs["item_id"], self.item_vocabulary))
        positives = self._augmented_items(positive_index)
        sample_weight = inputs.get("sample_weight")
        penalty_terms = [users, positives]
        if self.negatives == "uniform":
            if "neg_item_id" not in inputs:
                raise ValueError(
                    "negatives='uniform' needs sampled negatives in the batch under "
                    "'neg_item_id' ([batch, num_negatives]); build the dataset with "
                    "tfprivadv.data.training_dataset or use negatives='in_batch'."
                )
            negative_index = self.item_lookup(
                self._ids(inputs["neg_item_id"], self.item_vocabulary)
            )
            negatives = self._augmented_items(negative_index)
            penalty_terms.append(negatives)
            loss = self.task(
                query,
                positives,
                sample_weight=sample_weight,
                negative_embeddings=negatives,
                negative_mask=tf.not_equal(negative_index, positive_index[:, None]),
            )
        else:
            loss = self.task(
                query,
                positives,
                sample_weight=sample_weight,
                candidate_ids=positive_index,
                compute_metrics=False,
            )
        if self.l2:
            batch = tf.cast(tf.shape(users)[0], tf.float32)
            squares = tf.add_n(
                [tf.reduce_sum(tf.square(tf.cast(t, tf.float32))) for t in penalty_terms]
            )
            loss = loss + self.l2 * squares / batch
        return loss

    # --------------------------------------------------------------- ranking
    def _catalog_tables(self) -> tuple[np.ndarray, np.ndarray]:
        vectors = self.item_embedding.embeddings.numpy()[1:].astype(np.float32)
        biases = self.item_bias.embeddings.numpy()[1:, 0].astype(np.float32)
        return vectors, biases

    def score_items(self, user_ids: Any, item_ids: Any = None) -> np.ndarray:
        """Scores `[n_users, n_items]` of users against items (default: the catalog)."""
        users = self.user_embeddings(np.asarray(user_ids)).numpy().astype(np.float32)
        if item_ids is None:
            vectors, biases = self._catalog_tables()
        else:
            vectors = self.item_embeddings(np.asarray(item_ids)).numpy()
            biases = self.item_biases(np.asarray(item_ids)).numpy()
        return users @ vectors.T + biases[None, :]

    def recommend(
        self,
        user_ids: Any,
        k: int = 10,
        *,
        exclude: Any = None,
        batch_size: int = 2048,
    ) -> tuple[np.ndarray, np.ndarray]:
        """Top-k catalog items per user, best first.

        Args:
            user_ids: Raw user ids, 1-D.
            k: Items per user (at most the catalog size).
            exclude: Items not to recommend per user, e.g. the training
                interactions: a DataFrame with `user_id` and `item_id` columns, or
                a mapping user id -> iterable of item ids. None excludes nothing.
            batch_size: Users scored at once (bounds memory at batch x catalog).

        Returns:
            `(item_ids, scores)`, each `[n_users, k]`; item ids are raw catalog ids.
            A user with fewer than `k` items left after `exclude` gets excluded
            items at the end with score `-inf`.
        """
        k = check_int("k", k, minimum=1)
        if k > len(self.item_vocabulary):
            raise ValueError(
                f"`k` must be <= the catalog size {len(self.item_vocabulary)}. Received: {k}"
            )
        users = np.asarray(user_ids)
        if users.ndim != 1:
            raise ValueError(f"`user_ids` must be 1-D. Received shape {users.shape}.")
        rows, cols = _exclusion_pairs(exclude, users, self.item_vocabulary)
        vectors, biases = self._catalog_tables()
        top_items = np.empty((len(users), k), dtype=self.item_vocabulary.dtype)
        top_scores = np.empty((len(users), k), dtype=np.float32)
        for start in range(0, len(users), batch_size):
            stop = min(start + batch_size, len(users))
            batch_users = self.user_embeddings(users[start:stop]).numpy()
            scores = batch_users @ vectors.T + biases[None, :]
            in_batch = (rows >= start) & (rows < stop)
            scores[rows[in_batch] - start, cols[in_batch]] = -np.inf
            values, index = tf.math.top_k(scores, k=k)
            top_items[start:stop] = self.item_vocabulary[index.numpy()]
            top_scores[start:stop] = values.numpy()
        return top_items, top_scores

    def get_config(self) -> dict[str, Any]:
        return {
            "name": self.name,
            "user_ids": self.user_vocabulary.tolist(),
            "item_ids": self.item_vocabulary.tolist(),
            "embedding_dim": self.embedding_dim,
            "negatives": self.negatives,
            "l2": self.l2,
            "init_stddev": self.init_stddev,
            "seed": self.seed,
        }

    @classmethod
    def from_config(cls, config: dict[str, Any]) -> BPRRetrievalModel:
        return cls(**config)


def _exclusion_pairs(
    exclude: Any, users: np.ndarray, catalog: np.ndarray
) -> tuple[np.ndarray, np.ndarray]:
    """(row in `users`, column in `catalog`) of every excluded pair."""
    if exclude is None:
        return np.empty(0, np.int64), np.empty(0, np.int64)
    if isinstance(exclude, Mapping):
        exclude = pd.DataFrame(
            [(u, i) for u, items in exclude.items() for i in items],
            columns=["user_id", "item_id"],
        )
    if not isinstance(exclude, pd.DataFrame) or not {"user_id", "item_id"} <= set(exclude.columns):
        raise TypeError(
            "`exclude` must be None, a DataFrame with 'user_id' and 'item_id' columns "
            f"or a mapping user id -> item ids. Received: {_received(exclude)}"
        )
    request = pd.DataFrame({"user_id": users, "row": np.arange(len(users))})
    pairs = exclude[["user_id", "item_id"]].merge(request, on="user_id")
    columns = pd.Index(catalog).get_indexer(pairs["item_id"].to_numpy())
    known = columns >= 0
    return pairs["row"].to_numpy()[known], columns[known]


def _check_retrieval_model(model: Any) -> None:
    needed = ("user_embeddings", "compute_loss", "embedding_dim")
    missing = [name for name in needed if not hasattr(model, name)]
    if not isinstance(model, keras.Model) or missing:
        raise TypeError(
            "`retrieval_model` must be a tf.keras Model exposing `user_embeddings(ids)`, "
            "`compute_loss(features, training)` and `embedding_dim` (e.g. a "
            f"BPRRetrievalModel). Received: {_received(model)}"
            + (f"; missing {missing}" if missing else "")
        )


WEIGHTINGS = ("user", "interaction")
#: How the user vectors fight the heads (see `PrivacyAdversarialModel`).
OBJECTIVES = ("reversal", "confusion")


@keras.utils.register_keras_serializable(package="tfprivadv")
class PrivacyAdversarialModel(_MeanLossModel):
    """Wraps a retrieval model with adversarial attribute heads.

    Each head reads the user embedding through its own `GradientReversal`, so one
    `fit` step moves the heads to predict their attribute better while the user
    vectors move to recommend better and to predict the attributes worse:

        p_u <- p_u - lr * (d rec_loss / d p_u - sum_a lambda_a * d loss_a / d p_u)

    Item vectors follow the recommendation loss only. `lambda = 0` keeps the heads
    as passive probes; `lambda < 0` is multi-task learning. The wrapped model is
    not changed and stays usable (and exportable) on its own.

    Weighting: with `adversary_weighting="user"` (default) the heads train on
    the batch's `adversary` sample: users drawn uniformly from all training
    users (see `tfprivadv.data.training_dataset`), so every user weighs the same
    in the adversary loss whatever their number of interactions. That is the
    population an attacker, and the audit, reads: one vector per user. The
    sample has a fixed size independent of the batch, which keeps the heads'
    cost small and the step XLA-compilable.

    Weighting per interaction ("interaction": the heads read the batch rows, or
    the first `adversary_sample` of them) spends the adversary's effort in
    proportion to activity and moves each user's vector against the heads in
    the same steps as their recommendation gradient. On ML-1M (size 10, 4
    negatives, cosine decay, single seeds) it bought more HR@10 at lambda .01
    but leaked more, was no better at lambda .1 within the test set's noise
    (+-0.3 points), and leaked clearly more at lambda 10 (best gender balanced
    accuracy .61 vs .53): the uniform user sample is the default.

    Batches must hold each head's label under the head's name (`-1`/NaN =
    unknown, masked out). Logged: `loss` (recommendation + head losses),
    `rec_loss`, and per head `<name>_loss` and its metric (e.g. `gender_accuracy`).

    Args:
        retrieval_model: A model with `user_embeddings(ids)`,
            `compute_loss(features, training)` and `embedding_dim`, e.g.
            `BPRRetrievalModel`.
        heads: Mapping attribute name -> `AttributeHead` (or "categorical" /
            "continuous" / a serialized head).
        adversary_weight: lambda: one float for all heads, or a dict keyed by head
            name.
        adversary_weighting: "user" or "interaction" (see above).
        adversary_sample: With "interaction": the heads read only the first
            `adversary_sample` rows of each batch (batches are shuffled, so a
            uniform sample of interactions) and their cost stays fixed as the
            batch grows. None: every row.
        adversary_objective: "reversal" (the paper's: the vectors maximise each
            head's loss through the gradient reversal layer) or "confusion" (the
            vectors minimise `head.confusion_loss`: every user's prediction is
            pulled to the batch's mean prediction, with the head held fixed;
            the heads still minimise their loss). Maximising the loss follows the
            labels: when a head lags, the reversed gradient pushes users apart
            by attribute and can write the attribute into the vectors (the
            paper's size-50 runs leaked more at lambda >= 1). The confusion
            gradient never reads a label, and it vanishes once the head says the
            same for everyone, so it stays bounded at any lambda.
        **kwargs: Standard `Model` arguments (`name`).

    Example:
        >>> bpr = BPRRetrievalModel([1, 2], [10, 20, 30], embedding_dim=4, seed=0)
        >>> model = PrivacyAdversarialModel(
        ...     bpr, heads={"gender": CategoricalHead(2)}, adversary_weight=0.5)
        >>> model.adversary_weight
        {'gender': 0.5}
    """

    def __init__(
        self,
        retrieval_model: keras.Model,
        heads: Mapping[str, Any],
        *,
        adversary_weight: float | Mapping[str, float] = 1.0,
        adversary_weighting: str = "user",
        adversary_objective: str = "reversal",
        adversary_sample: int | None = None,
        **kwargs: Any,
    ) -> None:
        super().__init__(**kwargs)
        _check_retrieval_model(retrieval_model)
        if not isinstance(heads, Mapping) or not heads:
            raise TypeError(
                "`heads` must be a non-empty dict of attribute name -> AttributeHead, "
                f"e.g. {{'gender': CategoricalHead(2)}}. Received: {_received(heads)}"
            )
        for key in heads:
            if not isinstance(key, str) or not key.isidentifier():
                raise ValueError(
                    "`heads` keys must be attribute names usable in metric names "
                    f"(Python identifiers). Received: {key!r}"
                )
        self.retrieval_model = retrieval_model
        self.adversary_weighting = check_choice(
            "adversary_weighting", adversary_weighting, WEIGHTINGS
        )
        if adversary_sample is not None:
            check_int("adversary_sample", adversary_sample, minimum=1)
            if self.adversary_weighting != "interaction":
                raise ValueError(
                    "`adversary_sample` applies to adversary_weighting='interaction' (the "
                    "user sample's size is `training_dataset(adversary_batch_size=...)`). "
                    f"Received adversary_sample={adversary_sample} with "
                    f"adversary_weighting={self.adversary_weighting!r}"
                )
        self.adversary_sample = adversary_sample
        self.adversary_objective = check_choice(
            "adversary_objective", adversary_objective, OBJECTIVES
        )
        self.heads = {name: heads_lib.get(head) for name, head in heads.items()}
        self._adversary_weight = self._weights_by_head(adversary_weight)
        self.reversals = {
            name: GradientReversal(self._adversary_weight[name], name=f"{name}_reversal")
            for name in self.heads
        }
        probe = tf.zeros([1, retrieval_model.embedding_dim])
        for head in self.heads.values():
            head(probe)  # creates the head's variables now (see BPRRetrievalModel)
        self.rec_loss_tracker = keras.metrics.Mean(name="rec_loss")
        self.head_loss_trackers = {
            name: keras.metrics.Mean(name=f"{name}_loss") for name in self.heads
        }
        self.head_metrics = {name: head.create_metrics(name) for name, head in self.heads.items()}
        self.built = True

    # ------------------------------------------------------------ lambda
    def _weights_by_head(self, value: Any) -> dict[str, float]:
        if isinstance(value, Mapping):
            unknown = sorted(set(value) - set(self.heads))
            missing = sorted(set(self.heads) - set(value))
            if unknown or missing:
                raise ValueError(
                    "`adversary_weight` as a dict must have exactly one entry per head "
                    f"{sorted(self.heads)}; unknown: {unknown}, missing: {missing}."
                )
            return {
                name: check_float(f"adversary_weight[{name!r}]", value[name]) for name in self.heads
            }
        if isinstance(value, bool) or not isinstance(value, numbers.Real):
            raise TypeError(
                "`adversary_weight` must be a float or a dict keyed by head name. "
                f"Received: {_received(value)}"
            )
        value = check_float("adversary_weight", value)
        return {name: value for name in self.heads}

    @property
    def adversary_weight(self) -> dict[str, float]:
        """The configured lambda per head (what schedules scale toward)."""
        return dict(self._adversary_weight)

    def set_adversary_weight(self, value: float | Mapping[str, float]) -> None:
        """Sets lambda (one float or a dict per head) and the reversal layers."""
        self._adversary_weight = self._weights_by_head(value)
        self.apply_adversary_schedule(1.0)

    def apply_adversary_schedule(self, factor: float) -> None:
        """Sets each reversal to `factor * lambda` in place (used by schedules)."""
        factor = check_float("factor", factor)
        for name, layer in self.reversals.items():
            layer.assign_scale(factor * self._adversary_weight[name])

    @property
    def current_adversary_weight(self) -> dict[str, float]:
        """The lambda the reversal layers apply right now."""
        return {name: float(layer.scale.numpy()) for name, layer in self.reversals.items()}

    # ------------------------------------------------------------ forward
    @property
    def supports_jit(self) -> bool:
        return bool(getattr(self.retrieval_model, "supports_jit", False))

    @property
    def metrics(self) -> list[keras.metrics.Metric]:
        tracked = [self.loss_tracker, self.rec_loss_tracker]
        for name in self.heads:
            tracked.append(self.head_loss_trackers[name])
            tracked.extend(self.head_metrics[name])
        return tracked

    def call(self, inputs: Any, training: bool | None = None) -> dict[str, tf.Tensor]:
        """Head predictions per attribute for user ids (or a dict with `user_id`)."""
        if isinstance(inputs, Mapping):
            inputs = inputs["user_id"]
        users = self.retrieval_model.user_embeddings(inputs)
        return {name: head(users, training=training) for name, head in self.heads.items()}

    def compute_loss(self, inputs: Mapping[str, tf.Tensor], training: bool = False):
        source = inputs.get("adversary", inputs) if self.adversary_weighting == "user" else inputs
        missing = [name for name in self.heads if name not in source]
        if missing:
            raise ValueError(
                f"The batch lacks labels for the head(s) {missing}; build the dataset "
                f"with attributes={list(self.heads)} (tfprivadv.data.training_dataset)."
                f" Batch keys: {sorted(inputs)}"
            )
        rec_loss = self.retrieval_model.compute_loss(inputs, training=training)
        if self.adversary_weighting == "user":
            if "adversary" not in inputs:
                raise ValueError(
                    "adversary_weighting='user' trains the heads on the uniform user "
                    "sample under the batch key 'adversary' (built by "
                    "tfprivadv.data.training_dataset when attributes are given); "
                    "this batch has none. Use adversary_weighting='interaction' to "
                    "train the heads on the batch rows instead."
                )
            adversary = inputs["adversary"]
        else:
            adversary = inputs
            if self.adversary_sample is not None:
                # Batches are shuffled: the first rows are a uniform interaction sample.
                adversary = {
                    key: adversary[key][: self.adversary_sample] for key in ("user_id", *self.heads)
                }
        users = self.retrieval_model.user_embeddings(adversary["user_id"])
        total = rec_loss
        for name, head in self.heads.items():
            labels = adversary[name]
            mask = tf.cast(head.is_valid(labels), tf.float32)
            if self.adversary_objective == "reversal":
                predictions = head(self.reversals[name](users), training=training)
                head_loss = head.masked_loss(labels, predictions)
                total = total + head_loss
            else:
                predictions = head(tf.stop_gradient(users), training=training)
                head_loss = head.masked_loss(labels, predictions)
                # The vectors minimise the head's confusion loss with the head held
                # fixed: the same head on detached vectors cancels its gradient
                # with respect to the head's weights exactly (same values, same
                # weights), so only the vectors move. The reversal layer's scale
                # is lambda (scheduled as usual).
                scale = tf.stop_gradient(self.reversals[name].scale)
                attached = head.confusion_loss(head(users, training=False), mask)
                detached = head.confusion_loss(head(tf.stop_gradient(users), training=False), mask)
                total = total + head_loss + scale * (attached - detached)
            self.head_loss_trackers[name].update_state(head_loss)
            head.update_metrics(self.head_metrics[name], labels, predictions, mask)
        self.rec_loss_tracker.update_state(rec_loss)
        return total

    def get_config(self) -> dict[str, Any]:
        return {
            "name": self.name,
            "retrieval_model": keras.utils.serialize_keras_object(self.retrieval_model),
            "heads": {
                name: keras.utils.serialize_keras_object(head) for name, head in self.heads.items()
            },
            "adversary_weight": self.adversary_weight,
            "adversary_weighting": self.adversary_weighting,
            "adversary_objective": self.adversary_objective,
            "adversary_sample": self.adversary_sample,
        }

    @classmethod
    def from_config(cls, config: dict[str, Any]) -> PrivacyAdversarialModel:
        config = dict(config)
        config["retrieval_model"] = keras.utils.deserialize_keras_object(config["retrieval_model"])
        return cls(**config)
