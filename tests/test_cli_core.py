"""The train / certify / predict commands: outputs, resumption, and refusal of bad arguments."""

import csv
import inspect
import json
import math
import os
import shutil

import keras
import numpy as np
import pytest
from click.testing import CliRunner
from scipy.stats import norm

from tfsmooth import data, files, jobs, models, results
from tfsmooth.cli.main import cli
from tfsmooth.smoothing import SmoothedClassifier


@pytest.fixture(scope="module")
def model_file(tmp_path_factory):
    path = tmp_path_factory.mktemp("model") / "base.keras"
    keras.utils.set_random_seed(0)
    models.small_cnn(10).save(path)
    return str(path)


@pytest.fixture(scope="module")
def threshold_model_file(tmp_path_factory):
    """f(x) = 0 if the top-left red pixel x[0, 0, 0] > 0.5, else 1 (10 outputs, logits x - 0.5 and 0.5 - x).

    Under noise sigma, P(f(x + delta) = 0) = Phi((x[0, 0, 0] - 0.5) / sigma): for most sample images
    neither near 0 nor 1, so unlike an untrained network's, its counts depend on the noise.
    """
    kernel = np.zeros((32 * 32 * 3, 10), np.float32)
    kernel[0, :2] = [1.0, -1.0]  # pixel [0, 0, 0] comes first in the flattened image
    model = keras.Sequential([keras.Input((32, 32, 3)), keras.layers.Flatten(), keras.layers.Dense(10)])
    model.layers[-1].set_weights([kernel, np.array([-0.5, 0.5] + [0.0] * 8, np.float32)])
    path = tmp_path_factory.mktemp("model") / "threshold.keras"
    model.save(path)
    return str(path)


def _invoke(*args):
    result = CliRunner().invoke(cli, [str(a) for a in args], catch_exceptions=False)
    return result


def _with_options(args, change):
    """args with each (option, value) pair of `change` set: replaced where present, else appended."""
    args = list(args)
    for option, value in zip(change[::2], change[1::2]):
        if option in args:
            args[args.index(option) + 1] = value
        else:
            args += [option, value]
    return args


def _assert_fails_cleanly(args, message):
    """The command exits non-zero with `message` in its output and no Python traceback; returns the output."""
    result = CliRunner().invoke(cli, [str(a) for a in args])
    assert result.exit_code != 0
    assert message in result.output
    assert "Traceback" not in result.output
    return result.output


CERTIFY = ("certify", "--dataset", "cifar10_sample", "--sigma", "0.25", "--n0", "20", "--n", "200",
           "--batch", "200", "--skip", "100", "--seed", "4")


def _rows_without_time(path):
    with open(path) as f:
        lines = f.read().splitlines()
    return [line.rsplit("\t", 1)[0] for line in lines]


def test_certify_writes_reference_tsv_and_summary(model_file, tmp_path):
    out = tmp_path / "cert.tsv"
    result = _invoke(*CERTIFY, model_file, "--out", out)
    assert result.exit_code == 0, result.output
    lines = out.read_text().splitlines()
    assert lines[0] == "idx\tlabel\tpredict\tradius\tcorrect\ttime"
    # The sample's 1,000 test images, every 100th: idx 0, 100, ..., 900.
    assert [int(line.split("\t")[0]) for line in lines[1:]] == list(range(0, 1000, 100))
    assert "r=0.25" in result.output
    sidecar = json.loads((tmp_path / "cert.tsv.json").read_text())
    assert sidecar["n"] == 200 and sidecar["seed"] == 4 and sidecar["kind"] == "certify"


# The rerun's passes hold 2 or 1 noise blocks, or run on named devices (--devices is not in the run record; here the
# one CPU, tests/test_devices.py spreads passes over two).
@pytest.mark.parametrize("rerun", [("--batch", "200"), ("--batch", "100"), ("--devices", "all")])
def test_certify_interrupted_and_rerun_gives_the_same_rows(threshold_model_file, tmp_path, rerun):
    # The counts of this model depend on the noise (test_certify_rows_depend_on_the_seed_...), so equal rows
    # show that each resumed image got the noise of its idx, whatever the batch size or the devices.
    full, broken = tmp_path / "full.tsv", tmp_path / "broken.tsv"
    assert _invoke(*CERTIFY, threshold_model_file, "--out", full).exit_code == 0

    class Crash(Exception):
        pass

    def crash_after_three(row, seen=[]):
        seen.append(row)
        if len(seen) == 3:
            raise Crash()

    config = jobs.CertifyConfig(model=threshold_model_file, dataset="cifar10_sample", sigma=0.25, n0=20, n=200,
                                batch=200, skip=100, seed=4)
    with pytest.raises(Crash):
        jobs.certify_dataset(config, str(broken), on_row=crash_after_three)
    with open(broken, "a") as f:
        f.write("300\t3\t")  # a crash in the middle of writing a row
    assert len(broken.read_text().splitlines()) == 5  # header, 3 rows, partial line
    result = _invoke(*_with_options(CERTIFY, rerun), threshold_model_file, "--out", broken)
    assert result.exit_code == 0, result.output
    assert "7 new rows" in result.output
    assert _rows_without_time(broken) == _rows_without_time(full)


def test_predict_rows_do_not_depend_on_the_devices(threshold_model_file, tmp_path):
    args = ("predict", "--dataset", "cifar10_sample", "--sigma", "0.25", "--n", "100", "--batch", "100", "--skip", "250",
            threshold_model_file)
    assert _invoke(*args, "--out", tmp_path / "p.tsv").exit_code == 0
    result = _invoke(*args, "--devices", "cpu:0", "--out", tmp_path / "p_cpu0.tsv")
    assert result.exit_code == 0, result.output
    assert _rows_without_time(tmp_path / "p_cpu0.tsv") == _rows_without_time(tmp_path / "p.tsv")


def test_certify_rows_depend_on_the_seed_and_match_the_library(threshold_model_file, tmp_path):
    images = {idx: (image, label) for idx, image, label in
              data.select_examples(data.load_dataset("cifar10_sample", "test"), skip=100)}
    p_class_0 = norm.cdf((np.array([image[0, 0, 0] for image, _ in images.values()]) - 0.5) / 0.25)
    assert np.sum((p_class_0 > 0.1) & (p_class_0 < 0.9)) >= 5  # not degenerate: the counts vary with the noise
    seed4, seed5 = tmp_path / "seed4.tsv", tmp_path / "seed5.tsv"
    assert _invoke(*CERTIFY, threshold_model_file, "--out", seed4).exit_code == 0
    assert _invoke(*_with_options(CERTIFY, ("--seed", "5")), threshold_model_file, "--out", seed5).exit_code == 0
    rows4, rows5 = _rows_without_time(seed4)[1:], _rows_without_time(seed5)[1:]
    assert [row.split("\t")[0] for row in rows4] == [row.split("\t")[0] for row in rows5]
    assert rows4 != rows5
    # Row idx 300 is what the library certifies for that image with key 300 and the same seed.
    smoothed = SmoothedClassifier(keras.models.load_model(threshold_model_file), 10, 0.25)
    image, label = images[300]
    [certificate] = smoothed.certify_batch(image[None], n0=20, n=200, alpha=0.001, batch_size=200, seed=4, keys=[300])
    expected = f"300\t{label}\t{certificate.label}\t{results.format_radius(certificate.radius)}\t" \
               f"{int(certificate.label == label)}"
    assert {row.split("\t")[0]: row for row in rows4}["300"] == expected


def test_certify_refuses_to_resume_with_a_changed_model_file(tmp_path):
    """A model file overwritten in place (as `train` does after each epoch) is another model."""
    model, out = tmp_path / "base_model.keras", tmp_path / "cert.tsv"
    keras.utils.set_random_seed(0)
    models.small_cnn(10).save(model)
    args = [*_with_options(CERTIFY, ("--skip", "1")), model, "--out", out, "--max", "2"]
    assert _invoke(*args).exit_code == 0
    out.write_text("".join(out.read_text().splitlines(keepends=True)[:2]))  # header, row 0: as a crash leaves it
    keras.utils.set_random_seed(1)
    models.small_cnn(10).save(model)
    before = out.read_bytes()
    assert "model_sha256" in _assert_fails_cleanly(args, "other parameters")
    assert out.read_bytes() == before


def test_certify_refuses_a_model_file_replaced_while_it_is_loaded(model_file, tmp_path, monkeypatch):
    model, out = tmp_path / "base_model.keras", tmp_path / "cert.tsv"
    shutil.copy(model_file, model)
    load = jobs.load_base_model

    def load_then_replace(path):
        loaded = load(path)
        keras.utils.set_random_seed(1)
        models.small_cnn(10).save(model)  # train's next epoch lands between the load and the record
        return loaded

    monkeypatch.setattr(jobs.records, "load_base_model", load_then_replace)
    config = jobs.CertifyConfig(model=str(model), dataset="cifar10_sample", n0=20, n=200, batch=200, max=1)
    with pytest.raises(ValueError, match="replaced while it was being loaded"):
        jobs.certify_dataset(config, str(out))
    assert not out.exists()


def test_run_records_leave_out_the_batch_size(model_file):
    def records(batch):
        certify = jobs.CertifyConfig(model=model_file, dataset="cifar10_sample", batch=batch)
        attack = jobs.AttackConfig(model=model_file, dataset="cifar10_sample", batch=batch)
        return certify.run_record("certify"), certify.run_record("predict"), attack.run_record()

    assert records(100) == records(1000)
    assert all("batch" not in record for record in records(100))


def test_certify_skip_beyond_the_split_selects_index_0(threshold_model_file, tmp_path):
    # Cohen et al.'s selection (i % skip == 0) always holds image 0, so only --max 0 selects nothing.
    out = tmp_path / "cert.tsv"
    assert _invoke(*_with_options(CERTIFY, ("--skip", "5000")), threshold_model_file, "--out", out).exit_code == 0
    assert results.read_results(str(out)).idx.tolist() == [0]


def test_batch_help_states_the_rounding_to_noise_blocks():
    block = inspect.signature(SmoothedClassifier).parameters["noise_block"].default  # what the jobs use
    wording = f"rounded down to a multiple of the noise block ({block} draws), at least one block"
    for name in ("certify", "predict", "attack"):
        [batch] = [param for param in cli.commands[name].params if param.name == "batch"]
        assert wording in batch.help, name


def test_certify_refuses_to_resume_with_other_parameters(model_file, tmp_path):
    out = tmp_path / "cert.tsv"
    args = [a if a != "200" else "300" for a in CERTIFY]
    assert _invoke(*CERTIFY, model_file, "--out", out, "--max", "150").exit_code == 0
    before = out.read_bytes()
    result = _invoke(*args, model_file, "--out", out, "--max", "150")
    assert result.exit_code != 0 and "other parameters" in result.output
    assert out.read_bytes() == before


def test_predict_writes_predict_columns(model_file, tmp_path):
    out = tmp_path / "pred.tsv"
    result = _invoke("predict", "--dataset", "cifar10_sample", "--sigma", "0.25", "--n", "100", "--batch", "100",
                     "--skip", "250", model_file, "--out", out)
    assert result.exit_code == 0, result.output
    rows = results.read_results(str(out))
    assert rows.kind == "predict" and rows.idx.tolist() == [0, 250, 500, 750]


@pytest.mark.parametrize("change, message", [
    (("--sigma", "0"), "sigma"),
    (("--sigma", "-0.5"), "sigma"),
    (("--alpha", "1.5"), "alpha"),
    (("--alpha", "0"), "alpha"),
    (("--n", "5"), "too small to ever certify"),
    (("--n0", "0"), "n0"),
    (("--batch", "0"), "batch"),
    (("--skip", "0"), "skip"),
    (("--max", "-5"), "max"),
    (("--max", "0"), "0 selects no example"),
    (("--dataset", "imagenet"), "imagenet"),
    (("--dataset", "cifar10", "--data-dir", "/nonexistent/dir"), "/nonexistent/dir"),
    (("--devices", "GPU:7"), "'GPU:7' is not a device of this process"),
    (("--devices", "CPU"), "not a device name with an index"),
])
def test_certify_bad_arguments_fail_cleanly_without_output(model_file, tmp_path, change, message):
    out = tmp_path / "cert.tsv"
    _assert_fails_cleanly(_with_options(CERTIFY, change) + [model_file, "--out", out], message)
    assert not out.exists() and not (tmp_path / "cert.tsv.json").exists()


def test_certify_missing_or_malformed_model_file_fails_cleanly(tmp_path):
    bad = tmp_path / "bad.keras"
    bad.write_bytes(b"not a zip archive")
    for model, message in [(tmp_path / "missing.keras", "missing.keras"), (bad, "cannot load a Keras model")]:
        out = tmp_path / "cert.tsv"
        _assert_fails_cleanly([*CERTIFY, model, "--out", out], message)
        assert not out.exists()


TRAIN = ("train", "--dataset", "cifar10_sample", "--arch", "small_cnn", "--sigma", "0.25", "--batch", "500",
         "--val-examples", "100")
STEPS_PER_EPOCH = 8  # the sample's 4,000 training images in batches of 500


@pytest.fixture(scope="module")
def trained_run(tmp_path_factory):
    """The directory of a one-epoch `train` run; tests that change it work on a copy (`_copy_run`)."""
    outdir = tmp_path_factory.mktemp("train") / "run"
    result = _invoke(*TRAIN, "--epochs", "1", "--outdir", outdir)
    assert result.exit_code == 0, result.output
    return outdir


def _copy_run(trained_run, tmp_path):
    return type(tmp_path)(shutil.copytree(trained_run, tmp_path / "run"))


def _snapshot(directory):
    """{file name: bytes} of a directory's files."""
    return {path.name: path.read_bytes() for path in sorted(directory.iterdir())}


def _train_state(outdir):
    return json.loads((outdir / jobs.STATE_FILE).read_text())


def test_train_writes_model_config_log_and_resumes(trained_run, tmp_path):
    assert math.ceil(int(data.load_dataset("cifar10_sample", "train").cardinality()) / 500) == STEPS_PER_EPOCH
    outdir = _copy_run(trained_run, tmp_path)
    args = [*TRAIN, "--outdir", outdir]
    for name in ("base_model.keras", "checkpoint.keras", "config.json", "log.csv", "train_state.json"):
        assert (outdir / name).exists(), name
    before = _snapshot(outdir)
    result = _invoke(*args, "--epochs", "1")  # nothing left to train: no file changes
    assert result.exit_code == 0, result.output
    assert _snapshot(outdir) == before
    _assert_fails_cleanly(_with_options(args, ("--sigma", "0.5", "--epochs", "2")), "different configuration")
    assert _snapshot(outdir) == before
    result = _invoke(*args, "--epochs", "2")
    assert result.exit_code == 0, result.output
    log = (outdir / "log.csv").read_text().splitlines()
    assert [line.split(",")[0] for line in log[1:]] == ["0", "1"]  # epoch 1 ran after resuming, once
    assert _train_state(outdir) == {"epochs_done": 2, "steps_per_epoch": STEPS_PER_EPOCH}
    assert keras.models.load_model(outdir / "base_model.keras").output_shape == (None, 10)
    # Epoch 1 continued the checkpoint's optimizer: a fresh model's would have counted one epoch of steps.
    assert int(keras.models.load_model(outdir / "checkpoint.keras").optimizer.iterations) == 2 * STEPS_PER_EPOCH


def test_train_counts_epochs_from_the_checkpoint_after_a_crash_before_the_state(trained_run, tmp_path, monkeypatch):
    outdir = _copy_run(trained_run, tmp_path)

    class Crash(Exception):
        pass

    atomic = files.atomic_write

    def crash_before_base_model(path, save):  # the checkpoint of epoch 2 is written, the other files are not
        if os.path.basename(path) == jobs.BASE_MODEL_FILE:
            raise Crash()
        atomic(path, save)

    monkeypatch.setattr(files, "atomic_write", crash_before_base_model)
    config = jobs.TrainConfig(dataset="cifar10_sample", arch="small_cnn", sigma=0.25, batch=500, val_examples=100,
                              epochs=2)
    with pytest.raises(Crash):
        jobs.train.train(config, str(outdir), verbose=0)
    monkeypatch.undo()
    assert _train_state(outdir)["epochs_done"] == 1  # one epoch behind the checkpoint
    trained = keras.models.load_model(outdir / "checkpoint.keras").base_model.get_weights()
    stale = keras.models.load_model(outdir / "base_model.keras").get_weights()
    assert not all(np.array_equal(a, b) for a, b in zip(trained, stale))
    log = (outdir / "log.csv").read_text()

    result = _invoke(*TRAIN, "--epochs", "2", "--outdir", outdir)
    assert result.exit_code == 0, result.output
    assert (outdir / "log.csv").read_text() == log  # epoch 2 was not trained again
    resumed = keras.models.load_model(outdir / "base_model.keras").get_weights()
    assert all(np.array_equal(a, b) for a, b in zip(trained, resumed))  # rewritten from the checkpoint
    assert _train_state(outdir) == {"epochs_done": 2, "steps_per_epoch": STEPS_PER_EPOCH}


def test_train_replaces_config_json_atomically(trained_run, tmp_path, monkeypatch):
    outdir = _copy_run(trained_run, tmp_path)
    before = _snapshot(outdir)

    def crash(source, destination):
        raise OSError("simulated crash before the rename")

    monkeypatch.setattr(os, "replace", crash)
    config = jobs.TrainConfig(dataset="cifar10_sample", arch="small_cnn", sigma=0.25, batch=500, val_examples=100,
                              epochs=2)
    with pytest.raises(OSError, match="simulated crash"):
        jobs.train.train(config, str(outdir), verbose=0)
    assert _snapshot(outdir) == before  # the old config.json, whole, and no temporary file


@pytest.mark.parametrize("content, message", [
    ({"sigma": 0.25, "bogus": 1, "noise_scheme": jobs.NOISE_SCHEME}, "unknown keys bogus"),
    ({"sigma": -1.0, "noise_scheme": jobs.NOISE_SCHEME}, "sigma"),
    ({"sigma": 0.25, "method": "smoothadv", "method_config": {"epsilon": "x"}, "noise_scheme": jobs.NOISE_SCHEME},
     "epsilon"),
    ({"sigma": 0.25, "attack": "pgd"}, "written by an older tfsmooth"),  # the flat config of noise scheme 1
    ([0.25], "JSON object"),
    ("{not json", "cannot read"),
])
def test_train_refuses_a_damaged_config_json(tmp_path, content, message):
    outdir = tmp_path / "run"
    outdir.mkdir()
    (outdir / "config.json").write_text(content if isinstance(content, str) else json.dumps(content))
    before = _snapshot(outdir)
    assert "config.json" in _assert_fails_cleanly([*TRAIN, "--epochs", "1", "--outdir", outdir], message)
    assert _snapshot(outdir) == before


@pytest.mark.parametrize("state, message", [
    ({"steps_per_epoch": STEPS_PER_EPOCH}, "epochs_done must be an integer >= 1, got None"),
    ({"epochs_done": 1}, "older tfsmooth"),
    ({"epochs_done": "1", "steps_per_epoch": STEPS_PER_EPOCH}, "epochs_done must be an integer"),
    ({"epochs_done": 3, "steps_per_epoch": STEPS_PER_EPOCH}, "different runs"),  # the checkpoint holds 1 epoch
])
def test_train_refuses_a_damaged_or_foreign_train_state(trained_run, tmp_path, state, message):
    outdir = _copy_run(trained_run, tmp_path)
    (outdir / jobs.STATE_FILE).write_text(json.dumps(state))
    before = _snapshot(outdir)
    output = _assert_fails_cleanly([*TRAIN, "--epochs", "2", "--outdir", outdir], message)
    assert jobs.STATE_FILE in output
    assert _snapshot(outdir) == before


@pytest.mark.parametrize("change, message", [
    (("--sigma", "0"), "sigma"),
    (("--epochs", "0"), "epochs"),
    (("--arch", "vgg"), "'--arch': 'vgg' is not one of 'cifar_resnet20'"),
    (("--lr", "-1"), "lr"),
    (("--lr", "inf"), "lr must be a finite number"),
    (("--weight-decay", "inf"), "weight_decay must be a finite number"),
    (("--weight-decay", "nan"), "weight_decay"),
    (("--dataset", "imagenet"), "Unknown dataset name 'imagenet'"),
    (("--augment", "mixup"), "'--augment': 'mixup' is not one of 'auto'"),
    (("--strategy", "tpu"), "'--strategy': 'tpu' is not one of 'default'"),
])
def test_train_bad_arguments_fail_cleanly(tmp_path, change, message):
    outdir = tmp_path / "run"
    args = ["train", "--dataset", "cifar10_sample", "--arch", "small_cnn", "--epochs", "1", "--outdir", outdir]
    _assert_fails_cleanly(_with_options(args, change), message)
    assert not outdir.exists()  # no partial output: not even an empty directory


def test_train_cli_choices_are_the_librarys():
    from tfsmooth import distribute
    from tfsmooth.cli.train import train

    options = {option.name: option for option in train.params}
    assert tuple(options["augment"].type.choices) == data.AUGMENTATIONS
    assert tuple(options["strategy"].type.choices) == distribute.STRATEGIES


def test_train_resumes_a_run_recorded_before_the_augment_option(trained_run, tmp_path):
    # config.json without "augment" (written before the option): those runs applied crop + flip, which is what
    # "auto" means for the sample's colour images, so the run resumes.
    outdir = _copy_run(trained_run, tmp_path)
    config = json.loads((outdir / "config.json").read_text())
    del config["augment"]
    (outdir / "config.json").write_text(json.dumps(config))
    result = _invoke(*TRAIN, "--epochs", "2", "--outdir", outdir)
    assert result.exit_code == 0, result.output
    assert _train_state(outdir)["epochs_done"] == 2
    _assert_fails_cleanly([*TRAIN, "--epochs", "3", "--augment", "none", "--outdir", outdir], "augment: 'crop_flip'")


def test_train_records_the_augmentation_and_multi_worker_needs_tf_config(trained_run, tmp_path, monkeypatch):
    # "auto" is recorded as what it means for the sample's colour images: the CIFAR recipe.
    assert json.loads((trained_run / "config.json").read_text())["augment"] == "crop_flip"
    with pytest.raises(ValueError, match="augment must be one of auto, crop_flip, crop, none"):
        jobs.TrainConfig(dataset="cifar10_sample", arch="small_cnn", augment="flip")
    monkeypatch.delenv("TF_CONFIG", raising=False)
    outdir = tmp_path / "run"
    _assert_fails_cleanly([*TRAIN, "--epochs", "1", "--strategy", "multi-worker", "--outdir", outdir],
                          "needs the TF_CONFIG environment variable")
    assert not outdir.exists()


@pytest.mark.parametrize("name", ["lr", "lr_gamma", "weight_decay"])
@pytest.mark.parametrize("value", [math.inf, math.nan])
def test_train_config_refuses_non_finite_rates(name, value):
    with pytest.raises(ValueError, match=f"{name} must be a finite number"):
        jobs.TrainConfig(dataset="cifar10_sample", arch="small_cnn", **{name: value})


@pytest.mark.slow
def test_end_to_end_on_real_cifar10(cifar_dir, tmp_path):
    """train -> certify -> analyze on the real CIFAR-10 files with a tiny budget."""
    outdir = tmp_path / "run"
    result = _invoke("train", "--dataset", "cifar10", "--data-dir", cifar_dir, "--arch", "small_cnn", "--epochs", "1",
                     "--batch", "250", "--lr", "0.05", "--val-examples", "500", "--outdir", outdir)
    assert result.exit_code == 0, result.output
    out = tmp_path / "cert.tsv"
    result = _invoke("certify", outdir / "base_model.keras", "--dataset", "cifar10", "--data-dir", cifar_dir,
                     "--sigma", "0.25", "--n0", "50", "--n", "500", "--batch", "500", "--skip", "100", "--out", out)
    assert result.exit_code == 0, result.output
    result = _invoke("analyze", out, "--radii", "0,0.25", "--format", "json")
    assert result.exit_code == 0, result.output
    summary = json.loads(result.output)[str(out)]
    assert summary["count"] == 100  # test indices 0, 100, ..., 9900
    acc0 = summary["certified_accuracy"]["0.0"]
    # One epoch of a small CNN is well above chance under noise: 27-28 % on the 500 validation images (chance
    # 10 %, standard error 2 points), and its smoothed classifier certifies 32 of these 100 images at r = 0
    # (standard error 4.7 points; on 20 images the count was 2 to 3, too few for a threshold).
    with open(outdir / "log.csv") as f:
        assert float(next(csv.DictReader(f))["val_accuracy"]) > 0.18
    assert 0.15 <= acc0 < 1.0 and summary["abstain_rate"] < 0.5
    # Recomputed from the raw TSV, without tfsmooth's reader or analysis.
    table = np.genfromtxt(out, delimiter="\t", names=True)
    idx = table["idx"].astype(int)
    assert idx.tolist() == list(range(0, 10_000, 100))
    test_labels = np.fromiter(data.load_dataset("cifar10", "test", str(cifar_dir)).map(lambda x, y: y)
                              .as_numpy_iterator(), np.int64)
    assert (table["label"].astype(int) == test_labels[idx]).all()
    for radius in ("0.0", "0.25"):
        expected = np.mean((table["correct"] == 1) & (table["radius"] >= float(radius)))
        assert summary["certified_accuracy"][radius] == pytest.approx(expected, abs=1e-12)


@pytest.mark.parametrize("change, message", [
    (("--n", "10"), "too small to ever predict"),  # alpha = 0.001 needs n >= 11
    (("--sigma", "0"), "sigma"),
    (("--alpha", "2"), "alpha"),
    (("--split", "validation"), "split"),
    (("--max", "0"), "0 selects no example"),
])
def test_predict_bad_arguments_fail_cleanly_without_output(model_file, tmp_path, change, message):
    out = tmp_path / "pred.tsv"
    args = ["predict", "--dataset", "cifar10_sample", "--sigma", "0.25", "--n", "100", model_file, "--out", out]
    _assert_fails_cleanly(_with_options(args, change), message)
    assert not out.exists() and not (tmp_path / "pred.tsv.json").exists()


def test_attack_refuses_an_empty_selection_without_output(model_file, tmp_path):
    out = tmp_path / "attack.tsv"
    _assert_fails_cleanly(["attack", "--dataset", "cifar10_sample", "--sigma", "0.25", "--max", "0", model_file,
                           "--out", out], "0 selects no example")
    assert not out.exists() and not (tmp_path / "attack.tsv.json").exists()
