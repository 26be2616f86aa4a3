"""Training a base classifier for randomized smoothing: the `train` job, resumable from checkpoints.

Gaussian data augmentation (Cohen et al. 2019, Sec. 3.3 and App. B; METHODS.md §1) or SmoothAdv
adversarial training (Salman et al. 2019, Pseudocode 1; METHODS.md §2), from scratch or fine-tuned
from a saved model (`init_from`), optionally with self-training on pseudo-labels
(`tfsmooth.jobs.self_training`). The job stores its frozen, validated `TrainConfig` as config.json
beside the checkpoints, so a run can be reproduced from its outputs and resumed where it stopped.
"""

from __future__ import annotations

import dataclasses
import os
import tempfile
import time
from typing import Any, Optional

import keras
import tensorflow as tf

from tfsmooth import checks, data, distribute, files, models, registry, training
from tfsmooth.jobs.records import NOISE_SCHEME, check_model_fits_data
from tfsmooth.jobs.samplewise import load_sigma_file
from tfsmooth.jobs.self_training import parse_source, pseudo_labeled_data
from tfsmooth.models.io import load_base_model, load_model, replace_head

CONFIG_FILE = "config.json"
CHECKPOINT_FILE = "checkpoint.keras"
STATE_FILE = "train_state.json"
BASE_MODEL_FILE = "base_model.keras"
LOG_FILE = "log.csv"


@dataclasses.dataclass(frozen=True)
class TrainConfig:
    """Configuration of `train` (recipe of Cohen et al. 2019, App. B; METHODS.md §1).

    Attributes:
        dataset: data set name for `tfsmooth.data.load_dataset` ("cifar10", "cifar10_sample").
        arch: one of `tfsmooth.models.ARCHITECTURES`, or "custom" with `init_from`: the architecture is
            the one saved in that file (your own Keras model), recorded as such in config.json.
        sigma: Gaussian augmentation noise level (l2, [0, 1] pixel scale), > 0.
        epochs: total epochs (a resumed run continues up to this number).
        batch: training batch size.
        lr: initial SGD learning rate; multiplied by `lr_gamma` every `lr_step` epochs.
        lr_step, lr_gamma, momentum: step schedule and SGD momentum.
        weight_decay: coupled L2 weight decay on kernels.
        seed: seeds weights, data order, augmentation and noise.
        data_dir: local CIFAR-10 binary directory (else TFSMOOTH_DATA_DIR, else tfds).
        val_examples: test-split examples evaluated under noise after each epoch (0: none).
        method: a key of `tfsmooth.training.METHODS`: "gaussian" (Gaussian data augmentation, Cohen
            et al.) or "smoothadv" (SmoothAdv adversarial training, Salman et al. 2019, Pseudocode 1).
        method_config: the method's own configuration, an instance of
            `training.METHODS[method].config_class` (`training.GaussianConfig`,
            `training.SmoothAdvConfig`, whose defaults are the paper's typical CIFAR-10 run,
            METHODS.md §2); None takes that class's defaults. `method_config_for` builds one from
            keyword options and names any option that belongs to another method.
        init_from: a `.keras` model to fine-tune instead of a fresh `arch` (its architecture must
            match `arch` when it is one of ours; a new classification head replaces the last Dense
            layer when its number of classes differs). Loaded layers keep their saved weight decay.
        unlabeled: self-training source "DATASET[:SPLIT]" (split default "train"; a test split is
            refused), whose images are trained on with the labels of `pseudo_labels`.
        pseudo_labels: `.npz` written by `pseudo_label` for `unlabeled`.
        self_training_weight: sample weight of the pseudo-labeled examples (> 0; default 1.0).
        train_examples: use only the first this many labeled training examples (0: all).
        sigma_file: sample-wise fine-tuning: an `.npz` of `tfsmooth.jobs.samplewise.assign_sigma` giving each
            training example its own noise level sigma_i (then `sigma` is only the validation level); not with
            self-training.
        augment: the training images' augmentation, one of `tfsmooth.data.AUGMENTATIONS`: "auto" (default:
            crop + flip for colour images, none for single-channel ones such as MNIST digits,
            `tfsmooth.data.default_augmentation`), "crop_flip", "crop" or "none".
    """

    dataset: str = "cifar10"
    arch: str = "cifar_resnet20"
    sigma: float = 0.25
    epochs: int = 90
    batch: int = 256
    lr: float = 0.1
    lr_step: int = 30
    lr_gamma: float = 0.1
    momentum: float = 0.9
    weight_decay: float = 1e-4
    seed: int = 0
    data_dir: Optional[str] = None
    val_examples: int = 1000
    method: str = "gaussian"
    method_config: Any = None
    init_from: Optional[str] = None
    unlabeled: Optional[str] = None
    pseudo_labels: Optional[str] = None
    self_training_weight: Optional[float] = None
    train_examples: int = 0
    sigma_file: Optional[str] = None
    augment: str = "auto"

    def __post_init__(self):
        checks.check_sigma(self.sigma)
        checks.check_count(self.epochs, "epochs")
        checks.check_count(self.batch, "batch")
        checks.check_count(self.lr_step, "lr_step")
        checks.check_count(self.val_examples, "val_examples", minimum=0)
        checks.check_seed(self.seed)
        checks.check_choice(self.arch, "arch", (*registry.ARCHITECTURES, registry.CUSTOM_ARCH))
        checks.check_choice(self.augment, "augment", data.AUGMENTATIONS)
        if self.arch == registry.CUSTOM_ARCH and self.init_from is None:
            raise ValueError(f"arch={registry.CUSTOM_ARCH!r} means the architecture saved in init_from: give init_from "
                             "(a .keras file of your own model)")
        for name in ("lr", "lr_gamma"):
            checks.check_real(getattr(self, name), name, 0.0, inclusive=False)
        checks.check_real(self.momentum, "momentum", 0.0, maximum=1.0)
        checks.check_real(self.weight_decay, "weight_decay", 0.0)
        _check_method_fields(self)
        _check_extra_data_fields(self)

    def resumable_with(self, other: "TrainConfig") -> list:
        """Names of fields that differ from `other`, apart from `epochs` (which may grow)."""
        a, b = dataclasses.asdict(self), dataclasses.asdict(other)
        return [k for k in a if k != "epochs" and a[k] != b[k]]


class _EpochState(keras.callbacks.Callback):
    """Adds the epoch's duration to the logs; after each epoch, saves the run's files (`_save_epoch`) into
    `outdir` (a non-chief worker of a multi-worker run saves into a scratch directory instead: saving reads
    replicated variables, which every worker must do alike)."""

    def __init__(self, outdir: str):
        super().__init__()
        self.outdir = outdir

    def on_epoch_begin(self, epoch, logs=None):
        self._start = time.time()
        self._start_steps = int(self.model.optimizer.iterations.numpy())

    def on_epoch_end(self, epoch, logs=None):
        if logs is not None:
            logs["epoch_seconds"] = time.time() - self._start
        steps_per_epoch = int(self.model.optimizer.iterations.numpy()) - self._start_steps
        _save_epoch(self.model, self.outdir, epoch + 1, steps_per_epoch)


def _save_epoch(model, outdir: str, epochs_done: int, steps_per_epoch: int, *, checkpoint: bool = True):
    """Replaces checkpoint.keras, base_model.keras, then train_state.json, each atomically.

    A crash between them leaves the later files one epoch behind the checkpoint; `_resume` counts
    the epochs from the checkpoint and rewrites them (`checkpoint=False`).
    """
    if checkpoint:
        files.atomic_write(os.path.join(outdir, CHECKPOINT_FILE), model.save)
    files.atomic_write(os.path.join(outdir, BASE_MODEL_FILE), model.base_model.save)
    files.write_json(os.path.join(outdir, STATE_FILE), {"epochs_done": epochs_done, "steps_per_epoch": steps_per_epoch})


def _resolved(config: TrainConfig) -> TrainConfig:
    """`config` with augment="auto" replaced by what it means for the data set's images
    (`data.default_augmentation`), so config.json records the augmentation applied."""
    if config.augment != "auto":
        return config
    shape = data.dataset_info(config.dataset, config.data_dir).image_shape
    return dataclasses.replace(config, augment=data.default_augmentation(shape))


def _config_record(config: TrainConfig) -> dict:
    """What config.json holds: the TrainConfig's fields (method_config as a JSON object) and the noise scheme."""
    return {**dataclasses.asdict(config), "noise_scheme": NOISE_SCHEME}


def _read_train_config(path: str) -> TrainConfig:
    """The TrainConfig of a run's config.json; ValueError naming the file if it is not one (one line)."""
    fields = files.read_json(path)
    if not isinstance(fields, dict):
        raise ValueError(f"{path} must hold a JSON object of TrainConfig fields, got {type(fields).__name__}")
    if fields.pop("noise_scheme", None) != NOISE_SCHEME:
        raise ValueError(f"{path} was written by an older tfsmooth (its training noise and config layout differ): "
                         f"the run cannot be continued; train into another --outdir, or rerun with --restart")
    fields.setdefault("augment", "crop_flip")  # what runs written before the option existed applied to all images
    unknown = sorted(set(fields) - {field.name for field in dataclasses.fields(TrainConfig)})
    if unknown:
        raise ValueError(f"{path} has unknown keys {', '.join(unknown)}: not a config.json written by `train`")
    try:
        return TrainConfig(**fields)
    except (TypeError, ValueError) as err:
        raise ValueError(f"{path}: {err}") from None


def _read_train_state(outdir: str) -> Optional[dict]:
    """train_state.json of a run with a checkpoint, checked; None when there is nothing to resume.

    Without a state file (a crash before the first one was written) training starts over.
    """
    path = os.path.join(outdir, STATE_FILE)
    if not (os.path.exists(path) and os.path.exists(os.path.join(outdir, CHECKPOINT_FILE))):
        return None
    state = files.read_json(path)
    for key in ("epochs_done", "steps_per_epoch"):
        value = state.get(key) if isinstance(state, dict) else None
        if isinstance(value, bool) or not isinstance(value, int) or value < 1:
            raise ValueError(f"{path}: {key} must be an integer >= 1, got {value!r} (the file is damaged or "
                             "was written by an older tfsmooth; use another --outdir)")
    return state


def _resume(outdir: str, state: dict, *, save: bool = True):
    """(training model, epochs done) from the checkpoint of `outdir`.

    The checkpoint alone says how far training got: epochs done = its optimizer's step count over the
    steps per epoch (a constant of the configuration, recorded in the state). Counting from the state
    instead would train an epoch twice after a crash between writing the checkpoint and the state
    (`_save_epoch`); the state may lag by that one epoch, then it and base_model.keras are rewritten.
    A checkpoint that does not fit the state is refused before anything is written.
    """
    path = os.path.join(outdir, CHECKPOINT_FILE)
    try:
        model = load_model(path)
    except Exception as err:  # Keras raises many types for a bad archive
        raise ValueError(f"cannot load the training checkpoint {path}: {err}") from None
    steps = int(model.optimizer.iterations.numpy())
    epochs_done, rest = divmod(steps, state["steps_per_epoch"])
    if rest or epochs_done not in (state["epochs_done"], state["epochs_done"] + 1):
        raise ValueError(f"{path} holds {steps} optimizer steps, which is not {state['epochs_done']} or one more "
                         f"epochs of {state['steps_per_epoch']} steps as {STATE_FILE} says: the files come from "
                         "different runs; use another --outdir")
    if epochs_done != state["epochs_done"] and save:
        _save_epoch(model, outdir, epochs_done, state["steps_per_epoch"], checkpoint=False)
    return model, epochs_done


RUN_FILES = (CONFIG_FILE, CHECKPOINT_FILE, STATE_FILE, BASE_MODEL_FILE, LOG_FILE)
"""The files a training run writes in its outdir (what `restart` deletes)."""


def epochs_done(outdir: str) -> int:
    """Epochs a run in `outdir` has finished according to its train_state.json (0 if none or unreadable)."""
    try:
        state = _read_train_state(outdir)
    except ValueError:
        return 0
    return 0 if state is None else state["epochs_done"]


def train(config: TrainConfig, outdir: str, *, verbose: int = 1, restart: bool = False,
          strategy: Optional[tf.distribute.Strategy] = None) -> keras.Model:
    """Trains a base classifier (Gaussian augmentation or SmoothAdv, `config.method`); resumes from `outdir`.

    Writes in `outdir`: `config.json`, `base_model.keras` (the base classifier, loadable with plain
    `keras.models.load_model`), `checkpoint.keras` (model + optimizer state), `train_state.json`
    (`epochs_done`, `steps_per_epoch`) and `log.csv` (one row per epoch). If `outdir` already holds
    a run, training continues after the last epoch saved in its checkpoint (the data order of a
    resumed epoch differs from an uninterrupted run).

    Returns:
        The trained base classifier.

    Args:
        config: the run's configuration.
        outdir: the run directory.
        verbose: Keras' `fit` verbosity (0 silent, 1 progress bar, 2 one line per epoch).
        restart: delete the run's files in `outdir` (`RUN_FILES`) and start over instead of resuming.
        strategy: the `tf.distribute` strategy to train under (default: the current one; `tfsmooth.distribute.
            make_strategy` builds one by name). `config.batch` is the *global* batch, split among the replicas
            (`tfsmooth.distribute.replica_batches`). Under `MultiWorkerMirroredStrategy` every worker calls
            `train` with the same arguments and an `outdir` on a file system they share: all read it to resume,
            only the chief (`tfsmooth.distribute.is_chief`) writes it. Under it and under `MirroredStrategy` the
            steps run in `tfsmooth.distribute.fit` (Keras' `fit` does not run under the first), so one machine with
            R devices and R machines with one device train on the same batches; otherwise Keras' `fit` runs.

    Raises:
        ValueError: if `outdir` holds a run with a different configuration (other than `epochs`),
            or a config.json, train_state.json or checkpoint that is damaged, from another run or
            written by an older tfsmooth; a refused run writes nothing.
    """
    strategy = strategy or tf.distribute.get_strategy()
    chief = distribute.is_chief(strategy)
    config_path = os.path.join(outdir, CONFIG_FILE)
    if restart and distribute.is_multi_worker(strategy):  # on every worker, before anything is deleted
        raise ValueError("restart deletes the run's files, which a multi-worker run cannot do safely: delete them "
                         "(or use another --outdir) before the workers start")
    config = _resolved(config)
    if restart:
        _check_train_files(config)  # refuse a bad configuration before deleting anything
        for name in RUN_FILES:
            if os.path.isfile(os.path.join(outdir, name)):
                os.remove(os.path.join(outdir, name))
    if os.path.exists(config_path):
        previous = _resolved(_read_train_config(config_path))
        diff = config.resumable_with(previous)
        if diff:
            raise ValueError(
                f"{outdir} holds a run with a different configuration ({', '.join(f'{k}: {getattr(previous, k)!r} there, {getattr(config, k)!r} now' for k in diff)}); "
                "use another --outdir, or rerun with --restart to start over")
    state = _read_train_state(outdir)
    _check_train_files(config)  # before anything is written (even outdir): a refused run leaves no trace
    info = data.dataset_info(config.dataset, config.data_dir)
    keras.utils.set_random_seed(config.seed)
    with strategy.scope():
        model, epochs_done = _resume(outdir, state, save=chief) if state is not None else (None, 0)
        if model is None:
            model = _training_model(config, _initial_base_model(config, info.num_classes, info))
            model.compile(
                optimizer=keras.optimizers.SGD(config.lr, momentum=config.momentum),
                loss=keras.losses.SparseCategoricalCrossentropy(from_logits=True),
                metrics=["accuracy"],
            )
    if chief:
        os.makedirs(outdir, exist_ok=True)
        files.write_json(config_path, _config_record(config))
    if epochs_done >= config.epochs:
        return model.base_model

    train_ds = _training_data(config, info.num_classes)
    _check_first_batch(train_ds)
    val_ds = None
    if config.val_examples:
        val_ds = data.load_dataset(config.dataset, "test", config.data_dir).take(config.val_examples).batch(500)

    def schedule(epoch, lr):
        return config.lr * config.lr_gamma ** (epoch // config.lr_step)

    with tempfile.TemporaryDirectory(prefix="tfsmooth-worker-") as scratch:
        callbacks = [keras.callbacks.LearningRateScheduler(schedule), _EpochState(outdir if chief else scratch)]
        if chief:
            callbacks.append(keras.callbacks.CSVLogger(os.path.join(outdir, LOG_FILE), append=True))
        if distribute.uses_own_loop(strategy):
            distribute.fit(model, strategy, train_ds, epochs=config.epochs, initial_epoch=epochs_done,
                           validation_data=val_ds, verbose=verbose if chief else 0, callbacks=callbacks)
        else:
            model.fit(train_ds, epochs=config.epochs, initial_epoch=epochs_done, validation_data=val_ds,
                      verbose=verbose, shuffle=False,  # the pipeline shuffles, seeded
                      callbacks=callbacks)
    return model.base_model


def _check_first_batch(batches) -> None:
    """Refuses, in one line, training batches whose pixels are not in [0, 1] (`training.checked_pixels` also
    checks every step in the graph; this catches it before the first epoch, with a plain error)."""
    for images, *_ in batches.take(1):
        images, _ = training.split_sigma(images)
        low, high = float(tf.reduce_min(images)), float(tf.reduce_max(images))
        if not (0.0 <= low and high <= 1.0):
            raise ValueError(f"training images must be pixels in [0, 1] (tfsmooth adds the noise there), the first "
                             f"batch has values in [{low:g}, {high:g}]: divide [0, 255] images by 255")


METHODS = registry.TRAINING_METHODS
"""Names of the training methods (`tfsmooth.training.METHODS` implements them)."""
SMOOTHADV_DEFAULTS = registry.SMOOTHADV_DEFAULTS
"""The typical from-scratch CIFAR-10 run of Salman et al. 2019 (METHODS.md §2): `SmoothAdvConfig()`."""


def method_config_for(method: str, **options):
    """`training.METHODS[method].config_class(**options)`, with options left None dropped (defaults).

    Raises:
        ValueError: an unknown method, an option of another method ("epsilon: only for
            method='smoothadv', got method='gaussian'"), or an invalid value (naming the field).
    """
    checks.check_choice(method, "method", METHODS)
    given = {name: value for name, value in options.items() if value is not None}
    fields = {field.name for field in dataclasses.fields(training.METHODS[method].config_class)}
    foreign = [name for name in given if name not in fields]
    if foreign:
        owners = {name: [m for m in METHODS
                         if name in {f.name for f in dataclasses.fields(training.METHODS[m].config_class)}]
                  for name in foreign}
        where = "; ".join(f"{name}: only for method={'/'.join(repr(m) for m in owners[name]) or '(none)'}"
                          for name in foreign)
        raise ValueError(f"{where}, got method={method!r}")
    return training.METHODS[method].config_class(**given)


def _check_method_fields(config: TrainConfig):
    """Validates method and method_config (None: the method's defaults)."""
    checks.check_choice(config.method, "method", METHODS)
    config_class = training.METHODS[config.method].config_class
    if config.method_config is None:
        object.__setattr__(config, "method_config", config_class())
    elif isinstance(config.method_config, dict):  # read back from config.json
        try:
            object.__setattr__(config, "method_config", config_class(**config.method_config))
        except TypeError as err:
            raise ValueError(f"method_config is not a {config_class.__name__}: {err}") from None
    elif not isinstance(config.method_config, config_class):
        raise ValueError(f"method_config must be a {config_class.__name__} for method={config.method!r}, "
                         f"got {config.method_config!r}")


def _check_extra_data_fields(config: TrainConfig):
    """Validates train_examples, init_from and the self-training fields; stores absolute paths."""
    checks.check_count(config.train_examples, "train_examples", minimum=0)
    if config.init_from is not None:
        object.__setattr__(config, "init_from", os.path.abspath(config.init_from))
    if config.sigma_file is not None:
        if config.unlabeled is not None:
            raise ValueError("sigma_file (sample-wise fine-tuning) does not combine with self-training (unlabeled, "
                             "pseudo_labels) yet: the pseudo-labeled images have no sigma of their own")
        object.__setattr__(config, "sigma_file", os.path.abspath(config.sigma_file))
    if (config.unlabeled is None) != (config.pseudo_labels is None):
        raise ValueError("unlabeled and pseudo_labels must be given together (self-training), got "
                         f"unlabeled={config.unlabeled!r}, pseudo_labels={config.pseudo_labels!r}")
    if config.unlabeled is None:
        if config.self_training_weight is not None:
            raise ValueError("self_training_weight applies only with unlabeled and pseudo_labels")
        return
    object.__setattr__(config, "unlabeled", ":".join(parse_source(config.unlabeled)))
    object.__setattr__(config, "pseudo_labels", os.path.abspath(config.pseudo_labels))
    weight = 1.0 if config.self_training_weight is None else config.self_training_weight
    if not checks.is_real(weight, 0, inclusive=False):
        raise ValueError(f"self_training_weight must be a finite number > 0, got {weight!r}")
    object.__setattr__(config, "self_training_weight", float(weight))


def _check_train_files(config: TrainConfig):
    """Loads init_from and pseudo_labels once, so that a bad file is refused before anything is written."""
    info = data.dataset_info(config.dataset, config.data_dir)
    num_classes = info.num_classes
    if config.init_from is not None:
        _initial_base_model(config, num_classes, info)
    if config.unlabeled is not None:
        pseudo_labeled_data(config.unlabeled, config.pseudo_labels, config.data_dir, num_classes)
    if config.sigma_file is not None:
        _example_sigmas(config)


def _example_sigmas(config: TrainConfig):
    """The sigma file's levels, checked against the training examples (count, data set, data source)."""
    labeled = data.load_dataset(config.dataset, "train", config.data_dir)
    count = int(labeled.cardinality())
    if config.train_examples:
        count = min(count, config.train_examples)
    sigma = load_sigma_file(config.sigma_file, config.dataset, None, data.data_source(config.dataset, config.data_dir))
    if len(sigma) < count:
        raise ValueError(f"{config.sigma_file} holds {len(sigma)} noise levels, but the run trains on {count} examples")
    return sigma[:count]


def _initial_base_model(config: TrainConfig, num_classes: int, info: Optional[data.DatasetInfo] = None) -> keras.Model:
    """A fresh `arch` for the data set (`info`: its image shape and normalization; default: config.dataset's),
    or the model of `init_from` (with a new head if its class count differs)."""
    if config.init_from is None:
        info = info or data.dataset_info(config.dataset, config.data_dir)
        return models.get_model(config.arch, num_classes, weight_decay=config.weight_decay,
                                input_shape=tuple(info.image_shape), mean=info.mean, std=info.std)
    base = load_base_model(config.init_from)
    if config.arch != registry.CUSTOM_ARCH and base.name not in models.ARCHITECTURES:
        raise ValueError(f"init_from {config.init_from} holds a model named {base.name!r}, not one of tfsmooth's "
                         f"architectures, but arch is {config.arch!r}: pass arch={registry.CUSTOM_ARCH!r} (--arch "
                         f"{registry.CUSTOM_ARCH}) to train your own architecture")
    if config.arch == registry.CUSTOM_ARCH and base.name in models.ARCHITECTURES:
        raise ValueError(f"init_from {config.init_from} holds a {base.name}: pass arch={base.name!r}")
    if base.name in models.ARCHITECTURES and base.name != config.arch:
        raise ValueError(f"init_from {config.init_from} holds a {base.name}, but arch is {config.arch!r}; "
                         f"pass arch={base.name!r}")
    info = info or data.dataset_info(config.dataset, config.data_dir)
    check_model_fits_data(base, info, f"init_from {config.init_from}", classes=False)  # the head may be replaced
    return replace_head(base, num_classes, weight_decay=config.weight_decay, source=f"init_from {config.init_from}")


def _training_model(config: TrainConfig, base: keras.Model) -> keras.Model:
    return training.METHODS[config.method].build(base, config.sigma, config.method_config, seed=config.seed)


def _training_data(config: TrainConfig, num_classes: int):
    """Batches of (images, labels) or, with self-training, (images, labels, sample weights)."""
    labeled = data.load_dataset(config.dataset, "train", config.data_dir)
    if config.train_examples:
        labeled = labeled.take(config.train_examples)
    if config.sigma_file is not None:  # sample-wise: the label slot carries (label, sigma_i) through the pipeline
        sigma = tf.data.Dataset.from_tensor_slices(_example_sigmas(config))
        batches = data.training_pipeline(tf.data.Dataset.zip((labeled, sigma)).map(lambda xy, s: (xy[0], (xy[1], s))),
                                         config.batch, seed=config.seed, augment=config.augment)
        return batches.map(lambda x, label_sigma: ({training.IMAGES_KEY: x, training.SIGMA_KEY: label_sigma[1]},
                                                   label_sigma[0]))
    if config.unlabeled is None:
        return data.training_pipeline(labeled, config.batch, seed=config.seed, augment=config.augment)
    # The label slot carries (label, weight) through the shared pipeline; weight 1 for real labels.
    mixed = labeled.map(lambda x, y: (x, (y, tf.constant(1.0)))).concatenate(
        pseudo_labeled_data(config.unlabeled, config.pseudo_labels, config.data_dir, num_classes).map(
            lambda x, y: (x, (y, tf.constant(config.self_training_weight)))))
    batches = data.training_pipeline(mixed, config.batch, seed=config.seed, augment=config.augment,
                                     shuffle_buffer=max(1, int(mixed.cardinality())))
    return batches.map(lambda x, label_weight: (x, *label_weight))
