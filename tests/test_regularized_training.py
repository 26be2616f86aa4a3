"""MACER, ADRE and consistency regularization (tfsmooth.losses, training.MACERModel / ADREModel / ConsistencyModel).

Each loss is checked against a numpy / scipy computation written out from the formulas (METHODS.md §3, §4, §4b).
"""

import csv
import json

import keras
import numpy as np
import pytest
import tensorflow as tf
from click.testing import CliRunner
from scipy import special

from tfsmooth import jobs, losses, models, noise, training
from tfsmooth.cli.main import cli


def _softmax(z):
    z = z - z.max(axis=-1, keepdims=True)
    e = np.exp(z)
    return e / e.sum(axis=-1, keepdims=True)


def _log_softmax(z):
    z = z - z.max(axis=-1, keepdims=True)
    return z - np.log(np.exp(z).sum(axis=-1, keepdims=True))


# Four examples, three copies, four classes (float64 for the references, float32 into the graph).
LOGITS = np.array([
    [[2.0, 1.0, 0.0, -1.0], [1.5, 1.2, 0.1, -0.5], [2.2, 0.4, 0.3, 0.0]],  # y = 0 predicted: kept by MACER
    [[0.0, 2.0, 0.5, 0.1], [0.3, 1.7, 0.2, 0.0], [0.1, 2.5, 0.0, 0.0]],  # y = 0, predicted 1: dropped
    [[60.0, 0.0, 0.0, 0.0], [55.0, 0.0, 1.0, 0.0], [58.0, 0.0, 0.0, 2.0]],  # G^beta_y rounds to 1: xi = inf, dropped
    [[1.0, 0.9, 0.8, 0.0], [0.5, 0.6, 1.2, 0.0], [0.9, 1.0, 0.0, 0.2]],  # y = 1, a close call: kept
])
Y = np.array([0, 0, 0, 1])


def test_macer_terms_equal_the_formula_and_drop_exactly_the_right_examples():
    beta, gamma = 2.0, 8.0
    ce, hinge, kept = (t.numpy() for t in losses.macer_terms(LOGITS.astype(np.float32), Y, beta=beta, gamma=gamma))
    g = _softmax(LOGITS).mean(axis=1)
    np.testing.assert_allclose(ce, -np.log(g[np.arange(4), Y] + 1e-10), rtol=1e-5, atol=1e-7)
    g_beta = _softmax(beta * LOGITS).mean(axis=1)
    expected_kept, expected_hinge = [], []
    for b in range(4):
        others = np.delete(g_beta[b], Y[b])
        xi = special.ndtri(g_beta[b, Y[b]]) - special.ndtri(others.max())
        keep = np.argmax(g_beta[b]) == Y[b] and np.isfinite(xi) and xi <= gamma
        expected_kept.append(float(keep))
        expected_hinge.append(gamma - xi if keep else 0.0)
    np.testing.assert_array_equal(kept, expected_kept)
    np.testing.assert_allclose(hinge, expected_hinge, rtol=1e-4, atol=1e-5)
    # Which were dropped, and why (so each rule of the paper's code is exercised): example 1 is mispredicted,
    # example 2's G^beta_y rounds to 1 (xi = inf), and at gamma = 0.1 example 0's xi exceeds gamma.
    assert kept.tolist() == [1.0, 0.0, 0.0, 1.0]
    assert np.argmax(g_beta[1]) != Y[1] and g_beta[2, 0] == 1.0 and np.isinf(special.ndtri(np.float32(g_beta[2, 0])))
    assert 0.1 < expected_hinge[0] < 8.0 - 0.1  # 0 < xi_0 < gamma, and xi_0 > 0.1
    _, hinge_small, kept_small = losses.macer_terms(LOGITS.astype(np.float32), Y, beta=beta, gamma=0.1)
    assert kept_small.numpy()[0] == 0.0 and hinge_small.numpy()[0] == 0.0


def test_macer_gradient_is_finite_where_a_term_is_dropped_for_an_infinite_xi():
    logits = tf.Variable(LOGITS.astype(np.float32))
    with tf.GradientTape(persistent=True) as tape:
        ce, hinge, kept = losses.macer_terms(logits, Y, beta=2.0, gamma=8.0)
        total_hinge, total_ce = tf.reduce_sum(hinge), tf.reduce_sum(ce)
    gradient = tape.gradient(total_hinge, logits).numpy()
    assert np.all(np.isfinite(gradient))
    kept = kept.numpy()
    assert kept[2] == 0.0  # dropped for an infinite xi
    assert np.all(gradient[kept == 0] == 0.0) and np.all(np.abs(gradient[kept == 1]).sum(axis=(1, 2)) > 0)
    assert np.all(np.isfinite(tape.gradient(total_ce, logits).numpy()))


def test_adre_terms_equal_the_formula_with_the_floor():
    ce, log_p_b = (t.numpy() for t in losses.adre_terms(LOGITS.astype(np.float32), Y, floor=1e-4))
    labels = np.repeat(Y[:, None], 3, axis=1)
    expected_ce = -np.take_along_axis(_log_softmax(LOGITS), labels[..., None], axis=-1)[..., 0].mean(axis=1)
    np.testing.assert_allclose(ce, expected_ce, rtol=1e-5)
    g = _softmax(LOGITS).mean(axis=1)
    wrong = np.array([np.delete(g[b], Y[b]).max() for b in range(4)])
    np.testing.assert_allclose(log_p_b, np.log(np.maximum(wrong, 1e-4)), rtol=1e-5)
    assert wrong[2] < 1e-4 and log_p_b[2] == pytest.approx(np.log(1e-4))  # example 2 sits on the floor
    # ... where the term has no gradient; elsewhere it pushes the strongest wrong class down.
    logits = tf.Variable(LOGITS.astype(np.float32))
    with tf.GradientTape() as tape:
        total = tf.reduce_sum(losses.adre_terms(logits, Y, floor=1e-4)[1])
    gradient = tape.gradient(total, logits).numpy()
    assert np.all(gradient[2] == 0.0) and np.all(np.isfinite(gradient))
    c_hat = [int(np.argmax(np.where(np.arange(4) == Y[b], -1, g[b]))) for b in (0, 1, 3)]
    assert all(gradient[b, :, c].sum() > 0 for b, c in zip((0, 1, 3), c_hat))
    with pytest.raises(ValueError, match=r"floor must be a number in \(0, 1\)"):
        losses.adre_terms(LOGITS, Y, floor=0.0)


def test_consistency_terms_equal_the_formula():
    ce, kl, entropy = (t.numpy() for t in losses.consistency_terms(LOGITS.astype(np.float32), Y))
    f = _softmax(LOGITS)
    g = f.mean(axis=1)
    labels = np.repeat(Y[:, None], 3, axis=1)
    expected_ce = -np.log(np.take_along_axis(f, labels[..., None], axis=-1)[..., 0]).mean(axis=1)
    expected_kl = (g[:, None] * (np.log(g[:, None]) - np.log(f))).sum(axis=-1).mean(axis=1)
    np.testing.assert_allclose(ce, expected_ce, rtol=1e-5)
    np.testing.assert_allclose(kl, expected_kl, rtol=1e-3, atol=1e-6)
    np.testing.assert_allclose(entropy, -(g * np.log(g)).sum(axis=-1), rtol=1e-5, atol=1e-7)
    assert np.all(kl >= 0) and kl[0] > 1e-3  # the copies disagree: the KL term is not trivially 0
    same = np.repeat(LOGITS[:, :1], 3, axis=1).astype(np.float32)
    np.testing.assert_allclose(losses.consistency_terms(same, Y)[1].numpy(), 0.0, atol=1e-6)


def test_terms_refuse_bad_shapes():
    with pytest.raises(ValueError, match=r"logits must be \[batch, copies, classes\]"):
        losses.consistency_terms(LOGITS[:, 0], Y)
    with pytest.raises(ValueError, match=r"y must be integer labels \[batch\]"):
        losses.macer_terms(LOGITS, np.zeros((4, 2), np.int64))


# -------------------------------------------------------------------------------------- the models
CASES = {
    "macer": dict(num_noise_vec=3, lbd=12.0, gamma=8.0, beta=1.0),
    "adre": dict(num_noise_vec=3, lbd=0.5, floor=1e-4),
    "consistency": dict(num_noise_vec=3, lbd=20.0, eta=0.5),
}


def _model(name, sigma=0.25, seed=3, arch=None):
    keras.utils.set_random_seed(0)
    base = arch if arch is not None else models.small_cnn(10)
    method = training.METHODS[name]
    model = method.build(base, sigma, method.config_class(**CASES[name]), seed=seed)
    model.compile(optimizer=keras.optimizers.SGD(0.01), metrics=["accuracy"],
                  loss=keras.losses.SparseCategoricalCrossentropy(from_logits=True))
    return model


def _data(batch=8, seed=0):
    rng = np.random.default_rng(seed)
    return rng.uniform(size=(batch, 32, 32, 3)).astype(np.float32), rng.integers(0, 10, batch)


@pytest.mark.parametrize("name", sorted(CASES))
def test_each_copy_is_its_image_plus_its_own_noise_and_each_logit_row_its_copy(name):
    # The copy axis is new: a port that tiles NHWC images along channels and reshapes scrambles each copy into
    # strips of the image (pixels of other rows), which is 0.3 away on average here, not 6 sigma = 0.06.
    model = _model(name, sigma=0.01)
    x, y = _data()
    copies, _ = model.noisy_copies(tf.constant(x), tf.constant(y), tf.constant(4, tf.int64))
    copies = copies.numpy()
    assert copies.shape == (8, 3, 32, 32, 3)
    delta = copies - x[:, None]
    draws = model.gaussian_noise(x, 3, noise.TRAIN_NOISE, tf.constant(4, tf.int64)).numpy()
    np.testing.assert_allclose(delta, draws, atol=1e-6)
    assert np.abs(delta).max() < 6 * 0.01 and abs(delta.std() - 0.01) < 0.001
    assert np.abs(delta[:, 0] - delta[:, 1]).mean() > 0.005  # each copy draws its own noise
    logits = model.copies_logits(tf.constant(copies), training=False).numpy()
    np.testing.assert_allclose(logits[5, 2], model.base_model(copies[5, 2][None]).numpy()[0], rtol=1e-4, atol=1e-5)


@pytest.mark.parametrize("name", sorted(CASES))
def test_copies_loss_is_the_weighted_mean_of_the_example_terms_plus_weight_decay(name):
    keras.utils.set_random_seed(0)
    model = _model(name, arch=models.cifar_resnet(20, weight_decay=1e-3))
    logits = tf.constant(np.random.default_rng(1).normal(size=(4, 3, 10)).astype(np.float32) * 3)
    y = tf.constant([0, 1, 2, 3])
    weights = tf.constant([1.0, 0.5, 0.0, 2.0])
    loss_b, terms = model.example_terms(y, logits)
    decay = float(tf.add_n(model.losses))
    assert decay > 0
    got = float(model.copies_loss(y, logits, weights))
    assert got == pytest.approx(float(tf.reduce_sum(weights * loss_b)) / 4 + decay, rel=1e-5)
    config = model.method_config
    if name == "macer":
        expected = terms["ce"] + config.lbd * 0.25 / 2 * terms["hinge"]
    elif name == "adre":
        expected = terms["ce"] + config.lbd * terms["log_p_b"]
    else:
        expected = terms["ce"] + config.lbd * terms["kl"] + config.eta * terms["entropy"]
    np.testing.assert_allclose(loss_b.numpy(), expected.numpy(), rtol=1e-6)


@pytest.mark.parametrize("name", sorted(CASES))
def test_gradients_reach_the_weights_through_every_term(name):
    model = _model(name)
    x, y = _data(batch=32)
    copies, _ = model.noisy_copies(tf.constant(x), tf.constant(y), tf.constant(0, tf.int64))
    regularizer = {"macer": ["hinge"], "adre": ["log_p_b"], "consistency": ["kl", "entropy"]}[name]
    with tf.GradientTape(persistent=True) as tape:
        logits = model.copies_logits(copies, training=True)
        _, terms = model.example_terms(tf.constant(y), logits)
        sums = {term: tf.reduce_sum(terms[term]) for term in ["ce", *regularizer]}
    if name == "macer":
        assert terms["kept"].numpy().sum() >= 1  # at beta = 1 some examples are kept, so the hinge has a gradient
    for term in ["ce", *regularizer]:
        gradients = tape.gradient(sums[term], model.base_model.trainable_variables)
        norms = [float(tf.norm(g)) for g in gradients if g is not None]
        assert len(norms) == len(model.base_model.trainable_variables), term
        assert all(np.isfinite(norms)) and sum(norms) > 0, (term, norms)


@pytest.mark.parametrize("name", sorted(CASES))
def test_one_fit_step_logs_the_terms_and_save_load_gives_the_same_loss(name, tmp_path):
    model = _model(name)
    x, y = _data(batch=16)
    before = [w.numpy().copy() for w in model.base_model.trainable_variables]
    history = model.fit(x, y, batch_size=16, epochs=1, verbose=0, validation_data=(x[:8], y[:8]))
    assert all(np.isfinite(v[-1]) for v in history.history.values())
    assert set(model.TERMS) <= set(history.history) and {f"val_{t}" for t in model.TERMS} <= set(history.history)
    assert any(np.abs(w.numpy() - b).max() > 0 for w, b in zip(model.base_model.trainable_variables, before))
    path = tmp_path / f"{name}.keras"
    model.save(path)
    loaded = keras.models.load_model(path)
    assert type(loaded) is type(model) and loaded.method_config == model.method_config
    assert loaded.seed == model.seed and int(loaded.train_noise_step.numpy()) == 1

    def step_loss(m):
        copies, _ = m.noisy_copies(tf.constant(x), tf.constant(y), tf.constant(7, tf.int64))
        return float(m.copies_loss(tf.constant(y), m.copies_logits(copies, training=False), None))

    assert step_loss(loaded) == pytest.approx(step_loss(model), rel=1e-5)


@pytest.mark.parametrize("config_class, kwargs, message", [
    (training.MACERConfig, dict(lbd=-1.0), "lbd must be a finite number >= 0"),
    (training.MACERConfig, dict(gamma=0.0), "gamma must be a finite number > 0"),
    (training.MACERConfig, dict(beta=float("nan")), "beta must be a finite number > 0"),
    (training.MACERConfig, dict(num_noise_vec=0), "num_noise_vec"),
    (training.ADREConfig, dict(floor=1.0), r"floor must be a number in \(0, 1\)"),
    (training.ADREConfig, dict(lbd=True), "lbd must be a finite number >= 0"),
    (training.ConsistencyConfig, dict(eta=-0.5), "eta must be a finite number >= 0"),
    (training.ConsistencyConfig, dict(lbd="20"), "lbd must be a finite number >= 0"),
])
def test_bad_configs_name_the_field(config_class, kwargs, message):
    with pytest.raises(ValueError, match=message):
        config_class(**kwargs)


def test_defaults_are_the_papers():
    assert training.MACERConfig() == training.MACERConfig(num_noise_vec=16, lbd=12.0, gamma=8.0, beta=16.0)
    assert training.ConsistencyConfig() == training.ConsistencyConfig(num_noise_vec=2, lbd=20.0, eta=0.5)
    assert (training.ADREConfig().num_noise_vec, training.ADREConfig().lbd) == (8, 0.1)


# ------------------------------------------------------------------------------------ command line
TRAIN = ("train", "--dataset", "cifar10_sample", "--arch", "small_cnn", "--epochs", "1", "--batch", "500",
         "--val-examples", "100", "--num-noise-vec", "2")


@pytest.mark.parametrize("name, options, columns", [
    ("macer", ("--lbd", "6", "--gamma", "4", "--beta", "8"), ("ce", "hinge", "kept")),
    ("adre", ("--lbd", "0.2", "--floor", "0.001"), ("ce", "log_p_b")),
    ("consistency", ("--lbd", "10", "--eta", "0.25"), ("ce", "kl", "entropy")),
])
def test_train_cli_records_the_method_and_logs_its_terms(name, options, columns, tmp_path):
    outdir = tmp_path / name
    result = CliRunner().invoke(cli, [*TRAIN, "--method", name, *options, "--outdir", str(outdir)],
                                catch_exceptions=False)
    assert result.exit_code == 0, result.output
    config = json.loads((outdir / jobs.CONFIG_FILE).read_text())
    given = {k.lstrip("-").replace("-", "_"): float(v) for k, v in zip(options[::2], options[1::2])}
    assert config["method"] == name and config["method_config"]["num_noise_vec"] == 2
    assert {k: config["method_config"][k] for k in given} == given
    with open(outdir / jobs.LOG_FILE) as f:
        rows = list(csv.DictReader(f))
    assert len(rows) == 1 and all(np.isfinite(float(rows[0][c])) for c in columns)
    assert all(f"val_{c}" in rows[0] for c in columns)
    assert isinstance(keras.models.load_model(outdir / jobs.BASE_MODEL_FILE), keras.Model)


@pytest.mark.parametrize("options, message", [
    (("--method", "adre", "--gamma", "3"), "gamma: only for method='macer', got method='adre'"),
    (("--lbd", "1"), "lbd: only for method='smoothadv'/'macer'/'adre'/'consistency'; num_noise_vec: only for "
                     "method='smoothadv'/'macer'/'adre'/'consistency', got method='gaussian'"),
    (("--method", "macer", "--lbd", "-1"), "'--lbd': -1.0 is not in the range x>=0.0"),
    (("--method", "macer", "--beta", "0"), "'--beta': 0.0 is not in the range x>0.0"),
    (("--method", "adre", "--floor", "1"), "'--floor': 1.0 is not in the range 0.0<x<1.0"),
    (("--method", "consistency", "--epsilon", "0.5"), "epsilon: only for method='smoothadv'"),
])
def test_train_cli_refuses_bad_method_options(options, message, tmp_path):
    result = CliRunner().invoke(cli, [*TRAIN, *options, "--outdir", str(tmp_path / "run")])
    assert result.exit_code != 0 and message in result.output and "Traceback" not in result.output
    assert not (tmp_path / "run" / jobs.CONFIG_FILE).exists()


# ------------------------------------------------------------------ on top of SmoothAdv (ADRE-ADV, consistency)
REGULARIZED_SMOOTHADV = {"adre": (dict(lbd=0.5, floor=1e-3), training.ADREModel, ("ce", "log_p_b")),
                         "consistency": (dict(lbd=2.0, eta=0.25), training.ConsistencyModel, ("ce", "kl", "entropy"))}


def _smoothadv(regularizer, seed=5, **extra):
    keras.utils.set_random_seed(0)
    options = REGULARIZED_SMOOTHADV[regularizer][0] if regularizer != "none" else {}
    model = training.SmoothAdvModel(models.cifar_resnet(20, weight_decay=1e-3), 0.25, epsilon=0.5, num_steps=2,
                                    num_noise_vec=3, regularizer=regularizer, seed=seed, **options, **extra)
    model.compile(optimizer=keras.optimizers.SGD(0.01), metrics=["accuracy"],
                  loss=keras.losses.SparseCategoricalCrossentropy(from_logits=True))
    return model


@pytest.mark.parametrize("regularizer", sorted(REGULARIZED_SMOOTHADV))
def test_smoothadv_regularized_step_is_the_methods_loss_at_the_attacks_own_copies(regularizer):
    # Pseudocode 1 with the regularizer: the copies are x_adv + delta_i with the attack's m draws delta_i, and the
    # step's loss is the attack-free method's per-example loss on them (same formula, same lambda), plus decay.
    model = _smoothadv(regularizer)
    options, method_class, terms = REGULARIZED_SMOOTHADV[regularizer]
    x, y = _data(batch=6)
    state = [w.numpy().copy() for w in model.base_model.weights]  # batch norm's moving statistics included
    step = tf.constant(0, tf.int64)
    copies, logs = model.noisy_copies(tf.constant(x), tf.constant(y), step)
    draws = model.draw_noise(tf.constant(x), step).numpy()
    x_adv = model.attack_batch(tf.constant(x), tf.constant(y), tf.constant(draws), logs["epsilon"],
                               model.attack_seeds(tf.constant(x), step)).numpy()
    assert np.linalg.norm((x_adv - x).reshape(6, -1), axis=1).max() > 0.1  # the attack moved the points
    np.testing.assert_allclose(copies.numpy(), x_adv[:, None] + draws, atol=1e-6)
    logits = model.copies_logits(copies, training=True)
    reference = method_class(model.base_model, 0.25, num_noise_vec=3, seed=5, **options)
    expected_b, expected_terms = reference.example_terms(tf.constant(y), logits)
    got_b, got_terms = model.example_terms(tf.constant(y), logits)
    np.testing.assert_allclose(got_b.numpy(), expected_b.numpy(), rtol=1e-6)
    assert tuple(got_terms) == terms == model.TERMS
    assert float(tf.reduce_max(tf.abs(got_b - got_terms["ce"]))) > 1e-4  # the regularizer is in the loss
    decay = float(tf.add_n(model.losses))
    expected = float(tf.reduce_mean(expected_b)) + decay
    # The forward pass in training mode moved batch norm's statistics, which the attack (inference mode) reads.
    model.base_model.set_weights(state)
    logged = model.train_on_batch(x, y, return_dict=True)  # step 0 again: the same draws, attack and copies
    assert logged["loss"] == pytest.approx(expected, rel=1e-4)
    assert set(terms) <= set(logged) and logged["epsilon"] == pytest.approx(0.5)


def test_smoothadv_without_regularizer_is_unchanged_and_has_no_terms():
    model = _smoothadv("none")
    x, y = _data(batch=4)
    copies, _ = model.noisy_copies(tf.constant(x), tf.constant(y), tf.constant(0, tf.int64))
    logits = model.copies_logits(copies, training=True)
    compiled = float(training.compiled_loss_of_copies(model, tf.constant(y), logits))
    assert model.TERMS == () and float(model.copies_loss(tf.constant(y), logits, None)) == pytest.approx(compiled)
    with pytest.raises(ValueError, match="regularizer='none'"):
        model.example_terms(tf.constant(y), logits)


@pytest.mark.parametrize("regularizer", sorted(REGULARIZED_SMOOTHADV))
def test_smoothadv_regularized_fit_logs_terms_and_save_load_keeps_the_regularizer(regularizer, tmp_path):
    model = _smoothadv(regularizer)
    x, y = _data(batch=8)
    history = model.fit(x, y, batch_size=8, epochs=1, verbose=0, validation_data=(x[:4], y[:4]))
    terms = REGULARIZED_SMOOTHADV[regularizer][2]
    assert {*terms, *(f"val_{t}" for t in terms)} <= set(history.history)
    assert all(np.isfinite(v[-1]) for v in history.history.values())
    path = tmp_path / "model.keras"
    model.save(path)
    loaded = keras.models.load_model(path)
    assert loaded.method_config == model.method_config and loaded.TERMS == terms
    copies, _ = model.noisy_copies(tf.constant(x), tf.constant(y), tf.constant(3, tf.int64))
    loss = [float(m.copies_loss(tf.constant(y), m.copies_logits(copies, training=False), None)) for m in (model, loaded)]
    assert loss[1] == pytest.approx(loss[0], rel=1e-5)


def test_smoothadv_regularizer_defaults_and_bad_options():
    adre = training.SmoothAdvConfig(regularizer="adre")
    assert (adre.lbd, adre.floor, adre.eta) == (0.1, 1e-4, None)
    consistency = training.SmoothAdvConfig(regularizer="consistency")
    assert (consistency.lbd, consistency.eta, consistency.floor) == (1.0, 0.5, None)
    plain = training.SmoothAdvConfig()
    assert (plain.regularizer, plain.lbd, plain.eta, plain.floor) == ("none", None, None, None)
    assert training.SmoothAdvConfig.from_json(adre.to_json()) == adre
    for kwargs, message in [(dict(lbd=1.0), "lbd: only with regularizer='adre'/'consistency', got regularizer='none'"),
                            (dict(regularizer="adre", eta=0.5), "eta: only with regularizer='consistency'"),
                            (dict(regularizer="consistency", floor=0.1), "floor: only with regularizer='adre'"),
                            (dict(regularizer="adre", lbd=-0.1), "lbd must be a finite number >= 0"),
                            (dict(regularizer="adre", floor=0.0), r"floor must be a number in \(0, 1\)"),
                            (dict(regularizer="macer"), "regularizer"),
                            (dict(regularizer="consistency", multi_noise=False), "needs multi_noise=True")]:
        with pytest.raises(ValueError, match=message):
            training.SmoothAdvConfig(**kwargs)


def test_train_cli_smoothadv_with_a_regularizer_records_it_and_logs_its_terms(tmp_path):
    outdir = tmp_path / "adre_adv"
    result = CliRunner().invoke(cli, [*TRAIN, "--method", "smoothadv", "--num-steps", "1", "--train-examples", "64",
                                      "--batch", "32", "--regularizer", "adre", "--lbd", "0.3",
                                      "--outdir", str(outdir)], catch_exceptions=False)
    assert result.exit_code == 0, result.output
    config = json.loads((outdir / jobs.CONFIG_FILE).read_text())["method_config"]
    assert (config["regularizer"], config["lbd"], config["floor"], config["eta"]) == ("adre", 0.3, 1e-4, None)
    with open(outdir / jobs.LOG_FILE) as f:
        row = next(csv.DictReader(f))
    assert all(np.isfinite(float(row[c])) for c in ("ce", "log_p_b", "val_ce", "val_log_p_b", "epsilon"))
    for options, message in [(("--regularizer", "adre"), "regularizer: only for method='smoothadv'"),
                             (("--method", "smoothadv", "--eta", "1"), "eta: only with regularizer='consistency'"),
                             (("--method", "smoothadv", "--regularizer", "mixup"), "'--regularizer'")]:
        result = CliRunner().invoke(cli, [*TRAIN, *options, "--outdir", str(tmp_path / "bad")])
        assert result.exit_code != 0 and message in result.output and "Traceback" not in result.output, result.output
