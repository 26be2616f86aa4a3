"""Data sets for tfsmooth: the only module that reads image data.

Every loader returns a ``tf.data.Dataset`` of ``(image, label)`` pairs in a
fixed order, with ``image`` float32 ``[height, width, channels]`` in [0, 1]
(byte / 255, no normalization: the model's first layer normalizes, so Gaussian
noise, sigma and radii all live on the [0, 1] pixel scale, Cohen et al. 2019,
METHODS.md §1) and ``label`` an int64 scalar in [0, num_classes).
``dataset_info`` gives the number of classes, the image shape and the
normalization constants; ``data_source`` names where the images come from.

A data set name (``check_dataset_name``) takes one of three forms:

* A fixed name of ``KNOWN_DATASETS``:

  - ``"cifar10"``: CIFAR-10 (Krizhevsky 2009, "Learning Multiple Layers of
    Features from Tiny Images"), ``[32, 32, 3]``, 10 classes. Read from a local
    directory in the official *binary version* layout when ``data_dir`` is given
    or ``$TFSMOOTH_DATA_DIR`` is set (an explicit ``data_dir`` wins), otherwise
    through tensorflow-datasets (``tfds.load("cifar10")``, which downloads on
    first use), whose shuffled records are put back in the order of the binary
    files (by their ``id`` feature), so position ``i`` is the same image from
    either source.
  - ``"cifar10_sample"``: a small label-balanced subset of the real CIFAR-10
    images shipped inside the package (``tfsmooth/resources/cifar10_sample.npz``,
    built by ``tfsmooth/resources/build_cifar10_sample.py``): 400 training
    images per class and 100 test images per class. For demos and end-to-end
    tests, not for published numbers.
  - ``"mnist"``: MNIST (LeCun et al. 1998), ``[28, 28, 1]``, 10 classes. Read
    from a directory of the official idx files (``t10k-images-idx3-ubyte``,
    ``t10k-labels-idx1-ubyte``, ``train-images-idx3-ubyte``,
    ``train-labels-idx1-ubyte``, each plain or ``.gz``) when ``data_dir`` is
    given or ``$TFSMOOTH_MNIST_DIR`` is set (not ``$TFSMOOTH_DATA_DIR``, which
    names CIFAR-10), in the files' order; otherwise through tensorflow-datasets'
    ``mnist``, in tfds's order, which is *not* the files' order (tfds has no
    record ids to restore it), so the two sources have different
    ``data_source``.

* ``"tfds:NAME"``: any tensorflow-datasets image classification data set (an
  ``Image`` feature of fixed shape with dtype uint8 and a ``ClassLabel``, its
  supervised keys), e.g. ``"tfds:fashion_mnist"``, loaded with
  ``tfds.load(NAME, split=split, as_supervised=True)`` in tfds's order (tfds
  reads its prepared files in a fixed order; that order is the data set's
  order). ``data_dir`` is then tfds's own data directory. ``"tfds:cifar10"``
  therefore has tfds's order, while ``"cifar10"`` has the binary files' order.
* A path ending in ``.npz`` holding ``x_train``, ``y_train``, ``x_test``,
  ``y_test`` (either split may be absent) and optionally ``class_names``; see
  ``read_npz_split``.
"""

from __future__ import annotations

import dataclasses
import functools
import gzip
import hashlib
import importlib.resources
import os
import pathlib
import socket
import urllib.error
import zipfile
import zlib
from collections.abc import Iterator
from typing import NoReturn

import numpy as np
import tensorflow as tf

from tfsmooth import checks, registry

CIFAR10 = "cifar10"
CIFAR10_SAMPLE = "cifar10_sample"
MNIST = "mnist"
#: The fixed data set names; ``check_dataset_name`` also accepts
#: ``TFDS_PREFIX + NAME`` and paths ending in ``NPZ_SUFFIX``.
KNOWN_DATASETS = (CIFAR10, CIFAR10_SAMPLE, MNIST)
TFDS_PREFIX = "tfds:"
NPZ_SUFFIX = ".npz"
SPLITS = registry.SPLITS

#: Environment variable naming a local CIFAR-10 binary-version directory.
DATA_DIR_ENV_VAR = "TFSMOOTH_DATA_DIR"
#: Environment variable naming a local directory of the MNIST idx files.
MNIST_DIR_ENV_VAR = "TFSMOOTH_MNIST_DIR"
#: Values of `data_source` for the fixed names: the embedded sample, a local
#: directory, tfds. (``tfds:NAME`` and ``.npz`` sources name the data set and
#: version, or the file's hash.)
SOURCE_SAMPLE = "embedded sample"
SOURCE_LOCAL = "local CIFAR-10 binary files"
SOURCE_LOCAL_MNIST = "local MNIST idx files"
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

MNIST_IMAGE_SHAPE = (28, 28, 1)
MNIST_CLASS_NAMES = tuple(str(digit) for digit in range(10))
#: Mean and standard deviation of the 60,000 MNIST training images on the
#: [0, 1] scale (all pixels pooled), the constants of PyTorch's MNIST example
#: (pytorch/examples, mnist/main.py: ``transforms.Normalize((0.1307,),
#: (0.3081,))``). The test images here give 0.1325 and 0.3105.
MNIST_MEAN = (0.1307,)
MNIST_STD = (0.3081,)
#: (images, labels) idx file names per split, as distributed (each may be
#: gzipped, with ``.gz`` appended).
MNIST_SPLIT_FILES = {
    "train": ("train-images-idx3-ubyte", "train-labels-idx1-ubyte"),
    "test": ("t10k-images-idx3-ubyte", "t10k-labels-idx1-ubyte"),
}
#: idx magic numbers (LeCun's MNIST page): 0x00000803 = unsigned bytes, 3
#: dimensions (images); 0x00000801 = unsigned bytes, 1 dimension (labels).
IDX_IMAGES_MAGIC = 0x00000803
IDX_LABELS_MAGIC = 0x00000801

#: Normalization constants of ``tfds:NAME`` data sets, per channel on the [0, 1]
#: scale. Not statistics of the data (those would need a pass over the whole
#: training split, i.e. a download, just to describe it): a neutral centre and
#: spread, used only by the normalization layer of a freshly built model (a
#: model loaded from a file keeps its own), which trains to the same accuracy
#: with any such fixed affine map. Convert to an ``.npz`` for measured values.
UNMEASURED_MEAN = 0.5
UNMEASURED_STD = 0.25

#: Keys of a data set ``.npz``: images and labels per split.
NPZ_KEYS = {"train": ("x_train", "y_train"), "test": ("x_test", "y_test")}
NPZ_CLASS_NAMES_KEY = "class_names"

_SAMPLE_RESOURCE = "resources/cifar10_sample.npz"
_SAMPLE_BUILDER = "tfsmooth/resources/build_cifar10_sample.py"


@dataclasses.dataclass(frozen=True)
class DatasetInfo:
    """Static description of a data set.

    Attributes:
        name: Data set name, as given to ``dataset_info`` (see
            ``check_dataset_name``).
        num_classes: Number of classes; labels lie in [0, num_classes).
        class_names: One name per class, in label order.
        image_shape: ``(height, width, channels)`` of every image, in pixels.
        mean: Per-channel mean of the training images, [0, 1] pixel scale
            (for ``tfds:NAME``, ``UNMEASURED_MEAN``).
        std: Per-channel standard deviation of the training images, [0, 1]
            pixel scale, all > 0 (for ``tfds:NAME``, ``UNMEASURED_STD``).

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


# ------------------------------------------------------------------ names

def check_dataset_name(name: str) -> str:
    """Validates a data set name: a fixed name, ``tfds:NAME`` or a ``.npz`` path.

    Only the spelling is checked: a ``.npz`` file need not exist yet and a
    ``tfds:NAME`` is looked up in tensorflow-datasets' registry only when it is
    described or loaded.

    Args:
        name: One of ``KNOWN_DATASETS``, ``"tfds:NAME"`` with a non-empty NAME
            (a tensorflow-datasets builder name, e.g. ``"tfds:fashion_mnist"``),
            or a path ending in ``.npz`` (e.g. ``"/data/my_images.npz"``).

    Returns:
        ``name``, unchanged.

    Raises:
        ValueError: If ``name`` is not a string of one of the three forms; the
            message lists them.
    """
    if isinstance(name, str) and (
            name in KNOWN_DATASETS
            or (name.startswith(TFDS_PREFIX) and name[len(TFDS_PREFIX):].strip())
            or (name.endswith(NPZ_SUFFIX) and len(name) > len(NPZ_SUFFIX))):
        return name
    raise ValueError(
        f"Unknown dataset name {name!r}; expected one of "
        f"{', '.join(KNOWN_DATASETS)}; or tfds:NAME for a tensorflow-datasets "
        f"image classification data set (e.g. tfds:fashion_mnist); or a path "
        f"ending in {NPZ_SUFFIX} holding x_train, y_train, x_test, y_test")


def _kind(name: str) -> str:
    """"cifar10", "cifar10_sample", "mnist", "tfds" or "npz" for a valid name."""
    check_dataset_name(name)
    if name in KNOWN_DATASETS:
        return name
    return "tfds" if name.startswith(TFDS_PREFIX) else "npz"


def takes_data_dir(name: str) -> bool:
    """Whether ``data_dir`` applies to ``name`` (cifar10, mnist and tfds:NAME).

    Raises:
        ValueError: If ``name`` is not a valid data set name.
    """
    return _kind(name) in (CIFAR10, MNIST, "tfds")


def _check_name_and_split(name: str, split: str | None = None) -> str:
    """Returns the kind of ``name`` (see ``_kind``) after checking ``split``."""
    kind = _kind(name)
    if split is not None and split not in SPLITS:
        raise ValueError(
            f"Unknown split {split!r} for dataset {name!r}; expected one of "
            f"{', '.join(SPLITS)}")
    return kind


def _check_no_data_dir(name: str, data_dir) -> None:
    if data_dir is not None:
        where = ("is embedded in the package" if name == CIFAR10_SAMPLE
                 else "is one file, named by the data set name")
        raise ValueError(
            f"data_dir applies to {CIFAR10!r}, {MNIST!r} and tfds:NAME only; "
            f"{name!r} {where}, got data_dir={str(data_dir)!r}")


def resolve_data_dir(data_dir: str | os.PathLike | None = None,
                     env_var: str = DATA_DIR_ENV_VAR) -> pathlib.Path | None:
    """Returns the local directory to read, or None for tensorflow-datasets.

    Precedence: an explicit ``data_dir`` wins over the environment variable
    ``env_var``; with neither (or an empty variable) returns None.

    Args:
        data_dir: Local data directory, or None.
        env_var: The variable to fall back on: ``DATA_DIR_ENV_VAR`` (CIFAR-10,
            the default) or ``MNIST_DIR_ENV_VAR``.

    Returns:
        The directory as a ``pathlib.Path`` (not checked to exist), or None.
    """
    if data_dir is not None:
        return pathlib.Path(data_dir)
    from_env = os.environ.get(env_var)
    return pathlib.Path(from_env) if from_env else None


# --------------------------------------------------------------- CIFAR-10

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


# ------------------------------------------------------------------ MNIST

def read_idx_file(path: str | os.PathLike, magic: int) -> np.ndarray:
    """Reads one idx file of unsigned bytes (the MNIST format), gzipped or not.

    The file is a big-endian int32 magic number (0x0000080D: two zero bytes,
    type 0x08 = unsigned byte, D dimensions), D big-endian int32 sizes, then the
    row-major bytes (LeCun et al., MNIST web page, "File formats"). A file that
    starts with the gzip signature is decompressed first, whatever its name.

    Args:
        path: Path of the file, e.g. ``t10k-images-idx3-ubyte.gz``.
        magic: Expected magic number: ``IDX_IMAGES_MAGIC`` (3 dimensions) or
            ``IDX_LABELS_MAGIC`` (1 dimension).

    Returns:
        uint8 array of the header's shape (``[N, rows, columns]`` for images,
        ``[N]`` for labels), values 0-255.

    Raises:
        FileNotFoundError: If ``path`` does not exist.
        ValueError: If the file is a broken gzip stream, has another magic
            number, or holds more or fewer bytes than its header says; the
            message names the file.
    """
    path = pathlib.Path(path)
    raw = path.read_bytes()
    if raw[:2] == b"\x1f\x8b":
        try:
            raw = gzip.decompress(raw)
        except (OSError, EOFError, zlib.error) as err:
            raise ValueError(f"MNIST idx file {str(path)!r} is not a complete gzip "
                             f"stream ({err}); the download is truncated or corrupt") from None
    ndim = magic & 0xFF
    header_bytes = 4 * (1 + ndim)
    found = int.from_bytes(raw[:4], "big") if len(raw) >= 4 else None
    if found != magic:
        found_text = "none (under 4 bytes)" if found is None else f"0x{found:08x}"
        raise ValueError(
            f"MNIST idx file {str(path)!r} has magic number {found_text}, expected "
            f"0x{magic:08x} (unsigned bytes, {ndim} dimension{'s' * (ndim > 1)}); "
            f"not an idx file of this kind, or images and labels swapped")
    if len(raw) < header_bytes:
        raise ValueError(f"MNIST idx file {str(path)!r} is truncated inside its "
                         f"{header_bytes}-byte header ({len(raw)} bytes)")
    shape = tuple(int.from_bytes(raw[4 * i:4 * i + 4], "big") for i in range(1, ndim + 1))
    expected = header_bytes + int(np.prod(shape))
    if len(raw) != expected:
        raise ValueError(
            f"MNIST idx file {str(path)!r} holds {len(raw)} bytes (decompressed), "
            f"but its header {list(shape)} needs {expected}; the file is "
            f"{'truncated' if len(raw) < expected else 'longer than its header'}")
    return np.frombuffer(raw, dtype=np.uint8, offset=header_bytes).reshape(shape)


def _mnist_file(data_dir: pathlib.Path, stem: str) -> pathlib.Path | None:
    for candidate in (data_dir / stem, data_dir / f"{stem}.gz"):
        if candidate.is_file():
            return candidate
    return None


def read_mnist_arrays(
        data_dir: str | os.PathLike, split: str) -> tuple[np.ndarray, np.ndarray]:
    """Reads a whole MNIST split from a directory of the official idx files.

    Args:
        data_dir: Directory holding ``train-images-idx3-ubyte`` and
            ``train-labels-idx1-ubyte`` (train), ``t10k-images-idx3-ubyte`` and
            ``t10k-labels-idx1-ubyte`` (test), each plain or with ``.gz``
            appended (the plain file is read when both exist). Files of the
            other split are not needed.
        split: ``"train"`` (60,000 images in the official files) or ``"test"``
            (10,000).

    Returns:
        ``(images, labels)``: images uint8 ``[N, 28, 28, 1]`` (values 0-255,
        0 = background), labels uint8 ``[N]`` in [0, 9], in file order.

    Raises:
        ValueError: If ``split`` is unknown, or a file is malformed (see
            ``read_idx_file``), its images are not 28 x 28, the two files hold
            different numbers of records, or a label is above 9; the message
            names the file.
        FileNotFoundError: If the directory or one of the split's two files is
            missing; the message names them.
    """
    _check_name_and_split(MNIST, split)
    data_dir = pathlib.Path(data_dir)
    if not data_dir.is_dir():
        raise FileNotFoundError(
            f"MNIST data directory {str(data_dir)!r} does not exist or is not a "
            f"directory (from data_dir or ${MNIST_DIR_ENV_VAR}); expected a "
            f"directory of the official idx files")
    stems = MNIST_SPLIT_FILES[split]
    paths = [_mnist_file(data_dir, stem) for stem in stems]
    missing = [f"{stem}(.gz)" for stem, path in zip(stems, paths) if path is None]
    if missing:
        raise FileNotFoundError(
            f"MNIST data directory {str(data_dir)!r} lacks {', '.join(missing)} "
            f"for the {split} split; expected the official idx files "
            f"{', '.join(stems)} (plain or .gz)")
    images_path, labels_path = paths
    images = read_idx_file(images_path, IDX_IMAGES_MAGIC)
    labels = read_idx_file(labels_path, IDX_LABELS_MAGIC)
    if images.shape[1:] != MNIST_IMAGE_SHAPE[:2]:
        raise ValueError(f"MNIST idx file {str(images_path)!r} holds images of "
                         f"{images.shape[1]} x {images.shape[2]} pixels, expected 28 x 28")
    if len(images) != len(labels):
        raise ValueError(
            f"MNIST idx files {str(images_path)!r} and {str(labels_path)!r} hold "
            f"{len(images)} images but {len(labels)} labels")
    bad = np.flatnonzero(labels >= len(MNIST_CLASS_NAMES))
    if bad.size:
        raise ValueError(
            f"MNIST idx file {str(labels_path)!r}: label {bad[0]} is {labels[bad[0]]}, "
            f"expected 0-9 ({bad.size} bad labels in all)")
    return images[..., np.newaxis], labels


# -------------------------------------------------------------------- .npz

def _npz_error(path: pathlib.Path, message: str) -> ValueError:
    return ValueError(f"data set file {str(path)!r}: {message}")


def _read_npz(path: pathlib.Path) -> dict[str, np.ndarray]:
    """All arrays of a data set ``.npz`` (loaded without pickle), by key."""
    if not path.is_file():
        raise FileNotFoundError(f"data set file {str(path)!r} not found (a name "
                                f"ending in {NPZ_SUFFIX} is a path)")
    try:
        archive = np.load(path, allow_pickle=False)
    except (OSError, ValueError, EOFError, zipfile.BadZipFile) as err:
        raise _npz_error(path, f"not a readable .npz ({_one_line(err)})") from None
    if not isinstance(archive, np.lib.npyio.NpzFile):
        raise _npz_error(path, f"holds a single {archive.dtype} {archive.shape} "
                               f"array (.npy format), not the .npz keys "
                               f"x_train, y_train, x_test, y_test")
    arrays = {}
    with archive:
        for key in archive.files:
            try:
                arrays[key] = archive[key]
            except (ValueError, OSError, zipfile.BadZipFile, EOFError) as err:
                raise _npz_error(path, f"cannot read {key!r} without pickle "
                                       f"({_one_line(err)}); store plain numeric "
                                       f"arrays (object arrays are refused)") from None
    return arrays


def _npz_images(path: pathlib.Path, key: str, images: np.ndarray) -> np.ndarray:
    """Checks one images array; returns it as [N, H, W, C], uint8 or float32."""
    if images.ndim == 3:
        images = images[..., np.newaxis]
    if images.ndim != 4 or min(images.shape) < 1:
        raise _npz_error(path, f"{key} must be images [N, height, width] or "
                               f"[N, height, width, channels], N >= 1, got shape "
                               f"{list(images.shape)}")
    if images.shape[1] in (1, 3) and images.shape[3] > 4:
        raise _npz_error(path, f"{key} has shape {list(images.shape)}, which looks "
                               f"channels-first; store [N, height, width, channels]")
    if images.dtype == np.uint8:
        return images
    if not np.issubdtype(images.dtype, np.floating):
        raise _npz_error(path, f"{key} must be uint8 (0-255) or float in [0, 1], got "
                               f"{images.dtype}; convert [0, 255] integers to uint8")
    finite = np.isfinite(images).all()
    low, high = (float(images.min()), float(images.max())) if finite else (None, None)
    if not finite or low < 0.0 or high > 1.0:
        found = "non-finite values" if not finite else f"values in [{low:g}, {high:g}]"
        raise _npz_error(path, f"float {key} must lie in [0, 1] (pixels / 255), got "
                               f"{found}")
    return images.astype(np.float32, copy=False)


def _npz_labels(path: pathlib.Path, key: str, labels: np.ndarray, count: int) -> np.ndarray:
    """Checks one labels array; returns int64 [N] (not yet checked against K)."""
    if labels.ndim == 2 and labels.shape[1] == 1:  # keras.datasets gives [N, 1]
        labels = labels[:, 0]
    if labels.shape != (count,) or not np.issubdtype(labels.dtype, np.integer):
        raise _npz_error(path, f"{key} must be integer labels [N] (or [N, 1]) with "
                               f"N = {count}, one per image, got {labels.dtype} "
                               f"{list(labels.shape)}")
    if labels.min() < 0:
        raise _npz_error(path, f"{key} holds the negative label {labels.min()}; labels "
                               f"must lie in [0, num_classes)")
    return labels.astype(np.int64)


@dataclasses.dataclass(frozen=True)
class _NpzContents:
    """The checked arrays of a data set ``.npz``: split -> (images, labels)."""
    splits: dict
    class_names: tuple[str, ...]


def _load_npz(path: pathlib.Path) -> _NpzContents:
    arrays = _read_npz(path)
    splits = {}
    for split, (x_key, y_key) in NPZ_KEYS.items():
        if x_key not in arrays and y_key not in arrays:
            continue
        for present, absent in ((x_key, y_key), (y_key, x_key)):
            if absent not in arrays:
                raise _npz_error(path, f"has {present} but lacks {absent} (the "
                                       f"{split} split needs both)")
        images = _npz_images(path, x_key, arrays[x_key])
        splits[split] = images, _npz_labels(path, y_key, arrays[y_key], len(images))
    if not splits:
        raise _npz_error(path, f"holds neither x_train/y_train nor x_test/y_test "
                               f"(found keys: {', '.join(sorted(arrays)) or 'none'})")
    shapes = {split: images.shape[1:] for split, (images, _) in splits.items()}
    if len(set(shapes.values())) > 1:
        raise _npz_error(path, f"x_train and x_test images differ in shape: "
                               f"{shapes['train']} vs {shapes['test']}")
    top = max(int(labels.max()) for _, labels in splits.values())
    if NPZ_CLASS_NAMES_KEY in arrays:
        names = arrays[NPZ_CLASS_NAMES_KEY]
        if names.ndim != 1 or names.dtype.kind not in "US":
            raise _npz_error(path, f"{NPZ_CLASS_NAMES_KEY} must be a 1-D array of "
                                   f"strings, got {names.dtype} {list(names.shape)}")
        class_names = tuple(n.decode() if isinstance(n, bytes) else str(n) for n in names.tolist())
        if top >= len(class_names):
            raise _npz_error(path, f"label {top} is out of range for the "
                                   f"{len(class_names)} {NPZ_CLASS_NAMES_KEY}; "
                                   f"labels must lie in [0, {len(class_names)})")
    else:
        class_names = tuple(str(label) for label in range(top + 1))
    if len(class_names) < 2:
        raise _npz_error(path, f"its labels span {len(class_names)} class; at least 2 "
                               f"are needed (labels 0 ... K - 1)")
    return _NpzContents(splits=splits, class_names=class_names)


def read_npz_split(path: str | os.PathLike, split: str) -> tuple[np.ndarray, np.ndarray]:
    """Reads one split of a data set ``.npz`` and checks the whole file.

    The file (loaded with ``allow_pickle=False``: object arrays are refused)
    holds ``x_train`` and ``y_train``, ``x_test`` and ``y_test`` (either split
    may be absent) and optionally ``class_names`` (str ``[K]``):

    * images: uint8 ``[N, H, W]`` or ``[N, H, W, C]`` (0-255, divided by 255 on
      loading), or float ``[N, H, W(, C)]`` already in [0, 1]; the same
      ``H, W, C`` in both splits, channels last.
    * labels: integer ``[N]`` (or ``[N, 1]``, as ``keras.datasets`` gives them)
      in [0, K), where K is the number of ``class_names`` or else the largest
      label in either split plus one (K >= 2).

    Args:
        path: The ``.npz`` file.
        split: ``"train"`` or ``"test"``.

    Returns:
        ``(images, labels)``: images uint8 ``[N, H, W, C]`` (0-255) or float32
        ``[N, H, W, C]`` in [0, 1], labels int64 ``[N]`` in [0, K), in the
        file's order.

    Raises:
        FileNotFoundError: If ``path`` does not exist.
        ValueError: If ``split`` is unknown or absent from the file (the message
            names the missing keys), or the file breaks the rules above; the
            message names the file and the key.
    """
    path = pathlib.Path(path)
    if split not in SPLITS:
        raise ValueError(f"Unknown split {split!r}; expected one of {', '.join(SPLITS)}")
    contents = _load_npz(path)
    if split not in contents.splits:
        x_key, y_key = NPZ_KEYS[split]
        raise _npz_error(path, f"has no {split} split: it lacks {x_key} and {y_key} "
                               f"(it holds the {', '.join(contents.splits)} split)")
    return contents.splits[split]


def _channel_moments(images: np.ndarray) -> tuple[tuple[float, ...], tuple[float, ...]]:
    """Per-channel mean and (population) std of [N, H, W, C] images on the [0, 1] scale."""
    scale = 255.0 if images.dtype == np.uint8 else 1.0
    total = np.zeros(images.shape[-1])
    squares = np.zeros(images.shape[-1])
    for start in range(0, len(images), 1024):  # float64 sums without a full-size copy
        chunk = images[start:start + 1024].astype(np.float64) / scale
        total += chunk.sum(axis=(0, 1, 2))
        squares += np.square(chunk).sum(axis=(0, 1, 2))
    count = images.size // images.shape[-1]
    mean = total / count
    std = np.sqrt(np.maximum(squares / count - np.square(mean), 0.0))
    return tuple(float(m) for m in mean), tuple(float(s) for s in std)


@functools.lru_cache(maxsize=8)
def _npz_summary(path: pathlib.Path, size: int, mtime_ns: int) -> tuple[DatasetInfo, str]:
    """(DatasetInfo, sha256 hex) of a data set ``.npz``; cached while the file is unchanged."""
    del size, mtime_ns  # cache keys only
    contents = _load_npz(path)
    images, _ = contents.splits.get("train", contents.splits.get("test"))
    mean, std = _channel_moments(images)
    if min(std) == 0.0:
        raise _npz_error(path, f"its images are constant in some channel (std {std}); "
                               f"they cannot be normalized")
    info = DatasetInfo(name=str(path), num_classes=len(contents.class_names),
                       class_names=contents.class_names,
                       image_shape=tuple(int(d) for d in images.shape[1:]),
                       mean=mean, std=std)
    digest = hashlib.sha256()
    with path.open("rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            digest.update(block)
    return info, digest.hexdigest()


def _npz_info_and_hash(name: str) -> tuple[DatasetInfo, str]:
    path = pathlib.Path(name).resolve()
    if not path.is_file():
        raise FileNotFoundError(f"data set file {name!r} not found (a name "
                                f"ending in {NPZ_SUFFIX} is a path)")
    stat = path.stat()
    info, digest = _npz_summary(path, stat.st_size, stat.st_mtime_ns)
    return dataclasses.replace(info, name=name), digest


# ----------------------------------------------------- tensorflow-datasets

def _to_float(image: tf.Tensor, label: tf.Tensor) -> tuple[tf.Tensor, tf.Tensor]:
    """uint8 [H, W, C] -> float32 in [0, 1] (pixel / 255), float32 kept; label -> int64."""
    if image.dtype == tf.uint8:
        image = tf.cast(image, tf.float32) / 255.0
    return tf.cast(image, tf.float32), tf.cast(label, tf.int64)


def _from_arrays(images: np.ndarray, labels: np.ndarray) -> tf.data.Dataset:
    ds = tf.data.Dataset.from_tensor_slices((images, labels))
    return ds.map(_to_float, num_parallel_calls=tf.data.AUTOTUNE)


def _import_tfds(name: str, hint: str):
    try:
        import tensorflow_datasets as tfds  # pylint: disable=import-outside-toplevel
    except Exception as err:  # pylint: disable=broad-except
        _raise_tfds_error(err, name, hint)
    return tfds


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
    tfds = _import_tfds(CIFAR10, _LOCAL_FILES_HINT)
    try:
        ds = tfds.load(CIFAR10, split=split)
    except Exception as err:  # pylint: disable=broad-except
        _raise_tfds_error(err, CIFAR10, _LOCAL_FILES_HINT)
    ids, images, labels = [], [], []
    for batch in ds.batch(RECORDS_PER_FILE).as_numpy_iterator():
        ids.append(batch["id"])
        images.append(batch["image"])
        labels.append(batch["label"])
    order = _file_order(np.concatenate(ids), split)
    return _from_arrays(np.concatenate(images)[order], np.concatenate(labels)[order])


def _tfds_hint(tfds_name: str) -> str:
    return (f"pass data_dir / --data-dir naming a tensorflow-datasets data "
            f"directory that holds {tfds_name!r} prepared, or convert it to an "
            f".npz of x_train, y_train, x_test, y_test")


def _tfds_builder(name: str, data_dir):
    """``tfds.builder`` of ``tfds:NAME`` and its (image, label) features, checked.

    Builds the builder only (its info is static): nothing is downloaded.

    Returns:
        ``(tfds, builder, image_feature, label_feature)``: the imported
        tensorflow_datasets module, the builder, its supervised ``Image`` and
        ``ClassLabel`` features.

    Raises:
        ValueError: If tensorflow-datasets has no such data set, or it is not an
            image classification data set with fixed-shape uint8 images.
        ImportError: If tensorflow-datasets cannot be imported.
    """
    tfds_name = name[len(TFDS_PREFIX):]
    hint = _tfds_hint(tfds_name)
    tfds = _import_tfds(name, hint)
    try:
        builder = tfds.builder(tfds_name, data_dir=None if data_dir is None else os.fspath(data_dir))
        info = builder.info
    except tfds.core.registered.DatasetNotFoundError:
        raise ValueError(
            f"tensorflow-datasets has no data set {tfds_name!r} (from {name!r}); "
            f"tfds:NAME takes a name of tfds.list_builders(), optionally with "
            f"/CONFIG and :VERSION, e.g. tfds:fashion_mnist") from None
    except Exception as err:  # pylint: disable=broad-except
        _raise_tfds_error(err, name, hint)
    keys, features = info.supervised_keys, info.features
    if not (isinstance(keys, tuple) and len(keys) == 2 and all(isinstance(k, str) for k in keys)
            and isinstance(features[keys[0]], tfds.features.Image)
            and isinstance(features[keys[1]], tfds.features.ClassLabel)):
        raise ValueError(
            f"{name!r} is not an image classification data set: its supervised "
            f"keys {keys!r} must name an Image and a ClassLabel feature "
            f"(features: {_one_line(features)})")
    image, label = features[keys[0]], features[keys[1]]
    shape = tuple(image.shape)
    if len(shape) != 3 or None in shape or image.dtype != tf.uint8:
        raise ValueError(
            f"{name!r} has images of shape {shape} and dtype {image.dtype.name}; "
            f"tfsmooth needs one fixed [height, width, channels] shape of uint8 "
            f"pixels (resize them into an .npz)")
    return tfds, builder, image, label


def _load_tfds_named(name: str, split: str, data_dir) -> tf.data.Dataset:
    """``tfds:NAME``'s split via ``tfds.load(..., as_supervised=True)``, in tfds's order."""
    tfds, _, image, _ = _tfds_builder(name, data_dir)
    tfds_name = name[len(TFDS_PREFIX):]
    try:
        ds = tfds.load(tfds_name, split=split, as_supervised=True, shuffle_files=False,
                       data_dir=None if data_dir is None else os.fspath(data_dir))
    except Exception as err:  # pylint: disable=broad-except
        _raise_tfds_error(err, name, _tfds_hint(tfds_name))
    shape = tuple(image.shape)
    return ds.map(lambda x, y: _to_float(tf.ensure_shape(x, shape), y),
                  num_parallel_calls=tf.data.AUTOTUNE)


_LOCAL_FILES_HINT = (
    f"pass data_dir / --data-dir or set ${DATA_DIR_ENV_VAR} to a local "
    f"CIFAR-10 binary version directory")
_MNIST_FILES_HINT = (
    f"pass data_dir / --data-dir or set ${MNIST_DIR_ENV_VAR} to a directory "
    f"of the MNIST idx files")


def _raise_tfds_error(err: Exception, name: str = CIFAR10,
                      hint: str = _LOCAL_FILES_HINT) -> NoReturn:
    """Re-raises a failure of importing tfds or of ``tfds.load`` with its real cause in one line.

    The first exception in the chain (``err``, then what it was raised from or
    while handling) that tells a cause decides: a missing module
    (tensorflow-datasets 4.9.10 imports ``importlib_resources`` inside
    ``tfds.load`` without declaring it) becomes an ``ImportError`` naming it; a
    network failure becomes a ``ConnectionError`` pointing to local files;
    anything else is re-raised unchanged, with a note.

    Args:
        err: The exception caught.
        name: The tfsmooth data set name being loaded (e.g. ``"cifar10"``).
        hint: How to do without tensorflow-datasets' download, completing
            "to read local files instead, ...".
    """
    network_types = _network_error_types()
    for cause in _exception_chain(err):
        if isinstance(cause, ImportError):
            module = (cause.name or "").partition(".")[0]
            package = {"tensorflow_datasets": "tensorflow-datasets"}.get(module, module)
            install = f"pip install {package}; or, " if package else "or, "
            raise ImportError(
                f"loading {name!r} through tensorflow-datasets failed: "
                f"{_one_line(cause)} ({install}to read local files instead, "
                f"{hint})", name=cause.name) from err
        if isinstance(cause, network_types):
            raise ConnectionError(
                f"could not download {name!r} through tensorflow-datasets (no "
                f"network?): {type(cause).__name__}: {_one_line(cause)}; "
                f"without network access {hint}") from err
    err.add_note(f"tfsmooth: loading {name!r} through tensorflow-datasets "
                 f"failed; to read local files instead, {hint}")
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


def _one_line(err: object) -> str:
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


def _load_tfds_mnist(split: str) -> tf.data.Dataset:
    """tensorflow-datasets' ``mnist`` split, in tfds's order."""
    tfds = _import_tfds(MNIST, _MNIST_FILES_HINT)
    try:
        ds = tfds.load(MNIST, split=split, as_supervised=True, shuffle_files=False)
    except Exception as err:  # pylint: disable=broad-except
        _raise_tfds_error(err, MNIST, _MNIST_FILES_HINT)
    return ds.map(lambda x, y: _to_float(tf.ensure_shape(x, MNIST_IMAGE_SHAPE), y),
                  num_parallel_calls=tf.data.AUTOTUNE)


# ------------------------------------------------------------- public API

def load_dataset(
        name: str, split: str,
        data_dir: str | os.PathLike | None = None) -> tf.data.Dataset:
    """Loads a data set split as ``(image, label)`` pairs in a fixed order.

    Args:
        name: A data set name (``check_dataset_name``): ``"cifar10"``,
            ``"cifar10_sample"``, ``"mnist"``, ``"tfds:NAME"`` or a path ending
            in ``.npz`` (see the module docstring).
        split: ``"train"`` or ``"test"`` (for ``tfds:NAME``, tfds's split of
            that name).
        data_dir: cifar10: a directory in the CIFAR-10 binary version layout,
            default ``$TFSMOOTH_DATA_DIR``; mnist: a directory of the idx files,
            default ``$TFSMOOTH_MNIST_DIR``; with neither, these two are read
            through tensorflow-datasets (downloads on first use). tfds:NAME:
            tfds's data directory (default tfds's own). Must be None for
            cifar10_sample and ``.npz`` files.

    Returns:
        A finite, unshuffled ``tf.data.Dataset`` of ``(image, label)``: image
        float32 ``[height, width, channels]`` (``dataset_info(name).image_shape``)
        with values in [0, 1] (byte / 255), label int64 scalar in
        [0, num_classes). cifar10: 50,000 train / 10,000 test ``[32, 32, 3]``
        images in the order of the binary version files (also when read through
        tensorflow-datasets); cifar10_sample: 4,000 / 1,000; mnist: 60,000 /
        10,000 ``[28, 28, 1]`` images in the idx files' order (tfds's order
        through tensorflow-datasets); tfds:NAME: tfds's order; ``.npz``: the
        file's order.

    Raises:
        ValueError: If ``name`` or ``split`` is unknown, ``data_dir`` is given
            where it does not apply, a local file is malformed, a ``.npz``
            lacks the split, ``tfds:NAME`` is not an image classification data
            set, or the tensorflow-datasets CIFAR-10 records' ids do not give
            their file positions.
        FileNotFoundError: If the local directory or a file it should hold (or
            the ``.npz`` file) is missing.
        ImportError: If the tensorflow-datasets path lacks a module (the
            message names it and the package to install).
        ConnectionError: If the tensorflow-datasets path cannot download the
            data (no network: use local files).
    """
    kind = _check_name_and_split(name, split)
    if kind == CIFAR10_SAMPLE:
        _check_no_data_dir(name, data_dir)
        arrays = load_sample_arrays()
        return _from_arrays(arrays[f"{split}_images"], arrays[f"{split}_labels"])
    if kind == "npz":
        _check_no_data_dir(name, data_dir)
        return _from_arrays(*read_npz_split(name, split))
    if kind == "tfds":
        return _load_tfds_named(name, split, data_dir)
    if kind == MNIST:
        local_dir = resolve_data_dir(data_dir, MNIST_DIR_ENV_VAR)
        if local_dir is None:
            return _load_tfds_mnist(split)
        return _from_arrays(*read_mnist_arrays(local_dir, split))
    local_dir = resolve_data_dir(data_dir)
    if local_dir is None:
        return _load_tfds(split)
    return _from_arrays(*read_cifar10_arrays(local_dir, split))


def data_source(name: str, data_dir: str | os.PathLike | None = None) -> str:
    """Names where ``load_dataset(name, split, data_dir)`` reads its images.

    Results and pseudo-labels refer to images by their position ``idx`` in a
    split; recording the source lets a resumed run or a student refuse
    positions that came from another source. Both CIFAR-10 sources are in the
    order of the binary files (tensorflow-datasets' records are reordered by
    their ``id``), so for cifar10 this is a conservative check; a local
    directory's path is not part of it, so moved or copied data stays the same
    source (likewise a ``.npz`` is named by its content, the path being its
    data set name already).

    Args:
        name: A data set name (``check_dataset_name``).
        data_dir: As in ``load_dataset``.

    Returns:
        ``"embedded sample"`` for ``"cifar10_sample"``; for ``"cifar10"``,
        ``"local CIFAR-10 binary files"`` when a local directory is given or
        set (not checked to exist), else ``"tensorflow-datasets"``; for
        ``"mnist"``, ``"local MNIST idx files"`` or ``"tensorflow-datasets"``
        likewise; for ``tfds:NAME``, ``"tensorflow-datasets <full name>"`` with
        tfds's config and version (e.g. ``"tensorflow-datasets
        fashion_mnist/3.0.1"``); for a ``.npz``, ``"npz file sha256 <first 16
        hex digits of the file's SHA-256>"``.

    Raises:
        ValueError: If ``name`` is unknown, ``data_dir`` is given where it does
            not apply, or a ``.npz`` / ``tfds:NAME`` is malformed (as
            ``dataset_info``).
        FileNotFoundError: If a ``.npz`` file is missing.
        ImportError: For ``tfds:NAME`` without tensorflow-datasets.
    """
    kind = _check_name_and_split(name)
    if kind == CIFAR10_SAMPLE:
        _check_no_data_dir(name, data_dir)
        return SOURCE_SAMPLE
    if kind == "npz":
        _check_no_data_dir(name, data_dir)
        return f"npz file sha256 {_npz_info_and_hash(name)[1][:16]}"
    if kind == "tfds":
        _, builder, _, _ = _tfds_builder(name, data_dir)
        return f"{SOURCE_TFDS} {builder.info.full_name}"
    env_var = MNIST_DIR_ENV_VAR if kind == MNIST else DATA_DIR_ENV_VAR
    if resolve_data_dir(data_dir, env_var) is None:
        return SOURCE_TFDS
    return SOURCE_LOCAL_MNIST if kind == MNIST else SOURCE_LOCAL


def dataset_info(name: str, data_dir: str | os.PathLike | None = None) -> DatasetInfo:
    """Describes a data set: classes, image shape, normalization constants.

    Reads no images except for a ``.npz`` (whose labels give K and whose
    images give mean and std) and downloads nothing.

    Args:
        name: A data set name (``check_dataset_name``).
        data_dir: As in ``load_dataset``. For ``"cifar10"``, a local directory
            (default ``$TFSMOOTH_DATA_DIR``) whose ``batches.meta.txt`` gives
            the class names; without one, the standard CIFAR-10 names are used.
            For mnist it is not read.

    Returns:
        A ``DatasetInfo`` named ``name``:

        * cifar10, cifar10_sample: 10 classes, image shape (32, 32, 3), the
          CIFAR-10 mean/std of METHODS.md §1.
        * mnist: 10 classes named "0" ... "9", image shape (28, 28, 1),
          ``MNIST_MEAN`` / ``MNIST_STD`` (of the MNIST training set).
        * tfds:NAME: classes, names and image shape from
          ``tfds.builder(NAME).info`` (its supervised ClassLabel and Image
          features); mean/std ``UNMEASURED_MEAN`` / ``UNMEASURED_STD`` per
          channel, not statistics of the data (see there).
        * ``.npz``: K classes (``class_names`` if stored, else "0" ... "K-1",
          K = largest label + 1), the images' shape, and the per-channel
          mean/std of ``x_train`` on the [0, 1] scale, or of ``x_test`` when
          the file has no train split.

    Raises:
        ValueError: If ``name`` is unknown, ``data_dir`` is given where it does
            not apply, ``batches.meta.txt`` does not list 10 names, a ``.npz``
            is malformed, or ``tfds:NAME`` is not a tensorflow-datasets image
            classification data set with fixed-shape uint8 images.
        FileNotFoundError: If the local CIFAR-10 directory or its
            ``batches.meta.txt``, or the ``.npz`` file, is missing.
        ImportError: For ``tfds:NAME`` without tensorflow-datasets.
    """
    kind = _check_name_and_split(name)
    if kind == "npz":
        _check_no_data_dir(name, data_dir)
        return _npz_info_and_hash(name)[0]
    if kind == "tfds":
        _, _, image, label = _tfds_builder(name, data_dir)
        channels = int(image.shape[2])
        return DatasetInfo(
            name=name, num_classes=int(label.num_classes), class_names=tuple(label.names),
            image_shape=tuple(int(d) for d in image.shape),
            mean=(UNMEASURED_MEAN,) * channels, std=(UNMEASURED_STD,) * channels)
    if kind == MNIST:
        return DatasetInfo(
            name=name, num_classes=len(MNIST_CLASS_NAMES), class_names=MNIST_CLASS_NAMES,
            image_shape=MNIST_IMAGE_SHAPE, mean=MNIST_MEAN, std=MNIST_STD)
    class_names = CIFAR10_CLASS_NAMES
    if kind == CIFAR10_SAMPLE:
        _check_no_data_dir(name, data_dir)
    if kind == CIFAR10:
        local_dir = resolve_data_dir(data_dir)
        if local_dir is not None:
            class_names = _read_class_names(local_dir)
    return DatasetInfo(
        name=name, num_classes=NUM_CLASSES, class_names=class_names,
        image_shape=IMAGE_SHAPE, mean=CIFAR10_MEAN, std=CIFAR10_STD)


AUGMENTATIONS = ("auto", "crop_flip", "crop", "none")
"""Training augmentations (`training_pipeline`, `tfsmooth train --augment`): crop_flip, the CIFAR recipe (random
crop after padding 4, horizontal flip); crop, without the flip; none; auto: `default_augmentation` of the images."""


def default_augmentation(image_shape) -> str:
    """What ``augment="auto"`` means for images of ``image_shape`` (height, width, channels): "crop_flip" for colour
    images (CIFAR-10 and other natural-image sets: the recipe of Cohen et al. 2019, App. B), "none" for
    single-channel images (MNIST digits: a mirrored digit is another symbol or none, and 4-pixel shifts of a
    28-pixel digit cut strokes; the usual MNIST training uses no augmentation)."""
    return "none" if int(image_shape[-1]) == 1 else "crop_flip"


def augment(image: tf.Tensor, label: tf.Tensor,
            seed: tf.Tensor, *, flip: bool = True) -> tuple[tf.Tensor, tf.Tensor]:
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
        flip: False: the crop alone (the crop offset is the one ``flip=True``
            draws under the same seed).

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
    if not flip:
        return cropped, label
    return tf.image.stateless_random_flip_left_right(cropped, seed=flip_seed), label


_augment_example = augment  # `training_pipeline` has a bool argument named augment.


def training_pipeline(ds: tf.data.Dataset, batch_size: int, *, seed: int,
                      augment=True,
                      shuffle_buffer: int = 50_000) -> tf.data.Dataset:
    """Shuffles, augments, batches and prefetches a training split.

    Reproducible: the same ``ds``, ``seed`` and arguments give the same batches
    in the same order in the first epoch (for a given ``tf.random.set_seed``
    state: tf.data combines op seeds with the global seed). Each further
    iteration (epoch) reshuffles and draws fresh augmentations, again
    determined by ``seed``.

    Args:
        ds: Dataset of ``(image, label)``, image float32 ``[height, width,
            channels]`` in [0, 1] (as returned by ``load_dataset``), unbatched.
        batch_size: Examples per batch, >= 1; the last batch may be smaller.
        seed: Non-negative int fixing the shuffle order and the per-example
            augmentation seeds (two independent streams derived with
            ``np.random.SeedSequence``).
        augment: One of ``AUGMENTATIONS``: "crop_flip" (or True) applies
            ``augment`` (random crop + flip), "crop" the crop alone, "none" (or
            False) nothing, "auto" ``default_augmentation`` of the images.
        shuffle_buffer: Shuffle buffer size, >= 1; 50,000 (default) shuffles
            the whole CIFAR-10 training set uniformly.

    Returns:
        Dataset of ``(images, labels)``: images float32
        ``[batch, height, width, channels]`` in [0, 1], labels int64 ``[batch]``.

    Raises:
        ValueError: If ``batch_size``, ``seed`` or ``shuffle_buffer`` is out of
            range, ``augment`` is not one of ``AUGMENTATIONS`` (or a bool), or
            ``ds`` is not an unbatched dataset of (image, label).
    """
    if augment is True or augment is False:
        augment = "crop_flip" if augment else "none"
    checks.check_choice(augment, "augment", AUGMENTATIONS)
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
    if augment == "auto":
        augment = default_augmentation(spec[0].shape)
    if augment != "none":
        flip = augment == "crop_flip"
        # One independent [2] int64 seed per example; new stream every epoch.
        example_seeds = tf.data.Dataset.random(
            seed=int(augment_seed), rerandomize_each_iteration=True
        ).batch(2, drop_remainder=True)
        ds = tf.data.Dataset.zip(ds, example_seeds).map(
            lambda example, s: _augment_example(*example, s, flip=flip),
            num_parallel_calls=tf.data.AUTOTUNE)
    return ds.batch(batch_size).prefetch(tf.data.AUTOTUNE)


def select_examples(ds: tf.data.Dataset, skip: int, max_index: int = -1,
                    shard: tuple[int, int] = (0, 1)) -> Iterator[tuple[int, np.ndarray, int]]:
    """Iterates every ``skip``-th example of a split, as certification does.

    Follows the convention of Cohen et al.'s ``certify.py``: example ``i`` (its
    position in ``ds``, from 0) is used iff ``i % skip == 0``, and iteration
    stops at the first ``i >= max_index``. E.g. the CIFAR-10 test set with
    ``skip=20`` gives indices 0, 20, ..., 9980 (500 images).

    Args:
        ds: Unbatched dataset of ``(image, label)`` in a fixed order.
        skip: Stride, >= 1.
        max_index: Exclusive upper bound on the index; -1 means no bound.
        shard: (I, K): only the selected examples whose position in the selection
            (idx // skip) is I modulo K (`tfsmooth certify --shard I/K`); the K
            shards are disjoint and together the whole selection. Default (0, 1).

    Returns:
        An iterator of ``(idx, image, label)``: idx int, image numpy float32
        ``[height, width, channels]`` in [0, 1], label int.

    Raises:
        ValueError: If ``skip < 1`` or ``max_index < -1`` (checked at call time).
    """
    checks.check_count(skip, "skip")
    checks.check_count(max_index, "max_index (-1 for no limit)", minimum=-1)
    index, count = checks.check_shard(shard)
    if max_index >= 0:
        ds = ds.take(max_index)
    # idx % (skip K) == I skip  <=>  idx % skip == 0 and (idx // skip) % K == I
    selected = ds.enumerate().shard(num_shards=int(skip) * count, index=index * int(skip))
    return ((int(idx), image, int(label))
            for idx, (image, label) in selected.as_numpy_iterator())
