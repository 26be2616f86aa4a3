"""Tests of the `tfsmooth export` command through click's CliRunner."""

import keras
import numpy as np
import pytest
import tensorflow as tf
from click.testing import CliRunner

from tfsmooth import data, export, models
from tfsmooth.cli.export import export as export_command
from tfsmooth.smoothing import SmoothedClassifier

# n0 = 10, n = 20 at alpha = 0.01: the smallest n that can predict is 8 (2 * 2**-8 <= 0.01).
FAST = ["--sigma", "0.25", "--n0", "10", "--n", "20", "--alpha", "0.01", "--batch", "40", "--noise-block", "10"]


@pytest.fixture(scope="module")
def model_file(tmp_path_factory):
    keras.utils.set_random_seed(3)
    path = tmp_path_factory.mktemp("model") / "base_model.keras"
    models.small_cnn(4, input_shape=(8, 8, 3)).save(path)
    return str(path)


def _invoke(args):
    result = CliRunner().invoke(export_command, args)
    assert "Traceback" not in result.output
    return result


def test_export_writes_the_version_and_prints_how_to_serve_it(model_file, tmp_path):
    result = _invoke([model_file, *FAST, "--out", str(tmp_path / "m"), "--version", "2", "--class-names",
                      "cat, dog,eel,fox"])
    assert result.exit_code == 0, result.output
    record = export.read_metadata(str(tmp_path / "m" / "2"))
    assert (record["sigma"], record["n0"], record["n"], record["alpha"], record["batch_size"],
            record["noise_block"]) == (0.25, 10, 20, 0.01, 40, 10)
    assert record["class_names"] == ["cat", "dog", "eel", "fox"]
    assert f"--model_base_path={tmp_path / 'm'}" in result.output
    assert (tmp_path / "m" / "2" / "saved_model.pb").is_file()


@pytest.mark.parametrize("extra, fragment, exit_code", [
    (["--sigma", "0"], "'--sigma': 0.0 is not in the range x>0", 2),  # click's own range checks: usage errors
    (["--sigma", "nan"], "sigma must be a finite number > 0", 1),  # NaN passes click's range, not the library's
    (["--alpha", "1.5"], "'--alpha': 1.5 is not in the range 0.0<x<1.0", 2),
    (["--n", "5"], "n=5 is too small to ever certify or predict at alpha=0.01", 1),
    # outside the domain where the export's in-graph statistics are validated (test_graph_stats.py)
    (["--n", "10000001"], "n=10000001 is above the largest n whose in-graph statistics are validated", 1),
    (["--alpha", "0.5"], "alpha=0.5 is outside the range whose in-graph statistics are validated", 1),
    (["--n0", "0"], "'--n0': 0 is not in the range x>=1", 2),
    (["--version", "0"], "'--version': 0 is not in the range x>=1", 2),
    (["--batch", "0"], "'--batch': 0 is not in the range x>=1", 2),
    (["--compute-dtype", "float16"], "'--compute-dtype': 'float16' is not one of 'float32', 'bfloat16'", 2),
    (["--class-names", "a,b,c"], "class_names must be 4 non-empty strings", 1),
    (["--class-names", "a,,c,d"], "class_names must be 4 non-empty strings", 1),
    (["--dataset", "imagenet"], "Unknown dataset name 'imagenet'", 1),
    (["--dataset", "cifar10_sample"], "class_names must be 4 non-empty strings", 1),  # a 10-class data set
])
def test_bad_options_exit_1_with_a_message_naming_the_argument(model_file, tmp_path, extra, fragment, exit_code):
    result = _invoke([model_file, *FAST, "--out", str(tmp_path / "m"), *extra])
    assert result.exit_code == exit_code
    assert fragment in result.output
    assert not (tmp_path / "m").exists() or not any((tmp_path / "m").iterdir())


def test_class_names_and_dataset_together_are_a_usage_error(model_file, tmp_path):
    result = _invoke([model_file, *FAST, "--out", str(tmp_path), "--class-names", "a,b,c,d", "--dataset", "cifar10"])
    assert result.exit_code == 2 and "give --class-names or --dataset, not both" in result.output


def test_missing_model_file_exits_1(tmp_path):
    result = _invoke([str(tmp_path / "nope.keras"), *FAST, "--out", str(tmp_path / "m")])
    assert result.exit_code == 1 and "model file not found" in result.output


def test_existing_version_is_not_overwritten(model_file, tmp_path):
    (tmp_path / "1").mkdir()
    (tmp_path / "1" / "keep.txt").write_text("v1")
    result = _invoke([model_file, *FAST, "--out", str(tmp_path)])
    assert result.exit_code == 1 and "already exists and is not empty" in result.output
    assert (tmp_path / "1" / "keep.txt").read_text() == "v1"


def test_export_end_to_end_on_real_cifar10_matches_library(cifar_dir, tmp_path, monkeypatch):
    """Class names from the real batches.meta.txt; CERTIFY of two real test images equals the library's."""
    monkeypatch.setenv(data.DATA_DIR_ENV_VAR, str(cifar_dir))
    keras.utils.set_random_seed(4)
    model = models.small_cnn(10)
    model.save(tmp_path / "base_model.keras")
    result = _invoke([str(tmp_path / "base_model.keras"), "--sigma", "0.5", "--n0", "10", "--n", "50", "--alpha",
                      "0.01", "--batch", "100", "--out", str(tmp_path / "serving"), "--dataset", "cifar10"])
    assert result.exit_code == 0, result.output
    version_dir = str(tmp_path / "serving" / "1")
    assert export.read_metadata(version_dir)["class_names"] == list(data.CIFAR10_CLASS_NAMES)
    images = np.stack([image for image, _ in data.load_dataset("cifar10", "test", data_dir=cifar_dir).take(2)])
    loaded = tf.saved_model.load(version_dir)
    out = loaded.signatures["certify"](images=tf.constant(images), seed=tf.constant(5, tf.int64))
    certs = SmoothedClassifier(model, 10, 0.5).certify_batch(images, 10, 50, 0.01, 100, seed=5)
    np.testing.assert_array_equal(out["label"].numpy(), [c.label for c in certs])
    np.testing.assert_array_equal(out["counts"].numpy(), np.stack([c.counts for c in certs]))
    np.testing.assert_allclose(out["radius"].numpy(), [c.radius for c in certs], atol=1e-5)
