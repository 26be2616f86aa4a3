"""Sample-wise fine-tuning (METHODS.md §5): per-example sigma in the train step, assign-sigma, the sigma file."""

import json

import keras
import numpy as np
import pytest
import tensorflow as tf
from click.testing import CliRunner

from tfsmooth import data, jobs, models, training
from tfsmooth.cli.main import cli
from tfsmooth.jobs import samplewise as samplewise_job

SIGMAS = np.array([0.1, 0.5, 1.0, 0.25], np.float32)


def _model(name):
    keras.utils.set_random_seed(0)
    base = models.small_cnn(10)
    if name == "gaussian":
        return training.GaussianAugmentedModel(base, 0.25, seed=1)
    if name == "smoothadv":
        return training.SmoothAdvModel(base, 0.25, epsilon=0.25, num_steps=1, num_noise_vec=2, seed=1)
    return training.MACERModel(base, 0.25, num_noise_vec=2, seed=1, beta=1.0)


def _data(batch=4):
    rng = np.random.default_rng(0)
    return rng.uniform(size=(batch, 32, 32, 3)).astype(np.float32), rng.integers(0, 10, batch)


@pytest.mark.parametrize("name", ["gaussian", "macer"])
def test_the_noise_of_each_example_has_its_own_standard_deviation(name):
    model = _model(name)
    x, y = _data()
    copies, _ = model.noisy_copies(tf.constant(x), tf.constant(y), tf.constant(0, tf.int64), sigma=tf.constant(SIGMAS))
    delta = (copies.numpy() - x[:, None]).reshape(4, -1)  # 3,072 (x copies) draws per example
    np.testing.assert_allclose(delta.std(axis=1), SIGMAS, rtol=0.05)
    # The same standard normal draws as at the model's own sigma, rescaled per example.
    plain, _ = model.noisy_copies(tf.constant(x), tf.constant(y), tf.constant(0, tf.int64))
    np.testing.assert_allclose(delta, (plain.numpy() - x[:, None]).reshape(4, -1) * (SIGMAS / 0.25)[:, None],
                               rtol=1e-4, atol=1e-6)


def test_smoothadv_draws_and_attacks_at_each_examples_sigma():
    model = _model("smoothadv")
    x, _ = _data()
    draws = model.draw_noise(tf.constant(x), tf.constant(0, tf.int64), sigma=tf.constant(SIGMAS)).numpy()
    np.testing.assert_allclose(draws.reshape(4, -1).std(axis=1), SIGMAS, rtol=0.05)


@pytest.mark.parametrize("name", ["gaussian", "smoothadv", "macer"])
def test_a_step_on_dict_batches_with_constant_sigma_is_the_plain_step(name):
    x, y = _data(batch=8)
    losses = []
    for inputs in (x, {training.IMAGES_KEY: x, training.SIGMA_KEY: np.full(8, 0.25, np.float32)}):
        model = _model(name)
        model.compile(optimizer=keras.optimizers.SGD(0.01), loss=keras.losses.SparseCategoricalCrossentropy(True),
                      metrics=["accuracy"])
        losses.append(model.train_on_batch(inputs, y, return_dict=True)["loss"])
    assert losses[1] == pytest.approx(losses[0], rel=1e-5)


def test_macer_weighs_each_examples_hinge_with_its_own_sigma():
    model = _model("macer")
    logits = tf.constant(np.random.default_rng(1).normal(size=(4, 2, 10)).astype(np.float32))
    y = tf.constant([0, 1, 2, 3])
    loss, terms = model.example_terms(y, logits, sigma=tf.constant(SIGMAS))
    expected = terms["ce"] + model.method_config.lbd * SIGMAS / 2 * terms["hinge"]
    np.testing.assert_allclose(loss.numpy(), expected.numpy(), rtol=1e-6)


def test_a_bad_per_example_sigma_fails_the_step():
    model = _model("gaussian")
    x, y = _data()
    with pytest.raises(tf.errors.InvalidArgumentError, match="per-example sigma must be finite and > 0"):
        model.noisy_copies(tf.constant(x), tf.constant(y), tf.constant(0, tf.int64),
                           sigma=tf.constant([0.25, 0.0, 0.5, 0.5]))
    with pytest.raises(ValueError, match="exactly the keys"):
        training.split_sigma({training.IMAGES_KEY: x})


def test_choose_training_sigma_maximizes_the_estimated_radius_where_correct():
    grid = (0.25, 0.5, 1.0)
    k = 8
    counts = np.zeros((3, 3, 3), np.int64)
    # Example 0 (label 0): 8/8 at 0.25, 7/8 at 0.5, 3/8 at 1.0 (wrong there).
    counts[0] = [[8, 0, 0], [7, 1, 0], [3, 5, 0]]
    # Example 1 (label 1): unanimous at every level: the largest sigma (capped p_hat = 7.5/8 everywhere).
    counts[1] = [[0, 8, 0], [0, 8, 0], [0, 8, 0]]
    # Example 2 (label 2): never the top class: the fallback, the smallest sigma.
    counts[2] = [[8, 0, 0], [0, 8, 0], [5, 3, 0]]
    chosen = samplewise_job.choose_training_sigma(counts, [0, 1, 2], grid)
    from scipy.stats import norm
    radii = [0.25 * norm.ppf(7.5 / k), 0.5 * norm.ppf(7 / k)]  # 0.382 and 0.575: 0.5 wins for example 0
    assert radii[1] > radii[0]
    np.testing.assert_array_equal(chosen, [0.5, 1.0, 0.25])


@pytest.fixture(scope="module")
def pretrained(sample_model):
    return sample_model


def test_assign_sigma_then_fine_tune_with_the_sigma_file(pretrained, tmp_path):
    out = tmp_path / "sigma.npz"
    result = CliRunner().invoke(cli, ["assign-sigma", pretrained, "--dataset", "cifar10_sample", "--sigma-grid",
                                      "0.25,0.5", "--num-noise-vec", "4", "--train-examples", "300", "--out", str(out)])
    assert result.exit_code == 0, result.output
    sigma = jobs.load_sigma_file(str(out), "cifar10_sample", 300, data.data_source("cifar10_sample", None))
    assert sigma.shape == (300,) and set(sigma.tolist()) <= {0.25, 0.5}
    with np.load(out) as archive:
        assert archive["num_noise_vec"] == 4 and archive["sigma_grid"].tolist() == [0.25, 0.5]
        assert archive["noise_block"] == 4  # each image's k draws are one block: no draws thrown away
    again = tmp_path / "again.npz"  # seeded: the same choices
    CliRunner().invoke(cli, ["assign-sigma", pretrained, "--dataset", "cifar10_sample", "--sigma-grid", "0.25,0.5",
                             "--num-noise-vec", "4", "--train-examples", "300", "--out", str(again)])
    with np.load(out) as a, np.load(again) as b:
        np.testing.assert_array_equal(a["sigma"], b["sigma"])
    run = tmp_path / "finetune"
    result = CliRunner().invoke(cli, ["train", "--dataset", "cifar10_sample", "--arch", "small_cnn", "--epochs", "1",
                                      "--batch", "100", "--val-examples", "100", "--train-examples", "300",
                                      "--init-from", pretrained, "--sigma-file", str(out), "--outdir", str(run)],
                                catch_exceptions=False)
    assert result.exit_code == 0, result.output
    assert json.loads((run / jobs.CONFIG_FILE).read_text())["sigma_file"] == str(out)
    too_many = CliRunner().invoke(cli, ["train", "--dataset", "cifar10_sample", "--arch", "small_cnn", "--epochs", "1",
                                        "--sigma-file", str(out), "--outdir", str(tmp_path / "all")])
    assert too_many.exit_code != 0 and "holds 300 noise levels, but the run trains on 4000" in too_many.output


def test_load_sigma_file_refuses_files_of_other_images(tmp_path):
    source = data.data_source("cifar10_sample", None)
    good = dict(sigma=np.full(5, 0.25), sigma_grid=np.array([0.25, 0.5]), dataset=np.array("cifar10_sample"),
                split=np.array("train"), data_source=np.array(source))
    cases = [(dict(dataset=np.array("cifar10")), "holds sigmas for cifar10:train"),
             (dict(data_source=np.array("elsewhere")), "was computed on the images of 'elsewhere'"),
             (dict(sigma=np.full(4, 0.25)), "must hold 5 noise levels"),
             (dict(sigma=np.array([0.25, 0.25, 0.3, 0.25, 0.25])), "a finite level > 0 of its grid"),
             (dict(sigma=np.array([0.25, 0.25, np.nan, 0.25, 0.25])), "finite level > 0")]
    for change, message in cases:
        path = tmp_path / "bad.npz"
        np.savez(path, **{**good, **change})
        with pytest.raises(ValueError, match=message):
            jobs.load_sigma_file(str(path), "cifar10_sample", 5, source)
    path = tmp_path / "missing.npz"
    np.savez(path, **{k: v for k, v in good.items() if k != "sigma_grid"})
    with pytest.raises(ValueError, match="lacks sigma_grid"):
        jobs.load_sigma_file(str(path), "cifar10_sample", 5, source)
    np.save(tmp_path / "bare.npy", np.full(5, 0.25))
    with pytest.raises(ValueError, match="not a sigma file"):
        jobs.load_sigma_file(str(tmp_path / "bare.npy"), "cifar10_sample", 5, source)
    with pytest.raises(FileNotFoundError):
        jobs.load_sigma_file(str(tmp_path / "nope.npz"), "cifar10_sample", 5, source)
    with pytest.raises(ValueError, match="num_noise_vec"):
        jobs.AssignSigmaConfig(model="m.keras", num_noise_vec=1)
    with pytest.raises(ValueError, match="sigma_grid"):
        jobs.AssignSigmaConfig(model="m.keras", sigma_grid=())
