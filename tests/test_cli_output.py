"""What the CLI prints: TensorFlow's start-up logs hidden unless asked, plain progress in logs, Ctrl-C."""

import io
import os
import subprocess
import sys

import keras
import pytest
from click.testing import CliRunner

from tfsmooth import models
from tfsmooth.cli import _common
from tfsmooth.cli.main import cli

TF_LOG_MARKERS = ("I0000", "E0000", "W0000", "cuInit", "oneDNN custom operations", "absl::InitializeLog")


@pytest.fixture(scope="module")
def model_file(tmp_path_factory):
    path = tmp_path_factory.mktemp("model") / "model.keras"
    keras.utils.set_random_seed(0)
    models.small_cnn(10).save(path)
    return path


def _predict_in_a_fresh_process(model_file, tmp_path, *extra, env=None):
    command = [sys.executable, "-m", "tfsmooth.cli.main", *extra, "predict", str(model_file), "--dataset",
               "cifar10_sample", "--sigma", "0.25", "--n", "100", "--batch", "100", "--max", "2",
               "--out", str(tmp_path / "p.tsv")]
    environment = {k: v for k, v in os.environ.items() if k != "TF_CPP_MIN_LOG_LEVEL"}
    environment.update(env or {})
    tmp_path.mkdir(parents=True, exist_ok=True)  # the working directory: not the source tree, which `-m` would import
    done = subprocess.run(command, capture_output=True, text=True, env=environment, timeout=300, cwd=tmp_path)
    assert done.returncode == 0, done.stderr
    return done.stdout + done.stderr


@pytest.mark.slow
def test_a_command_prints_no_tensorflow_start_up_logs(model_file, tmp_path):
    output = _predict_in_a_fresh_process(model_file, tmp_path)
    assert not [marker for marker in TF_LOG_MARKERS if marker in output], output
    assert "2 new rows" in output


@pytest.mark.slow
def test_verbose_shows_tensorflow_logs_and_the_users_log_level_wins(model_file, tmp_path):
    # Which lines TensorFlow prints depends on the build and the CPU (oneDNN, CUDA probing): any of them counts.
    verbose = _predict_in_a_fresh_process(model_file, tmp_path / "a", "--verbose")
    assert [marker for marker in TF_LOG_MARKERS if marker in verbose], verbose
    user_level = _predict_in_a_fresh_process(model_file, tmp_path / "b", env={"TF_CPP_MIN_LOG_LEVEL": "0"})
    assert [marker for marker in TF_LOG_MARKERS if marker in user_level], user_level


class _Stream(io.StringIO):
    def __init__(self, tty):
        super().__init__()
        self.tty = tty

    def isatty(self):
        return self.tty


def test_progress_off_a_terminal_is_plain_lines_with_resume_and_rate():
    stream = _Stream(tty=False)
    progress = _common.Progress(5, done=2, stream=stream, interval=0.0)
    for correct in (1, 0, 1):
        progress({"correct": correct})
    lines = stream.getvalue().splitlines()
    assert lines[0] == "resuming: 2 of 5 images done"
    assert lines[1] == "3/5 images, correct 100.0 %"  # no rate from one row (it holds the tracing)
    assert lines[2].startswith("4/5 images, correct 50.0 %, ") and " s per image, ETA " in lines[2]
    assert lines[3].startswith("5/5 images, correct 66.7 %")
    assert "\x1b" not in stream.getvalue() and "\b" not in stream.getvalue()


def test_progress_off_a_terminal_throttles_but_always_prints_the_last_row():
    stream = _Stream(tty=False)
    progress = _common.Progress(4, stream=stream, interval=3600.0)
    for _ in range(4):
        progress({"correct": 1})
    lines = stream.getvalue().splitlines()
    assert len(lines) == 2 and lines[0] == "1/4 images, correct 100.0 %" and lines[1].startswith("4/4 images")


def test_progress_on_a_terminal_uses_keras_progbar_on_that_stream():
    stream = _Stream(tty=True)
    progress = _common.Progress(2, stream=stream)
    progress({"correct": 1})
    progress({"correct": 1})
    assert "2/2" in stream.getvalue()


def test_ctrl_c_says_how_many_rows_are_saved_and_how_to_resume(model_file, tmp_path, monkeypatch):
    from tfsmooth import jobs

    real = jobs.predict_dataset

    def interrupted(config, out, on_row=None, **kwargs):
        def stop_after_one(row):
            on_row(row)
            raise KeyboardInterrupt

        return real(config, out, on_row=stop_after_one, **kwargs)

    monkeypatch.setattr(jobs, "predict_dataset", interrupted)
    out = tmp_path / "p.tsv"
    result = CliRunner().invoke(cli, ["predict", str(model_file), "--dataset", "cifar10_sample", "--sigma", "0.25",
                                      "--n", "100", "--batch", "100", "--max", "3", "--out", str(out)])
    assert result.exit_code == 130
    assert f"interrupted: 1 of 3 rows are saved in {out}; run the same command again to resume" in result.output
    assert len(out.read_text().splitlines()) == 2  # header + the saved row


@pytest.mark.parametrize("sigma, fragment", [("64", "for 0-255 units use 0.251"),
                                             ("0.00098", "below a quarter of one 8-bit pixel level")])
def test_a_sigma_in_the_wrong_units_is_warned_about_in_one_line(model_file, tmp_path, sigma, fragment):
    result = CliRunner().invoke(cli, ["predict", str(model_file), "--dataset", "cifar10_sample", "--sigma", sigma,
                                      "--n", "100", "--batch", "100", "--max", "1", "--out", str(tmp_path / "p.tsv")])
    assert result.exit_code == 0, result.output
    warning = [line for line in result.output.splitlines() if line.startswith("Warning: ")]
    assert len(warning) == 1 and fragment in warning[0]


def test_certify_warns_when_sigma_differs_from_the_training_run_beside_the_model(model_file, tmp_path):
    import json
    import shutil

    run = tmp_path / "run"
    run.mkdir()
    shutil.copy(model_file, run / "base_model.keras")
    (run / "config.json").write_text(json.dumps({"sigma": 0.5}))
    args = ["predict", str(run / "base_model.keras"), "--dataset", "cifar10_sample", "--n", "100", "--batch", "100",
            "--max", "1"]
    mismatch = CliRunner().invoke(cli, [*args, "--sigma", "0.25", "--out", str(tmp_path / "a.tsv")])
    assert mismatch.exit_code == 0
    assert "Warning: sigma=0.25, but the base classifier was trained with sigma=0.5" in mismatch.output
    match = CliRunner().invoke(cli, [*args, "--sigma", "0.5", "--out", str(tmp_path / "b.tsv")])
    assert match.exit_code == 0 and "Warning" not in match.output


def test_a_moved_model_resumes_and_restart_starts_over(model_file, tmp_path):
    import shutil

    first, moved, out = tmp_path / "a" / "m.keras", tmp_path / "b" / "m.keras", tmp_path / "p.tsv"
    first.parent.mkdir()
    moved.parent.mkdir()
    shutil.copy(model_file, first)
    args = ["--dataset", "cifar10_sample", "--sigma", "0.25", "--n", "100", "--batch", "100", "--out", str(out)]
    assert CliRunner().invoke(cli, ["predict", str(first), *args, "--max", "2"]).exit_code == 0
    shutil.move(first, moved)  # same bytes, new place: the SHA-256 identifies it
    resumed = CliRunner().invoke(cli, ["predict", str(moved), *args, "--max", "2"])
    assert resumed.exit_code == 0 and "0 new rows" in resumed.output
    refused = CliRunner().invoke(cli, ["predict", str(moved), *args, "--max", "3", "--seed", "1"])
    assert refused.exit_code == 1 and "rerun with --restart" in refused.output
    restarted = CliRunner().invoke(cli, ["predict", str(moved), *args, "--max", "3", "--seed", "1", "--restart"])
    assert restarted.exit_code == 0 and "3 new rows" in restarted.output
    assert len(out.read_text().splitlines()) == 4


def test_a_finished_train_says_there_is_nothing_to_do_and_restart_starts_over(tmp_path):
    outdir = tmp_path / "run"
    args = ["train", "--dataset", "cifar10_sample", "--arch", "small_cnn", "--epochs", "1", "--batch", "500",
            "--train-examples", "500", "--val-examples", "0", "--outdir", str(outdir)]
    assert CliRunner().invoke(cli, args).exit_code == 0
    again = CliRunner().invoke(cli, args)
    assert again.exit_code == 0 and f"nothing to do: {outdir} already holds 1 of 1 epochs" in again.output
    other = CliRunner().invoke(cli, [*args, "--lr", "0.05"])
    assert other.exit_code == 1 and "rerun with --restart" in other.output
    restarted = CliRunner().invoke(cli, [*args, "--lr", "0.05", "--restart"])
    assert restarted.exit_code == 0 and "nothing to do" not in restarted.output
    import json

    assert json.loads((outdir / "config.json").read_text())["lr"] == 0.05


def test_train_your_own_architecture_with_arch_custom(tmp_path):
    import json

    inputs = keras.Input((32, 32, 3))
    x = keras.layers.GlobalAveragePooling2D()(keras.layers.Conv2D(4, 3)(inputs))
    own = keras.Model(inputs, keras.layers.Dense(10)(x), name="mine")
    own.save(tmp_path / "mine.keras")
    args = ["train", "--dataset", "cifar10_sample", "--epochs", "1", "--batch", "500", "--train-examples", "500",
            "--val-examples", "0", "--init-from", str(tmp_path / "mine.keras")]
    refused = CliRunner().invoke(cli, [*args, "--outdir", str(tmp_path / "a")])
    assert refused.exit_code == 1 and "pass arch='custom' (--arch custom)" in refused.output
    trained = CliRunner().invoke(cli, [*args, "--arch", "custom", "--outdir", str(tmp_path / "b")])
    assert trained.exit_code == 0, trained.output
    assert json.loads((tmp_path / "b" / "config.json").read_text())["arch"] == "custom"
    assert keras.models.load_model(tmp_path / "b" / "base_model.keras").name == "mine"
    no_file = CliRunner().invoke(cli, ["train", "--dataset", "cifar10_sample", "--arch", "custom", "--outdir",
                                       str(tmp_path / "c")])
    assert no_file.exit_code == 1 and "give init_from" in no_file.output


def test_certify_takes_the_classes_from_the_model_and_refuses_a_model_for_other_images(tmp_path):
    keras.utils.set_random_seed(0)
    mnist_sized = tmp_path / "mnist_sized.keras"
    models.small_cnn(10, input_shape=(28, 28, 1)).save(mnist_sized)
    args = ["--dataset", "cifar10_sample", "--sigma", "0.25", "--n", "100", "--batch", "100", "--max", "1"]
    refused = CliRunner().invoke(cli, ["predict", str(mnist_sized), *args, "--out", str(tmp_path / "a.tsv")])
    assert refused.exit_code == 1
    assert "takes images of shape (28, 28, 1), but cifar10_sample has (32, 32, 3)" in refused.output
    too_few = tmp_path / "five.keras"
    models.small_cnn(5).save(too_few)
    refused = CliRunner().invoke(cli, ["predict", str(too_few), *args, "--out", str(tmp_path / "b.tsv")])
    assert refused.exit_code == 1 and "outputs 5 class scores, but cifar10_sample has 10 classes" in refused.output
    twelve = tmp_path / "twelve.keras"  # more scores than the data set's classes: K comes from the model
    models.small_cnn(12).save(twelve)
    ok = CliRunner().invoke(cli, ["predict", str(twelve), *args, "--out", str(tmp_path / "c.tsv")])
    assert ok.exit_code == 0, ok.output
