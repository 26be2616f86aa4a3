"""SmoothAdvModel (Pseudocode 1 of Salman et al. 2019), SmoothAdvConfig, the attack registry, and the SmoothAdv
method_config of jobs.train.TrainConfig."""

import dataclasses
import json

import keras
import numpy as np
import pytest
import tensorflow as tf

import fixtures
from tfsmooth import attacks, models, training
from tfsmooth.jobs.train import TrainConfig, method_config_for
from tfsmooth.models import folding
from tfsmooth.models.io import load_base_model
from tfsmooth.training import EpochTracker, GaussianAugmentedModel, GaussianConfig, SmoothAdvConfig, SmoothAdvModel

LOSS = keras.losses.SparseCategoricalCrossentropy(from_logits=True)


def _data(count=8, seed=0):
    rng = np.random.default_rng(seed)
    # Pixels in [0.25, 0.75]: attacks of l2 norm <= 0.5 in 16 pixels rarely touch a face of [0, 1].
    return rng.uniform(0.25, 0.75, size=(count, *fixtures.SHAPE)).astype(np.float32), rng.integers(0, 2, count)


def _model(base=None, optimizer="sgd", run_eagerly=False, **overrides):
    arguments = dict(attack="pgd", epsilon=0.5, num_steps=2, num_noise_vec=2, warmup_epochs=4, seed=0)
    arguments.update(overrides)
    base = base if base is not None else fixtures.linear_classifier(np.linspace(-1, 1, fixtures.D), 0.0)
    model = SmoothAdvModel(base, 0.25, **arguments)
    model.compile(optimizer=optimizer, loss=LOSS, metrics=["accuracy"], run_eagerly=run_eagerly)
    return model


def test_warmup_schedule_is_linear_then_constant():
    model = _model()
    # epsilon_t = min(eps, eps (t + 1) / warmup) with eps = 0.5, warmup = 4.
    assert [model.epsilon_at(t) for t in range(6)] == [0.125, 0.25, 0.375, 0.5, 0.5, 0.5]
    assert _model(warmup_epochs=1).epsilon_at(0) == 0.5  # warmup 1 = no warm-up


def test_fit_warms_epsilon_up_per_epoch_and_resumes_it_after_loading(tmp_path):
    model = _model()
    x, y = _data()
    history = model.fit(x, y, batch_size=4, epochs=3, verbose=0)
    assert history.history["epsilon"] == pytest.approx([0.125, 0.25, 0.375])
    assert int(model.epoch.numpy()) == 2
    path = tmp_path / "smoothadv.keras"
    model.save(path)
    loaded = keras.models.load_model(path)
    assert isinstance(loaded, SmoothAdvModel) and int(loaded.epoch.numpy()) == 2
    history = loaded.fit(x, y, batch_size=4, epochs=5, initial_epoch=3, verbose=0)
    assert history.history["epsilon"] == pytest.approx([0.5, 0.5])  # epochs 3 and 4


def test_user_callbacks_are_kept_next_to_the_epoch_tracker():
    model = _model()
    x, y = _data()
    seen = []
    model.fit(x, y, batch_size=8, epochs=2, verbose=0,
              callbacks=[keras.callbacks.LambdaCallback(on_epoch_begin=lambda e, logs: seen.append(e))])
    assert seen == [0, 1] and int(model.epoch.numpy()) == 1
    model.fit(x, y, 8, 3, 0, [EpochTracker()], initial_epoch=2)  # positional callbacks, tracker not doubled
    assert int(model.epoch.numpy()) == 2


def _recording_base(calls):
    """Two-class linear base classifier that records its eager inputs and the training flag."""

    class Recorder(keras.Model):
        def __init__(self):
            super().__init__()
            self.flatten = keras.layers.Flatten()
            self.dense = keras.layers.Dense(2)

        def call(self, inputs, training=False):
            if tf.executing_eagerly():
                calls.append((np.array(inputs), bool(training)))
            return self.dense(self.flatten(inputs))

    return Recorder()


@pytest.mark.parametrize("multi_noise", [True, False])
def test_train_step_reuses_the_attack_noise_in_the_loss(multi_noise):
    calls = []
    model = _model(_recording_base(calls), run_eagerly=True, num_steps=2, num_noise_vec=3, multi_noise=multi_noise)
    x, y = _data(count=2)
    model.fit(x, y, batch_size=2, epochs=1, verbose=0)
    attack_1, attack_2, loss = calls[-3:]  # one step: T = 2 attack passes, then the loss
    assert [c[1] for c in calls[-3:]] == [False, False, True]  # attack in inference mode, loss in training mode
    copies = [c[0].reshape(2, -1, *fixtures.SHAPE) for c in (attack_1, attack_2, loss)]
    assert copies[0].shape[1] == 3 and copies[2].shape[1] == (3 if multi_noise else 1)
    # Copy i of example b is x'_b + delta_{b,i}: differences between copies are the draws' differences, the same
    # in every attack step and in the loss iff the same draws are used.
    drawn = copies[0] - copies[0][:, :1]
    assert np.abs(drawn[:, 1:]).max() > 0.1  # real N(0, 0.25^2) draws
    np.testing.assert_allclose(copies[1] - copies[1][:, :1], drawn, atol=1e-5)
    np.testing.assert_allclose(copies[2] - copies[2][:, :1], drawn[:, :copies[2].shape[1]], atol=1e-5)
    # The loss sees the attacked point: x_adv - x = (loss copy) - (first attack copy) has l2 norm eps_0 = 0.125.
    moved = (copies[2][:, 0] - copies[0][:, 0]).reshape(2, -1)
    np.testing.assert_allclose(np.linalg.norm(moved, axis=1), 0.125, rtol=1e-4)


def test_one_fit_step_updates_weights_and_zero_sample_weights_do_not():
    # The base classifier's weights: the training model also holds its step counters, which every step advances.
    x, y = _data()
    model = _model()
    before = [w.copy() for w in model.base_model.get_weights()]
    history = model.fit(x, y, batch_size=8, epochs=1, verbose=0)
    assert np.isfinite(history.history["loss"][0])
    assert any(not np.allclose(a, b) for a, b in zip(before, model.base_model.get_weights()))
    assert int(model.train_noise_step.numpy()) == 1
    # Sample weights are repeated over the m copies: all-zero weights give loss 0 and a zero gradient (plain SGD).
    model = _model()
    before = [w.copy() for w in model.base_model.get_weights()]
    history = model.fit(x, y, sample_weight=np.zeros(8, np.float32), batch_size=8, epochs=1, verbose=0)
    assert history.history["loss"][0] == 0.0
    for a, b in zip(before, model.base_model.get_weights()):
        np.testing.assert_array_equal(a, b)


@pytest.mark.parametrize("multi_noise", [True, False])
def test_train_loss_is_the_mean_cross_entropy_over_all_copies_with_weights_repeated(multi_noise):
    # Pseudocode 1's loss: (1 / (B k)) sum_b w_b sum_i CE(f(x_adv_b + delta_bi), y_b), k = m = 3 copies (or 1).
    x, y = _data()
    weights = np.linspace(0.0, 2.0, 8).astype(np.float32)
    model = _model(num_noise_vec=3, multi_noise=multi_noise)
    copies, logs = model.noisy_copies(tf.constant(x), tf.constant(y), tf.constant(0, tf.int64))
    k = 3 if multi_noise else 1
    assert copies.shape == (8, k, *fixtures.SHAPE) and float(logs["epsilon"]) == 0.125
    logits = model.base_model(tf.reshape(copies, [-1, *fixtures.SHAPE]))
    cross_entropy = tf.nn.sparse_softmax_cross_entropy_with_logits(np.repeat(y, k), logits).numpy()
    expected = float(np.sum(np.repeat(weights, k) * cross_entropy) / (8 * k))
    history = model.fit(x, y, sample_weight=weights, batch_size=8, epochs=1, verbose=0, shuffle=False)
    assert history.history["loss"][0] == pytest.approx(expected, rel=1e-5)


def test_training_attacks_through_the_registry_with_per_example_seeds_of_the_step(monkeypatch):
    calls = []

    def recording(model, x, y, noise, *, epsilon, num_steps, seed):
        calls.append(seed)
        return attacks.smooth_adv_ddn(model, x, y, noise, epsilon=epsilon, num_steps=num_steps, seed=seed)

    monkeypatch.setitem(attacks.SMOOTHADV_ATTACKS, "ddn", recording)
    model = _model(attack="ddn", run_eagerly=True)
    x, y = _data(4)
    model.fit(x, y, batch_size=4, epochs=2, verbose=0)
    assert len(calls) == 2  # one attack per step
    for step, seeds in enumerate(calls):
        np.testing.assert_array_equal(seeds, model.attack_seeds(x, step=step, replica_id=0))
    seeds = np.concatenate([c.numpy() for c in calls])
    assert len({tuple(s) for s in seeds}) == 8  # per example and per step


def test_attack_names_come_from_the_one_registry():
    assert training.SMOOTHADV_ATTACKS == tuple(attacks.SMOOTHADV_ATTACKS) == ("pgd", "ddn")
    assert attacks.SMOOTHADV_ATTACKS == {"pgd": attacks.smooth_adv_pgd, "ddn": attacks.smooth_adv_ddn}


def test_smoothadv_config_defaults_are_the_papers_typical_run_and_round_trip_through_json():
    config = SmoothAdvConfig()
    assert dataclasses.asdict(config) == dict(attack="pgd", epsilon=0.25, num_steps=10, num_noise_vec=2,
                                              warmup_epochs=10, multi_noise=True, regularizer="none", lbd=None,
                                              eta=None, floor=None)
    other = SmoothAdvConfig(attack="ddn", epsilon=1, num_steps=4, num_noise_vec=8, warmup_epochs=1, multi_noise=False)
    assert other.epsilon == 1.0 and isinstance(other.epsilon, float)
    assert other.to_json() == ('{"attack": "ddn", "epsilon": 1.0, "eta": null, "floor": null, "lbd": null, '
                               '"multi_noise": false, "num_noise_vec": 8, "num_steps": 4, "regularizer": "none", '
                               '"warmup_epochs": 1}')
    assert SmoothAdvConfig.from_json(other.to_json()) == other
    with pytest.raises(dataclasses.FrozenInstanceError):
        config.epsilon = 0.5
    model = _model(attack="ddn", epsilon=1.0, num_steps=4, num_noise_vec=8, warmup_epochs=1, multi_noise=False)
    assert model.method_config == other


@pytest.mark.parametrize("change, message", [
    (dict(attack="fgsm"), "attack"),
    (dict(epsilon=-0.5), "epsilon"),
    (dict(epsilon="0.5"), "epsilon"),
    (dict(num_steps=0), "num_steps"),
    (dict(num_steps=2.0), "num_steps"),
    (dict(num_noise_vec=0), "num_noise_vec"),
    (dict(warmup_epochs=0), "warmup_epochs"),
    (dict(multi_noise=1), "multi_noise"),
])
def test_smoothadv_config_refuses_bad_fields_naming_them(change, message):
    with pytest.raises(ValueError, match=message):
        SmoothAdvConfig(**change)
    with pytest.raises(ValueError, match=message):
        SmoothAdvConfig.from_json(json.dumps({**json.loads(SmoothAdvConfig().to_json()), **change}))


def test_smoothadv_config_from_json_refuses_unknown_fields():
    with pytest.raises(ValueError, match="unknown SmoothAdvConfig field.*sigma"):
        SmoothAdvConfig.from_json('{"sigma": 0.25}')
    with pytest.raises(ValueError, match="JSON must be an object"):
        SmoothAdvConfig.from_json("[1]")


def _conv_bn_classifier():
    inputs = keras.Input((8, 8, 3))
    z = keras.layers.Conv2D(4, 3, padding="same", use_bias=False, name="conv")(inputs)
    z = keras.layers.ReLU()(models.FusedBatchNormalization(name="bn")(z))
    base = keras.Model(inputs, keras.layers.Dense(3)(keras.layers.Flatten()(z)))
    fixtures.randomize_batch_norms(base)
    return base


def test_attack_runs_on_a_folded_view_sharing_the_weights(tmp_path):
    base = _conv_bn_classifier()
    model = _model(base)
    assert any(isinstance(layer, folding._FoldedConvBatchNorm) for layer in model.attack_model.layers)
    assert {id(v) for v in model.attack_model.weights} <= {id(v) for v in base.weights}
    assert len(model.trainable_variables) == len(base.trainable_variables)  # the view adds no variables
    rng = np.random.default_rng(3)
    x = rng.uniform(0.25, 0.75, (4, 8, 8, 3)).astype(np.float32)
    y = rng.integers(0, 3, 4)
    noise = (0.25 * rng.standard_normal((4, 2, 8, 8, 3))).astype(np.float32)
    # Same attack as on the unfolded base classifier, up to float32 rounding of the folded convolution.
    x_adv = model.attack_batch(tf.constant(x), tf.constant(y), tf.constant(noise), 0.5)
    expected = attacks.smooth_adv_pgd(base, x, y, noise, epsilon=0.5, num_steps=2)
    assert np.abs(x_adv.numpy() - x).max() > 0.01  # the attack moved the images
    np.testing.assert_allclose(x_adv, expected, atol=1e-4)
    # Training the base classifier is seen by the view; the saved file holds the base weights once.
    model.fit(x, y, batch_size=4, epochs=1, verbose=0)
    np.testing.assert_allclose(model.attack_model(x, training=False), base(x, training=False), atol=1e-4)
    model.save(tmp_path / "model.keras")
    loaded = keras.models.load_model(tmp_path / "model.keras")
    assert len(loaded.weights) == len(model.weights)
    np.testing.assert_allclose(loaded.attack_model(x, training=False), base(x, training=False), atol=1e-4)


def test_keras_file_round_trip_keeps_configuration_and_predictions(tmp_path):
    model = _model(attack="ddn", multi_noise=False, num_noise_vec=3)
    x, y = _data()
    model.fit(x, y, batch_size=8, epochs=1, verbose=0)
    path = tmp_path / "model.keras"
    model.save(path)
    loaded = keras.models.load_model(path)
    assert isinstance(loaded, GaussianAugmentedModel)  # so load_base_model unwraps it
    assert (loaded.attack, loaded.epsilon, loaded.num_steps, loaded.num_noise_vec, loaded.warmup_epochs,
            loaded.multi_noise, loaded.sigma) == ("ddn", 0.5, 2, 3, 4, False, 0.25)
    np.testing.assert_allclose(loaded.predict(x, verbose=0), model.predict(x, verbose=0), atol=1e-6)
    assert load_base_model(str(path)).count_params() == model.base_model.count_params()


@pytest.mark.parametrize("make_strategy", [lambda: tf.distribute.OneDeviceStrategy("/cpu:0"),
                                           lambda: tf.distribute.MirroredStrategy(["/cpu:0"])])
def test_fit_inside_a_distribution_strategy_scope(make_strategy):
    with make_strategy().scope():
        model = _model(optimizer=keras.optimizers.SGD(0.01))
    x, y = _data()
    history = model.fit(x, y, batch_size=4, epochs=2, verbose=0)
    assert history.history["epsilon"] == pytest.approx([0.125, 0.25])
    assert all(np.isfinite(history.history["loss"]))


@pytest.mark.parametrize("change, message", [
    (dict(attack="fgsm"), "attack"),
    (dict(epsilon=-0.5), "epsilon"),
    (dict(epsilon=float("inf")), "epsilon"),
    (dict(num_steps=0), "num_steps"),
    (dict(num_noise_vec=0), "num_noise_vec"),
    (dict(warmup_epochs=0), "warmup_epochs"),
    (dict(multi_noise="no"), "multi_noise"),
    (dict(sigma=0.0), "sigma"),
])
def test_bad_arguments_raise_value_error_naming_them(change, message):
    arguments = dict(sigma=0.25, attack="pgd", epsilon=0.5, num_steps=2, num_noise_vec=2)
    arguments.update(change)
    with pytest.raises(ValueError, match=message):
        SmoothAdvModel(fixtures.constant_classifier(), **arguments)


def test_train_config_fills_smoothadv_defaults_and_keeps_gaussian_clean():
    config = TrainConfig(method="smoothadv", method_config=method_config_for("smoothadv", epsilon=0.5))
    assert config.method_config == SmoothAdvConfig(attack="pgd", epsilon=0.5, num_steps=10, num_noise_vec=2,
                                                   warmup_epochs=10, multi_noise=True, regularizer="none", lbd=None,
                                                  eta=None, floor=None)
    assert TrainConfig(method="smoothadv").method_config == SmoothAdvConfig()
    gaussian = TrainConfig()
    assert gaussian.method == "gaussian" and gaussian.method_config == GaussianConfig()


def _config(method="gaussian", **fields):
    method_fields = {k: fields.pop(k) for k in list(fields) if k in SMOOTHADV_FIELDS}
    return TrainConfig(method=method, method_config=method_config_for(method, **method_fields), **fields)


SMOOTHADV_FIELDS = ("attack", "epsilon", "num_steps", "num_noise_vec", "warmup_epochs", "multi_noise")


@pytest.mark.parametrize("change, message", [
    (dict(method="randomized"), "method"),
    (dict(epsilon=0.5), "epsilon: only for method='smoothadv', got method='gaussian'"),
    (dict(method="smoothadv", attack="cw"), "attack"),
    (dict(method="smoothadv", epsilon=-1.0), "epsilon"),
    (dict(method="smoothadv", num_steps=0), "num_steps"),
    (dict(method="smoothadv", num_noise_vec=0), "num_noise_vec"),
    (dict(method="smoothadv", warmup_epochs=0), "warmup_epochs"),
    (dict(unlabeled="cifar10:train"), "together"),
    (dict(unlabeled="cifar10:test", pseudo_labels="p.npz"), "train split"),
    (dict(unlabeled="svhn", pseudo_labels="p.npz"), "DATASET"),
    (dict(self_training_weight=0.5), "self_training_weight"),
    (dict(unlabeled="cifar10", pseudo_labels="p.npz", self_training_weight=0.0), "self_training_weight"),
    (dict(train_examples=-1), "train_examples"),
])
def test_train_config_refuses_bad_smoothadv_and_self_training_fields(change, message):
    with pytest.raises(ValueError, match=message):
        _config(**change)


def test_train_config_refuses_another_methods_config():
    with pytest.raises(ValueError, match="method_config must be a GaussianConfig"):
        TrainConfig(method="gaussian", method_config=SmoothAdvConfig())
