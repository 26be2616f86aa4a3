"""`train --method smoothadv`, `attack`, `pseudo-label` and self-training / fine-tuning through `train`."""

import json
import pathlib
import re

import keras
import numpy as np
import pytest
from click.testing import CliRunner

from tfsmooth import ABSTAIN, analysis, attacks, data, models, results, jobs
from tfsmooth.cli.analyze import analyze
from tfsmooth.cli.attack import attack
from tfsmooth.cli.certify import predict
from tfsmooth.cli.pseudo_label import pseudo_label
from tfsmooth.cli.train import train

TINY = ("--dataset", "cifar10_sample", "--arch", "small_cnn", "--batch", "16", "--train-examples", "32",
        "--val-examples", "0")
SMOOTHADV = ("--method", "smoothadv", "--epsilon", "0.5", "--num-steps", "1", "--num-noise-vec", "2",
             "--warmup", "2")
ATTACK = ("--dataset", "cifar10_sample", "--sigma", "0.25", "--epsilon", "0.5", "--num-steps", "2",
          "--num-noise-vec", "2", "--n", "100", "--batch", "100", "--skip", "500", "--seed", "3")
# A trained ResNet-20 (70 % clean accuracy on the images below; tests/test_shipped_models.py), so that attacks
# have predictions to change. PREDICT options shared by `predict` and `attack`: sample test images 0, 100, ..., 900.
TRAINED = pathlib.Path(__file__).resolve().parent.parent / "benchmarks" / "results" / "full_gaussian_sigma0.25" \
    / "base_model.keras"
EVALUATE = ("--dataset", "cifar10_sample", "--sigma", "0.25", "--n", "100", "--batch", "100", "--skip", "100",
            "--seed", "3")


def _invoke(command, *args):
    return CliRunner().invoke(command, [str(a) for a in args], catch_exceptions=False)


def _refused(command, *args):
    result = CliRunner().invoke(command, [str(a) for a in args])
    assert result.exit_code != 0 and "Traceback" not in result.output, result.output
    return result.output


def _linked_copy(directory, copy):
    """`copy`: a new directory of symbolic links to the files of `directory` (the same files elsewhere)."""
    copy.mkdir()
    for path in directory.iterdir():
        (copy / path.name).symlink_to(path)
    return copy


def _sample_test_images(skip):
    """(images float32 [N, 32, 32, 3], labels int64 [N]) of every `skip`-th cifar10_sample test image."""
    examples = list(data.select_examples(data.load_dataset("cifar10_sample", "test"), skip))
    return np.stack([image for _, image, _ in examples]), np.array([int(label) for _, _, label in examples])


def _base_predictions(model, images):
    return np.argmax(model.predict(images, verbose=0), axis=1)


def _clean_base_predictions(model_path, skip):
    """The base classifier's class on every `skip`-th clean sample test image, computed directly."""
    return _base_predictions(jobs.load_base_model(str(model_path)), _sample_test_images(skip)[0])


def _attack_trained(out, *options):
    """`tfsmooth attack` of the shipped Gaussian model on the EVALUATE images with `options`; its rows."""
    result = _invoke(attack, TRAINED, *EVALUATE, *options, "--out", out)
    assert result.exit_code == 0, result.output
    return results.read_results(str(out))


@pytest.fixture(scope="module")
def smoothadv_run(tmp_path_factory):
    """One SmoothAdv epoch on 32 sample images, then a resumed second epoch."""
    outdir = tmp_path_factory.mktemp("smoothadv") / "run"
    for epochs in ("1", "2"):
        result = _invoke(train, *TINY, *SMOOTHADV, "--epochs", epochs, "--outdir", outdir)
        assert result.exit_code == 0, result.output
    return outdir


@pytest.mark.slow
def test_train_smoothadv_writes_config_model_and_warmed_up_epsilon(smoothadv_run):
    config = json.loads((smoothadv_run / "config.json").read_text())
    method = config["method_config"]
    assert (config["method"], method["attack"], method["epsilon"], method["num_steps"], method["num_noise_vec"],
            method["warmup_epochs"], method["multi_noise"]) == ("smoothadv", "pgd", 0.5, 1, 2, 2, True)
    assert config["noise_scheme"] == jobs.NOISE_SCHEME
    log = (smoothadv_run / "log.csv").read_text().splitlines()
    header = log[0].split(",")
    epsilon = [float(line.split(",")[header.index("epsilon")]) for line in log[1:]]
    # eps_t = min(0.5, 0.5 (t + 1) / 2): 0.25 in epoch 0, 0.5 in epoch 1, which ran after resuming.
    assert epsilon == [0.25, 0.5]
    assert keras.models.load_model(smoothadv_run / "base_model.keras").output_shape == (None, 10)


@pytest.mark.slow
def test_attack_on_two_images_writes_attack_rows_that_analyze_reads(smoothadv_run, tmp_path):
    out = tmp_path / "attack.tsv"
    result = _invoke(attack, smoothadv_run / "base_model.keras", *ATTACK, "--out", out)
    assert result.exit_code == 0, result.output
    lines = out.read_text().splitlines()
    assert lines[0] == "idx\tlabel\tpredict\tbasePredict\tcorrect\ttime"
    rows = results.read_results(str(out))
    # The sample's 1,000 test images, every 500th: idx 0 and 500, with their true labels.
    labels = [label for idx, _, label in data.select_examples(data.load_dataset("cifar10_sample", "test"), 500)]
    assert rows.kind == "attack" and rows.idx.tolist() == [0, 500] and rows.label.tolist() == labels
    assert set(rows.base_predict.tolist()) <= set(range(10))
    sidecar = json.loads((tmp_path / "attack.tsv.json").read_text())
    assert (sidecar["kind"], sidecar["epsilon"], sidecar["num_noise_vec"], sidecar["n"]) == ("attack", 0.5, 2, 100)
    assert sidecar["data_source"] == "embedded sample"
    result = _invoke(analyze, out, "--format", "json")
    assert result.exit_code == 0, result.output
    summary = json.loads(result.output)[str(out)]
    assert summary["count"] == 2 and summary["empirical_accuracy"] == pytest.approx(rows.correct.mean())


@pytest.mark.slow
@pytest.mark.parametrize("attack_batch", [3, 8])
def test_attack_resumed_after_a_crash_gives_identical_rows(smoothadv_run, tmp_path, attack_batch):
    # attack_batch 3: groups {0, 250, 500}, {750}; the crash falls inside the first group, which the rerun
    # attacks whole again. attack_batch 8: one group.
    model = smoothadv_run / "base_model.keras"
    full, broken = tmp_path / "full.tsv", tmp_path / "broken.tsv"
    args = [*ATTACK, "--skip", "250", "--attack", "ddn", "--attack-batch", str(attack_batch)]  # idx 0, 250, 500, 750
    assert _invoke(attack, model, *args, "--out", full).exit_code == 0

    class Crash(Exception):
        pass

    def crash_after_two(row, seen=[]):
        seen.append(row)
        if len(seen) == 2:
            raise Crash()

    config = jobs.AttackConfig(model=str(model), dataset="cifar10_sample", sigma=0.25, attack="ddn", epsilon=0.5,
                               num_steps=2, num_noise_vec=2, n=100, batch=100, skip=250, seed=3,
                               attack_batch=attack_batch)
    with pytest.raises(Crash):
        jobs.attack_dataset(config, str(broken), on_row=crash_after_two)
    with open(broken, "a") as f:
        f.write("500\t2")  # a crash in the middle of writing a row
    result = _invoke(attack, model, *args, "--out", broken)
    assert result.exit_code == 0, result.output
    assert "2 new rows" in result.output

    def without_time(path):
        return [line.rsplit("\t", 1)[0] for line in path.read_text().splitlines()]

    assert without_time(broken) == without_time(full)


def test_attack_rows_do_not_depend_on_attack_batch(smoothadv_run, tmp_path):
    # Each image's draws and attack seed depend on (seed, idx) only: attacking one image at a time or four
    # together gives the same rows (up to float rounding of batched kernels, which does not flip these).
    model = smoothadv_run / "base_model.keras"
    rows = {}
    for size in (1, 4):
        out = tmp_path / f"attack{size}.tsv"
        args = [*ATTACK, "--skip", "250", "--attack-batch", str(size)]
        assert _invoke(attack, model, *args, "--out", out).exit_code == 0
        rows[size] = [line.rsplit("\t", 1)[0] for line in out.read_text().splitlines()]
    assert len(rows[1]) == 5 and rows[1] == rows[4]


@pytest.mark.parametrize("change, message", [
    (("--attack-batch", "0"), "'--attack-batch': 0 is not in the range x>=1"),
    (("--epsilon", "-0.5"), "epsilon"),
    (("--num-steps", "0"), "'--num-steps': 0 is not in the range x>=1"),
    (("--num-noise-vec", "0"), "'--num-noise-vec': 0 is not in the range x>=1"),
    (("--n", "5"), "too small to ever predict"),
    (("--sigma", "0"), "sigma"),
    (("--attack", "ddn", "--estimator", "stein"), "estimator"),
    (("--attack", "cw"), "cw"),
    (("--gamma", "0.1"), "apply to attack 'ddn' only"),
    (("--init-norm", "0.5"), "apply to attack 'ddn' only"),
    (("--attack", "ddn", "--gamma", "1.0"), "'--gamma': 1.0 is not in the range 0.0<x<1.0"),
    (("--attack", "ddn", "--init-norm", "0"), "'--init-norm': 0.0 is not in the range x>0"),
    (("--attack", "ddn", "--init-norm", "nan"), "init_norm must be a finite number > 0"),
])
def test_attack_bad_arguments_fail_cleanly_without_output(smoothadv_run, tmp_path, change, message):
    out = tmp_path / "attack.tsv"
    args = list(ATTACK)
    for i in range(0, len(change), 2):
        if change[i] in args:
            args[args.index(change[i]) + 1] = change[i + 1]
        else:
            args += [change[i], change[i + 1]]
    assert message in _refused(attack, smoothadv_run / "base_model.keras", *args, "--out", out)
    assert not out.exists() and not (tmp_path / "attack.tsv.json").exists()


@pytest.mark.slow
def test_attack_with_epsilon_0_answers_as_predict_on_the_clean_images(tmp_path):
    # Both commands run PREDICT on the draws of stream noise.STREAM_PREDICT under (seed, idx), and at epsilon 0
    # the attacked point is the clean image: the rows agree exactly, abstentions included.
    predicted = tmp_path / "predict.tsv"
    rows = _attack_trained(tmp_path / "attack.tsv", "--epsilon", "0", "--num-steps", "1", "--num-noise-vec", "2")
    assert _invoke(predict, TRAINED, *EVALUATE, "--out", predicted).exit_code == 0
    expected = results.read_results(str(predicted))
    assert rows.idx.tolist() == expected.idx.tolist() == list(range(0, 1000, 100))
    for column in ("label", "predict", "correct"):
        np.testing.assert_array_equal(getattr(rows, column), getattr(expected, column))
    # Not a constant answer: several classes, and with n = 100 some abstentions, which depend on the draws.
    assert len(set(expected.predict.tolist())) >= 3 and ABSTAIN in expected.predict
    np.testing.assert_array_equal(rows.base_predict, _clean_base_predictions(TRAINED, 100))


@pytest.mark.slow
def test_attack_with_a_large_epsilon_changes_most_base_predictions(tmp_path):
    # An l2 radius of 8 on [0, 1] pixels (a CIFAR image has norm ~ 30) lets the attack reach another class on
    # most images (8 of these 10, deterministic for this seed); returning the clean images would change none.
    rows = _attack_trained(tmp_path / "attack.tsv", "--epsilon", "8", "--num-steps", "2", "--num-noise-vec", "2")
    changed = rows.base_predict != _clean_base_predictions(TRAINED, 100)
    assert changed.sum() >= 6, changed


@pytest.mark.slow
def test_attack_base_pgd_is_vanilla_pgd_on_the_base_classifier(tmp_path):
    # --attack base-pgd runs attacks.pgd (no noise) on each image: basePredict is the base classifier's class at
    # the point that attacks.pgd reaches, computed here directly, and that point fools it on some images.
    rows = _attack_trained(tmp_path / "attack.tsv", "--attack", "base-pgd", "--epsilon", "0.5", "--num-steps", "5")
    images, labels = _sample_test_images(100)
    model = jobs.load_base_model(str(TRAINED))
    x_adv = attacks.pgd(model, images, labels, epsilon=0.5, num_steps=5)
    np.testing.assert_array_equal(rows.base_predict, _base_predictions(model, x_adv))
    assert np.sum(rows.base_predict != _base_predictions(model, images)) >= 2  # 3 of 10 here
    assert json.loads((tmp_path / "attack.tsv.json").read_text())["attack"] == "base-pgd"


def test_attack_passes_gamma_and_init_norm_to_ddn(smoothadv_run, tmp_path, monkeypatch):
    seen = []
    ddn = attacks.smooth_adv_ddn

    def spy(*args, **kwargs):
        seen.append((kwargs["gamma"], kwargs["init_norm"]))
        return ddn(*args, **kwargs)

    monkeypatch.setitem(attacks.SMOOTHADV_ATTACKS, "ddn", spy)  # the one registry the attack job reads
    out = tmp_path / "attack.tsv"
    result = _invoke(attack, smoothadv_run / "base_model.keras", *ATTACK, "--attack", "ddn", "--gamma", "0.2",
                     "--init-norm", "0.3", "--out", out)
    assert result.exit_code == 0, result.output
    assert seen and set(seen) == {(0.2, 0.3)}
    record = json.loads((tmp_path / "attack.tsv.json").read_text())
    assert (record["gamma"], record["init_norm"]) == (0.2, 0.3)


def test_attack_command_offers_the_library_attacks():
    options = {param.name: param for param in attack.params}
    assert tuple(options["attack"].type.choices) == jobs.ATTACKS
    assert options["gamma"].default == attacks.DDN_GAMMA


@pytest.mark.slow
def test_attack_resume_refuses_rows_of_another_data_source(smoothadv_run, cifar_dir, tmp_path, monkeypatch):
    # Rows refer to images by idx: a resume must read them from the same source (the run record's
    # data_source); the local files' directory may change.
    monkeypatch.delenv(data.DATA_DIR_ENV_VAR, raising=False)
    out = tmp_path / "attack.tsv"
    sidecar_path = tmp_path / "attack.tsv.json"
    args = [smoothadv_run / "base_model.keras", *ATTACK, "--dataset", "cifar10", "--skip", "5000", "--out", out]
    result = _invoke(attack, *args, "--data-dir", cifar_dir)  # the last --dataset and --skip win
    assert result.exit_code == 0, result.output
    sidecar = json.loads(sidecar_path.read_text())
    assert sidecar["data_source"] == data.SOURCE_LOCAL
    before = out.read_bytes()
    monkeypatch.setenv(data.DATA_DIR_ENV_VAR, str(cifar_dir))  # the same files, named by the variable
    result = _invoke(attack, *args)
    assert result.exit_code == 0 and "0 new rows" in result.output, result.output
    copy = _linked_copy(cifar_dir, tmp_path / "copy")  # the same files elsewhere: still resumable
    result = _invoke(attack, *args, "--data-dir", copy)
    assert result.exit_code == 0 and "0 new rows" in result.output, result.output
    sidecar["data_source"] = data.SOURCE_TFDS  # as if the rows had been computed on tensorflow-datasets' records
    sidecar_path.write_text(json.dumps(sidecar))
    message = _refused(attack, *args, "--data-dir", cifar_dir)
    assert "other parameters" in message and "data_source" in message and data.SOURCE_TFDS in message
    assert out.read_bytes() == before


def test_attack_missing_model_fails_cleanly(tmp_path):
    out = tmp_path / "attack.tsv"
    assert "missing.keras" in _refused(attack, tmp_path / "missing.keras", *ATTACK, "--out", out)
    assert not out.exists()


def test_load_base_model_tells_a_missing_file_from_one_that_is_not_a_keras_archive(tmp_path):
    with pytest.raises(FileNotFoundError, match="missing.keras"):
        jobs.load_base_model(str(tmp_path / "missing.keras"))
    text = tmp_path / "x.keras"
    text.write_text("not a model")
    with pytest.raises(ValueError, match=r"x.keras: it is not a .keras model archive \(a zip file") as info:
        jobs.load_base_model(str(text))
    assert "not found" not in str(info.value)  # what Keras itself says about such a file
    out = tmp_path / "attack.tsv"
    assert "not a .keras model archive" in _refused(attack, text, *ATTACK, "--out", out)
    assert not out.exists()


@pytest.mark.slow
def test_pseudo_label_writes_teacher_labels_and_train_mixes_them_in(smoothadv_run, tmp_path):
    teacher = smoothadv_run / "base_model.keras"
    labels_path = tmp_path / "labels.npz"
    result = _invoke(pseudo_label, teacher, "--dataset", "cifar10_sample", "--split", "train", "--out", labels_path)
    assert result.exit_code == 0, result.output
    with np.load(labels_path, allow_pickle=False) as archive:
        labels, dataset, split = archive["label"], str(archive["dataset"]), str(archive["split"])
    assert (dataset, split, labels.shape, labels.dtype) == ("cifar10_sample", "train", (4000,), np.int64)
    images = np.stack([x for x, _ in data.load_dataset("cifar10_sample", "train").take(50).as_numpy_iterator()])
    expected = np.argmax(keras.models.load_model(teacher).predict(images, verbose=0), axis=1)
    np.testing.assert_array_equal(labels[:50], expected)  # the teacher's top-1 class at the clean image

    args = [*TINY, "--unlabeled", "cifar10_sample:train", "--pseudo-labels", labels_path,
            "--self-training-weight", "0.5"]
    config = jobs.TrainConfig(dataset="cifar10_sample", arch="small_cnn", batch=1000, train_examples=32,
                              unlabeled="cifar10_sample", pseudo_labels=str(labels_path), self_training_weight=0.5)
    batches = list(jobs.train._training_data(config, 10).as_numpy_iterator())
    targets, weights = np.concatenate([y for _, y, _ in batches]), np.concatenate([w for _, _, w in batches])
    # 32 labeled images of weight 1 and 4,000 pseudo-labeled ones of weight 0.5: 4,032 examples, total weight 2,032.
    assert len(weights) == 4032 and weights.sum() == 2032.0
    # The weight-0.5 examples carry the teacher's labels, not the true ones (400 per class in the sample).
    true_labels = data.load_sample_arrays()["train_labels"]
    teacher_counts = np.bincount(targets[weights == 0.5], minlength=10)
    np.testing.assert_array_equal(teacher_counts, np.bincount(labels, minlength=10))
    assert not np.array_equal(teacher_counts, np.bincount(true_labels, minlength=10))
    np.testing.assert_array_equal(np.bincount(targets[weights == 1.0], minlength=10),
                                  np.bincount(true_labels[:32], minlength=10))
    outdir = tmp_path / "student"
    result = _invoke(train, *args, "--batch", "1000", "--epochs", "1", "--outdir", outdir)  # the last --batch wins
    assert result.exit_code == 0, result.output
    config = json.loads((outdir / "config.json").read_text())
    assert config["unlabeled"] == "cifar10_sample:train" and config["self_training_weight"] == 0.5


def test_train_init_from_fine_tunes_with_a_new_head(tmp_path):
    keras.utils.set_random_seed(1)
    pretrained = models.small_cnn(5)  # "pre-trained" on a 5-class task
    path = tmp_path / "pretrained.keras"
    pretrained.save(path)
    config = jobs.TrainConfig(dataset="cifar10_sample", arch="small_cnn", init_from=str(path))
    base = jobs.train._initial_base_model(config, 10)
    assert base.output_shape == (None, 10)
    for old, new in zip(pretrained.get_weights()[:-2], base.get_weights()[:-2]):
        np.testing.assert_array_equal(old, new)  # everything below the head is the pre-trained model
    outdir = tmp_path / "run"
    result = _invoke(train, *TINY, "--init-from", path, "--epochs", "1", "--lr", "0.001", "--outdir", outdir)
    assert result.exit_code == 0, result.output
    assert keras.models.load_model(outdir / "base_model.keras").output_shape == (None, 10)


@pytest.mark.parametrize("change, message", [
    (("--epsilon", "0.5"), "only for method='smoothadv'"),
    (("--method", "smoothadv", "--epsilon", "-1"), "epsilon"),
    (("--method", "smoothadv", "--num-noise-vec", "0"), "'--num-noise-vec': 0 is not in the range x>=1"),
    (("--method", "smoothadv", "--warmup", "0"), "'--warmup': 0 is not in the range x>=1"),
    (("--method", "smoothadv", "--attack", "cw"), "cw"),
    (("--unlabeled", "cifar10_sample"), "together"),
    (("--unlabeled", "cifar10_sample:test", "--pseudo-labels", "labels.npz"), "train split"),
    (("--unlabeled", "cifar10_sample", "--pseudo-labels", "missing.npz"), "missing.npz"),
    (("--init-from", "missing.keras"), "missing.keras"),
    (("--train-examples", "-3"), "'--train-examples': -3 is not in the range x>=0"),
])
def test_train_bad_smoothadv_arguments_fail_cleanly_without_a_run(tmp_path, change, message):
    outdir = tmp_path / "run"
    assert message in _refused(train, *TINY, "--epochs", "1", "--outdir", outdir, *change)
    assert not (outdir / "config.json").exists()


def test_train_init_from_another_architecture_is_refused(tmp_path):
    path = tmp_path / "resnet.keras"
    models.cifar_resnet(20).save(path)
    outdir = tmp_path / "run"
    assert "pass arch='cifar_resnet20'" in _refused(train, *TINY, "--init-from", path, "--epochs", "1",
                                                   "--outdir", outdir)
    assert not (outdir / "config.json").exists()


def test_pseudo_label_bad_arguments_fail_cleanly(smoothadv_run, tmp_path):
    teacher = smoothadv_run / "base_model.keras"
    assert ".npz" in _refused(pseudo_label, teacher, "--dataset", "cifar10_sample", "--out", tmp_path / "labels.txt")
    assert "missing.keras" in _refused(pseudo_label, tmp_path / "missing.keras", "--dataset", "cifar10_sample",
                                       "--out", tmp_path / "labels.npz")
    assert "batch" in _refused(pseudo_label, teacher, "--dataset", "cifar10_sample", "--batch", "0",
                               "--out", tmp_path / "labels.npz")
    assert not (tmp_path / "labels.txt").exists() and not (tmp_path / "labels.npz").exists()


def test_attack_files_count_abstentions_as_wrong_in_analysis(tmp_path):
    # Rows: correct, abstained (-1), wrong. Empirical robust accuracy = 1/3 (abstentions are wrong).
    out = tmp_path / "a.tsv"
    out.write_text("idx\tlabel\tpredict\tbasePredict\tcorrect\ttime\n"
                   "0\t3\t3\t3\t1\t0.5\n20\t1\t-1\t1\t0\t0.5\n40\t2\t5\t5\t0\t0.5\n")
    assert analysis.accuracy(results.read_results(str(out))) == pytest.approx(1 / 3)


@pytest.mark.slow
def test_train_refuses_pseudo_labels_computed_on_another_data_source(cifar_dir, tmp_path, monkeypatch):
    # Label i belongs to image i of the source the teacher saw; the same files in another directory are
    # the same source, tensorflow-datasets' records another.
    copy = _linked_copy(cifar_dir, tmp_path / "copy")
    keras.utils.set_random_seed(0)
    inputs = keras.Input((32, 32, 3))
    teacher = tmp_path / "teacher.keras"
    keras.Model(inputs, keras.layers.Dense(10)(keras.layers.Flatten()(inputs))).save(teacher)  # cheap on 50,000
    labels_path = tmp_path / "labels.npz"
    result = _invoke(pseudo_label, teacher, "--dataset", "cifar10", "--data-dir", copy, "--batch", "5000",
                     "--out", labels_path)
    assert result.exit_code == 0, result.output
    with np.load(labels_path, allow_pickle=False) as archive:
        arrays = {key: archive[key] for key in archive.files}
    assert str(arrays["data_source"]) == data.SOURCE_LOCAL and arrays["label"].shape == (50_000,)
    monkeypatch.setenv(data.DATA_DIR_ENV_VAR, str(cifar_dir))  # the same files in another directory: accepted
    config = jobs.TrainConfig(dataset="cifar10_sample", arch="small_cnn", unlabeled="cifar10",
                              pseudo_labels=str(labels_path))
    attached = np.concatenate([y for y in jobs.self_training.pseudo_labeled_data(config.unlabeled, config.pseudo_labels, config.data_dir, 10).map(lambda x, y: y).batch(50_000)])
    np.testing.assert_array_equal(attached, arrays["label"])
    np.savez(labels_path, **dict(arrays, data_source=np.asarray(data.SOURCE_TFDS)))  # labels of tfds' records
    outdir = tmp_path / "student"
    message = _refused(train, *TINY, "--epochs", "1", "--outdir", outdir, "--unlabeled", "cifar10:train",
                       "--pseudo-labels", labels_path)
    assert f"'{data.SOURCE_TFDS}'" in message and f"'{data.SOURCE_LOCAL}'" in message
    assert not outdir.exists()


def _write_pseudo_labels(path, **change):
    """A pseudo-labels file for 4 cifar10_sample:train images as `pseudo_label` writes it, with `change`d
    entries (None: left out)."""
    arrays = dict(label=np.array([3, 0, 9, 3]), dataset="cifar10_sample", split="train",
                  data_source="embedded sample", teacher="/models/teacher.keras")
    arrays.update(change)
    np.savez(path, **{key: np.asarray(value) for key, value in arrays.items() if value is not None})


def _load_pseudo_labels(path):
    return jobs.load_pseudo_labels(str(path), "cifar10_sample:train", 10, 4, "embedded sample")


def test_load_pseudo_labels_returns_the_int64_labels_of_a_matching_file(tmp_path):
    path = tmp_path / "labels.npz"
    _write_pseudo_labels(path, label=np.array([3, 0, 9, 3], np.int32))
    labels = _load_pseudo_labels(path)
    assert labels.dtype == np.int64 and labels.tolist() == [3, 0, 9, 3]


@pytest.mark.parametrize("change, message", [
    (dict(dataset="cifar10"), "labels cifar10:train, but the unlabeled source is cifar10_sample:train"),
    (dict(data_source="tensorflow-datasets"), "images of 'tensorflow-datasets', but they are read from "
                                              "'embedded sample' now"),
    (dict(label=np.array([3, 0, 9])), "must hold 4 integer labels for cifar10_sample:train, got int64 (3,)"),
    (dict(label=np.array([3.0, 0.0, 9.0, 3.0])), "must hold 4 integer labels for cifar10_sample:train, got float64"),
    (dict(label=np.array([3, 0, 10, 3])), "labels must lie in [0, 10), got [0, 10]"),
    (dict(label=np.array([3, -1, 9, 3])), "labels must lie in [0, 10), got [-1, 9]"),
    (dict(data_source=None), "it lacks data_source"),
    (dict(label=None, split=None), "it lacks label, split"),
])
def test_load_pseudo_labels_refuses_other_source_count_or_range(tmp_path, change, message):
    path = tmp_path / "labels.npz"
    _write_pseudo_labels(path, **change)
    with pytest.raises(ValueError, match=re.escape(message)):
        _load_pseudo_labels(path)


def test_load_pseudo_labels_refuses_files_that_are_not_npz_archives(tmp_path):
    path = tmp_path / "labels.npz"
    with pytest.raises(FileNotFoundError, match="labels.npz"):
        _load_pseudo_labels(path)
    with open(path, "wb") as f:
        np.save(f, np.array([3, 0, 9, 3]))  # an .npy payload under an .npz name
    with pytest.raises(ValueError, match=re.escape("is not a pseudo-labels .npz written by `tfsmooth pseudo-label` "
                                                   "(a zip of label int64 [N] and str dataset, split, data_source): "
                                                   "it holds a single int64 (4,) array (.npy format)")):
        _load_pseudo_labels(path)
    for content in (b"label,3\n", b"PK\x03\x04" + bytes(40)):  # text; a damaged zip
        path.write_bytes(content)
        with pytest.raises(ValueError, match="is not a pseudo-labels .npz"):
            _load_pseudo_labels(path)
    _write_pseudo_labels(path, label=np.array([3, 0, 9, None], dtype=object))  # needs pickle
    with pytest.raises(ValueError, match="is not a pseudo-labels .npz"):
        _load_pseudo_labels(path)


def test_train_with_a_malformed_pseudo_labels_file_fails_cleanly(tmp_path):
    path = tmp_path / "labels.npz"
    with open(path, "wb") as f:
        np.save(f, np.array([3, 0, 9, 3]))
    outdir = tmp_path / "run"
    message = _refused(train, *TINY, "--epochs", "1", "--outdir", outdir, "--unlabeled", "cifar10_sample",
                       "--pseudo-labels", path)
    assert "is not a pseudo-labels .npz" in message and "single int64 (4,) array" in message
    assert not (outdir / "config.json").exists()
