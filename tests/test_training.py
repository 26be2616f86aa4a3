"""The train-step skeleton, GaussianAugmentedModel, the method configs and registry.

Noise in train_step and test_step (its seed domains and step counters), the loss over copies, fit/evaluate,
callbacks, save/load and resume, distribution (two replicas: test_distributed.py).
"""

import dataclasses

import keras
import numpy as np
import pytest
import tensorflow as tf

from tfsmooth import GaussianAugmentedModel, models, noise, training


def _compiled(sigma=0.25, seed=0):
    model = GaussianAugmentedModel(models.small_cnn(10), sigma, seed=seed)
    model.compile(optimizer=keras.optimizers.SGD(0.01, momentum=0.9),
                  loss=keras.losses.SparseCategoricalCrossentropy(from_logits=True), metrics=["accuracy"])
    return model


def _data(count=64, seed=0):
    rng = np.random.default_rng(seed)
    return rng.uniform(size=(count, 32, 32, 3)).astype(np.float32), rng.integers(0, 10, count)


def test_add_noise_has_sigma_and_is_not_clipped():
    model = _compiled(sigma=0.5)
    x = np.zeros((8, 32, 32, 3), np.float32)
    delta = model.add_noise(x).numpy()
    # 24,576 draws: sample sd within 3% of sigma; negative values survive (no clipping to [0, 1]).
    assert abs(delta.std() - 0.5) < 0.015 and delta.min() < -1.0


def _probe(sigma):
    """A model whose output is its input, flattened: under mse against zero targets, the loss of a zero image
    is the mean of delta^2 over all pixels, sigma^2 in expectation, and 0 without noise."""
    inputs = keras.Input((32, 32, 3))
    model = GaussianAugmentedModel(keras.Model(inputs, keras.layers.Flatten()(inputs)), sigma, seed=0)
    model.compile(optimizer="sgd", loss="mse")
    return model


# 64 zero images of 32 x 32 x 3: N = 196,608 squared N(0, sigma^2) draws. Their mean has variance 2 sigma^4 / N, so
# for sigma = 0.5 the loss is 0.25 +- 5 standard errors = 5 * sqrt(2 / N) * 0.25 = 0.004 (false failure
# probability 6e-7, normal approximation of chi2(N) / N). stddev = sigma^2 would give 0.0625; no noise, 0.
ZEROS = np.zeros((64, 32, 32, 3), np.float32)
PROBE_SIGMA = 0.5
PROBE_TOLERANCE = 5 * np.sqrt(2.0 / ZEROS.size) * PROBE_SIGMA ** 2


def test_train_step_sees_noisy_images():
    history = _probe(PROBE_SIGMA).fit(ZEROS, np.zeros((64, 3072)), batch_size=64, verbose=0)
    assert history.history["loss"][0] == pytest.approx(PROBE_SIGMA ** 2, abs=PROBE_TOLERANCE)


def test_test_step_reports_loss_under_noise_and_calling_the_model_adds_none():
    model = _probe(PROBE_SIGMA)
    loss = model.evaluate(ZEROS, np.zeros((64, 3072)), batch_size=16, verbose=0)
    assert loss == pytest.approx(PROBE_SIGMA ** 2, abs=PROBE_TOLERANCE)
    assert not np.any(model.predict(ZEROS, verbose=0))  # predict / call: the base model, no noise


def test_each_train_step_trains_on_the_noise_of_its_step_counter():
    # The probe's loss is the mean of delta^2 over the batch: exactly that of add_noise at steps 0 and 1.
    model = _probe(PROBE_SIGMA)
    expected = [float(np.mean(np.square(model.add_noise(ZEROS, step=step)))) for step in (0, 1)]
    history = model.fit(ZEROS, np.zeros((64, 3072)), batch_size=64, epochs=2, verbose=0)
    assert history.history["loss"] == pytest.approx(expected, rel=1e-6)
    assert int(model.train_noise_step.numpy()) == 2 and int(model.test_noise_step.numpy()) == 0
    assert np.abs(model.add_noise(ZEROS, step=0) - model.add_noise(ZEROS, step=1)).min() > 0  # fresh noise per step
    np.testing.assert_array_equal(model.add_noise(ZEROS), model.add_noise(ZEROS, step=2))  # default: the next step


def test_evaluate_draws_from_its_own_domain_and_counter():
    model = _probe(PROBE_SIGMA)
    batches = ZEROS.reshape(4, 16, 32, 32, 3)
    expected = np.mean([np.mean(np.square(model.gaussian_noise(batch, 1, noise.EVAL_NOISE, step)))
                        for step, batch in enumerate(batches)])
    assert model.evaluate(ZEROS, np.zeros((64, 3072)), batch_size=16, verbose=0) == pytest.approx(expected, rel=1e-6)
    assert int(model.test_noise_step.numpy()) == 4 and int(model.train_noise_step.numpy()) == 0  # training unaffected
    training_noise = model.add_noise(batches[0], step=0)
    assert np.abs(training_noise - model.gaussian_noise(batches[0], 1, noise.EVAL_NOISE, 0)[:, 0]).min() > 0


def test_train_loss_is_the_compiled_loss_with_sample_weights():
    model = _compiled()
    x, y = _data(8)
    weights = np.linspace(0.0, 2.0, 8).astype(np.float32)
    logits = model.base_model(model.add_noise(x, step=0), training=True)  # small_cnn: no batch norm, no dropout
    cross_entropy = tf.nn.sparse_softmax_cross_entropy_with_logits(y, logits).numpy()
    history = model.fit(x, y, sample_weight=weights, batch_size=8, epochs=1, verbose=0, shuffle=False)
    assert history.history["loss"][0] == pytest.approx(float(np.sum(weights * cross_entropy) / 8), rel=1e-5)


def test_fit_reports_one_loss_from_the_models_own_tracker():
    model = _compiled()
    x, y = _data(32)
    history = model.fit(x, y, batch_size=16, epochs=1, verbose=0)
    assert set(history.history) == {"loss", "accuracy"}
    assert [m.name for m in model.metrics].count("loss") == 1 and model.metrics[0] is model.loss_tracker
    assert model.loss_tracker.result().numpy() == pytest.approx(history.history["loss"][0])


def test_a_seed_of_none_is_drawn_once_and_saved(tmp_path):
    model = GaussianAugmentedModel(models.small_cnn(10), 0.25)  # seed=None
    assert isinstance(model.seed, int) and 0 <= model.seed < 2**31
    x, _ = _data(4)
    model(x)  # built
    model.save(tmp_path / "model.keras")
    loaded = keras.models.load_model(tmp_path / "model.keras")
    assert loaded.seed == model.seed
    np.testing.assert_array_equal(loaded.add_noise(x), model.add_noise(x))


def test_training_resumed_from_a_saved_model_continues_the_same_noise(tmp_path):
    x, y = _data(32)
    initial = _compiled().get_weights()
    straight = _compiled()
    straight.set_weights(initial)
    straight.fit(x, y, batch_size=16, epochs=2, verbose=0, shuffle=False)
    first = _compiled()
    first.set_weights(initial)
    first.fit(x, y, batch_size=16, epochs=1, verbose=0, shuffle=False)
    first.save(tmp_path / "model.keras")
    resumed = keras.models.load_model(tmp_path / "model.keras")
    assert int(resumed.train_noise_step.numpy()) == 2
    resumed.fit(x, y, batch_size=16, epochs=2, initial_epoch=1, verbose=0, shuffle=False)
    for a, b in zip(straight.base_model.get_weights(), resumed.base_model.get_weights()):
        np.testing.assert_allclose(a, b, atol=1e-6)


def test_fit_and_evaluate_with_callbacks_report_loss_and_accuracy():
    model = _compiled()
    x, y = _data()
    seen = []
    history = model.fit(x, y, batch_size=32, epochs=2, verbose=0,
                        callbacks=[keras.callbacks.LambdaCallback(on_epoch_end=lambda e, logs: seen.append(e))])
    assert seen == [0, 1]
    assert set(history.history) >= {"loss", "accuracy"}
    result = model.evaluate(x, y, verbose=0, return_dict=True)
    assert np.isfinite(result["loss"]) and 0.0 <= result["accuracy"] <= 1.0


def _weights_after_one_epoch(seed, initial_weights):
    model = _compiled(seed=seed)
    model.set_weights(initial_weights)
    x, y = _data()
    model.fit(x, y, batch_size=32, epochs=1, verbose=0, shuffle=False)
    return model.get_weights()


def test_same_seed_same_training():
    initial = _compiled().get_weights()
    a, b = _weights_after_one_epoch(3, initial), _weights_after_one_epoch(3, initial)
    for wa, wb in zip(a, b):
        assert np.allclose(wa, wb, atol=1e-6)


def test_different_seed_different_training():
    # Same start and data order, other noise: the two SGD steps differ (by ~4e-4 on some weight; the whole
    # update is ~3e-3), 100 times the tolerance within which the same seed must agree.
    initial = _compiled().get_weights()
    a, b = _weights_after_one_epoch(3, initial), _weights_after_one_epoch(4, initial)
    assert max(np.max(np.abs(wa - wb)) for wa, wb in zip(a, b)) > 1e-4


def test_keras_file_round_trip_keeps_base_model_and_predictions(tmp_path):
    model = _compiled()
    x, y = _data()
    model.fit(x, y, batch_size=32, epochs=1, verbose=0)
    path = tmp_path / "model.keras"
    model.save(path)
    loaded = keras.models.load_model(path)
    assert isinstance(loaded, GaussianAugmentedModel) and loaded.sigma == 0.25
    assert np.allclose(loaded.base_model.predict(x, verbose=0), model.base_model.predict(x, verbose=0), atol=1e-5)
    # Optimizer state restored: the step count (64 / 32 = 2 steps) and the SGD momentum of every weight.
    assert int(loaded.optimizer.iterations) == int(model.optimizer.iterations) == 2
    assert len(loaded.optimizer.momentums) == len(model.optimizer.momentums) == len(model.trainable_variables)
    for restored, saved in zip(loaded.optimizer.momentums, model.optimizer.momentums):
        assert np.any(saved.numpy())  # non-zero, so a fresh (zero) momentum would not pass
        np.testing.assert_array_equal(restored.numpy(), saved.numpy())
    loaded.fit(x, y, batch_size=32, epochs=1, verbose=0)  # training continues
    assert int(loaded.optimizer.iterations) == 4


def test_fit_inside_a_distribution_strategy_scope():
    strategy = tf.distribute.OneDeviceStrategy("/cpu:0")
    with strategy.scope():
        model = _compiled()
    x, y = _data(32)
    history = model.fit(x, y, batch_size=16, epochs=1, verbose=0)
    assert np.isfinite(history.history["loss"][0])


@pytest.mark.parametrize("sigma", [0.0, -1.0, float("nan"), "a"])
def test_rejects_bad_sigma(sigma):
    with pytest.raises(ValueError, match="sigma"):
        GaussianAugmentedModel(models.small_cnn(10), sigma)


@pytest.mark.parametrize("seed", [-1, 2**63, 1.5, "0", True])
def test_rejects_bad_seed(seed):
    with pytest.raises(ValueError, match="seed"):
        GaussianAugmentedModel(models.small_cnn(10), 0.25, seed=seed)


def test_methods_registry_builds_each_method_from_its_config():
    assert set(training.METHODS) == {"gaussian", "smoothadv", "macer", "adre", "consistency"}
    for name, config in (("gaussian", training.GaussianConfig()),
                         ("smoothadv", training.SmoothAdvConfig(attack="ddn", epsilon=0.5, num_steps=2)),
                         ("macer", training.MACERConfig(num_noise_vec=4, lbd=6.0)),
                         ("adre", training.ADREConfig(lbd=0.3)),
                         ("consistency", training.ConsistencyConfig(eta=0.1))):
        method = training.METHODS[name]
        assert isinstance(config, method.config_class)
        model = method.build(models.small_cnn(10), 0.25, config, 3)
        assert isinstance(model, training.SmoothingTrainer) and model.method_config == config
        assert (model.sigma, model.seed) == (0.25, 3)
    assert isinstance(training.METHODS["smoothadv"].build(models.small_cnn(10), 0.25, training.SmoothAdvConfig(), 0),
                      training.SmoothAdvModel)


@pytest.mark.parametrize("name, config", [("gaussian", training.SmoothAdvConfig()),
                                          ("smoothadv", training.GaussianConfig()), ("smoothadv", None)])
def test_methods_registry_refuses_the_config_of_another_method(name, config):
    with pytest.raises(ValueError, match="config must be a"):
        training.METHODS[name].build(models.small_cnn(10), 0.25, config, 0)


def test_gaussian_config_round_trips_through_json_and_is_frozen():
    config = training.GaussianConfig()
    assert config.to_json() == "{}" and training.GaussianConfig.from_json("{}") == config
    with pytest.raises(ValueError, match="unknown GaussianConfig field"):
        training.GaussianConfig.from_json('{"epsilon": 0.5}')
    with pytest.raises(dataclasses.FrozenInstanceError):
        config.sigma = 0.5


def test_training_on_0_255_pixels_fails_at_the_first_step_naming_the_range():
    import keras
    import tensorflow as tf

    from tfsmooth import models
    from tfsmooth.training import GaussianAugmentedModel

    model = GaussianAugmentedModel(models.small_cnn(10, input_shape=(8, 8, 3)), 0.25, seed=0)
    model.compile(optimizer="sgd", loss=keras.losses.SparseCategoricalCrossentropy(from_logits=True))
    images = np.full((4, 8, 8, 3), 200.0, np.float32)  # [0, 255] pixels
    with pytest.raises(tf.errors.InvalidArgumentError, match=r"training images must be pixels in \[0, 1\]"):
        model.fit(images, np.zeros(4, np.int64), verbose=0, shuffle=False)
    with pytest.raises(tf.errors.InvalidArgumentError, match=r"divide \[0, 255\] images by 255"):
        model.evaluate(images, np.zeros(4, np.int64), verbose=0)
    model.fit(images / 255.0, np.zeros(4, np.int64), verbose=0, shuffle=False)  # the same images in [0, 1] train
