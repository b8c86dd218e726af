"""Training under `tf.distribute`: split each global batch exactly across replicas.

`training_dataset` yields global batches whose parts have different leading sizes
(`batch_size` interactions, `adversary_batch_size` sampled users). Keras's own
`experimental_distribute_dataset` re-batches every component by the same row
count, which cannot split both, so the models in this package route a
`tf.data.Dataset` through `distribute_dataset` when they are compiled under a
strategy with more than one replica: every worker builds the same global stream
(same seed) and keeps the slices of its own replicas. Replica `r` of `R` gets rows
`r*b/R .. (r+1)*b/R` of the interactions and of the user sample, so the replicas
together see exactly the global batch a single device would see, and a loss that
each replica averages over its rows and divides by `R` sums to the global mean.

Under `ParameterServerStrategy` there are no replicas in sync: the coordinator
hands whole global batches to whichever worker is free, and each worker reads its
own input pipeline, built on the worker by a dataset function. The models here
accept a function returning a `training_dataset` and turn it into a
`DatasetCreator` with `worker_dataset_creator`: every worker builds the same
stream (same seed) and keeps every `W`-th batch, its own, so no batch is trained
twice by two workers.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from tfprivadv._keras import tf


def _leading_sizes(dataset: tf.data.Dataset) -> dict[str, int | None]:
    def sizes(spec: Any, prefix: str) -> dict[str, int | None]:
        if isinstance(spec, dict):
            return {k: v for key in spec for k, v in sizes(spec[key], f"{prefix}{key}/").items()}
        return {prefix.rstrip("/"): spec.shape[0] if spec.shape.rank else None}

    return sizes(dataset.element_spec, "")


def check_divisible(dataset: tf.data.Dataset, num_replicas: int) -> None:
    """Raises ValueError unless every component splits evenly into `num_replicas`."""
    for path, size in _leading_sizes(dataset).items():
        if size is None or size % num_replicas:
            name = "adversary_batch_size" if path.startswith("adversary") else "batch_size"
            raise ValueError(
                f"Under a strategy with {num_replicas} replicas every batch must split "
                f"evenly: `{name}` must be a multiple of {num_replicas}. Received a "
                f"batch whose {path!r} has {size} rows."
            )


def split_for_replicas(
    dataset: tf.data.Dataset, input_context: tf.distribute.InputContext
) -> tf.data.Dataset:
    """Per-replica elements of this input pipeline's replicas, in replica order.

    `distribute_datasets_from_function` hands consecutive elements of a worker's
    dataset to its local replicas in turn, so emitting the worker's slices one
    after another gives local replica `j` slice `worker * local + j`.
    """
    total = input_context.num_replicas_in_sync
    local = total // input_context.num_input_pipelines
    first = input_context.input_pipeline_id * local
    check_divisible(dataset, total)

    def slices(element: Any) -> Any:
        def split(tensor: tf.Tensor) -> tf.Tensor:
            shape = tensor.shape
            parts = tf.reshape(tensor, [total, shape[0] // total, *shape[1:]])
            return parts[first : first + local]

        return tf.nest.map_structure(split, element)

    return dataset.map(slices, num_parallel_calls=tf.data.AUTOTUNE).unbatch()


def distribute_dataset(
    dataset: tf.data.Dataset | Callable[[], tf.data.Dataset],
    strategy: tf.distribute.Strategy | None = None,
) -> tf.distribute.DistributedDataset:
    """A global-batch dataset as a distributed dataset with exact per-replica slices.

    Args:
        dataset: A dataset of global batches (e.g. from `training_dataset`), or a
            function building one (called once per worker: pass a function when
            the dataset should be built on the worker itself).
        strategy: The strategy (default: the current one).

    Returns:
        A `tf.distribute.DistributedDataset`. It is iterated once for the whole
        of `fit` (Keras never restarts a distributed dataset), so pass
        `training_dataset(..., epochs=E)` or a repeated dataset, and
        `steps_per_epoch` to `fit` (the models here do both themselves).

    Raises:
        ValueError: a batch component does not split evenly across replicas.
    """
    strategy = strategy or tf.distribute.get_strategy()
    build = dataset if callable(dataset) else (lambda: dataset)
    if isinstance(dataset, tf.data.Dataset):
        check_divisible(dataset, strategy.num_replicas_in_sync)
    return strategy.distribute_datasets_from_function(
        lambda context: split_for_replicas(build(), context)
    )


def free_local_ports(count: int) -> list[int]:
    """`count` distinct free TCP ports on 127.0.0.1, for a cluster of local
    processes or in-process servers (trying strategies out, tests). All sockets
    are held open until every port is picked, so no port is returned twice."""
    import socket

    sockets = [socket.socket() for _ in range(count)]
    try:
        for s in sockets:
            s.bind(("127.0.0.1", 0))
        return [s.getsockname()[1] for s in sockets]
    finally:
        for s in sockets:
            s.close()


def uses_coordinator(strategy: tf.distribute.Strategy) -> bool:
    """Whether `strategy` runs steps through a `ClusterCoordinator` (a
    `ParameterServerStrategy`): workers train asynchronously on whole batches."""
    return bool(getattr(strategy, "_should_use_with_coordinator", False))


def _num_workers(strategy: tf.distribute.Strategy) -> int:
    # `ParameterServerStrategy.cluster_resolver` is None in TF 2.21; the strategy
    # keeps the resolver it was given (and the count) privately.
    resolver = strategy.cluster_resolver or getattr(strategy, "_cluster_resolver", None)
    if resolver is None:
        return int(strategy._num_workers)
    return resolver.cluster_spec().num_tasks("worker")


def worker_dataset_creator(
    make_dataset: Callable[[], tf.data.Dataset], strategy: tf.distribute.Strategy
) -> tf.keras.utils.experimental.DatasetCreator:
    """A `DatasetCreator` for `fit` under `ParameterServerStrategy`.

    Each worker calls `make_dataset()` (build the dataset inside it, e.g.
    `lambda: training_dataset(...)`, so the data is shipped to the workers as the
    function's graph, not through the coordinator), repeats it, and keeps the
    batches `w, w + W, w + 2W, ...` of the stream (`w` its index, `W` the
    workers): every worker builds the same stream from the same seed, so the
    workers together cover it without training a batch twice. A worker with
    several GPUs splits each of its batches across them as `distribute_dataset`
    does.

    Args:
        make_dataset: A function with no arguments returning a dataset of global
            batches (e.g. `training_dataset(..., epochs=E)`).
        strategy: The `ParameterServerStrategy`.
    """
    workers = _num_workers(strategy)

    def dataset_fn(context: tf.distribute.InputContext) -> tf.data.Dataset:
        dataset = make_dataset().repeat()
        if workers > 1:
            index = tf.distribute.coordinator.experimental_get_current_worker_index()
            dataset = dataset.shard(workers, index)
        if context.num_replicas_in_sync > 1:
            dataset = split_for_replicas(dataset, context)
        return dataset

    return tf.keras.utils.experimental.DatasetCreator(dataset_fn)


def _prepare_coordinated_input(
    x: Any, strategy: tf.distribute.Strategy, kwargs: dict[str, Any]
) -> tuple[Any, dict[str, Any]]:
    if isinstance(x, tf.data.Dataset):
        raise ValueError(
            "Under ParameterServerStrategy pass a function that builds the dataset, "
            "e.g. `model.fit(lambda: training_dataset(...), epochs=E)`, not the "
            "dataset: Keras would copy the same stream to every worker, so each "
            "batch would be trained once per worker and the later ones never."
        )
    if not callable(x) or isinstance(x, tf.keras.utils.experimental.DatasetCreator):
        return x, kwargs  # a DatasetCreator of the caller's own: Keras's rules apply
    kwargs = dict(kwargs)
    if not kwargs.get("steps_per_epoch"):
        # Built once here only to read its length (pass `steps_per_epoch` to skip).
        probe = x()
        steps = getattr(probe, "steps_per_epoch", None) or int(probe.cardinality())
        if steps <= 0:
            raise ValueError(
                "Under ParameterServerStrategy `fit` needs `steps_per_epoch` for a "
                f"dataset of unknown or infinite length (cardinality {steps})."
            )
        kwargs["steps_per_epoch"] = int(steps)
    return worker_dataset_creator(x, strategy), kwargs


def prepare_fit_input(
    x: Any, strategy: tf.distribute.Strategy, kwargs: dict[str, Any]
) -> tuple[Any, dict[str, Any]]:
    """What the models' `fit` passes on to Keras for a `tf.data.Dataset`.

    A multi-epoch stream (`training_dataset(..., epochs=E)`) gets its
    `steps_per_epoch`. Under a multi-replica strategy the dataset is distributed
    with `distribute_dataset`; a one-epoch dataset is repeated first (Keras
    iterates a distributed dataset only once) and `steps_per_epoch` defaults to
    its length. Under `ParameterServerStrategy` `x` must be a function building
    the dataset (see `worker_dataset_creator`) or a `DatasetCreator`.
    """
    if uses_coordinator(strategy):
        return _prepare_coordinated_input(x, strategy, kwargs)
    if not isinstance(x, tf.data.Dataset):
        return x, kwargs
    kwargs = dict(kwargs)
    steps = kwargs.get("steps_per_epoch") or getattr(x, "steps_per_epoch", None)
    cardinality = int(x.cardinality())
    if strategy.num_replicas_in_sync <= 1:
        if steps is not None and cardinality != steps:
            kwargs["steps_per_epoch"] = int(steps)
        return x, kwargs
    if steps is None:
        if cardinality <= 0:
            raise ValueError(
                "Under a multi-replica strategy `fit` needs `steps_per_epoch` for a "
                f"dataset of unknown or infinite length (cardinality {cardinality})."
            )
        steps = cardinality
    kwargs["steps_per_epoch"] = int(steps)
    if cardinality == steps:  # one epoch per pass: repeat it for the whole of fit
        x = x.repeat()
    return distribute_dataset(x, strategy), kwargs
