"""Data sets for tfsmooth: the only module that reads image data.

Every loader returns a ``tf.data.Dataset`` of ``(image, label)`` pairs with
``image`` float32 ``[32, 32, 3]`` in [0, 1] (pixel / 255, no normalization: the
model's first layer normalizes, so Gaussian noise, sigma and radii all live on
the [0, 1] pixel scale, Cohen et al. 2019, METHODS.md §1) and ``label`` an int64
scalar in [0, num_classes).

Known data sets:

* ``"cifar10"``: CIFAR-10 (Krizhevsky 2009, "Learning Multiple Layers of Features
  from Tiny Images"). Read from a local directory in the official *binary version*
  layout when ``data_dir`` is given or the environment variable
  ``TFSMOOTH_DATA_DIR`` is set (an explicit ``data_dir`` wins), otherwise through
  tensorflow-datasets (``tfds.load("cifar10")``, which downloads on first use),
  whose shuffled records are put back in the order of the binary files (by their
  ``id`` feature), so position ``i`` is the same image from either source.
  ``data_source`` names which source a ``(name, data_dir)`` reads.
* ``"cifar10_sample"``: a small label-balanced subset of the real CIFAR-10 images
  shipped inside the package (``tfsmooth/resources/cifar10_sample.npz``, built by
  ``tfsmooth/resources/build_cifar10_sample.py``): 400 training images per class
  and 100 test images per class. For demos and end-to-end tests, not for
  published numbers.
"""

from __future__ import annotations

import dataclasses
import importlib.resources
import os
import pathlib
import socket
import urllib.error
from collections.abc import Iterator
from typing import NoReturn

import numpy as np
import tensorflow as tf

from tfsmooth import checks, registry

CIFAR10 = "cifar10"
CIFAR10_SAMPLE = "cifar10_sample"
KNOWN_DATASETS = (CIFAR10, CIFAR10_SAMPLE)
SPLITS = registry.SPLITS

#: Environment variable naming a local CIFAR-10 binary-version directory.
DATA_DIR_ENV_VAR = "TFSMOOTH_DATA_DIR"
#: Values of `data_source`: the embedded sample, a local directory, tfds.
SOURCE_SAMPLE = "embedded sample"
SOURCE_LOCAL = "local CIFAR-10 binary files"
SOURCE_TFDS = "tensorflow-datasets"

CIFAR10_CLASS_NAMES = (
    "airplane", "automobile", "bird", "cat", "deer",
    "dog", "frog", "horse", "ship", "truck",
)
#: Per-channel (R, G, B) mean and standard deviation of the CIFAR-10 training
#: images on the [0, 1] scale, as used by Cohen et al.'s reference code
#: (METHODS.md §1); consumed by the model's normalization layer.
CIFAR10_MEAN = (0.4914, 0.4822, 0.4465)
CIFAR10_STD = (0.2023, 0.1994, 0.2010)

IMAGE_SHAPE = (32, 32, 3)
NUM_CLASSES = 10
#: CIFAR-10 binary version: 1 label byte, then 1,024 R, 1,024 G, 1,024 B bytes.
RECORD_BYTES = 1 + 32 * 32 * 3
RECORDS_PER_FILE = 10_000
META_FILE = "batches.meta.txt"
SPLIT_FILES = {
    "train": tuple(f"data_batch_{i}.bin" for i in range(1, 6)),
    "test": ("test_batch.bin",),
}

_SAMPLE_RESOURCE = "resources/cifar10_sample.npz"
_SAMPLE_BUILDER = "tfsmooth/resources/build_cifar10_sample.py"


@dataclasses.dataclass(frozen=True)
class DatasetInfo:
    """Static description of a data set.

    Attributes:
        name: Data set name, one of ``KNOWN_DATASETS``.
        num_classes: Number of classes; labels lie in [0, num_classes).
        class_names: One name per class, in label order.
        image_shape: ``(height, width, channels)`` of every image, in pixels.
        mean: Per-channel mean of the training images, [0, 1] pixel scale.
        std: Per-channel standard deviation of the training images, [0, 1]
            pixel scale, all > 0.

    Raises:
        ValueError: If the fields disagree (number of class names, channels of
            mean/std) or a value is out of range.
    """

    name: str
    num_classes: int
    class_names: tuple[str, ...]
    image_shape: tuple[int, int, int]
    mean: tuple[float, ...]
    std: tuple[float, ...]

    def __post_init__(self):
        if self.num_classes < 2:
            raise ValueError(f"num_classes must be >= 2, got {self.num_classes}")
        if len(self.class_names) != self.num_classes or not all(self.class_names):
            raise ValueError(
                f"class_names must hold {self.num_classes} non-empty names, "
                f"got {self.class_names!r}")
        if len(self.image_shape) != 3 or min(self.image_shape) < 1:
            raise ValueError(
                f"image_shape must be (height, width, channels) of positive "
                f"ints, got {self.image_shape!r}")
        channels = self.image_shape[2]
        if len(self.mean) != channels or len(self.std) != channels:
            raise ValueError(
                f"mean and std must have one value per channel ({channels}), "
                f"got mean={self.mean!r}, std={self.std!r}")
        if min(self.std) <= 0:
            raise ValueError(f"std values must be > 0, got {self.std!r}")


def _check_name_and_split(name: str, split: str | None = None) -> None:
    if name not in KNOWN_DATASETS:
        raise ValueError(
            f"Unknown dataset name {name!r}; known datasets: "
            f"{', '.join(KNOWN_DATASETS)}")
    if split is not None and split not in SPLITS:
        raise ValueError(
            f"Unknown split {split!r} for dataset {name!r}; expected one of "
            f"{', '.join(SPLITS)}")


def resolve_data_dir(data_dir: str | os.PathLike | None = None) -> pathlib.Path | None:
    """Returns the local CIFAR-10 directory to read, or None for tensorflow-datasets.

    Precedence: an explicit ``data_dir`` wins over the ``TFSMOOTH_DATA_DIR``
    environment variable; with neither (or an empty variable) returns None.

    Args:
        data_dir: Directory in the CIFAR-10 binary version layout, or None.

    Returns:
        The directory as a ``pathlib.Path`` (not checked to exist), or None.
    """
    if data_dir is not None:
        return pathlib.Path(data_dir)
    from_env = os.environ.get(DATA_DIR_ENV_VAR)
    return pathlib.Path(from_env) if from_env else None


def _check_data_dir(data_dir: pathlib.Path, file_names: tuple[str, ...]) -> None:
    """Raises FileNotFoundError unless ``data_dir`` holds all ``file_names``."""
    if not data_dir.is_dir():
        raise FileNotFoundError(
            f"CIFAR-10 data directory {str(data_dir)!r} does not exist or is "
            f"not a directory (from data_dir or ${DATA_DIR_ENV_VAR}); expected a "
            f"directory in the CIFAR-10 binary version layout")
    missing = [f for f in file_names if not (data_dir / f).is_file()]
    if missing:
        raise FileNotFoundError(
            f"CIFAR-10 data directory {str(data_dir)!r} lacks {', '.join(missing)}; "
            f"expected the binary version layout (data_batch_1.bin ... "
            f"data_batch_5.bin, test_batch.bin, {META_FILE})")


def read_cifar10_file(path: str | os.PathLike) -> tuple[np.ndarray, np.ndarray]:
    """Reads one CIFAR-10 binary version file (e.g. ``data_batch_1.bin``).

    The file holds 10,000 records of 3,073 bytes: one label byte in [0, 9], then
    1,024 red, 1,024 green and 1,024 blue bytes, each a row-major 32x32 plane
    (CIFAR-10 web page, "Binary version").

    Args:
        path: Path of the ``.bin`` file.

    Returns:
        ``(images, labels)``: images uint8 ``[10000, 32, 32, 3]`` (HWC, RGB,
        values 0-255), labels uint8 ``[10000]`` in [0, 9], in file order.

    Raises:
        FileNotFoundError: If ``path`` does not exist.
        ValueError: If the file size is not a multiple of 3,073 bytes, it does
            not hold exactly 10,000 records, or a label byte is above 9.
    """
    path = pathlib.Path(path)
    raw = np.frombuffer(path.read_bytes(), dtype=np.uint8)
    if raw.size % RECORD_BYTES:
        raise ValueError(
            f"CIFAR-10 file {str(path)!r} has {raw.size} bytes, not a multiple of "
            f"the {RECORD_BYTES}-byte record (1 label byte + 3,072 pixel bytes); "
            f"the file is truncated or not in the binary version layout")
    num_records = raw.size // RECORD_BYTES
    if num_records != RECORDS_PER_FILE:
        raise ValueError(
            f"CIFAR-10 file {str(path)!r} holds {num_records} records, expected "
            f"{RECORDS_PER_FILE} ({RECORDS_PER_FILE * RECORD_BYTES} bytes)")
    records = raw.reshape(num_records, RECORD_BYTES)
    labels = records[:, 0]
    bad = np.flatnonzero(labels >= NUM_CLASSES)
    if bad.size:
        raise ValueError(
            f"CIFAR-10 file {str(path)!r}: record {bad[0]} has label byte "
            f"{labels[bad[0]]}, expected 0-{NUM_CLASSES - 1} "
            f"({bad.size} bad records in all)")
    images = records[:, 1:].reshape(num_records, 3, 32, 32).transpose(0, 2, 3, 1)
    return images, labels


def read_cifar10_arrays(
        data_dir: str | os.PathLike, split: str) -> tuple[np.ndarray, np.ndarray]:
    """Reads a whole CIFAR-10 split from a local binary version directory.

    Args:
        data_dir: Directory holding ``data_batch_1.bin`` ... ``data_batch_5.bin``
            (train) and ``test_batch.bin`` (test).
        split: ``"train"`` (50,000 images, the five batches in order) or
            ``"test"`` (10,000 images).

    Returns:
        ``(images, labels)``: images uint8 ``[N, 32, 32, 3]`` (values 0-255,
        C-contiguous), labels uint8 ``[N]`` in [0, 9]; position ``i`` is the
        ``i``-th record of the split (train: ``10000 * (batch - 1) + record``).

    Raises:
        ValueError: If ``split`` is unknown or a file is malformed (see
            ``read_cifar10_file``).
        FileNotFoundError: If the directory or one of the split's files is
            missing.
    """
    _check_name_and_split(CIFAR10, split)
    data_dir = pathlib.Path(data_dir)
    file_names = SPLIT_FILES[split]
    _check_data_dir(data_dir, file_names)
    num = len(file_names) * RECORDS_PER_FILE
    images = np.empty((num, *IMAGE_SHAPE), dtype=np.uint8)
    labels = np.empty((num,), dtype=np.uint8)
    for i, file_name in enumerate(file_names):
        rows = slice(i * RECORDS_PER_FILE, (i + 1) * RECORDS_PER_FILE)
        images[rows], labels[rows] = read_cifar10_file(data_dir / file_name)
    return images, labels


def _read_class_names(data_dir: pathlib.Path) -> tuple[str, ...]:
    _check_data_dir(data_dir, (META_FILE,))
    path = data_dir / META_FILE
    names = tuple(line.strip() for line in path.read_text().splitlines() if line.strip())
    if len(names) != NUM_CLASSES:
        raise ValueError(
            f"{str(path)!r} lists {len(names)} class names, expected "
            f"{NUM_CLASSES} (one per line, in label order)")
    return names


def load_sample_arrays() -> dict[str, np.ndarray]:
    """Loads the arrays of the embedded ``cifar10_sample`` resource.

    Returns:
        Dict with ``train_images`` uint8 ``[4000, 32, 32, 3]``, ``train_labels``
        uint8 ``[4000]``, ``test_images`` uint8 ``[1000, 32, 32, 3]``,
        ``test_labels`` uint8 ``[1000]`` (labels in [0, 9]), ``train_indices`` /
        ``test_indices`` int64 (position of each image in the local CIFAR-10
        train / test split it was copied from) and ``class_names`` (str
        ``[10]``). Loaded with ``allow_pickle=False``.

    Raises:
        FileNotFoundError: If the resource file is not installed.
    """
    resource = importlib.resources.files("tfsmooth") / _SAMPLE_RESOURCE
    if not resource.is_file():
        raise FileNotFoundError(
            f"Embedded sample {_SAMPLE_RESOURCE!r} is missing from the "
            f"tfsmooth package; rebuild it with {_SAMPLE_BUILDER}")
    with resource.open("rb") as f, np.load(f, allow_pickle=False) as npz:
        return {key: npz[key] for key in npz.files}


def _to_float(image: tf.Tensor, label: tf.Tensor) -> tuple[tf.Tensor, tf.Tensor]:
    """uint8 [32, 32, 3] -> float32 in [0, 1] (pixel / 255); label -> int64."""
    return tf.cast(image, tf.float32) / 255.0, tf.cast(label, tf.int64)


def _from_arrays(images: np.ndarray, labels: np.ndarray) -> tf.data.Dataset:
    ds = tf.data.Dataset.from_tensor_slices((images, labels))
    return ds.map(_to_float, num_parallel_calls=tf.data.AUTOTUNE)


def _load_tfds(split: str) -> tf.data.Dataset:
    """tensorflow-datasets' CIFAR-10 split, put back in the order of the binary files.

    tfds stores the records shuffled (keyed by a hash of their position), so its
    element i is not record i of ``test_batch.bin``; its ``id`` feature
    (``"test_00042"``: split prefix + position in the files) gives the original
    position, and the split is reordered by it.

    Raises:
        ImportError: If tensorflow-datasets, or a module it imports while
            loading (e.g. ``importlib_resources``), is missing; the one-line
            message names the module and the package to install.
        ConnectionError: If downloading CIFAR-10 failed for lack of a network
            (or the server refused it); the message says how to read local
            files instead.
        ValueError: If the records' ids do not give their file positions.
    """
    try:
        import tensorflow_datasets as tfds  # pylint: disable=import-outside-toplevel
        ds = tfds.load(CIFAR10, split=split)
    except Exception as err:  # pylint: disable=broad-except
        _raise_tfds_error(err)
    ids, images, labels = [], [], []
    for batch in ds.batch(RECORDS_PER_FILE).as_numpy_iterator():
        ids.append(batch["id"])
        images.append(batch["image"])
        labels.append(batch["label"])
    order = _file_order(np.concatenate(ids), split)
    return _from_arrays(np.concatenate(images)[order], np.concatenate(labels)[order])


_LOCAL_FILES_HINT = (
    f"pass data_dir / --data-dir or set ${DATA_DIR_ENV_VAR} to a local "
    f"CIFAR-10 binary version directory")


def _raise_tfds_error(err: Exception) -> NoReturn:
    """Re-raises a failure of importing tfds or of ``tfds.load`` with its real cause in one line.

    The first exception in the chain (``err``, then what it was raised from or
    while handling) that tells a cause decides: a missing module
    (tensorflow-datasets 4.9.10 imports ``importlib_resources`` inside
    ``tfds.load`` without declaring it) becomes an ``ImportError`` naming it; a
    network failure becomes a ``ConnectionError`` pointing to local files;
    anything else is re-raised unchanged, with a note.
    """
    network_types = _network_error_types()
    for cause in _exception_chain(err):
        if isinstance(cause, ImportError):
            module = (cause.name or "").partition(".")[0]
            package = {"tensorflow_datasets": "tensorflow-datasets"}.get(module, module)
            install = f"pip install {package}; or, " if package else "or, "
            raise ImportError(
                f"loading {CIFAR10!r} through tensorflow-datasets failed: "
                f"{_one_line(cause)} ({install}to read local files instead, "
                f"{_LOCAL_FILES_HINT})", name=cause.name) from err
        if isinstance(cause, network_types):
            raise ConnectionError(
                f"could not download {CIFAR10!r} through tensorflow-datasets (no "
                f"network?): {type(cause).__name__}: {_one_line(cause)}; "
                f"without network access {_LOCAL_FILES_HINT}") from err
    err.add_note(f"tfsmooth: loading {CIFAR10!r} through tensorflow-datasets "
                 f"failed; to read local files instead, {_LOCAL_FILES_HINT}")
    raise err


def _exception_chain(err: BaseException) -> list[BaseException]:
    """``err`` and the exceptions it was raised from or while handling, outermost first."""
    chain = []
    while err is not None and all(err is not seen for seen in chain):
        chain.append(err)
        err = err.__cause__ or err.__context__
    return chain


def _network_error_types() -> tuple[type[BaseException], ...]:
    """Exception types that mean a download could not reach (or was refused by) its server."""
    found = [ConnectionError, TimeoutError, socket.gaierror, socket.herror, urllib.error.URLError]
    try:  # tfds downloads with requests (and reports an HTTP status other than 200 as DownloadError)
        import requests  # pylint: disable=import-outside-toplevel
        found += [requests.exceptions.ConnectionError, requests.exceptions.Timeout]
        from tensorflow_datasets.core.download import util  # pylint: disable=import-outside-toplevel
        found.append(util.DownloadError)
    except ImportError:
        pass
    return tuple(found)


def _one_line(err: BaseException) -> str:
    return " ".join(str(err).split())


def _file_order(ids: np.ndarray, split: str) -> np.ndarray:
    """Permutation putting tfds records with ids ``b"<split>_<position>"`` in position order.

    Raises:
        ValueError: If an id is not ``<split>_<digits>`` or the positions are not
            0, 1, ..., N - 1, each once.
    """
    prefix = f"{split}_".encode()
    digits = [i[len(prefix):] if i.startswith(prefix) else b"" for i in ids]
    positions = np.array([int(d) if d.isdigit() else -1 for d in digits], dtype=np.int64)
    order = np.argsort(positions, kind="stable")
    if not np.array_equal(positions[order], np.arange(len(ids))):
        raise ValueError(
            f"tensorflow-datasets {CIFAR10!r} {split} ids must be "
            f"{prefix.decode()}<position> numbering the {len(ids)} records "
            f"0..{len(ids) - 1} once each, got e.g. {sorted(ids)[:3]}; cannot "
            f"restore the order of the CIFAR-10 binary files")
    return order


def load_dataset(
        name: str, split: str,
        data_dir: str | os.PathLike | None = None) -> tf.data.Dataset:
    """Loads a data set split as ``(image, label)`` pairs in file order.

    Args:
        name: ``"cifar10"`` or ``"cifar10_sample"`` (see the module docstring).
        split: ``"train"`` or ``"test"``.
        data_dir: For ``"cifar10"`` only: a directory in the CIFAR-10 binary
            version layout. Defaults to ``$TFSMOOTH_DATA_DIR``; if that is unset
            too, tensorflow-datasets is used (downloads on first use).

    Returns:
        A finite, unshuffled ``tf.data.Dataset`` of ``(image, label)``: image
        float32 ``[32, 32, 3]`` with values in [0, 1] (byte / 255), label int64
        scalar in [0, 9]. cifar10: 50,000 train / 10,000 test elements, in the
        order of the binary version files (also when read through
        tensorflow-datasets); cifar10_sample: 4,000 train / 1,000 test elements.

    Raises:
        ValueError: If ``name`` or ``split`` is unknown, ``data_dir`` is given
            for ``"cifar10_sample"``, a local file is malformed, or the
            tensorflow-datasets records' ids do not give their file positions.
        FileNotFoundError: If the local directory or a file it should hold is
            missing.
        ImportError: If the tensorflow-datasets path lacks a module (the
            message names it and the package to install).
        ConnectionError: If the tensorflow-datasets path cannot download
            CIFAR-10 (no network: use local files).
    """
    _check_name_and_split(name, split)
    if name == CIFAR10_SAMPLE:
        _check_no_data_dir(data_dir)
        arrays = load_sample_arrays()
        return _from_arrays(arrays[f"{split}_images"], arrays[f"{split}_labels"])
    local_dir = resolve_data_dir(data_dir)
    if local_dir is None:
        return _load_tfds(split)
    return _from_arrays(*read_cifar10_arrays(local_dir, split))


def _check_no_data_dir(data_dir) -> None:
    if data_dir is not None:
        raise ValueError(
            f"data_dir applies to {CIFAR10!r} only; {CIFAR10_SAMPLE!r} is "
            f"embedded in the package, got data_dir={str(data_dir)!r}")


def data_source(name: str, data_dir: str | os.PathLike | None = None) -> str:
    """Names where ``load_dataset(name, split, data_dir)`` reads its images.

    Results and pseudo-labels refer to images by their position ``idx`` in a
    split; recording the source lets a resumed run or a student refuse
    positions that came from another source. Both CIFAR-10 sources are in the
    order of the binary files (tensorflow-datasets' records are reordered by
    their ``id``), so this is a conservative check; the local directory's path
    is not part of it, so moved or copied data stays the same source.

    Args:
        name: ``"cifar10"`` or ``"cifar10_sample"``.
        data_dir: As in ``load_dataset`` (default ``$TFSMOOTH_DATA_DIR``).

    Returns:
        ``"embedded sample"`` for ``"cifar10_sample"``; for ``"cifar10"``,
        ``"local CIFAR-10 binary files"`` when a local directory is given or
        set (not checked to exist), else ``"tensorflow-datasets"``.

    Raises:
        ValueError: If ``name`` is unknown or ``data_dir`` is given for
            ``"cifar10_sample"``.
    """
    _check_name_and_split(name)
    if name == CIFAR10_SAMPLE:
        _check_no_data_dir(data_dir)
        return SOURCE_SAMPLE
    local_dir = resolve_data_dir(data_dir)
    if local_dir is None:
        return SOURCE_TFDS
    return SOURCE_LOCAL


def dataset_info(name: str, data_dir: str | os.PathLike | None = None) -> DatasetInfo:
    """Describes a data set: classes, image shape, normalization constants.

    Args:
        name: ``"cifar10"`` or ``"cifar10_sample"``.
        data_dir: For ``"cifar10"``: local directory (default
            ``$TFSMOOTH_DATA_DIR``) whose ``batches.meta.txt`` gives the class
            names; without one, the standard CIFAR-10 names are used.

    Returns:
        A ``DatasetInfo`` with 10 classes, image shape (32, 32, 3) and the
        CIFAR-10 mean/std of METHODS.md §1.

    Raises:
        ValueError: If ``name`` is unknown, ``data_dir`` is given for
            ``"cifar10_sample"``, or ``batches.meta.txt`` does not list 10 names.
        FileNotFoundError: If the local directory or its ``batches.meta.txt``
            is missing.
    """
    _check_name_and_split(name)
    class_names = CIFAR10_CLASS_NAMES
    if name == CIFAR10_SAMPLE:
        _check_no_data_dir(data_dir)
    if name == CIFAR10:
        local_dir = resolve_data_dir(data_dir)
        if local_dir is not None:
            class_names = _read_class_names(local_dir)
    return DatasetInfo(
        name=name, num_classes=NUM_CLASSES, class_names=class_names,
        image_shape=IMAGE_SHAPE, mean=CIFAR10_MEAN, std=CIFAR10_STD)


def augment(image: tf.Tensor, label: tf.Tensor,
            seed: tf.Tensor) -> tuple[tf.Tensor, tf.Tensor]:
    """Standard CIFAR training augmentation: random crop (pad 4) + horizontal flip.

    Pads the image with 4 zero pixels on every side, crops a random window of
    the original size and flips it left-right with probability 1/2 (He et al.
    2016, §4.2; the recipe of Cohen et al. 2019, METHODS.md §1). Uses stateless
    random ops: the output is a deterministic function of ``(image, seed)``.

    Args:
        image: float32 ``[height, width, channels]``, values in [0, 1].
        label: Passed through unchanged.
        seed: int32/int64 tensor of shape ``[2]``; the same seed gives the same
            crop offset and flip decision.

    Returns:
        ``(augmented_image, label)``; augmented_image has the dtype and shape of
        ``image`` and values in [0, 1] (padding is 0, i.e. black).

    Raises:
        ValueError: If ``image`` is not a rank-3 floating tensor with a static
            shape, or ``seed`` does not have shape ``[2]``.
    """
    image = tf.convert_to_tensor(image)
    seed = tf.convert_to_tensor(seed)
    if image.shape.rank != 3 or not image.shape.is_fully_defined() \
            or not image.dtype.is_floating:
        raise ValueError(
            f"image must be a float [height, width, channels] tensor with a "
            f"static shape, got dtype {image.dtype.name}, shape {image.shape}")
    if seed.shape != (2,) or not seed.dtype.is_integer:
        raise ValueError(
            f"seed must be an integer tensor of shape [2], got dtype "
            f"{seed.dtype.name}, shape {seed.shape}")
    crop_seed, flip_seed = tf.unstack(
        tf.random.experimental.stateless_split(seed, num=2))
    padded = tf.pad(image, [[4, 4], [4, 4], [0, 0]])
    cropped = tf.image.stateless_random_crop(padded, size=image.shape.as_list(),
                                            seed=crop_seed)
    return tf.image.stateless_random_flip_left_right(cropped, seed=flip_seed), label


_augment_example = augment  # `training_pipeline` has a bool argument named augment.


def training_pipeline(ds: tf.data.Dataset, batch_size: int, *, seed: int,
                      augment: bool = True,
                      shuffle_buffer: int = 50_000) -> tf.data.Dataset:
    """Shuffles, augments, batches and prefetches a training split.

    Reproducible: the same ``ds``, ``seed`` and arguments give the same batches
    in the same order in the first epoch (for a given ``tf.random.set_seed``
    state: tf.data combines op seeds with the global seed). Each further
    iteration (epoch) reshuffles and draws fresh augmentations, again
    determined by ``seed``.

    Args:
        ds: Dataset of ``(image, label)``, image float32 ``[32, 32, 3]`` in
            [0, 1] (as returned by ``load_dataset``), unbatched.
        batch_size: Examples per batch, >= 1; the last batch may be smaller.
        seed: Non-negative int fixing the shuffle order and the per-example
            augmentation seeds (two independent streams derived with
            ``np.random.SeedSequence``).
        augment: Whether to apply ``augment`` (random crop + flip).
        shuffle_buffer: Shuffle buffer size, >= 1; 50,000 (default) shuffles
            the whole CIFAR-10 training set uniformly.

    Returns:
        Dataset of ``(images, labels)``: images float32
        ``[batch, 32, 32, 3]`` in [0, 1], labels int64 ``[batch]``.

    Raises:
        ValueError: If ``batch_size``, ``seed`` or ``shuffle_buffer`` is out of
            range, or ``ds`` is not an unbatched dataset of (image, label).
    """
    checks.check_count(batch_size, "batch_size")
    checks.check_count(seed, "seed", minimum=0)
    checks.check_count(shuffle_buffer, "shuffle_buffer")
    spec = ds.element_spec
    if not (isinstance(spec, tuple) and len(spec) == 2 and spec[0].shape.rank == 3):
        raise ValueError(
            f"ds must yield unbatched (image [height, width, channels], label) "
            f"pairs, got element_spec {spec}")
    shuffle_seed, augment_seed = np.random.SeedSequence(int(seed)).generate_state(2)
    ds = ds.shuffle(shuffle_buffer, seed=int(shuffle_seed),
                    reshuffle_each_iteration=True)
    if augment:
        # One independent [2] int64 seed per example; new stream every epoch.
        example_seeds = tf.data.Dataset.random(
            seed=int(augment_seed), rerandomize_each_iteration=True
        ).batch(2, drop_remainder=True)
        ds = tf.data.Dataset.zip(ds, example_seeds).map(
            lambda example, s: _augment_example(*example, s),
            num_parallel_calls=tf.data.AUTOTUNE)
    return ds.batch(batch_size).prefetch(tf.data.AUTOTUNE)


def select_examples(ds: tf.data.Dataset, skip: int,
                    max_index: int = -1) -> Iterator[tuple[int, np.ndarray, int]]:
    """Iterates every ``skip``-th example of a split, as certification does.

    Follows the convention of Cohen et al.'s ``certify.py``: example ``i`` (its
    position in ``ds``, from 0) is used iff ``i % skip == 0``, and iteration
    stops at the first ``i >= max_index``. E.g. the CIFAR-10 test set with
    ``skip=20`` gives indices 0, 20, ..., 9980 (500 images).

    Args:
        ds: Unbatched dataset of ``(image, label)`` in a fixed order.
        skip: Stride, >= 1.
        max_index: Exclusive upper bound on the index; -1 means no bound.

    Returns:
        An iterator of ``(idx, image, label)``: idx int, image numpy float32
        ``[32, 32, 3]`` in [0, 1], label int.

    Raises:
        ValueError: If ``skip < 1`` or ``max_index < -1`` (checked at call time).
    """
    checks.check_count(skip, "skip")
    checks.check_count(max_index, "max_index (-1 for no limit)", minimum=-1)
    if max_index >= 0:
        ds = ds.take(max_index)
    selected = ds.enumerate().shard(num_shards=int(skip), index=0)
    return ((int(idx), image, int(label))
            for idx, (image, label) in selected.as_numpy_iterator())
