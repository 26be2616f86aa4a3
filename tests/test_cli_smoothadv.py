"""`train --method smoothadv`, `attack`, `pseudo-label` and self-training / fine-tuning through `train`."""

import json

import keras
import numpy as np
import pytest
from click.testing import CliRunner

from tfsmooth import analysis, data, models, results, runs
from tfsmooth.cli.analyze import analyze
from tfsmooth.cli.attack import attack
from tfsmooth.cli.pseudo_label import pseudo_label
from tfsmooth.cli.train import train

TINY = ("--dataset", "cifar10_sample", "--arch", "small_cnn", "--batch", "16", "--train-examples", "32",
        "--val-examples", "0")
SMOOTHADV = ("--method", "smoothadv", "--epsilon", "0.5", "--num-steps", "1", "--num-noise-vec", "2",
             "--warmup", "2")
ATTACK = ("--dataset", "cifar10_sample", "--sigma", "0.25", "--epsilon", "0.5", "--num-steps", "2",
          "--num-noise-vec", "2", "--n", "100", "--batch", "100", "--skip", "500", "--seed", "3")


def _invoke(command, *args):
    return CliRunner().invoke(command, [str(a) for a in args], catch_exceptions=False)


def _refused(command, *args):
    result = CliRunner().invoke(command, [str(a) for a in args])
    assert result.exit_code != 0 and "Traceback" not in result.output, result.output
    return result.output


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
    assert (config["method"], config["attack"], config["epsilon"], config["num_steps"], config["num_noise_vec"],
            config["warmup_epochs"], config["multi_noise"]) == ("smoothadv", "pgd", 0.5, 1, 2, 2, True)
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

    config = runs.AttackConfig(model=str(model), dataset="cifar10_sample", sigma=0.25, attack="ddn", epsilon=0.5,
                               num_steps=2, num_noise_vec=2, n=100, batch=100, skip=250, seed=3,
                               attack_batch=attack_batch)
    with pytest.raises(Crash):
        runs.attack_dataset(config, str(broken), on_row=crash_after_two)
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
    (("--attack-batch", "0"), "attack_batch"),
    (("--epsilon", "-0.5"), "epsilon"),
    (("--num-steps", "0"), "num_steps"),
    (("--num-noise-vec", "0"), "num_noise_vec"),
    (("--n", "5"), "too small to ever predict"),
    (("--sigma", "0"), "sigma"),
    (("--attack", "ddn", "--estimator", "stein"), "estimator"),
    (("--attack", "cw"), "cw"),
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


def test_attack_missing_model_fails_cleanly(tmp_path):
    out = tmp_path / "attack.tsv"
    assert "missing.keras" in _refused(attack, tmp_path / "missing.keras", *ATTACK, "--out", out)
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
    config = runs.TrainConfig(dataset="cifar10_sample", arch="small_cnn", batch=1000, train_examples=32,
                              unlabeled="cifar10_sample", pseudo_labels=str(labels_path), self_training_weight=0.5)
    batches = list(runs._training_data(config, 10).as_numpy_iterator())
    weights = np.concatenate([w for _, _, w in batches])
    # 32 labeled images of weight 1 and 4,000 pseudo-labeled ones of weight 0.5: 4,032 examples, total weight 2,032.
    assert len(weights) == 4032 and weights.sum() == 2032.0
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
    config = runs.TrainConfig(dataset="cifar10_sample", arch="small_cnn", init_from=str(path))
    base = runs._initial_base_model(config, 10)
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
    (("--method", "smoothadv", "--num-noise-vec", "0"), "num_noise_vec"),
    (("--method", "smoothadv", "--warmup", "0"), "warmup_epochs"),
    (("--method", "smoothadv", "--attack", "cw"), "cw"),
    (("--unlabeled", "cifar10_sample"), "together"),
    (("--unlabeled", "cifar10_sample:test", "--pseudo-labels", "labels.npz"), "train split"),
    (("--unlabeled", "cifar10_sample", "--pseudo-labels", "missing.npz"), "missing.npz"),
    (("--init-from", "missing.keras"), "missing.keras"),
    (("--train-examples", "-3"), "train_examples"),
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
