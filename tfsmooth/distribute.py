"""Training on `tf.distribute`: one machine's devices (`MirroredStrategy`) or many machines
(`MultiWorkerMirroredStrategy`, configured by the standard `TF_CONFIG` environment variable).

Every replica trains on its own slice of the same *global* batch: replica r of R takes examples
[floor(r B / R), floor((r + 1) B / R)) of each global batch of B (`replica_batches`). Every worker builds the same
seeded pipeline of global batches and keeps its replicas' slices, so a run's batches do not depend on the number
of workers, and the noise of each replica is its own (`tfsmooth.noise`: the training noise is keyed by the global
replica id, `replica_id_in_sync_group`). Gradients are summed across replicas by the optimizer, and the training
steps of `tfsmooth.training` divide each replica's loss by R, so a step on R replicas applies the gradient of the
global batch's mean loss (the single-device step, up to float round-off) -- except for what is per replica by
design: the noise draws (replica r's stream, not replica 0's) and batch-normalization statistics (each replica
normalizes its own slice, as Keras' `BatchNormalization(synchronized=False)` does under any strategy).

`fit` is the training loop for `MultiWorkerMirroredStrategy`: Keras 3's `Model.fit` fails under it
(keras-team/keras#20585; measured in `benchmarks/multiworker_probe.py`), while `strategy.run(model.train_step)`
inside a `tf.function` works. It keeps `fit`'s contract for what tfsmooth needs (callbacks, epochs,
`initial_epoch`, validation, the logs of `model.metrics` reduced over all replicas, a `History`).

When R does not divide a batch, the replicas' slices differ by one example and each replica's mean loss is divided
by R, so that step weighs the examples of the smaller slices slightly more than the global mean would -- as Keras'
`fit` does under any strategy; a global batch that R divides (and a training set that the batch divides) avoids it.
Callbacks must act alike on every worker (each worker runs them; one that stopped training on the chief alone would
leave the others waiting in a collective), and batch hooks get no logs. Every worker builds and augments the whole
global batch and keeps its slice: simple and the same on every worker, at an input cost that grows with the
global batch (fine for CIFAR-sized images; on many workers, prefer a global batch per worker that keeps the input
pipeline ahead of the device).
"""

from __future__ import annotations

import json
import os
from typing import Optional, Sequence

import keras
import tensorflow as tf

STRATEGIES = ("default", "mirrored", "multi-worker")
"""`tfsmooth train --strategy`: default (one device), mirrored (all local GPUs, else the CPU), multi-worker
(`MultiWorkerMirroredStrategy`, the cluster of `TF_CONFIG`)."""


def check_tf_config(environ=None) -> dict:
    """The parsed `TF_CONFIG` of a multi-worker run, checked: a JSON object with a `cluster` of at least one
    worker (or chief) address and a `task` {type, index} inside it.

    Raises:
        ValueError: naming TF_CONFIG and what is missing or malformed.
    """
    environ = os.environ if environ is None else environ
    raw = environ.get("TF_CONFIG")
    if not raw:
        raise ValueError("strategy 'multi-worker' needs the TF_CONFIG environment variable (JSON: {\"cluster\": "
                         "{\"worker\": [\"host:port\", ...]}, \"task\": {\"type\": \"worker\", \"index\": I}}); "
                         "it is not set")
    try:
        config = json.loads(raw)
    except json.JSONDecodeError as err:
        raise ValueError(f"TF_CONFIG is not valid JSON: {err}") from None
    if not isinstance(config, dict) or not isinstance(config.get("cluster"), dict):
        raise ValueError("TF_CONFIG must be a JSON object with a 'cluster' object of job names to address lists")
    cluster, task = config["cluster"], config.get("task")
    jobs = {name: hosts for name, hosts in cluster.items() if name in ("chief", "worker")}
    if not jobs or any(not isinstance(hosts, list) or not hosts for hosts in jobs.values()):
        raise ValueError(f"TF_CONFIG's cluster must list 'worker' (and optionally 'chief') addresses, got {cluster!r}")
    if not isinstance(task, dict) or task.get("type") not in jobs or isinstance(task.get("index"), bool) \
            or not isinstance(task.get("index"), int) or not 0 <= task["index"] < len(jobs[task["type"]]):
        raise ValueError(f"TF_CONFIG's task must be {{\"type\": one of {sorted(jobs)}, \"index\": a position in "
                         f"that list}}, got {task!r}")
    return config


def make_strategy(name: str) -> tf.distribute.Strategy:
    """The `tf.distribute` strategy named `name` (one of `STRATEGIES`).

    Raises:
        ValueError: for an unknown name, or `multi-worker` without a valid `TF_CONFIG` (`check_tf_config`).
    """
    if name == "default":
        return tf.distribute.get_strategy()
    if name == "mirrored":
        return tf.distribute.MirroredStrategy()
    if name == "multi-worker":
        check_tf_config()
        return tf.distribute.MultiWorkerMirroredStrategy()
    raise ValueError(f"strategy must be one of {', '.join(STRATEGIES)}, got {name!r}")


def is_multi_worker(strategy: tf.distribute.Strategy) -> bool:
    """Whether `strategy` spans several processes (then Keras' `fit` cannot train under it: use `fit` here)."""
    return isinstance(strategy, tf.distribute.MultiWorkerMirroredStrategy)


def uses_own_loop(strategy: tf.distribute.Strategy) -> bool:
    """Whether `tfsmooth.jobs.train` trains under `strategy` with `fit` here rather than Keras' `Model.fit`:
    for the mirrored strategies (one or many machines), so that both take the same batches in every epoch
    (Keras' `fit` starts its passes over a reshuffling pipeline differently under each strategy)."""
    return isinstance(strategy, (tf.distribute.MirroredStrategy, tf.distribute.MultiWorkerMirroredStrategy))


def is_chief(strategy: tf.distribute.Strategy) -> bool:
    """Whether this process writes the run's files: always outside a multi-worker strategy; under one, the
    `chief` task, or worker 0 of a cluster without a chief (the convention of TensorFlow's own guides)."""
    if not is_multi_worker(strategy):
        return True
    resolver = strategy.cluster_resolver
    if resolver.task_type == "chief":
        return True
    has_chief = "chief" in resolver.cluster_spec().as_dict()
    return resolver.task_type == "worker" and resolver.task_id == 0 and not has_chief


def replica_batches(strategy: tf.distribute.Strategy, batches: tf.data.Dataset):
    """A distributed dataset in which replica r of R gets examples [floor(r B / R), floor((r + 1) B / R)) of each
    global batch of `batches` (B its size: equal slices when R divides B, else sizes differing by at most one).
    With R > 1, a batch of fewer than R examples (a short last batch) is left out: a replica with no example would
    turn its batch-normalization statistics and its mean loss into NaN.

    Args:
        strategy: the strategy whose replicas train.
        batches: a dataset of global batches (any nest of tensors with the batch as the first axis), in the same
            order on every worker (seeded).

    Returns:
        A `tf.distribute.DistributedDataset` for `strategy.run`.
    """
    replicas = strategy.num_replicas_in_sync

    def dataset_fn(context: tf.distribute.InputContext):
        local = replicas // context.num_input_pipelines  # replicas fed by this pipeline, consecutively numbered
        first = context.input_pipeline_id * local

        def size_of(batch):
            return tf.shape(tf.nest.flatten(batch)[0])[0]

        def slices(*batch):
            size = size_of(batch)

            def one(j):
                r = first + tf.cast(j, tf.int32)
                start, stop = (r * size) // replicas, ((r + 1) * size) // replicas
                sliced = tf.nest.map_structure(lambda t: t[start:stop], batch)
                return sliced[0] if len(sliced) == 1 else sliced  # the element's own structure

            return tf.data.Dataset.range(local).map(one)

        options = tf.data.Options()
        options.experimental_distribute.auto_shard_policy = tf.data.experimental.AutoShardPolicy.OFF
        kept = batches.filter(lambda *batch: size_of(batch) >= replicas) if replicas > 1 else batches
        return kept.flat_map(slices).with_options(options)

    return strategy.distribute_datasets_from_function(dataset_fn)


def _step_logs(outputs, strategy) -> dict:
    """{name: float} of a step's returned logs (per replica), from this worker's first replica: for the entries
    that are not metrics (e.g. SmoothAdv's epsilon), which are the same on every replica."""
    logs = {}
    for key, value in (outputs or {}).items():
        local = strategy.experimental_local_results(value)[0]
        if getattr(local, "shape", None) == ():
            logs[key] = float(local)
    return logs


def _results(model) -> dict:
    """{name: float} of `model.metrics`, read in the cross-replica context (reduced over all replicas)."""
    logs = {}
    for metric in model.metrics:
        result = metric.result()
        if isinstance(result, dict):
            logs.update({key: float(value) for key, value in result.items()})
        else:
            logs[metric.name] = float(result)
    return logs


def fit(model: keras.Model, strategy: tf.distribute.Strategy, batches: tf.data.Dataset, *, epochs: int,
        initial_epoch: int = 0, validation_data: Optional[tf.data.Dataset] = None,
        callbacks: Sequence[keras.callbacks.Callback] = (), verbose: int = 1) -> keras.callbacks.History:
    """Trains `model` (compiled inside `strategy.scope()`) like `model.fit(batches, epochs=..., ...)`, with each
    step run on every replica by `strategy.run(model.train_step)`; the loop for `MultiWorkerMirroredStrategy`.

    Args:
        model: a compiled Keras model whose `train_step`/`test_step` take one batch (e.g. tfsmooth's training
            models), created in `strategy.scope()`.
        strategy: the strategy; every worker of a multi-worker run calls `fit` with the same arguments.
        batches: global training batches, the same on every worker (`replica_batches` splits them).
        epochs, initial_epoch: train epochs [initial_epoch, epochs), as `Model.fit`.
        validation_data: global validation batches evaluated after each epoch (logs prefixed `val_`), or None.
        callbacks: Keras callbacks (epoch and train begin/end hooks, `model.stop_training`).
        verbose: 0 silent, 1 a progress bar, 2 one line per epoch (Keras' own progress callback).

    Returns:
        The `keras.callbacks.History` of the run.
    """
    from tfsmooth import training  # the library's training models (imported here: they import Keras' whole stack)

    if not hasattr(model, "_symbolic_build"):
        raise RuntimeError("this Keras version has no Model._symbolic_build, which tfsmooth.distribute.fit uses to "
                           "create the model's variables before the replicated steps: train with Keras 3.15's API")
    with strategy.scope():
        # Create the model's, the compiled metrics' and the optimizer's variables before the replicated step, as
        # `Model.fit` does (in its `_maybe_symbolic_build`): a step cannot create variables on each replica.
        # From the element spec: drawing a batch would start an iteration of the (reshuffling) pipeline and shift
        # the data order of every epoch.
        model._symbolic_build(data_batch=batches.element_spec)
        if not model.optimizer.built:
            model.optimizer.build(model.trainable_variables)
    train_data = replica_batches(strategy, batches)
    val_data = None if validation_data is None else replica_batches(strategy, validation_data)

    @tf.function
    def train_function(batch):
        return strategy.run(model.train_step, args=(batch,))

    @tf.function
    def test_function(batch):
        strategy.run(model.test_step, args=(batch,))

    callbacks = list(callbacks)
    if isinstance(model, training.SmoothAdvModel) and not any(isinstance(c, training.EpochTracker) for c in callbacks):
        callbacks.append(training.EpochTracker())  # epsilon warm-up, as SmoothAdvModel.fit adds it
    history = keras.callbacks.History()
    callback_list = keras.callbacks.CallbackList([*callbacks, history], add_history=False,
                                                 add_progbar=verbose != 0, model=model, verbose=verbose,
                                                 epochs=epochs, steps=None)
    model.stop_training = False
    callback_list.on_train_begin()
    logs = {}
    for epoch in range(initial_epoch, epochs):
        model.reset_metrics()
        callback_list.on_epoch_begin(epoch)
        outputs = None
        for step, batch in enumerate(train_data):
            callback_list.on_train_batch_begin(step)
            outputs = train_function(batch)
            callback_list.on_train_batch_end(step)
        logs = {**_step_logs(outputs, strategy), **_results(model)}  # as Model.fit: the last step's logs
        if val_data is not None:
            model.reset_metrics()
            for batch in val_data:
                test_function(batch)
            logs.update({f"val_{key}": value for key, value in _results(model).items()})
        callback_list.on_epoch_end(epoch, logs)
        if model.stop_training:
            break
    callback_list.on_train_end(logs)
    return history
