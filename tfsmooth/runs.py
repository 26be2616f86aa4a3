"""Whole jobs behind the command line: train a base classifier, certify or predict a data set.

Each job takes a frozen, validated configuration, saves it as JSON beside its outputs so a run can
be reproduced from them, writes results as it goes, and resumes from what it already wrote.
"""

from __future__ import annotations

import dataclasses
import functools
import hashlib
import json
import math
import os
import time
import zipfile
from typing import Callable, Optional

import keras
import numpy as np
import tensorflow as tf

from tfsmooth import attacks, data, models, noise, results, stats
from tfsmooth.models import folding
from tfsmooth.smoothing import SmoothedClassifier
from tfsmooth.training import SMOOTHADV_ATTACKS, GaussianAugmentedModel, SmoothAdvModel

CONFIG_FILE = "config.json"
CHECKPOINT_FILE = "checkpoint.keras"
STATE_FILE = "train_state.json"
BASE_MODEL_FILE = "base_model.keras"
LOG_FILE = "log.csv"


# --------------------------------------------------------------------------------------- training
@dataclasses.dataclass(frozen=True)
class TrainConfig:
    """Configuration of `train` (recipe of Cohen et al. 2019, App. B; METHODS.md §1).

    Attributes:
        dataset: data set name for `tfsmooth.data.load_dataset` ("cifar10", "cifar10_sample").
        arch: one of `tfsmooth.models.ARCHITECTURES`.
        sigma: Gaussian augmentation noise level (l2, [0, 1] pixel scale), > 0.
        epochs: total epochs (a resumed run continues up to this number).
        batch: training batch size.
        lr: initial SGD learning rate; multiplied by `lr_gamma` every `lr_step` epochs.
        lr_step, lr_gamma, momentum: step schedule and SGD momentum.
        weight_decay: coupled L2 weight decay on kernels.
        seed: seeds weights, data order, augmentation and noise.
        data_dir: local CIFAR-10 binary directory (else TFSMOOTH_DATA_DIR, else tfds).
        val_examples: test-split examples evaluated under noise after each epoch (0: none).
        method: "gaussian" (Gaussian data augmentation, Cohen et al.) or "smoothadv" (SmoothAdv
            adversarial training, Salman et al. 2019, Pseudocode 1; `SmoothAdvModel`).
        attack, epsilon, num_steps, num_noise_vec, warmup_epochs, multi_noise: SmoothAdv only
            (None for "gaussian"); None under "smoothadv" takes the paper's typical CIFAR-10 run
            (METHODS.md §2): "pgd", 0.25, 10, 2, 10, True. epsilon is l2 on the [0, 1] scale.
        init_from: a `.keras` model to fine-tune instead of a fresh `arch` (its architecture must
            match `arch` when it is one of ours; a new classification head replaces the last Dense
            layer when its number of classes differs). Loaded layers keep their saved weight decay.
        unlabeled: self-training source "DATASET[:SPLIT]" (split default "train"; a test split is
            refused), whose images are trained on with the labels of `pseudo_labels`.
        pseudo_labels: `.npz` written by `pseudo_label` for `unlabeled`.
        self_training_weight: sample weight of the pseudo-labeled examples (> 0; default 1.0).
        train_examples: use only the first this many labeled training examples (0: all).
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
    attack: Optional[str] = None
    epsilon: Optional[float] = None
    num_steps: Optional[int] = None
    num_noise_vec: Optional[int] = None
    warmup_epochs: Optional[int] = None
    multi_noise: Optional[bool] = None
    init_from: Optional[str] = None
    unlabeled: Optional[str] = None
    pseudo_labels: Optional[str] = None
    self_training_weight: Optional[float] = None
    train_examples: int = 0

    def __post_init__(self):
        stats.check_sigma(self.sigma)
        stats.check_count(self.epochs, "epochs")
        stats.check_count(self.batch, "batch")
        stats.check_count(self.lr_step, "lr_step")
        stats.check_count(self.val_examples, "val_examples", minimum=0)
        stats.check_count(self.seed, "seed", minimum=0)
        if self.arch not in models.ARCHITECTURES:
            raise ValueError(f"arch must be one of {', '.join(models.ARCHITECTURES)}; got {self.arch!r}")
        for name in ("lr", "lr_gamma"):
            if not _is_real(getattr(self, name), 0, inclusive=False):
                raise ValueError(f"{name} must be a finite number > 0, got {getattr(self, name)!r}")
        if not (0 <= self.momentum < 1):
            raise ValueError(f"momentum must be in [0, 1), got {self.momentum!r}")
        if not _is_real(self.weight_decay, 0):
            raise ValueError(f"weight_decay must be a finite number >= 0, got {self.weight_decay!r}")
        _check_method_fields(self)
        _check_extra_data_fields(self)

    def resumable_with(self, other: "TrainConfig") -> list:
        """Names of fields that differ from `other`, apart from `epochs` (which may grow)."""
        a, b = dataclasses.asdict(self), dataclasses.asdict(other)
        return [k for k in a if k != "epochs" and a[k] != b[k]]


class _EpochState(keras.callbacks.Callback):
    """Adds the epoch's duration to the logs; after each epoch, saves the run's files (`_save_epoch`)."""

    def __init__(self, outdir: str):
        super().__init__()
        self.outdir = outdir

    def on_epoch_begin(self, epoch, logs=None):
        self._start = time.time()
        self._start_steps = int(self.model.optimizer.iterations)

    def on_epoch_end(self, epoch, logs=None):
        if logs is not None:
            logs["epoch_seconds"] = time.time() - self._start
        steps_per_epoch = int(self.model.optimizer.iterations) - self._start_steps
        _save_epoch(self.model, self.outdir, epoch + 1, steps_per_epoch)


def _save_epoch(model, outdir: str, epochs_done: int, steps_per_epoch: int, *, checkpoint: bool = True):
    """Replaces checkpoint.keras, base_model.keras, then train_state.json, each atomically.

    A crash between them leaves the later files one epoch behind the checkpoint; `_resume` counts
    the epochs from the checkpoint and rewrites them (`checkpoint=False`).
    """
    if checkpoint:
        _atomic(model.save, os.path.join(outdir, CHECKPOINT_FILE))
    _atomic(model.base_model.save, os.path.join(outdir, BASE_MODEL_FILE))
    _write_json(os.path.join(outdir, STATE_FILE), {"epochs_done": epochs_done, "steps_per_epoch": steps_per_epoch})


def _read_train_config(path: str) -> TrainConfig:
    """The TrainConfig of a run's config.json; ValueError naming the file if it is not one."""
    fields = _read_json(path)
    if not isinstance(fields, dict):
        raise ValueError(f"{path} must hold a JSON object of TrainConfig fields, got {type(fields).__name__}")
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
    state = _read_json(path)
    for key in ("epochs_done", "steps_per_epoch"):
        value = state.get(key) if isinstance(state, dict) else None
        if isinstance(value, bool) or not isinstance(value, int) or value < 1:
            raise ValueError(f"{path}: {key} must be an integer >= 1, got {value!r} (the file is damaged or "
                             "was written by an older tfsmooth; use another --outdir)")
    return state


def _resume(outdir: str, state: dict):
    """(training model, epochs done) from the checkpoint of `outdir`.

    The checkpoint alone says how far training got: epochs done = its optimizer's step count over the
    steps per epoch (a constant of the configuration, recorded in the state). Counting from the state
    instead would train an epoch twice after a crash between writing the checkpoint and the state
    (`_save_epoch`); the state may lag by that one epoch, then it and base_model.keras are rewritten.
    A checkpoint that does not fit the state is refused before anything is written.
    """
    path = os.path.join(outdir, CHECKPOINT_FILE)
    try:
        model = keras.models.load_model(path)
    except Exception as err:  # Keras raises many types for a bad archive
        raise ValueError(f"cannot load the training checkpoint {path}: {err}") from None
    steps = int(model.optimizer.iterations)
    epochs_done, rest = divmod(steps, state["steps_per_epoch"])
    if rest or epochs_done not in (state["epochs_done"], state["epochs_done"] + 1):
        raise ValueError(f"{path} holds {steps} optimizer steps, which is not {state['epochs_done']} or one more "
                         f"epochs of {state['steps_per_epoch']} steps as {STATE_FILE} says: the files come from "
                         "different runs; use another --outdir")
    if epochs_done != state["epochs_done"]:
        _save_epoch(model, outdir, epochs_done, state["steps_per_epoch"], checkpoint=False)
    return model, epochs_done


def train(config: TrainConfig, outdir: str, *, verbose: int = 1) -> keras.Model:
    """Trains a base classifier (Gaussian augmentation or SmoothAdv, `config.method`); resumes from `outdir`.

    Writes in `outdir`: `config.json`, `base_model.keras` (the base classifier, loadable with plain
    `keras.models.load_model`), `checkpoint.keras` (model + optimizer state), `train_state.json`
    (`epochs_done`, `steps_per_epoch`) and `log.csv` (one row per epoch). If `outdir` already holds
    a run, training continues after the last epoch saved in its checkpoint (the data order of a
    resumed epoch differs from an uninterrupted run).

    Returns:
        The trained base classifier.

    Raises:
        ValueError: if `outdir` holds a run with a different configuration (other than `epochs`),
            or a config.json, train_state.json or checkpoint that is damaged or from another run;
            a refused run writes nothing.
    """
    config_path = os.path.join(outdir, CONFIG_FILE)
    if os.path.exists(config_path):
        previous = _read_train_config(config_path)
        diff = config.resumable_with(previous)
        if diff:
            raise ValueError(
                f"{outdir} holds a run with a different configuration ({', '.join(f'{k}: {getattr(previous, k)!r} there, {getattr(config, k)!r} now' for k in diff)}); "
                "use another --outdir")
    state = _read_train_state(outdir)
    _check_train_files(config)  # before anything is written (even outdir): a refused run leaves no trace
    info = data.dataset_info(config.dataset, config.data_dir)
    keras.utils.set_random_seed(config.seed)
    model, epochs_done = _resume(outdir, state) if state is not None else (None, 0)
    os.makedirs(outdir, exist_ok=True)
    _write_json(config_path, dataclasses.asdict(config))

    if model is None:
        model = _training_model(config, _initial_base_model(config, info.num_classes))
        model.compile(
            optimizer=keras.optimizers.SGD(config.lr, momentum=config.momentum),
            loss=keras.losses.SparseCategoricalCrossentropy(from_logits=True),
            metrics=["accuracy"],
        )
    if epochs_done >= config.epochs:
        return model.base_model

    train_ds = _training_data(config, info.num_classes)
    val_ds = None
    if config.val_examples:
        val_ds = data.load_dataset(config.dataset, "test", config.data_dir).take(config.val_examples).batch(500)

    def schedule(epoch, lr):
        return config.lr * config.lr_gamma ** (epoch // config.lr_step)

    model.fit(
        train_ds,
        epochs=config.epochs,
        initial_epoch=epochs_done,
        validation_data=val_ds,
        verbose=verbose,
        shuffle=False,  # the pipeline shuffles, seeded
        callbacks=[
            keras.callbacks.LearningRateScheduler(schedule),
            _EpochState(outdir),
            keras.callbacks.CSVLogger(os.path.join(outdir, LOG_FILE), append=True),
        ],
    )
    return model.base_model


# ---------------------------------------------------------------------------------- certification
def _check_evaluation_fields(config):
    """Checks the fields shared by the evaluation configurations (certify, predict, attack)."""
    stats.check_sigma(config.sigma)
    stats.check_alpha(config.alpha)
    for name in ("n", "batch", "skip"):
        stats.check_count(getattr(config, name), name)
    stats.check_count(config.seed, "seed", minimum=0)
    if isinstance(config.max, bool) or not isinstance(config.max, int) or config.max < -1 or config.max == 0:
        raise ValueError(f"max must be -1 (no limit) or an index >= 1 (0 selects no example), got {config.max!r}")
    if config.split not in ("train", "test"):
        raise ValueError(f"split must be 'train' or 'test', got {config.split!r}")


@dataclasses.dataclass(frozen=True)
class CertifyConfig:
    """Configuration of `certify_dataset` / `predict_dataset` (Cohen et al. 2019, Sec. 3.2).

    Attributes:
        model: path of the base classifier (`.keras`); the run record holds its absolute path and
            the SHA-256 of its bytes, so a file changed since (e.g. by `train`) is never resumed.
        dataset, split, data_dir: where the images come from (`tfsmooth.data.load_dataset`).
        sigma: noise level the base classifier was trained for (l2, [0, 1] pixel scale).
        n0: selection draws (certify only; ignored by predict).
        n: estimation draws (certify) or draws (predict).
        alpha: failure probability in (0, 1).
        batch: noisy copies per forward pass (`SmoothedClassifier`'s batch_size). The counts do not
            depend on it, so it is not part of the run record: a run may resume with another batch.
        skip: certify every `skip`-th example of the split.
        max: stop before this index, >= 1 (-1: the whole split).
        seed: seed of the noise; together with the example index it fixes each example's counts.
        compute_dtype: "float32" or "bfloat16", the arithmetic of the noisy forward passes
            (`SmoothedClassifier`); part of the run record only when not float32.
    """

    model: str
    dataset: str = "cifar10"
    split: str = "test"
    sigma: float = 0.25
    n0: int = 100
    n: int = 100_000
    alpha: float = 0.001
    batch: int = 1000
    skip: int = 1
    max: int = -1
    seed: int = 0
    data_dir: Optional[str] = None
    compute_dtype: str = "float32"

    def __post_init__(self):
        _check_evaluation_fields(self)
        stats.check_count(self.n0, "n0")
        folding.check_compute_dtype(self.compute_dtype)

    def run_record(self, kind: str) -> dict:
        """What identifies the run's results (stored beside the TSV; a resume must match it)."""
        omit = ["batch", "n0"] if kind == "predict" else ["batch"]  # the counts do not depend on batch
        if self.compute_dtype == "float32":  # files written before the option existed stay resumable
            omit.append("compute_dtype")
        return _run_record(self, kind, omit)


def load_base_model(path: str) -> keras.Model:
    """Loads a base classifier saved as `.keras`.

    Raises:
        FileNotFoundError: if `path` does not exist.
        ValueError: if it is not a loadable Keras model file (e.g. a `.keras` name on a file that is
            not a zip archive).
    """
    if not os.path.isfile(path):
        raise FileNotFoundError(f"model file not found: {path}")
    if str(path).endswith(".keras") and not zipfile.is_zipfile(path):  # Keras would say "File not found"
        raise ValueError(f"cannot load a Keras model from {path}: it is not a .keras model archive (a zip file, "
                         "as written by model.save); the file is damaged or of another kind")
    try:
        model = keras.models.load_model(path, compile=False)
    except Exception as err:  # Keras raises many types for a bad archive
        raise ValueError(f"cannot load a Keras model from {path}: {err}") from None
    if isinstance(model, GaussianAugmentedModel):
        model = model.base_model
    return model


def certify_dataset(config: CertifyConfig, out: str, *, on_row: Optional[Callable[[dict], None]] = None) -> int:
    """Runs CERTIFY on every `skip`-th example below `max`, writing the reference TSV as it goes.

    One flushed row per example: `idx label predict radius correct time` (time: seconds of wall
    clock since the previous row). An existing `out` from the same configuration is resumed:
    finished indices are skipped, so an interrupted and resumed run has the same rows as an
    uninterrupted one (each example's noise depends only on the seed and its index).

    Args:
        config: the run's configuration.
        out: path of the TSV; its configuration is kept beside it in `out + ".json"`.
        on_row: optional callback receiving each row (dict) after it is written (progress).

    Returns:
        The number of rows written by this call.

    Raises:
        ValueError / FileNotFoundError: for an invalid configuration (e.g. an n too small to ever
            certify at this alpha), a missing model or data directory, or an `out` file from
            another configuration; then `out` is not touched.
    """
    return _run(config, out, on_row, "certify")


def predict_dataset(config: CertifyConfig, out: str, *, on_row: Optional[Callable[[dict], None]] = None) -> int:
    """Runs PREDICT on the selected examples; TSV `idx label predict correct time`, resumable.

    Same contract as `certify_dataset`; `config.n0` is not used.
    """
    return _run(config, out, on_row, "predict")


def _run(config, out, on_row, kind):
    minimum = stats.min_n_to_certify(config.alpha) if kind == "certify" else stats.min_n_to_predict(config.alpha)
    if config.n < minimum:
        raise ValueError(f"n={config.n} is too small to ever {kind} at alpha={config.alpha}: use n >= {minimum}")
    info = data.dataset_info(config.dataset, config.data_dir)
    base, record = _load_recorded_model(config, functools.partial(config.run_record, kind))
    smoothed = SmoothedClassifier(base, info.num_classes, config.sigma, compute_dtype=config.compute_dtype)
    if kind == "certify":
        columns, run = results.CERTIFY_COLUMNS, functools.partial(smoothed.iter_certify, n0=config.n0)
    else:
        columns, run = results.PREDICT_COLUMNS, smoothed.iter_predict
    answers = functools.partial(run, n=config.n, alpha=config.alpha, batch_size=config.batch, seed=config.seed)
    return _evaluate(config, columns, record, answers, out, on_row)


def _evaluate(config, columns, record, answers, out, on_row, prepare=None, prepare_group=1):
    """The row loop shared by certify, predict and attack: resumable, one durable row per example.

    Args:
        config: a configuration with dataset, split, data_dir, skip and max.
        columns: the TSV's columns (`tfsmooth.results`).
        record: the run's parameters, stored beside the TSV and checked on resume.
        answers: callable mapping an iterator of (idx, image) to (idx, Certificate | Prediction)
            in the same order (`SmoothedClassifier.iter_certify` / `iter_predict`).
        out, on_row: as in `certify_dataset`.
        prepare: optional callable (images, labels, idxs) -> (images to evaluate, extra row fields
            per image), on lists of up to `prepare_group` examples, e.g. the attack of
            `attack_dataset`; default: the images unchanged.
        prepare_group: examples per `prepare` call. Groups are consecutive selected examples in
            fixed positions (0..g-1, g..2g-1, ...), so a resumed run prepares the same groups as an
            uninterrupted one (a group with some rows done is prepared whole; only its missing rows
            are written).
    """
    examples = data.select_examples(data.load_dataset(config.dataset, config.split, config.data_dir),
                                    config.skip, config.max)
    pending = {}  # idx -> row fields known before the smoothed classifier answers

    prepare = prepare or _unchanged
    def todo(done):
        for group in _groups(examples, prepare_group):
            if all(idx in done for idx, _, _ in group):
                continue
            idxs = [idx for idx, _, _ in group]
            labels = [int(label) for _, _, label in group]
            images, extras = prepare([image for _, image, _ in group], labels, idxs)
            for idx, label, image, extra in zip(idxs, labels, images, extras):
                if idx not in done:
                    pending[idx] = {"label": label, **extra}
                    yield idx, image

    written = 0
    with results.ResultsWriter(out, columns, record) as writer:
        last = time.time()
        for idx, answer in answers(todo(writer.done)):
            now = time.time()
            row = dict(idx=idx, predict=answer.label, time=now - last, **pending.pop(idx))
            row["correct"] = int(answer.label == row["label"])
            if "radius" in columns:
                row["radius"] = answer.radius
            writer.write(row)
            last, written = now, written + 1
            if on_row:
                on_row(row)
    return written


# -------------------------------------------------------------------------------------- helpers
def _unchanged(images, labels, idxs):
    """The default `prepare` of `_evaluate`: the images as they are, no extra row fields."""
    return images, [{}] * len(images)


def _load_recorded_model(config, run_record: Callable[[], dict]):
    """(`load_base_model(config.model)`, `run_record()`), the record's model_sha256 being the loaded file's.

    The file is hashed before and after the load: one replaced in between (e.g. by `train` after an
    epoch, when a run still training is certified) is refused rather than recorded under the wrong hash.
    """
    before = _file_sha256(config.model) if os.path.isfile(config.model) else None
    base = load_base_model(config.model)
    record = run_record()
    if record["model_sha256"] != before:
        raise ValueError(f"model file {config.model} was replaced while it was being loaded (e.g. by `train` "
                         "after an epoch); run again")
    return base, record


def _file_sha256(path: str) -> str:
    """Hex SHA-256 of a file's bytes, read in 1 MiB chunks."""
    digest = hashlib.sha256()
    with open(path, "rb") as f:
        for chunk in iter(lambda: f.read(1 << 20), b""):
            digest.update(chunk)
    return digest.hexdigest()


def _run_record(config, kind, omit):
    """The fields of an evaluation config that identify its results, with the model's absolute path
    and the SHA-256 of its bytes (`model_sha256`: a file overwritten in place, e.g. `train`'s
    base_model.keras after each epoch, is another model); data_dir (where the same images come from)
    and the fields in `omit` left out. `data_source` names the files the images are read from
    (`tfsmooth.data.data_source`, after $TFSMOOTH_DATA_DIR), so a resume refuses rows whose idx
    referred to images of another source."""
    record = dataclasses.asdict(config)
    record["model"] = os.path.abspath(config.model)
    record["model_sha256"] = _file_sha256(config.model)
    record["data_source"] = data.data_source(config.dataset, config.data_dir)
    for name in ["data_dir", *omit]:
        record.pop(name)
    record["kind"] = kind
    return record


def _groups(iterable, size):
    group = []
    for item in iterable:
        group.append(item)
        if len(group) == size:
            yield group
            group = []
    if group:
        yield group


def _write_json(path, obj):
    """Writes obj as indented JSON through a temporary file and a rename (all or nothing)."""
    results._atomic_write(path, json.dumps(obj, indent=2, sort_keys=True) + "\n")


def _read_json(path):
    try:
        with open(path) as f:
            return json.load(f)
    except (OSError, json.JSONDecodeError) as err:
        raise ValueError(f"cannot read {path}: {err}") from None


def _atomic(save: Callable[[str], None], path: str):
    tmp = path + ".tmp" + os.path.splitext(path)[1]
    save(tmp)
    os.replace(tmp, path)


def selected_count(config: CertifyConfig) -> int:
    """How many examples `certify_dataset` / `predict_dataset` evaluate in total (for progress)."""
    ds = data.load_dataset(config.dataset, config.split, config.data_dir)
    size = int(ds.cardinality())
    stop = size if config.max < 0 else min(size, config.max)
    return len(range(0, stop, config.skip))


# ------------------------------------------------------ SmoothAdv training, fine-tuning, self-training
METHODS = ("gaussian", "smoothadv")
SMOOTHADV_DEFAULTS = {"attack": "pgd", "epsilon": 0.25, "num_steps": 10, "num_noise_vec": 2, "warmup_epochs": 10,
                      "multi_noise": True}
"""The typical from-scratch CIFAR-10 run of Salman et al. 2019 (METHODS.md §2), filled in for None."""


def _check_method_fields(config: TrainConfig):
    """Validates the SmoothAdv fields of a TrainConfig; fills None with SMOOTHADV_DEFAULTS."""
    if config.method not in METHODS:
        raise ValueError(f"method must be one of {', '.join(METHODS)}; got {config.method!r}")
    if config.method == "gaussian":
        given = [name for name in SMOOTHADV_DEFAULTS if getattr(config, name) is not None]
        if given:
            raise ValueError(f"{', '.join(given)}: only for method='smoothadv', got method='gaussian'")
        return
    for name, default in SMOOTHADV_DEFAULTS.items():
        if getattr(config, name) is None:
            object.__setattr__(config, name, default)
    if config.attack not in SMOOTHADV_ATTACKS:
        raise ValueError(f"attack must be one of {', '.join(SMOOTHADV_ATTACKS)}; got {config.attack!r}")
    _check_epsilon(config.epsilon)
    stats.check_count(config.num_steps, "num_steps")
    stats.check_count(config.num_noise_vec, "num_noise_vec")
    stats.check_count(config.warmup_epochs, "warmup_epochs")
    if not isinstance(config.multi_noise, bool):
        raise ValueError(f"multi_noise must be True or False, got {config.multi_noise!r}")


def _is_real(value, minimum: float, *, inclusive: bool = True, maximum: float = math.inf) -> bool:
    """Whether value is a finite int or float (not a bool), >= minimum (> if not inclusive) and < maximum."""
    if isinstance(value, bool) or not isinstance(value, (int, float)) or not math.isfinite(value):
        return False
    return (value >= minimum if inclusive else value > minimum) and value < maximum


def _check_epsilon(epsilon):
    if not _is_real(epsilon, 0):
        raise ValueError(f"epsilon must be a finite number >= 0 (l2, pixels in [0, 1]), got {epsilon!r}")


def _check_extra_data_fields(config: TrainConfig):
    """Validates train_examples, init_from and the self-training fields; stores absolute paths."""
    stats.check_count(config.train_examples, "train_examples", minimum=0)
    if config.init_from is not None:
        object.__setattr__(config, "init_from", os.path.abspath(config.init_from))
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
    if not _is_real(weight, 0, inclusive=False):
        raise ValueError(f"self_training_weight must be a finite number > 0, got {weight!r}")
    object.__setattr__(config, "self_training_weight", float(weight))


def parse_source(source: str):
    """"DATASET[:SPLIT]" -> (dataset, split) for self-training images; split defaults to "train".

    Raises:
        ValueError: an unknown data set, or a split other than "train" (the test split is what
            certify and attack evaluate, so its images must not be trained on, even unlabeled).
    """
    name, _, split = str(source).partition(":")
    split = split or "train"
    if name not in data.KNOWN_DATASETS:
        raise ValueError(f"unlabeled must be DATASET[:SPLIT] with DATASET one of {', '.join(data.KNOWN_DATASETS)}; "
                         f"got {source!r}")
    if split != "train":
        raise ValueError(f"unlabeled must name a train split (test images are what certify and attack evaluate); "
                         f"got {source!r}")
    return name, split


def _check_train_files(config: TrainConfig):
    """Loads init_from and pseudo_labels once, so that a bad file is refused before anything is written."""
    num_classes = data.dataset_info(config.dataset, config.data_dir).num_classes
    if config.init_from is not None:
        _initial_base_model(config, num_classes)
    if config.unlabeled is not None:
        _pseudo_labeled_data(config, num_classes)


def _initial_base_model(config: TrainConfig, num_classes: int) -> keras.Model:
    """A fresh `arch`, or the model of `init_from` (with a new head if its class count differs)."""
    if config.init_from is None:
        return models.get_model(config.arch, num_classes, weight_decay=config.weight_decay)
    base = load_base_model(config.init_from)
    if base.name in models.ARCHITECTURES and base.name != config.arch:
        raise ValueError(f"init_from {config.init_from} holds a {base.name}, but arch is {config.arch!r}; "
                         f"pass arch={base.name!r}")
    if base.output_shape[-1] == num_classes:
        return base
    last = base.layers[-1] if getattr(base, "layers", None) else None
    if not isinstance(last, keras.layers.Dense):
        raise ValueError(f"init_from {config.init_from} outputs {base.output_shape[-1]} classes, not {num_classes}, "
                         "and its last layer is not a Dense layer that could be replaced by a new head")
    # Coupled weight decay wd as in tfsmooth.models: L2(wd / 2) has gradient wd * w.
    regularizer = keras.regularizers.L2(config.weight_decay / 2.0) if config.weight_decay > 0 else None
    outputs = keras.layers.Dense(num_classes, kernel_regularizer=regularizer, name="logits")(last.input)
    return keras.Model(base.inputs, outputs, name=base.name)


def _training_model(config: TrainConfig, base: keras.Model) -> keras.Model:
    if config.method == "smoothadv":
        return SmoothAdvModel(base, config.sigma, attack=config.attack, epsilon=config.epsilon,
                              num_steps=config.num_steps, num_noise_vec=config.num_noise_vec,
                              warmup_epochs=config.warmup_epochs, multi_noise=config.multi_noise, seed=config.seed)
    return GaussianAugmentedModel(base, config.sigma, seed=config.seed)


def _training_data(config: TrainConfig, num_classes: int):
    """Batches of (images, labels) or, with self-training, (images, labels, sample weights)."""
    labeled = data.load_dataset(config.dataset, "train", config.data_dir)
    if config.train_examples:
        labeled = labeled.take(config.train_examples)
    if config.unlabeled is None:
        return data.training_pipeline(labeled, config.batch, seed=config.seed)
    # The label slot carries (label, weight) through the shared pipeline; weight 1 for real labels.
    mixed = labeled.map(lambda x, y: (x, (y, tf.constant(1.0)))).concatenate(
        _pseudo_labeled_data(config, num_classes).map(
            lambda x, y: (x, (y, tf.constant(config.self_training_weight)))))
    batches = data.training_pipeline(mixed, config.batch, seed=config.seed,
                                     shuffle_buffer=max(1, int(mixed.cardinality())))
    return batches.map(lambda x, label_weight: (x, *label_weight))


def _pseudo_labeled_data(config: TrainConfig, num_classes: int):
    """The unlabeled images (their true labels dropped) zipped with the teacher's labels."""
    name, split = parse_source(config.unlabeled)
    data_dir = config.data_dir if name == data.CIFAR10 else None
    images = data.load_dataset(name, split, data_dir).map(lambda x, _: x)
    labels = load_pseudo_labels(config.pseudo_labels, config.unlabeled, num_classes, int(images.cardinality()),
                                data.data_source(name, data_dir))
    return tf.data.Dataset.zip(images, tf.data.Dataset.from_tensor_slices(labels))


@dataclasses.dataclass(frozen=True)
class PseudoLabelConfig:
    """Configuration of `pseudo_label` (self-training; Salman et al. 2019, Sec. 4.2, after Carmon et al.).

    Attributes:
        teacher: path of the teacher base classifier (`.keras`).
        dataset, split, data_dir: the images to label (`tfsmooth.data.load_dataset`).
        batch: images per forward pass.
    """

    teacher: str
    dataset: str = "cifar10"
    split: str = "train"
    batch: int = 1000
    data_dir: Optional[str] = None

    def __post_init__(self):
        stats.check_count(self.batch, "batch")
        if self.dataset not in data.KNOWN_DATASETS:
            raise ValueError(f"dataset must be one of {', '.join(data.KNOWN_DATASETS)}; got {self.dataset!r}")
        if self.split not in data.SPLITS:
            raise ValueError(f"split must be 'train' or 'test', got {self.split!r}")


def pseudo_label(config: PseudoLabelConfig, out: str) -> int:
    """Writes the teacher's top-1 label of every image of a split to an `.npz` file.

    The file holds `label` (int64 [N], in data set order), `dataset`, `split`, `data_source` (the files
    the images came from, `tfsmooth.data.data_source`) and `teacher` (str); read it with
    `load_pseudo_labels` (no pickle). The teacher labels clean images (no noise).

    Returns:
        N, the number of labeled images.

    Raises:
        ValueError / FileNotFoundError: `out` not ending in ".npz", a missing or unloadable teacher,
            a bad data set; then `out` is not written.
    """
    if not str(out).endswith(".npz"):
        raise ValueError(f"out must be a .npz file, got {out!r}")
    teacher = load_base_model(config.teacher)
    images = data.load_dataset(config.dataset, config.split, config.data_dir).map(lambda x, _: x)
    logits = teacher.predict(images.batch(config.batch), verbose=0)
    labels = np.argmax(logits, axis=1).astype(np.int64)
    _atomic(lambda p: np.savez(p, label=labels, dataset=np.array(config.dataset), split=np.array(config.split),
                               data_source=np.array(data.data_source(config.dataset, config.data_dir)),
                               teacher=np.array(os.path.abspath(config.teacher))), os.fspath(out))
    return len(labels)


PSEUDO_LABEL_KEYS = ("label", "dataset", "split", "data_source")
"""The arrays `load_pseudo_labels` reads from a pseudo-labels `.npz` (`pseudo_label` also stores `teacher`)."""


def load_pseudo_labels(path: str, source: str, num_classes: int, count: int, data_source: str) -> np.ndarray:
    """Reads pseudo-labels written by `pseudo_label` and checks they belong to `source`.

    Args:
        path: the `.npz` file.
        source: "DATASET:SPLIT" the labels must have been computed for.
        num_classes: labels must lie in [0, num_classes).
        count: number of images of the source; one label each.
        data_source: `tfsmooth.data.data_source` of the images the labels are attached to; label i
            belongs to image i only if the labels were computed on the same files.

    Returns:
        int64 [count].

    Raises:
        FileNotFoundError: if `path` does not exist.
        ValueError: a file that is not such an `.npz` (e.g. a bare `.npy` array, or one lacking a key
            of `PSEUDO_LABEL_KEYS`), or labels of another source, data source, count or range.
    """
    if not os.path.isfile(path):
        raise FileNotFoundError(f"pseudo-labels file not found: {path}")
    try:
        archive = np.load(path, allow_pickle=False)
        if not isinstance(archive, np.lib.npyio.NpzFile):
            raise ValueError(f"it holds a single {archive.dtype} {archive.shape} array (.npy format)")
        with archive:
            missing = [key for key in PSEUDO_LABEL_KEYS if key not in archive.files]
            if missing:
                raise ValueError(f"it lacks {', '.join(missing)} (rerun `tfsmooth pseudo-label`)")
            found = {key: archive[key] for key in PSEUDO_LABEL_KEYS}
    except (OSError, ValueError, zipfile.BadZipFile) as err:
        raise ValueError(f"{path} is not a pseudo-labels .npz written by `tfsmooth pseudo-label` (a zip of label "
                         f"int64 [N] and str dataset, split, data_source): {err}") from None
    labels, origin = found["label"], f"{found['dataset']}:{found['split']}"
    if origin != source:
        raise ValueError(f"{path} labels {origin}, but the unlabeled source is {source}")
    if str(found["data_source"]) != data_source:
        raise ValueError(f"{path} labels the {source} images of {str(found['data_source'])!r}, but they are read "
                         f"from {data_source!r} now (--data-dir / ${data.DATA_DIR_ENV_VAR}); label i must belong to "
                         f"image i of the same files: rerun `tfsmooth pseudo-label` on them")
    if labels.shape != (count,) or not np.issubdtype(labels.dtype, np.integer):
        raise ValueError(f"{path} must hold {count} integer labels for {source}, got {labels.dtype} {labels.shape}")
    if count and (labels.min() < 0 or labels.max() >= num_classes):
        raise ValueError(f"{path}: labels must lie in [0, {num_classes}), got [{labels.min()}, {labels.max()}]")
    return labels.astype(np.int64)


# ---------------------------------------------------------------------------------------- attack
ATTACKS = (*SMOOTHADV_ATTACKS, "base-pgd")
"""`attack_dataset`'s attacks: the SmoothAdv ones and vanilla PGD on the base classifier."""


@dataclasses.dataclass(frozen=True)
class AttackConfig:
    """Configuration of `attack_dataset`: SmoothAdv attack, then PREDICT at the attacked point.

    Salman et al. 2019, Sec. 4 (the definition of empirical robust accuracy; Sec. 4.3 studies the attack;
    METHODS.md §2).

    Attributes:
        model, dataset, split, data_dir, skip, max, seed, batch: as in `CertifyConfig` (batch: PREDICT's
            noisy copies per forward pass; not part of the run record).
        sigma: noise level of the smoothed classifier (l2, [0, 1] pixel scale), also the attack's.
        attack: "pgd" (`attacks.smooth_adv_pgd`), "ddn" (`attacks.smooth_adv_ddn`) or "base-pgd"
            (`attacks.pgd`: vanilla l2 PGD on the base classifier without noise, the weaker attack
            SmoothAdv is compared with in Salman et al. 2019, Sec. 4.3).
        epsilon: l2 radius of the attack ([0, 1] pixel scale), >= 0.
        num_steps: attack steps T (20 in the paper's evaluation).
        num_noise_vec: noise draws m of estimator (6) (m_test: 1 to 128); unused by "base-pgd".
        estimator: "plug_in" (eq. (6)) or "stein" (eq. (7); pgd only).
        gamma, init_norm: DDN's norm update factor in (0, 1) and initial norm (> 0; None: epsilon), as
            in `attacks.smooth_adv_ddn`; ddn only (the reference evaluation code tunes both).
        n, alpha: draws and failure probability of PREDICT at the attacked point.
        attack_batch: images attacked together (each step's forward pass holds attack_batch * m noisy
            copies). Consecutive selected images are grouped in fixed groups, so a resumed run
            regroups them exactly as an uninterrupted one. Rows do not depend on it except through
            floating-point rounding of batched kernels; not part of the run record.
    """

    model: str
    dataset: str = "cifar10"
    split: str = "test"
    sigma: float = 0.25
    attack: str = "pgd"
    epsilon: float = 0.5
    num_steps: int = 20
    num_noise_vec: int = 32
    estimator: str = "plug_in"
    n: int = 1000
    alpha: float = 0.001
    batch: int = 1000
    skip: int = 1
    max: int = -1
    seed: int = 0
    data_dir: Optional[str] = None
    attack_batch: int = 8
    gamma: float = attacks.DDN_GAMMA
    init_norm: Optional[float] = None

    def __post_init__(self):
        _check_evaluation_fields(self)
        for name in ("num_steps", "num_noise_vec", "attack_batch"):
            stats.check_count(getattr(self, name), name)
        if self.attack not in ATTACKS:
            raise ValueError(f"attack must be one of {', '.join(ATTACKS)}; got {self.attack!r}")
        _check_epsilon(self.epsilon)
        if self.estimator not in attacks.ESTIMATORS or (self.estimator == "stein" and self.attack != "pgd"):
            raise ValueError(f"estimator must be one of {', '.join(attacks.ESTIMATORS)} ('stein' with attack 'pgd' "
                             f"only); got {self.estimator!r} with attack {self.attack!r}")
        if self.attack != "ddn" and (self.gamma != attacks.DDN_GAMMA or self.init_norm is not None):
            raise ValueError(f"gamma and init_norm apply to attack 'ddn' only, got gamma={self.gamma!r}, "
                             f"init_norm={self.init_norm!r} with attack {self.attack!r}")
        if not _is_real(self.gamma, 0, inclusive=False, maximum=1):
            raise ValueError(f"gamma must be a number in (0, 1), got {self.gamma!r}")
        if self.init_norm is not None and not _is_real(self.init_norm, 0, inclusive=False):
            raise ValueError(f"init_norm must be a finite l2 norm > 0 (pixels in [0, 1]) or None, got {self.init_norm!r}")

    def run_record(self) -> dict:
        """What identifies the run's results (stored beside the TSV; a resume must match it)."""
        return _run_record(self, "attack", ["attack_batch", "batch"])


def attack_dataset(config: AttackConfig, out: str, *, on_row: Optional[Callable[[dict], None]] = None) -> int:
    """Attacks every `skip`-th example below `max`, then runs PREDICT at the attacked point.

    One flushed row per example: `idx label predict basePredict correct time` (basePredict: the
    base classifier's class at the attacked point, without noise; correct: PREDICT == label, so
    abstentions count as wrong; time: seconds since the previous row). The mean of `correct` is
    the empirical robust accuracy (`tfsmooth.analysis`). The attack's m draws for example idx are
    stream `tfsmooth.noise.STREAM_ATTACK` under (seed, idx), PREDICT's are its own
    stream: a row depends only on the configuration and idx, so a resumed run gives the same rows.

    Returns:
        The number of rows written by this call.

    Raises:
        ValueError / FileNotFoundError: as `certify_dataset` (n too small to ever predict at this
            alpha, missing model or data, an `out` from another configuration); `out` untouched.
    """
    minimum = stats.min_n_to_predict(config.alpha)
    if config.n < minimum:
        raise ValueError(f"n={config.n} is too small to ever predict at alpha={config.alpha}: use n >= {minimum}")
    info = data.dataset_info(config.dataset, config.data_dir)
    base, record = _load_recorded_model(config, config.run_record)
    smoothed = SmoothedClassifier(base, info.num_classes, config.sigma)
    attack_batch = _attack_function(base, config, info.image_shape)

    def prepare(images, labels, idxs):
        x_adv, base_predict = attack_batch(np.stack(images), np.asarray(labels, np.int64), np.asarray(idxs, np.int64))
        return list(x_adv.numpy()), [{"basePredict": int(p)} for p in base_predict.numpy()]

    answers = functools.partial(smoothed.iter_predict, n=config.n, alpha=config.alpha, batch_size=config.batch,
                                seed=config.seed)
    return _evaluate(config, results.ATTACK_COLUMNS, record, answers, out, on_row, prepare,
                     prepare_group=config.attack_batch)


def _attack_function(base, config: AttackConfig, image_shape):
    """Compiled (images [B, H, W, C], labels [B], idxs [B]) -> (x_adv [B, H, W, C], base classes at x_adv [B]).

    Example idx gets its m draws from block 0 and its attack seed (random directions) from block 1 of
    stream `noise.STREAM_ATTACK` under (config.seed, idx), whatever else is in the batch.
    """
    spec = [tf.TensorSpec([None, *image_shape], tf.float32), tf.TensorSpec([None], tf.int64),
            tf.TensorSpec([None], tf.int64)]

    @tf.function(input_signature=spec)
    def attack_batch(images, labels, idxs):
        draw_seeds = noise.block_seeds(config.seed, idxs, noise.STREAM_ATTACK, tf.zeros_like(idxs))
        step_seeds = noise.block_seeds(config.seed, idxs, noise.STREAM_ATTACK, tf.ones_like(idxs))
        draws = tf.map_fn(
            lambda s: tf.random.stateless_normal([config.num_noise_vec, *image_shape], seed=s, stddev=config.sigma),
            draw_seeds, fn_output_signature=tf.float32)
        arguments = dict(epsilon=config.epsilon, num_steps=config.num_steps, seed=step_seeds)
        if config.attack == "pgd":
            x_adv = attacks.smooth_adv_pgd(base, images, labels, draws, estimator=config.estimator, **arguments)
        elif config.attack == "base-pgd":
            x_adv = attacks.pgd(base, images, labels, **arguments)
        else:
            x_adv = attacks.smooth_adv_ddn(base, images, labels, draws, gamma=config.gamma, init_norm=config.init_norm,
                                           **arguments)
        return x_adv, tf.argmax(base(x_adv, training=False), axis=1)

    return attack_batch
