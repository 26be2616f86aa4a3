"""Tests for tfsmooth.data: loaders, embedded sample, augmentation, pipelines."""

import dataclasses
import gzip
import hashlib
import os
import shutil
import pathlib
import socket
import subprocess
import sys

import numpy as np
import pytest
import tensorflow as tf

from tfsmooth import data

REPO = pathlib.Path(__file__).resolve().parents[1]
RECORD = 3073  # 1 label byte + 3 * 1024 pixel bytes


def _raw_records(cifar_dir, file_name):
    """All records of a local file as uint8 [N, 3073], decoded independently."""
    return np.fromfile(cifar_dir / file_name, dtype=np.uint8).reshape(-1, RECORD)


def _write_records(path, labels):
    """Writes one binary-version file with the given label bytes, zero pixels."""
    records = np.zeros((len(labels), RECORD), dtype=np.uint8)
    records[:, 0] = labels
    path.write_bytes(records.tobytes())


@pytest.fixture(autouse=True)
def _no_env_data_dir(monkeypatch):
    # Tests set TFSMOOTH_DATA_DIR / TFSMOOTH_MNIST_DIR themselves where it matters.
    monkeypatch.delenv(data.DATA_DIR_ENV_VAR, raising=False)
    monkeypatch.delenv(data.MNIST_DIR_ENV_VAR, raising=False)


# ---------------------------------------------------------------- local CIFAR-10

def test_local_test_split_is_10000_float_images_in_unit_range(cifar_dir):
    ds = data.load_dataset("cifar10", "test", data_dir=cifar_dir)
    image_spec, label_spec = ds.element_spec
    assert (image_spec.dtype, image_spec.shape) == (tf.float32, (32, 32, 3))
    assert (label_spec.dtype, label_spec.shape) == (tf.int64, ())
    assert int(ds.cardinality()) == 10_000
    images, labels = next(iter(ds.batch(2_000)))
    # Real photographs span the byte range: some 0 and some 255 bytes occur.
    assert float(tf.reduce_min(images)) == 0.0 and float(tf.reduce_max(images)) == 1.0
    assert set(labels.numpy().tolist()) == set(range(10))
    # The official test set has exactly 1,000 images per class.
    _, all_labels = data.read_cifar10_arrays(cifar_dir, "test")
    np.testing.assert_array_equal(np.bincount(all_labels), [1000] * 10)


def test_local_record_0_matches_raw_bytes(cifar_dir):
    raw = (cifar_dir / "test_batch.bin").read_bytes()[:RECORD]
    image, label = next(iter(data.load_dataset("cifar10", "test", data_dir=cifar_dir)))
    # The first official test image is a cat (label 3); positions < 1,017 are official.
    assert raw[0] == 3 and int(label) == 3
    # pixel (row r, column c, channel ch) is byte 1 + 1024 * ch + 32 * r + c.
    for r, c, ch in [(0, 0, 0), (0, 31, 1), (31, 0, 2), (17, 5, 1), (31, 31, 0)]:
        assert float(image[r, c, ch]) == np.float32(raw[1 + 1024 * ch + 32 * r + c]) / 255
    expected = np.array([[[raw[1 + 1024 * ch + 32 * r + c] for ch in range(3)]
                          for c in range(32)] for r in range(32)], dtype=np.float32)
    np.testing.assert_array_equal(image.numpy(), expected / np.float32(255))


def test_local_train_split_concatenates_the_five_batches_in_order(cifar_dir):
    ds = data.load_dataset("cifar10", "train", data_dir=cifar_dir)
    assert int(ds.cardinality()) == 50_000
    image, label = next(iter(ds))
    first = _raw_records(cifar_dir, "data_batch_1.bin")[0]
    assert int(label) == first[0]
    np.testing.assert_array_equal(
        image.numpy().transpose(2, 0, 1).reshape(-1), first[1:] / np.float32(255))
    # Position 10,000 is record 0 of data_batch_2.bin; 49,999 the last of batch 5.
    images, labels = data.read_cifar10_arrays(cifar_dir, "train")
    assert images.shape == (50_000, 32, 32, 3) and images.dtype == np.uint8
    for position, file_name, record in [(10_000, "data_batch_2.bin", 0),
                                        (49_999, "data_batch_5.bin", 9_999)]:
        raw = _raw_records(cifar_dir, file_name)[record]
        assert labels[position] == raw[0]
        np.testing.assert_array_equal(
            images[position].transpose(2, 0, 1).reshape(-1), raw[1:])


def test_explicit_data_dir_wins_over_environment_variable(cifar_dir, monkeypatch, tmp_path):
    monkeypatch.setenv(data.DATA_DIR_ENV_VAR, str(tmp_path / "nowhere"))
    ds = data.load_dataset("cifar10", "test", data_dir=cifar_dir)
    assert int(ds.cardinality()) == 10_000
    with pytest.raises(FileNotFoundError, match="nowhere"):
        data.load_dataset("cifar10", "test")


def test_environment_variable_is_used_without_data_dir(cifar_dir, monkeypatch):
    monkeypatch.setenv(data.DATA_DIR_ENV_VAR, str(cifar_dir))
    _, label = next(iter(data.load_dataset("cifar10", "test")))
    assert int(label) == 3


def test_dataset_info_class_names_follow_data_dir_precedence(monkeypatch, tmp_path):
    env_dir, explicit_dir = tmp_path / "env", tmp_path / "explicit"
    for directory, prefix in [(env_dir, "env"), (explicit_dir, "explicit")]:
        directory.mkdir()
        (directory / "batches.meta.txt").write_text(
            "".join(f"{prefix}{i}\n" for i in range(10)) + "\n")
    monkeypatch.setenv(data.DATA_DIR_ENV_VAR, str(env_dir))
    assert data.dataset_info("cifar10").class_names[9] == "env9"
    assert data.dataset_info("cifar10", explicit_dir).class_names[0] == "explicit0"
    monkeypatch.delenv(data.DATA_DIR_ENV_VAR)
    assert data.dataset_info("cifar10").class_names == data.CIFAR10_CLASS_NAMES


def test_dataset_info_fields():
    info = data.dataset_info("cifar10_sample")
    assert info.num_classes == 10 and info.image_shape == (32, 32, 3)
    assert info.class_names[3] == "cat" and len(info.class_names) == 10
    assert info.mean == (0.4914, 0.4822, 0.4465)  # METHODS.md §1
    assert info.std == (0.2023, 0.1994, 0.2010)
    with pytest.raises(dataclasses.FrozenInstanceError):
        info.num_classes = 3


def test_dataset_info_reads_local_batches_meta(cifar_dir):
    names = (cifar_dir / "batches.meta.txt").read_text().split()
    assert data.dataset_info("cifar10", cifar_dir).class_names == tuple(names)


@pytest.mark.parametrize("fields, message", [
    (dict(class_names=("a",) * 9), "class_names"),
    (dict(std=(0.2, 0.0, 0.2)), "std"),
    (dict(mean=(0.5, 0.5)), "one value per channel"),
    (dict(num_classes=1, class_names=("a",)), "num_classes"),
])
def test_dataset_info_rejects_inconsistent_fields(fields, message):
    good = dict(name="x", num_classes=10, class_names=("a",) * 10,
                image_shape=(32, 32, 3), mean=(0.5,) * 3, std=(0.2,) * 3)
    with pytest.raises(ValueError, match=message):
        data.DatasetInfo(**{**good, **fields})


# ------------------------------------------------------------------- errors

def test_unknown_dataset_name_lists_the_three_forms():
    with pytest.raises(ValueError, match=r"'imagenet'.*cifar10, cifar10_sample, mnist; or tfds:NAME.*\.npz"):
        data.load_dataset("imagenet", "test")
    for function in (data.dataset_info, data.data_source):
        with pytest.raises(ValueError, match="cifar10, cifar10_sample, mnist; or tfds:NAME"):
            function("imagenet")


def test_unknown_split_is_rejected():
    with pytest.raises(ValueError, match=r"'validation'.*train, test"):
        data.load_dataset("cifar10_sample", "validation")


def test_missing_directory_is_named(tmp_path):
    missing = tmp_path / "no_such_dir"
    with pytest.raises(FileNotFoundError, match="no_such_dir"):
        data.load_dataset("cifar10", "test", data_dir=missing)


def test_directory_without_expected_files_names_them(tmp_path):
    with pytest.raises(FileNotFoundError, match="test_batch.bin"):
        data.load_dataset("cifar10", "test", data_dir=tmp_path)
    _write_records(tmp_path / "data_batch_1.bin", np.zeros(10_000))
    # Batch 1 is there now; 2 to 5 are still missing.
    with pytest.raises(FileNotFoundError, match="data_batch_2.bin.*data_batch_5.bin"):
        data.load_dataset("cifar10", "train", data_dir=tmp_path)
    with pytest.raises(FileNotFoundError, match="batches.meta.txt"):
        data.dataset_info("cifar10", tmp_path)


def test_truncated_file_is_rejected(tmp_path):
    (tmp_path / "test_batch.bin").write_bytes(bytes(10 * RECORD + 5))  # 30,735 bytes
    with pytest.raises(ValueError, match=r"test_batch.bin.*30735 bytes.*3073"):
        data.load_dataset("cifar10", "test", data_dir=tmp_path)


def test_file_with_wrong_record_count_is_rejected(tmp_path):
    _write_records(tmp_path / "test_batch.bin", np.zeros(10))
    with pytest.raises(ValueError, match="holds 10 records, expected 10000"):
        data.load_dataset("cifar10", "test", data_dir=tmp_path)


def test_label_byte_above_9_is_rejected(tmp_path):
    labels = np.zeros(10_000)
    labels[1234], labels[5000] = 10, 255
    _write_records(tmp_path / "test_batch.bin", labels)
    with pytest.raises(ValueError, match=r"record 1234 has label byte 10.*2 bad"):
        data.load_dataset("cifar10", "test", data_dir=tmp_path)


def test_meta_file_with_wrong_number_of_names_is_rejected(tmp_path):
    (tmp_path / "batches.meta.txt").write_text("cat\ndog\n")
    with pytest.raises(ValueError, match="2 class names, expected 10"):
        data.dataset_info("cifar10", tmp_path)


def test_data_dir_with_sample_is_rejected(tmp_path):
    with pytest.raises(ValueError, match="data_dir"):
        data.load_dataset("cifar10_sample", "train", data_dir=tmp_path)


# ----------------------------------------------------------------- data source

def test_data_source_names_sample_local_files_or_tfds(monkeypatch, tmp_path):
    monkeypatch.delenv(data.DATA_DIR_ENV_VAR, raising=False)
    assert data.data_source("cifar10_sample") == "embedded sample"
    assert data.data_source("cifar10") == "tensorflow-datasets"  # no data_dir, no $TFSMOOTH_DATA_DIR
    # Any local directory (given, or named by the variable; not checked to exist) is the same source:
    # the binary files fix the order, not where they lie.
    for data_dir in ("relative", tmp_path / "a", tmp_path / "b"):
        assert data.data_source("cifar10", data_dir) == "local CIFAR-10 binary files"
    monkeypatch.setenv(data.DATA_DIR_ENV_VAR, str(tmp_path / "a"))
    assert data.data_source("cifar10") == "local CIFAR-10 binary files"
    assert data.data_source("cifar10_sample") == "embedded sample"  # the variable is for cifar10 only


def test_data_source_rejects_unknown_name_and_data_dir_for_sample(tmp_path):
    with pytest.raises(ValueError, match="imagenet"):
        data.data_source("imagenet")
    with pytest.raises(ValueError, match="data_dir"):
        data.data_source("cifar10_sample", tmp_path)


# ------------------------------------------------------- tensorflow-datasets

def _mock_tfds_cifar10(ids):
    """tfds.load("cifar10") yields one record per id, in the given order: the record with id
    "<split>_<p>" has label p % 10 and every pixel 3 * p, except pixel [0, 0, 0] = 255."""
    import tensorflow_datasets as tfds

    def as_dataset(self, split, **kwargs):
        digits = [i.rpartition("_")[2] for i in ids]
        positions = [int(d) if d.isdigit() else 0 for d in digits]
        images = np.stack([np.full((32, 32, 3), 3 * p, np.uint8) for p in positions])
        images[:, 0, 0, 0] = 255
        return tf.data.Dataset.from_tensor_slices(
            {"id": list(ids), "image": images, "label": np.array(positions, np.int64) % 10})

    return tfds.testing.mock_data(as_dataset_fn=as_dataset)


@pytest.mark.parametrize("split", ["test", "train"])
def test_without_local_dir_cifar10_comes_from_tfds_in_file_order_converted(split):
    # tfds stores CIFAR-10 shuffled; its "id" feature gives the position in the binary files.
    positions = np.random.default_rng(0).permutation(25)
    assert not np.array_equal(positions, np.arange(25))
    with _mock_tfds_cifar10([f"{split}_{p:05d}" for p in positions]):
        ds = data.load_dataset("cifar10", split)
    assert ds.element_spec == data.load_dataset("cifar10_sample", split).element_spec  # as the local path
    images, labels = next(iter(ds.batch(100)))
    # Element i is the record with id <split>_0000i: label i % 10, pixels 3 i / 255; 255 / 255 = 1.
    np.testing.assert_array_equal(labels.numpy(), np.arange(25) % 10)
    np.testing.assert_array_equal(images[:, 5, 7, 1].numpy(), (3 * np.arange(25)).astype(np.float32) / 255)
    np.testing.assert_array_equal(images[:, 0, 0, 0].numpy(), np.ones(25, np.float32))


@pytest.mark.parametrize("ids", [
    ["test_00000", "test_00002"],  # position 1 missing
    ["test_00001", "test_00000", "test_00001"],  # position 1 twice
    ["train_00000"],  # another split's id
    ["test_0000x"],
])
def test_tfds_ids_that_do_not_number_the_split_are_rejected(ids):
    with _mock_tfds_cifar10(ids), pytest.raises(ValueError, match="cannot restore the order"):
        data.load_dataset("cifar10", "test")


def _assert_one_line_pointing_to_local_files(message):
    assert "\n" not in message
    assert "--data-dir" in message and "$TFSMOOTH_DATA_DIR" in message


def test_module_missing_inside_tfds_load_is_named_not_blamed_on_the_network():
    # tensorflow-datasets 4.9.10 imports importlib_resources inside tfds.load (issue 16).
    def as_dataset(self, split, **kwargs):
        raise ModuleNotFoundError("No module named 'importlib_resources'", name="importlib_resources")

    import tensorflow_datasets as tfds
    with tfds.testing.mock_data(as_dataset_fn=as_dataset), pytest.raises(ImportError) as info:
        data.load_dataset("cifar10", "test")
    message = str(info.value)
    assert "No module named 'importlib_resources' (pip install importlib_resources;" in message
    assert "network" not in message
    _assert_one_line_pointing_to_local_files(message)
    assert info.value.name == "importlib_resources"


def test_tensorflow_datasets_not_importable_is_named(monkeypatch):
    monkeypatch.setitem(sys.modules, "tensorflow_datasets", None)  # makes the import fail
    with pytest.raises(ImportError, match=r"pip install tensorflow-datasets;") as info:
        data.load_dataset("cifar10", "test")
    assert "network" not in str(info.value)
    _assert_one_line_pointing_to_local_files(str(info.value))


@pytest.fixture
def _no_network(monkeypatch, tmp_path):
    """tfds writes into tmp_path, and every connection fails at once as without network:
    requests raises its ConnectionError (what tfds reports on a failed name lookup), and any
    other name lookup fails too."""
    import requests
    import tensorflow_datasets as tfds

    def refuse(self, request, **kwargs):
        raise requests.exceptions.ConnectionError(f"Failed to resolve {request.url} (no network)")

    def no_lookup(*args, **kwargs):
        raise socket.gaierror(socket.EAI_NONAME, "Name or service not known")

    # tfds reads $TFDS_DATA_DIR once, at import, into constants.DATA_DIR (its default data_dir).
    monkeypatch.setattr(tfds.core.constants, "DATA_DIR", str(tmp_path / "tfds"))
    monkeypatch.setattr(requests.adapters.HTTPAdapter, "send", refuse)
    monkeypatch.setattr(socket, "getaddrinfo", no_lookup)


def test_tfds_download_without_network_says_so_and_points_to_local_files(_no_network):
    # The real tfds.load, up to its download; it also needs the modules setup.py declares
    # for the tfds path (importlib_resources), else this fails with their ImportError.
    with pytest.raises(ConnectionError, match=r"^could not download 'cifar10' through "
                       r"tensorflow-datasets \(no network\?\): ConnectionError: Failed to resolve "
                       r"https://www\.cs\.toronto\.edu/.*; without network access pass data_dir") as info:
        data.load_dataset("cifar10", "test")
    _assert_one_line_pointing_to_local_files(str(info.value))
    assert info.value.__cause__ is not None  # the original error stays in the chain


def _network_error(kind):
    from tensorflow_datasets.core.download import util
    if kind == "timeout":
        return TimeoutError("timed out")
    if kind == "chained":  # the cause is found in the chain
        wrapped = RuntimeError("download failed")
        wrapped.__context__ = socket.gaierror(socket.EAI_NONAME, "Name or service not known")
        return wrapped
    return util.DownloadError("Failed to get url https://www.cs.toronto.edu/x. HTTP code: 403.")


@pytest.mark.parametrize("kind", ["timeout", "chained", "http_status"])
def test_tfds_download_failures_get_the_network_message(monkeypatch, kind):
    import tensorflow_datasets as tfds

    def failing_load(name, **kwargs):
        raise _network_error(kind)

    monkeypatch.setattr(tfds, "load", failing_load)
    with pytest.raises(ConnectionError, match=r"\(no network\?\)") as info:
        data.load_dataset("cifar10", "test")
    _assert_one_line_pointing_to_local_files(str(info.value))


@pytest.mark.parametrize("error", [RuntimeError("disk full"), OSError(28, "No space left on device")])
def test_other_tfds_failure_keeps_its_type_and_adds_a_hint_not_blaming_the_network(monkeypatch, error):
    import tensorflow_datasets as tfds

    def failing_load(name, **kwargs):
        raise error

    monkeypatch.setattr(tfds, "load", failing_load)
    with pytest.raises(type(error)) as info:
        data.load_dataset("cifar10", "train")
    assert info.value is error
    notes = "".join(info.value.__notes__)
    assert "TFSMOOTH_DATA_DIR" in notes and "network" not in notes


_MISSING_IMPORTLIB_RESOURCES = """
import socket, sys
import requests
sys.modules["importlib_resources"] = None  # as in a fresh install without it
def refuse(*args, **kwargs):
    raise requests.exceptions.ConnectionError("no network")
socket.getaddrinfo = requests.adapters.HTTPAdapter.send = refuse  # whatever tfds tries
from tfsmooth import data
data.load_dataset("cifar10", "test")
"""


@pytest.mark.slow
def test_tfds_path_without_importlib_resources_ends_in_one_line_naming_it(tmp_path):
    # The case of issue 16, in a fresh process: the real tfds.load imports importlib_resources.
    env = {**os.environ, "TFDS_DATA_DIR": str(tmp_path), "TF_CPP_MIN_LOG_LEVEL": "3"}
    env.pop(data.DATA_DIR_ENV_VAR, None)
    result = subprocess.run([sys.executable, "-c", _MISSING_IMPORTLIB_RESOURCES], env=env,
                            capture_output=True, text=True, timeout=300, check=False)
    assert result.returncode == 1
    last_line = result.stderr.strip().splitlines()[-1]
    assert last_line.startswith("ImportError: loading 'cifar10' through tensorflow-datasets failed: ")
    assert "importlib_resources" in last_line and "(pip install importlib_resources;" in last_line
    assert "network" not in last_line


# ------------------------------------------------------------------ names

@pytest.mark.parametrize("name", [
    "cifar10", "cifar10_sample", "mnist", "tfds:fashion_mnist", "tfds:emnist/letters:3.1.0",
    "/data/my images.npz", "relative.npz"])
def test_check_dataset_name_accepts_the_three_forms_unchanged(name):
    assert data.check_dataset_name(name) == name


@pytest.mark.parametrize("name", ["imagenet", "CIFAR10", "fashion_mnist", "tfds:", "tfds: ", ".npz",
                                  "images.npy", "", None, 10])
def test_check_dataset_name_refuses_others_listing_the_three_forms(name):
    with pytest.raises(ValueError, match=r"^Unknown dataset name .*; expected one of cifar10, "
                       r"cifar10_sample, mnist; or tfds:NAME .*; or a path ending in \.npz holding "
                       r"x_train, y_train, x_test, y_test$"):
        data.check_dataset_name(name)


def test_takes_data_dir_for_directories_and_tfds_only():
    assert [data.takes_data_dir(n) for n in ("cifar10", "mnist", "tfds:mnist", "cifar10_sample", "a.npz")] \
        == [True, True, True, False, False]
    with pytest.raises(ValueError, match="Unknown dataset name"):
        data.takes_data_dir("imagenet")


def test_self_training_takes_every_form_and_keeps_refusing_test_splits():
    from tfsmooth import jobs
    for source, expected in [("mnist", ("mnist", "train")), ("cifar10:train", ("cifar10", "train")),
                             ("tfds:fashion_mnist", ("tfds:fashion_mnist", "train")),
                             ("tfds:fashion_mnist:train", ("tfds:fashion_mnist", "train")),
                             ("tfds:emnist/letters:3.1.0", ("tfds:emnist/letters:3.1.0", "train")),
                             ("/d/x.npz:train", ("/d/x.npz", "train"))]:
        assert jobs.parse_source(source) == expected
        assert jobs.parse_source(":".join(expected)) == expected  # train.py stores the joined form
    for source in ("mnist:test", "tfds:fashion_mnist:test", "/d/x.npz:test", "cifar10:validation"):
        with pytest.raises(ValueError, match="must name a train split"):
            jobs.parse_source(source)
    with pytest.raises(ValueError, match=r"unlabeled must be DATASET\[:SPLIT\]; got 'imagenet:train'.*tfds:NAME"):
        jobs.parse_source("imagenet:train")
    assert jobs.PseudoLabelConfig(teacher="t.keras", dataset="tfds:mnist").dataset == "tfds:mnist"
    with pytest.raises(ValueError, match="Unknown dataset name 'imagenet'"):
        jobs.PseudoLabelConfig(teacher="t.keras", dataset="imagenet")


# ------------------------------------------------------------------ MNIST

def _mnist_dir():
    candidates = [os.environ.get(data.MNIST_DIR_ENV_VAR), REPO.parent / "shared" / "data" / "mnist"]
    for candidate in candidates:
        if candidate and (pathlib.Path(candidate) / "t10k-images-idx3-ubyte.gz").is_file():
            return pathlib.Path(candidate)
    return None


_REAL_MNIST_DIR = _mnist_dir()  # read before the autouse fixture clears the variable


@pytest.fixture
def mnist_dir():
    """The real MNIST idx files (at least the test split, gzipped); skips the test when absent."""
    if _REAL_MNIST_DIR is None:
        pytest.skip("real MNIST idx files not found: set TFSMOOTH_MNIST_DIR or put ../shared/data beside the repo")
    return _REAL_MNIST_DIR


def _gunzip(path):
    return gzip.decompress(path.read_bytes())


def test_mnist_test_split_from_the_official_idx_files(mnist_dir):
    ds = data.load_dataset("mnist", "test", data_dir=mnist_dir)
    image_spec, label_spec = ds.element_spec
    assert (image_spec.dtype, image_spec.shape) == (tf.float32, (28, 28, 1))
    assert (label_spec.dtype, label_spec.shape) == (tf.int64, ())
    assert int(ds.cardinality()) == 10_000
    images, labels = next(iter(ds.batch(10_000)))
    assert float(tf.reduce_min(images)) == 0.0 and float(tf.reduce_max(images)) == 1.0
    # The label file is an 8-byte header (magic 0x801, count 10,000), then one byte per image.
    raw_labels = _gunzip(mnist_dir / "t10k-labels-idx1-ubyte.gz")
    assert raw_labels[:8] == bytes.fromhex("00000801" "00002710")
    np.testing.assert_array_equal(labels.numpy(), np.frombuffer(raw_labels[8:], np.uint8))
    assert labels.numpy()[:10].tolist() == [7, 2, 1, 0, 4, 1, 4, 9, 5, 9]  # the well-known first digits
    # The official test set's class counts.
    np.testing.assert_array_equal(np.bincount(labels.numpy()),
                                  [980, 1135, 1032, 1010, 982, 892, 958, 1028, 974, 1009])
    # Image i is bytes 16 + 784 i ... of the image file (16-byte header), row-major, / 255.
    raw_images = _gunzip(mnist_dir / "t10k-images-idx3-ubyte.gz")
    for i in (0, 1, 9_999):
        expected = np.frombuffer(raw_images, np.uint8, 784, 16 + 784 * i).reshape(28, 28, 1)
        np.testing.assert_array_equal(images[i].numpy(), expected / np.float32(255))


def test_mnist_train_split_without_its_images_names_the_missing_file(mnist_dir):
    assert not (mnist_dir / "train-images-idx3-ubyte.gz").exists()  # as on this machine
    with pytest.raises(FileNotFoundError,
                       match=r"lacks train-images-idx3-ubyte\(\.gz\) for the train split") as info:
        data.load_dataset("mnist", "train", data_dir=mnist_dir)
    assert "lacks train-labels" not in str(info.value)  # that one is there


def test_mnist_info_needs_no_files_and_has_the_digit_classes(tmp_path):
    for data_dir in (None, tmp_path / "nowhere"):
        info = data.dataset_info("mnist", data_dir)
        assert info.num_classes == 10 and info.class_names == tuple("0123456789")
        assert info.image_shape == (28, 28, 1)
        assert info.mean == (0.1307,) and info.std == (0.3081,)  # MNIST training set (PyTorch's example)


def _write_idx(path, array, magic=None, compress=False):
    """Writes uint8 `array` as an idx file: magic 0x0000080<ndim>, big-endian int32 dims, bytes."""
    array = np.asarray(array, np.uint8)
    magic = 0x800 + array.ndim if magic is None else magic
    raw = magic.to_bytes(4, "big") + b"".join(d.to_bytes(4, "big") for d in array.shape) + array.tobytes()
    path.write_bytes(gzip.compress(raw) if compress else raw)
    return path


def _tiny_mnist(directory, split="test", compress=False, num=3):
    """Images with pixel (r, c) of image i = (i + r + c) % 256; labels 9, 8, 7, ..."""
    images_stem, labels_stem = data.MNIST_SPLIT_FILES[split]
    suffix = ".gz" if compress else ""
    images = (np.arange(num)[:, None, None] + np.arange(28)[:, None] + np.arange(28)) % 256
    _write_idx(directory / (images_stem + suffix), images, compress=compress)
    _write_idx(directory / (labels_stem + suffix), 9 - np.arange(num), compress=compress)
    return images


@pytest.mark.parametrize("compress", [False, True])
def test_mnist_reads_plain_or_gzipped_idx_files_of_either_split(tmp_path, compress):
    for split in data.SPLITS:
        expected = _tiny_mnist(tmp_path, split, compress, num=4 if split == "train" else 3)
        images, labels = next(iter(data.load_dataset("mnist", split, data_dir=tmp_path).batch(10)))
        np.testing.assert_array_equal(labels.numpy(), 9 - np.arange(len(expected)))
        np.testing.assert_array_equal(images.numpy()[..., 0], expected.astype(np.float32) / 255)


def test_mnist_dir_comes_from_its_own_variable_not_cifars(tmp_path, monkeypatch):
    _tiny_mnist(tmp_path)
    monkeypatch.setenv(data.DATA_DIR_ENV_VAR, str(tmp_path))  # names CIFAR-10: not used for mnist
    assert data.data_source("mnist") == "tensorflow-datasets"
    monkeypatch.setenv(data.MNIST_DIR_ENV_VAR, str(tmp_path))
    assert data.data_source("mnist") == "local MNIST idx files"
    assert data.data_source("cifar10") == "local CIFAR-10 binary files"
    assert int(data.load_dataset("mnist", "test").cardinality()) == 3
    with pytest.raises(FileNotFoundError, match="nowhere.*TFSMOOTH_MNIST_DIR"):
        data.load_dataset("mnist", "test", data_dir=tmp_path / "nowhere")  # explicit data_dir wins


def _corrupt(tmp_path, kind):
    """A tiny MNIST test directory with one corrupted file; returns that file's name."""
    images_path = tmp_path / "t10k-images-idx3-ubyte"
    labels_path = tmp_path / "t10k-labels-idx1-ubyte"
    _tiny_mnist(tmp_path)
    if kind == "wrong magic":
        _write_idx(labels_path, [1, 2, 3], magic=0x803)
    elif kind == "images as labels":
        shutil.copy(images_path, labels_path)
    elif kind == "truncated":
        images_path.write_bytes(images_path.read_bytes()[:-1])
    elif kind == "header cut":
        labels_path.write_bytes(labels_path.read_bytes()[:6])
    elif kind == "too long":
        labels_path.write_bytes(labels_path.read_bytes() + b"\0")
    elif kind == "truncated gzip":
        images_path.unlink()
        images_path = tmp_path / "t10k-images-idx3-ubyte.gz"
        images_path.write_bytes(gzip.compress(bytes(16 + 3 * 784))[:-10])
    elif kind == "not 28 x 28":
        _write_idx(images_path, np.zeros((3, 32, 32)))
    elif kind == "count mismatch":
        _write_idx(labels_path, [1, 2])
    elif kind == "label 10":
        _write_idx(labels_path, [1, 10, 2])
    return images_path.name if kind in ("truncated", "truncated gzip", "not 28 x 28", "count mismatch") \
        else labels_path.name


@pytest.mark.parametrize("kind, message", [
    ("wrong magic", r"magic number 0x00000803, expected 0x00000801"),
    ("images as labels", r"magic number 0x00000803, expected 0x00000801"),
    ("truncated", r"holds 2367 bytes .*needs 2368; the file is truncated"),  # 16 + 3 * 784 = 2368
    ("header cut", r"truncated inside its 8-byte header"),
    ("too long", r"holds 12 bytes .*needs 11; the file is longer than its header"),
    ("truncated gzip", r"not a complete gzip stream"),
    ("not 28 x 28", r"32 x 32 pixels, expected 28 x 28"),
    ("count mismatch", r"hold 3 images but 2 labels"),
    ("label 10", r"label 1 is 10, expected 0-9"),
])
def test_corrupted_mnist_idx_file_is_refused_naming_it(tmp_path, kind, message):
    bad_file = _corrupt(tmp_path, kind)
    with pytest.raises(ValueError, match=message) as info:
        data.load_dataset("mnist", "test", data_dir=tmp_path)
    assert bad_file in str(info.value)


def test_mnist_without_a_directory_comes_from_tfds_in_its_order(tmp_path):
    import tensorflow_datasets as tfds
    calls = []

    def as_dataset(self, split, **kwargs):  # tfds.load(..., as_supervised=True) keys image and label
        calls.append((self.name, split))
        images = np.stack([np.full((28, 28, 1), 50 * i, np.uint8) for i in range(5)])
        return tf.data.Dataset.from_tensor_slices({"image": images, "label": np.array([3, 1, 4, 1, 5])})

    with tfds.testing.mock_data(as_dataset_fn=as_dataset):
        ds = data.load_dataset("mnist", "test")
    assert calls == [("mnist", "test")]
    _tiny_mnist(tmp_path)
    assert ds.element_spec == data.load_dataset("mnist", "test", tmp_path).element_spec  # as the local path
    images, labels = next(iter(ds.batch(10)))
    np.testing.assert_array_equal(labels.numpy(), [3, 1, 4, 1, 5])
    np.testing.assert_array_equal(images[:, 0, 0, 0].numpy(), (50 * np.arange(5)).astype(np.float32) / 255)


def test_mnist_tfds_failure_points_to_the_mnist_directory(monkeypatch):
    monkeypatch.setitem(sys.modules, "tensorflow_datasets", None)
    with pytest.raises(ImportError, match=r"^loading 'mnist' through tensorflow-datasets failed: .*"
                       r"pip install tensorflow-datasets; .*\$TFSMOOTH_MNIST_DIR to a directory of the MNIST idx"):
        data.load_dataset("mnist", "train")


# -------------------------------------------------------------------- .npz

def _save_npz(path, **arrays):
    np.savez(path, **arrays)
    return str(path)


def test_npz_uint8_round_trip_in_file_order(tmp_path):
    rng = np.random.default_rng(0)
    x_train = rng.integers(0, 256, (6, 5, 4), dtype=np.uint8)  # [N, H, W]: one channel is added
    x_test = rng.integers(0, 256, (3, 5, 4), dtype=np.uint8)
    y_train, y_test = np.array([0, 2, 1, 2, 0, 1]), np.array([2, 0, 1], np.uint8)
    name = _save_npz(tmp_path / "mine.npz", x_train=x_train, y_train=y_train, x_test=x_test, y_test=y_test)
    for split, x, y in (("train", x_train, y_train), ("test", x_test, y_test)):
        ds = data.load_dataset(name, split)
        assert ds.element_spec[0].shape == (5, 4, 1) and ds.element_spec[0].dtype == tf.float32
        assert ds.element_spec[1].dtype == tf.int64
        images, labels = next(iter(ds.batch(10)))
        np.testing.assert_array_equal(images.numpy(), x[..., None] / np.float32(255))
        np.testing.assert_array_equal(labels.numpy(), y)
    info = data.dataset_info(name)
    # K = largest label + 1 = 3; mean/std over all x_train pixels on the [0, 1] scale (not x_test's).
    assert (info.name, info.num_classes, info.class_names, info.image_shape) == (name, 3, ("0", "1", "2"), (5, 4, 1))
    np.testing.assert_allclose(info.mean, [x_train.mean() / 255], rtol=1e-12)
    np.testing.assert_allclose(info.std, [x_train.std() / 255], rtol=1e-12)


def test_npz_moments_by_hand(tmp_path):
    # Channel 0: half the pixels 0, half 255 -> mean 0.5, std 0.5; channel 1: all 51 except one 102
    # of 4 -> values 0.2, 0.2, 0.2, 0.4: mean 0.25, std sqrt(3 * 0.05**2 + 0.15**2) / 2 = sqrt(0.03) / 2.
    x = np.zeros((2, 1, 2, 2), np.uint8)
    x[0, 0, :, 0] = 255
    x[..., 1] = 51
    x[1, 0, 1, 1] = 102
    name = _save_npz(tmp_path / "m.npz", x_train=x, y_train=[0, 1])
    info = data.dataset_info(name)
    np.testing.assert_allclose(info.mean, [0.5, 0.25], rtol=1e-12)
    np.testing.assert_allclose(info.std, [0.5, np.sqrt(0.03) / 2], rtol=1e-12)


def test_npz_float_images_test_split_only_and_class_names(tmp_path):
    x_test = np.random.default_rng(1).random((4, 3, 3, 3))  # float64 in [0, 1), channels last
    x_test[0, 0, 0] = [0.0, 1.0, 0.5]  # the closed interval's ends are allowed
    names = np.array(["cat", "dog", "eel", "fox"])
    name = _save_npz(tmp_path / "f.npz", x_test=x_test, y_test=np.array([[3], [0], [1], [0]]), class_names=names)
    images, labels = next(iter(data.load_dataset(name, "test").batch(10)))
    np.testing.assert_array_equal(images.numpy(), x_test.astype(np.float32))
    np.testing.assert_array_equal(labels.numpy(), [3, 0, 1, 0])  # [N, 1] labels (keras.datasets) flattened
    info = data.dataset_info(name)
    assert info.num_classes == 4 and info.class_names == ("cat", "dog", "eel", "fox")  # K from class_names
    # No train split: x_test's moments (of the float32 images the loader yields).
    np.testing.assert_allclose(info.mean, x_test.astype(np.float32).mean(axis=(0, 1, 2), dtype=np.float64), rtol=1e-12)
    with pytest.raises(ValueError, match=r"f\.npz'.*has no train split: it lacks x_train and y_train"):
        data.load_dataset(name, "train")


def test_npz_source_is_its_content_hash(tmp_path):
    name = _save_npz(tmp_path / "a.npz", x_train=np.array([[[0, 0]] * 2, [[255, 255]] * 2], np.uint8), y_train=[0, 1])
    digest = hashlib.sha256(pathlib.Path(name).read_bytes()).hexdigest()
    assert data.data_source(name) == f"npz file sha256 {digest[:16]}"
    copy = shutil.copy(name, tmp_path / "b.npz")  # a moved or copied file is the same source
    assert data.data_source(str(copy)) == data.data_source(name)
    _save_npz(tmp_path / "a.npz", x_train=np.array([[[0, 0]] * 2, [[255, 255]] * 2], np.uint8), y_train=[1, 0])
    assert data.data_source(name) != data.data_source(str(copy))  # new content, new source (cache refreshed)
    assert data.dataset_info(name).num_classes == 2


@pytest.mark.parametrize("arrays, message", [
    (dict(x_train=np.array([[1, 2], "a"], dtype=object), y_train=[0, 1]),
     r"cannot read 'x_train' without pickle.*object arrays are refused"),
    (dict(x_train=np.zeros((3, 4, 4), np.uint8), y_train=[0, 1, 5], class_names=np.array(["a", "b", "c"])),
     r"label 5 is out of range for the 3 class_names"),
    (dict(x_train=np.zeros((2, 4, 4), np.uint8), y_train=[0, -1]), r"y_train holds the negative label -1"),
    (dict(x_train=np.full((2, 4, 4), 1.5), y_train=[0, 1]), r"float x_train must lie in \[0, 1\].*\[1\.5, 1\.5\]"),
    (dict(x_train=np.full((2, 4, 4), np.nan), y_train=[0, 1]), r"non-finite values"),
    (dict(x_train=np.zeros((2, 4, 4), np.int64), y_train=[0, 1]), r"uint8 \(0-255\) or float in \[0, 1\], got int64"),
    (dict(x_train=np.zeros((2, 3, 8, 8), np.uint8), y_train=[0, 1]), r"looks channels-first"),
    (dict(x_train=np.zeros((2, 4, 4), np.uint8), y_train=[0.0, 1.0]), r"y_train must be integer labels"),
    (dict(x_train=np.zeros((2, 4, 4), np.uint8), y_train=[0, 1, 1]), r"y_train must be integer labels.*N = 2"),
    (dict(x_train=np.zeros((2, 4, 4), np.uint8), y_train=[0, 1], x_test=np.zeros((1, 4, 4), np.uint8)),
     r"has x_test but lacks y_test"),
    (dict(x_train=np.zeros((2, 4, 4), np.uint8), y_train=[0, 1], x_test=np.zeros((1, 5, 4), np.uint8),
          y_test=[0]), r"differ in shape"),
    (dict(x_train=np.zeros((2, 4, 4), np.uint8), y_train=[0, 0]), r"labels span 1 class; at least 2"),
    (dict(images=np.zeros((2, 4, 4), np.uint8)),
     r"holds neither x_train/y_train nor x_test/y_test \(found keys: images\)"),
])
def test_bad_npz_is_refused_naming_file_and_key(tmp_path, arrays, message):
    name = _save_npz(tmp_path / "bad.npz", **arrays)
    for load in (lambda: data.load_dataset(name, "train"), lambda: data.dataset_info(name)):
        with pytest.raises(ValueError, match=message) as info:
            load()
        assert "bad.npz" in str(info.value)


def test_npz_that_is_missing_or_not_an_archive_is_refused(tmp_path):
    with pytest.raises(FileNotFoundError, match=r"nope\.npz' not found"):
        data.load_dataset(str(tmp_path / "nope.npz"), "test")
    with pytest.raises(FileNotFoundError, match=r"nope\.npz' not found"):
        data.data_source(str(tmp_path / "nope.npz"))
    single = tmp_path / "single.npz"
    with single.open("wb") as f:
        np.save(f, np.zeros(3))
    with pytest.raises(ValueError, match=r"single\.npz'.*single float64 \[3\] array|single\.npz'.*\.npy format"):
        data.load_dataset(str(single), "test")
    (tmp_path / "junk.npz").write_bytes(b"not a zip")
    with pytest.raises(ValueError, match=r"junk\.npz'.*not a readable \.npz"):
        data.dataset_info(str(tmp_path / "junk.npz"))


def test_npz_and_sample_refuse_data_dir(tmp_path):
    name = _save_npz(tmp_path / "a.npz", x_train=np.zeros((2, 2, 2), np.uint8), y_train=[0, 1])
    for function in (lambda: data.load_dataset(name, "train", tmp_path), lambda: data.dataset_info(name, tmp_path),
                     lambda: data.data_source(name, tmp_path)):
        with pytest.raises(ValueError, match=r"data_dir applies to 'cifar10', 'mnist' and tfds:NAME only"):
            function()


# --------------------------------------------------------------- tfds:NAME

def _fashion_records(num=6):
    """Fake fashion_mnist records in the order tfds yields them: image i is all 40 * i, label (7 * i) % 10."""
    images = np.stack([np.full((28, 28, 1), 40 * i, np.uint8) for i in range(num)])
    return images, (7 * np.arange(num)) % 10


def test_tfds_name_loads_supervised_pairs_in_tfds_order():
    import tensorflow_datasets as tfds
    calls = []

    def as_dataset(self, split, **kwargs):
        calls.append((self.name, split))
        images, labels = _fashion_records()
        return tf.data.Dataset.from_tensor_slices({"image": images, "label": labels})

    with tfds.testing.mock_data(as_dataset_fn=as_dataset):
        for split in data.SPLITS:
            ds = data.load_dataset("tfds:fashion_mnist", split)
            assert ds.element_spec == (tf.TensorSpec((28, 28, 1), tf.float32), tf.TensorSpec((), tf.int64))
            images, labels = next(iter(ds.batch(10)))
            np.testing.assert_array_equal(labels.numpy(), [0, 7, 4, 1, 8, 5])
            np.testing.assert_array_equal(images[:, 3, 4, 0].numpy(), (40 * np.arange(6)).astype(np.float32) / 255)
    assert calls == [("fashion_mnist", "train"), ("fashion_mnist", "test")]


def test_tfds_name_info_comes_from_the_builder_without_download():
    info = data.dataset_info("tfds:fashion_mnist")  # the builder's static info: no data needed
    assert info.name == "tfds:fashion_mnist" and info.num_classes == 10 and info.image_shape == (28, 28, 1)
    assert info.class_names[0] == "T-shirt/top" and info.class_names[9] == "Ankle boot"
    assert info.mean == (data.UNMEASURED_MEAN,) and info.std == (data.UNMEASURED_STD,)  # documented placeholders
    info = data.dataset_info("tfds:cifar100")
    assert info.num_classes == 100 and info.image_shape == (32, 32, 3) and len(info.mean) == 3
    assert data.data_source("tfds:fashion_mnist").startswith("tensorflow-datasets fashion_mnist/")
    assert data.data_source("tfds:fashion_mnist") != data.data_source("mnist")


@pytest.mark.parametrize("name, message", [
    ("tfds:no_such_data_set",
     r"^tensorflow-datasets has no data set 'no_such_data_set' \(from 'tfds:no_such_data_set'\)"),
    ("tfds:imdb_reviews", r"'tfds:imdb_reviews' is not an image classification data set"),
    ("tfds:cats_vs_dogs", r"images of shape \(None, None, 3\).*one fixed \[height, width, channels\] shape"),
])
def test_tfds_name_that_is_not_fixed_shape_image_classification_is_refused(name, message):
    with pytest.raises(ValueError, match=message) as info:
        data.load_dataset(name, "test")
    assert "\n" not in str(info.value)
    with pytest.raises(ValueError, match=message):
        data.dataset_info(name)


def test_tfds_name_without_tensorflow_datasets_says_how_to_do_without(monkeypatch):
    monkeypatch.setitem(sys.modules, "tensorflow_datasets", None)
    with pytest.raises(ImportError, match=r"^loading 'tfds:fashion_mnist' through tensorflow-datasets failed: .*"
                       r"pip install tensorflow-datasets; .*or convert it to an \.npz"):
        data.dataset_info("tfds:fashion_mnist")


def test_tfds_name_download_failure_is_one_line_pointing_to_npz(monkeypatch):
    import tensorflow_datasets as tfds

    def failing_load(name, **kwargs):
        raise TimeoutError("timed out")

    monkeypatch.setattr(tfds, "load", failing_load)
    with pytest.raises(ConnectionError, match=r"^could not download 'tfds:fashion_mnist' .*\(no network\?\).*"
                       r"tensorflow-datasets data directory that holds 'fashion_mnist' prepared, or convert it "
                       r"to an \.npz") as info:
        data.load_dataset("tfds:fashion_mnist", "train")
    assert "\n" not in str(info.value)


# ------------------------------------------------------------ embedded sample

def test_sample_is_label_balanced_and_loads_as_float():
    train = data.load_dataset("cifar10_sample", "train")
    test = data.load_dataset("cifar10_sample", "test")
    train_labels = np.concatenate([y.numpy() for _, y in train.batch(4000)])
    images, test_labels = next(iter(test.batch(1000)))
    np.testing.assert_array_equal(np.bincount(train_labels), [400] * 10)
    np.testing.assert_array_equal(np.bincount(test_labels.numpy()), [100] * 10)
    assert images.dtype == tf.float32 and images.shape == (1000, 32, 32, 3)
    assert float(tf.reduce_min(images)) >= 0 and float(tf.reduce_max(images)) <= 1


def test_sample_file_is_small_and_unpickled():
    path = REPO / "tfsmooth" / "resources" / "cifar10_sample.npz"
    assert path.stat().st_size <= 15_000_000
    with np.load(path, allow_pickle=False) as npz:  # raises on object arrays
        assert npz["train_images"].dtype == np.uint8
        assert npz["class_names"].tolist() == list(data.CIFAR10_CLASS_NAMES)


@pytest.mark.parametrize("split, files, per_class", [
    ("test", ["test_batch.bin"], 100),
    ("train", ["data_batch_1.bin"], 400),  # the first 400 per class all lie in batch 1
])
def test_sample_images_equal_source_records_at_recorded_indices(cifar_dir, split, files, per_class):
    arrays = data.load_sample_arrays()
    indices = arrays[f"{split}_indices"]
    source = np.concatenate([_raw_records(cifar_dir, f) for f in files])
    assert np.all(np.diff(indices) > 0) and indices[-1] < len(source)
    np.testing.assert_array_equal(arrays[f"{split}_labels"], source[indices, 0])
    # Invert the HWC layout back to the file's R plane, G plane, B plane bytes.
    images = arrays[f"{split}_images"]
    planes = images.transpose(0, 3, 1, 2).reshape(len(indices), 3072)
    np.testing.assert_array_equal(planes, source[indices, 1:])
    # Earliest positions preferred: per class, exactly the first per_class positions.
    for label in range(10):
        first = np.flatnonzero(source[:, 0] == label)[:per_class]
        np.testing.assert_array_equal(indices[arrays[f"{split}_labels"] == label], first)


# -------------------------------------------------------------- augmentation

def _random_image(seed=0):
    return np.random.default_rng(seed).random((32, 32, 3), dtype=np.float32)


def _matching_crops(out, image):
    """All (dy, dx, flipped) such that out is that crop of the 4-padded image."""
    padded = np.pad(image, [(4, 4), (4, 4), (0, 0)])
    return [(dy, dx, flip) for dy in range(9) for dx in range(9) for flip in (False, True)
            if np.array_equal(out, (lambda c: c[:, ::-1] if flip else c)(
                padded[dy:dy + 32, dx:dx + 32]))]


def test_augment_is_a_padded_crop_optionally_flipped():
    image = _random_image()
    out, label = data.augment(tf.constant(image), tf.constant(4, tf.int64),
                              tf.constant([0, 99]))
    assert out.dtype == tf.float32 and out.shape == (32, 32, 3) and int(label) == 4
    seeds = tf.data.Dataset.range(200).map(lambda s: tf.stack([s, 99]))
    outs = next(iter(seeds.map(lambda s: data.augment(image, 0, s)[0]).batch(200)))
    assert 0.0 <= float(tf.reduce_min(outs)) and float(tf.reduce_max(outs)) <= 1.0
    outcomes = []
    for out in outs.numpy():
        matches = _matching_crops(out, image)
        assert len(matches) == 1  # a random image fits exactly one crop/flip
        outcomes.append(matches[0])
    # 200 seeds over 9 offsets per axis: every offset 0..8 (pad 4 on both sides)
    # and both flip states are seen; P(an offset missed) <= 18 * (8/9)**200 < 1e-9.
    dys, dxs, flips = map(set, zip(*outcomes))
    assert dys == dxs == set(range(9)) and flips == {False, True}


def test_augment_is_reproducible_with_same_seed_and_differs_with_another():
    image = tf.constant(_random_image(1))
    a, _ = data.augment(image, 0, tf.constant([7, 8], tf.int64))
    b, _ = data.augment(image, 0, tf.constant([7, 8], tf.int64))
    others = [data.augment(image, 0, tf.constant([7, s], tf.int64))[0] for s in range(9, 13)]
    np.testing.assert_array_equal(a.numpy(), b.numpy())
    assert any(not np.array_equal(a.numpy(), o.numpy()) for o in others)


def test_augment_rejects_bad_seed_and_image():
    with pytest.raises(ValueError, match=r"seed.*shape \[2\]"):
        data.augment(tf.zeros((32, 32, 3)), 0, tf.constant([1, 2, 3]))
    with pytest.raises(ValueError, match="image"):
        data.augment(tf.zeros((2, 32, 32, 3)), 0, tf.constant([1, 2]))


# ----------------------------------------------------------- training pipeline

def _tiny_dataset(num=40):
    images = np.random.default_rng(2).random((num, 32, 32, 3), dtype=np.float32)
    return tf.data.Dataset.from_tensor_slices((images, np.arange(num, dtype=np.int64)))


def _epoch(ds):
    return [(x.numpy(), y.numpy()) for x, y in ds]


def test_training_pipeline_same_seed_gives_same_batches():
    first = _epoch(data.training_pipeline(_tiny_dataset(), 16, seed=3))
    again = _epoch(data.training_pipeline(_tiny_dataset(), 16, seed=3))
    other = _epoch(data.training_pipeline(_tiny_dataset(), 16, seed=4))
    # 40 examples in batches of 16: 16, 16, 8.
    assert [len(y) for _, y in first] == [16, 16, 8]
    for (xa, ya), (xb, yb) in zip(first, again):
        np.testing.assert_array_equal(xa, xb)
        np.testing.assert_array_equal(ya, yb)
    labels = np.concatenate([y for _, y in first])
    np.testing.assert_array_equal(np.sort(labels), np.arange(40))  # a permutation
    assert not np.array_equal(labels, np.arange(40))  # shuffled
    assert not np.array_equal(labels, np.concatenate([y for _, y in other]))


def test_training_pipeline_reshuffles_and_reaugments_each_epoch():
    pipeline = data.training_pipeline(_tiny_dataset(), 40, seed=3)
    (x1, y1), = _epoch(pipeline)
    (x2, y2), = _epoch(pipeline)
    assert not np.array_equal(y1, y2)
    assert not np.array_equal(x1[np.argsort(y1)], x2[np.argsort(y2)])
    # shuffle_buffer=1 keeps the order; augmentations must still change per epoch.
    unshuffled = data.training_pipeline(_tiny_dataset(), 40, seed=3, shuffle_buffer=1)
    (x1, y1), = _epoch(unshuffled)
    (x2, y2), = _epoch(unshuffled)
    np.testing.assert_array_equal(y1, np.arange(40))
    np.testing.assert_array_equal(y2, np.arange(40))
    assert not np.array_equal(x1, x2)


def test_training_pipeline_without_augment_keeps_images():
    source = _tiny_dataset()
    originals = np.stack([x.numpy() for x, _ in source])
    (x, y), = _epoch(data.training_pipeline(source, 40, seed=5, augment=False))
    np.testing.assert_array_equal(x, originals[y])
    (xa, ya), = _epoch(data.training_pipeline(source, 40, seed=5))
    np.testing.assert_array_equal(ya, y)  # same shuffle with or without augment
    assert 0.0 <= xa.min() and xa.max() <= 1.0 and not np.array_equal(xa, x)


def _half_lit(num=40, channels=3):
    """Images whose left half is 1 and right half 0: a crop (shift <= 4) keeps the right 8 columns dark, a flip
    lights them."""
    images = np.zeros((num, 32, 32, channels), np.float32)
    images[:, :, :16] = 1.0
    return tf.data.Dataset.from_tensor_slices((images, np.arange(num, dtype=np.int64)))


def test_training_pipeline_crop_never_flips_and_crop_flip_does():
    (crop, _), = _epoch(data.training_pipeline(_half_lit(), 40, seed=5, augment="crop"))
    assert np.all(crop[:, :, 24:] == 0)  # never mirrored
    assert np.any(crop[:, :, :4] == 0)  # but shifted: some crops show the zero padding on the left
    (flipped, _), = _epoch(data.training_pipeline(_half_lit(), 40, seed=5, augment="crop_flip"))
    lit_right = np.any(flipped[:, :, 24:] > 0, axis=(1, 2, 3))
    assert 5 < lit_right.sum() < 35  # about half of the 40 are mirrored
    (same, _), = _epoch(data.training_pipeline(_half_lit(), 40, seed=5, augment=True))
    np.testing.assert_array_equal(same, flipped)  # True is crop_flip, the CIFAR recipe


def test_auto_augmentation_is_crop_flip_for_colour_and_none_for_single_channel_images():
    assert data.default_augmentation((32, 32, 3)) == "crop_flip"
    assert data.default_augmentation((28, 28, 1)) == "none"
    (colour, _), = _epoch(data.training_pipeline(_half_lit(), 40, seed=5, augment="auto"))
    (flipped, _), = _epoch(data.training_pipeline(_half_lit(), 40, seed=5, augment="crop_flip"))
    np.testing.assert_array_equal(colour, flipped)
    source = _half_lit(channels=1)
    (grey, y), = _epoch(data.training_pipeline(source, 40, seed=5, augment="auto"))
    originals = np.stack([x.numpy() for x, _ in source])
    np.testing.assert_array_equal(grey, originals[y])  # untouched digits


def test_training_pipeline_rejects_an_unknown_augmentation():
    with pytest.raises(ValueError, match="augment must be one of auto, crop_flip, crop, none"):
        data.training_pipeline(_tiny_dataset(), 8, seed=1, augment="mixup")


@pytest.mark.parametrize("kwargs, message", [
    (dict(batch_size=0, seed=1), "batch_size"),
    (dict(batch_size=8, seed=-1), "seed"),
    (dict(batch_size=8, seed=1.5), "seed"),
    (dict(batch_size=8, seed=1, shuffle_buffer=0), "shuffle_buffer"),
])
def test_training_pipeline_rejects_bad_arguments(kwargs, message):
    with pytest.raises(ValueError, match=message):
        data.training_pipeline(_tiny_dataset(), **kwargs)


def test_training_pipeline_rejects_batched_dataset():
    with pytest.raises(ValueError, match="unbatched"):
        data.training_pipeline(_tiny_dataset().batch(4), 8, seed=1)


# ---------------------------------------------------------------- selection

def test_select_examples_follows_certify_skip_and_max():
    ds = _tiny_dataset(25)  # label == position
    assert [i for i, _, _ in data.select_examples(ds, 7)] == [0, 7, 14, 21]
    assert [i for i, _, _ in data.select_examples(ds, 7, max_index=15)] == [0, 7, 14]
    assert [i for i, _, _ in data.select_examples(ds, 7, max_index=14)] == [0, 7]
    assert [i for i, _, _ in data.select_examples(ds, 1, max_index=3)] == [0, 1, 2]
    assert list(data.select_examples(ds, 3, max_index=0)) == []
    images = np.stack([x.numpy() for x, _ in ds])
    for idx, image, label in data.select_examples(ds, 6):
        assert isinstance(idx, int) and label == idx
        np.testing.assert_array_equal(image, images[idx])


def test_select_examples_every_20th_of_sample_test_split():
    selected = list(data.select_examples(data.load_dataset("cifar10_sample", "test"), 20))
    # 1,000 images, every 20th: 0, 20, ..., 980 -> 50 images.
    assert len(selected) == 50 and selected[-1][0] == 980
    assert selected[0][1].shape == (32, 32, 3) and selected[0][1].dtype == np.float32


@pytest.mark.parametrize("skip, max_index, message", [
    (0, -1, "skip"), (True, -1, "skip"), (2, -2, "max_index")])
def test_select_examples_rejects_bad_arguments_at_call_time(skip, max_index, message):
    with pytest.raises(ValueError, match=message):
        data.select_examples(_tiny_dataset(), skip, max_index)
