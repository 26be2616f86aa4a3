"""GaussianAugmentedModel: noise in train_step, fit/evaluate, callbacks, save/load, distribution."""

import keras
import numpy as np
import pytest
import tensorflow as tf

from tfsmooth import GaussianAugmentedModel, models


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
