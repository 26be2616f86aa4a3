"""SmoothAdv-PGD, SmoothAdv-DDN and vanilla PGD: geometry, objective, noise reuse, side effects, errors."""

import keras
import numpy as np
import pytest
import tensorflow as tf

import fixtures
from tfsmooth import attacks, models

RNG = np.random.default_rng(0)
W = RNG.normal(size=fixtures.D).astype(np.float32)  # linear classifier: logits [0, w.x + b]
UNIT_W = (W / np.linalg.norm(W)).reshape(fixtures.SHAPE)


def _linear_batch(m=8, sigma=0.1, batch=2, seed=1):
    """x = 0.5 everywhere, b = -w.x + 0.3 so that f(x) = 1; noise [batch, m, 4, 4, 1] of sd sigma."""
    bias = -float(W.sum()) * 0.5 + 0.3
    model = fixtures.linear_classifier(W, bias)
    x = np.stack([fixtures.half_image()] * batch)
    noise = np.random.default_rng(seed).normal(scale=sigma, size=(batch, m, *fixtures.SHAPE)).astype(np.float32)
    return model, x, np.ones(batch, np.int64), noise, bias


def _l2(t):
    return np.sqrt(np.sum(np.square(t), axis=tuple(range(1, t.ndim))))


def _small_cnn_batch(batch=3, m=2, seed=0):
    keras.utils.set_random_seed(seed)
    model = models.small_cnn(10, input_shape=(8, 8, 3))
    rng = np.random.default_rng(seed)
    x = rng.uniform(size=(batch, 8, 8, 3)).astype(np.float32)
    x[0] = np.round(x[0])  # an image of 0s and 1s only: every coordinate sits on a face of the box
    noise = rng.normal(scale=0.25, size=(batch, m, 8, 8, 3)).astype(np.float32)
    return model, x, rng.integers(0, 10, batch), noise


@pytest.mark.parametrize("num_steps", [1, 3])
@pytest.mark.parametrize("smoothed", [True, False])
def test_pgd_on_linear_classifier_moves_along_minus_w_and_lowers_g_y(num_steps, smoothed):
    model, x, y, noise, bias = _linear_batch()
    epsilon = 0.1
    if smoothed:
        x_adv = attacks.smooth_adv_pgd(model, x, y, noise, epsilon=epsilon, num_steps=num_steps).numpy()
    else:
        x_adv = attacks.pgd(model, x, y, epsilon=epsilon, num_steps=num_steps).numpy()
    # softmax(f)_1 = sigmoid(w.x' + b) decreases fastest along -w, for every noise draw: each normalized step is
    # -w/|w|. Steps of 2 eps / T overshoot the ball after at most T/2 + 1 steps and are projected back to norm eps,
    # and no pixel moves by more than 0.1, far from the faces of [0, 1]: x_adv = x - eps w / |w| exactly.
    np.testing.assert_allclose(x_adv, x - epsilon * UNIT_W, atol=1e-6)
    # G_1 with the same draws, in closed form: the mean of sigmoid(w.(x + delta_i) + b), each logit lowered by eps |w|.
    logits = np.einsum("bmd,d->bm", (x[:, None] + noise).reshape(2, 8, -1), W) + bias
    expected = np.log(np.mean(1 / (1 + np.exp(-(logits - epsilon * np.linalg.norm(W)))), axis=1))
    before = attacks.smoothed_log_probs(model, x, noise).numpy()[:, 1]
    after = attacks.smoothed_log_probs(model, x_adv, noise).numpy()[:, 1]
    np.testing.assert_allclose(after, expected, rtol=1e-5)
    assert np.all(after < before)


def test_pgd_for_the_other_label_moves_along_plus_w():
    model, x, _, noise, _ = _linear_batch()
    x_adv = attacks.smooth_adv_pgd(model, x, np.zeros(2, np.int64), noise, epsilon=0.1, num_steps=2).numpy()
    np.testing.assert_allclose(x_adv, x + 0.1 * UNIT_W, atol=1e-6)


def test_stein_estimator_without_gradients_points_against_w():
    # Stein's lemma (Sec. 3.1, eq. (7)): E[delta p(x + delta)] = sigma^2 E[p'(z)] w, p = sigmoid, z = w.(x + delta) + b
    # ~ N(0.3, (sigma |w|)^2) = N(0.3, 1.84^2) for sigma = 0.5, |w| = 3.67. E[p'(z)] = 0.16, so the signal has norm
    # 0.25 * 0.16 * 3.67 = 0.15; each coordinate of delta p has sd <= sigma = 0.5, so the mean over m = 4,096 draws
    # is off by a vector of typical norm <= 0.5 * sqrt(16 / 4096) = 0.031: cosine with -w about
    # 0.15 / sqrt(0.15^2 + 0.031^2) = 0.98 (0.99 with these draws). We require > 0.9.
    model, x, y, noise, _ = _linear_batch(m=4096, sigma=0.5)
    x_adv = attacks.smooth_adv_pgd(model, x, y, noise, epsilon=0.1, num_steps=1, estimator="stein").numpy()
    delta = (x_adv - x).reshape(2, -1)
    cosine = delta @ (-UNIT_W.reshape(-1)) / _l2(delta)
    assert np.all(cosine > 0.9), cosine
    np.testing.assert_allclose(_l2(delta), 0.1, rtol=1e-5)


@pytest.mark.parametrize("attack", ["pgd", "ddn", "vanilla"])
@pytest.mark.parametrize("epsilon", [0.05, 2.0])
def test_attacks_stay_in_the_epsilon_ball_and_the_pixel_box(attack, epsilon):
    model, x, y, noise = _small_cnn_batch()
    if attack == "pgd":
        x_adv = attacks.smooth_adv_pgd(model, x, y, noise, epsilon=epsilon, num_steps=4, random_start=True, seed=[1, 2])
    elif attack == "ddn":
        x_adv = attacks.smooth_adv_ddn(model, x, y, noise, epsilon=epsilon, num_steps=4, seed=[1, 2])
    else:
        x_adv = attacks.pgd(model, x, y, epsilon=epsilon, num_steps=4)
    x_adv = x_adv.numpy()
    assert x_adv.dtype == np.float32 and x_adv.shape == x.shape
    assert np.all(_l2(x_adv - x) <= epsilon * (1 + 1e-6))
    assert x_adv.min() >= 0.0 and x_adv.max() <= 1.0


def test_one_pgd_step_of_twice_epsilon_ends_on_the_sphere():
    # T = 1: one step of length 2 eps from 0, projected back: |delta| = eps unless clipping to [0, 1] shortened it
    # below eps (pixels of x are in [0.3, 0.7] and eps = 0.05: no pixel can reach a face).
    model, _, y, noise = _small_cnn_batch()
    x = np.random.default_rng(1).uniform(0.3, 0.7, size=(3, 8, 8, 3)).astype(np.float32)
    x_adv = attacks.smooth_adv_pgd(model, x, y, noise, epsilon=0.05, num_steps=1).numpy()
    np.testing.assert_allclose(_l2(x_adv - x), 0.05, rtol=1e-5)


def test_zero_epsilon_returns_the_input():
    model, x, y, noise = _small_cnn_batch()
    for x_adv in (attacks.smooth_adv_pgd(model, x, y, noise, epsilon=0.0, num_steps=2),
                  attacks.smooth_adv_ddn(model, x, y, noise, epsilon=0.0, num_steps=2)):
        np.testing.assert_array_equal(x_adv.numpy(), x)


def _recording_model(calls):
    """A two-class linear model that records every eager input (pixels [N, 4, 4, 1])."""

    class Recorder(keras.Model):
        def __init__(self):
            super().__init__()
            self.flatten = keras.layers.Flatten()
            self.dense = keras.layers.Dense(2, kernel_initializer="glorot_uniform")

        def call(self, inputs, training=False):
            if tf.executing_eagerly():
                calls.append((np.array(inputs), bool(training)))
            return self.dense(self.flatten(inputs))

    return Recorder()


def test_the_same_noise_is_used_in_every_step():
    calls = []
    model = _recording_model(calls)
    model(np.zeros((1, *fixtures.SHAPE), np.float32))
    calls.clear()
    _, x, y, noise, _ = _linear_batch(m=3, sigma=0.2)
    attacks.smooth_adv_pgd(model, x, y, noise, epsilon=0.3, num_steps=4)
    assert len(calls) == 4 and not any(training for _, training in calls)  # one forward pass per step, inference
    points = []
    for inputs, _ in calls:
        copies = inputs.reshape(2, 3, *fixtures.SHAPE)  # [B, m, ...]: copy i of example b is x'_b + delta_{b,i}
        current = copies - noise  # x'_b, the same for all m copies iff the draws are exactly `noise`
        np.testing.assert_allclose(current, np.broadcast_to(current[:, :1], current.shape), atol=1e-6)
        points.append(current[:, 0])
    np.testing.assert_allclose(points[0], x, atol=1e-6)  # delta_adv starts at 0 ...
    # ... and moves by the step 2 eps / T = 0.15 (a linear model's direction is constant: later steps hit the ball).
    np.testing.assert_allclose(_l2(points[1] - points[0]), 0.15, rtol=1e-5)


def test_attack_leaves_weights_and_batch_norm_statistics_alone():
    inputs = keras.Input((8, 8, 3))
    hidden = keras.layers.BatchNormalization()(keras.layers.Conv2D(4, 3)(inputs))
    model = keras.Model(inputs, keras.layers.Dense(10)(keras.layers.Flatten()(hidden)))
    bn = model.layers[2]
    bn.moving_mean.assign(np.full(4, 0.3, np.float32))
    bn.moving_variance.assign(np.full(4, 2.0, np.float32))
    before = [w.copy() for w in model.get_weights()]
    _, x, y, noise = _small_cnn_batch()
    with tf.GradientTape() as tape:
        x_adv = attacks.smooth_adv_pgd(model, x, y, noise, epsilon=0.5, num_steps=2)
        objective = tf.reduce_sum(x_adv)
    for old, new in zip(before, model.get_weights()):
        np.testing.assert_array_equal(old, new)  # incl. moving mean / variance: training=False throughout
    assert all(g is None for g in tape.gradient(objective, model.trainable_variables))  # no path to the weights


def test_ddn_finds_the_closest_adversarial_point_of_a_linear_classifier():
    # Zero noise, m = 1 (DDN on the base classifier). The decision boundary is at l2 distance d = 0.3 / |w| from x
    # along -w. Every step direction is -w/|w| and delta stays on that ray (no clipping: |delta| <= 0.2 moves no
    # pixel near a face), its norm shrinks by 0.95 while adversarial and grows by 1.05 otherwise, so the smallest
    # adversarial norm seen lies in [d, d / 0.95].
    model, x, y, _, _ = _linear_batch()
    distance = 0.3 / np.linalg.norm(W)
    zero = np.zeros((2, 1, *fixtures.SHAPE), np.float32)
    x_adv = attacks.smooth_adv_ddn(model, x, y, zero, epsilon=1.0, num_steps=60, init_norm=0.2).numpy()
    norms = _l2(x_adv - x)
    assert np.all(norms >= distance) and np.all(norms <= distance / 0.95 * (1 + 1e-5)), (norms, distance)
    np.testing.assert_allclose((x_adv - x) / norms[:, None, None, None], np.stack([-UNIT_W] * 2), atol=1e-5)
    assert np.all(np.argmax(model(x_adv).numpy(), axis=1) == 0)


def test_ddn_starts_at_epsilon_so_it_reaches_an_epsilon_above_one():
    # A linear classifier with margin 8: w.delta >= -4.8 within epsilon = 1.2 (w = 1 on 16 pixels), so nothing
    # there is adversarial and the norm only grows (capped at epsilon). Starting at norm 1 (the former default)
    # two steps would end at 1.05^2 = 1.1025 < epsilon = 1.2; starting at epsilon (the default, as the reference
    # training code) they end at epsilon. Each step moves along -1/4 per pixel, 0.3 at norm 1.2, so x = 0.5
    # never meets a face of the box.
    w = np.ones(fixtures.D, np.float32)
    model = fixtures.linear_classifier(w, -0.5 * fixtures.D + 8.0)
    x = np.stack([fixtures.half_image()] * 2)
    zero = np.zeros((2, 1, *fixtures.SHAPE), np.float32)
    x_adv = attacks.smooth_adv_ddn(model, x, np.ones(2, np.int64), zero, epsilon=1.2, num_steps=2).numpy()
    np.testing.assert_allclose(_l2(x_adv - x), [1.2, 1.2], rtol=1e-5)
    np.testing.assert_allclose(x_adv - x, np.full_like(x, -0.3), atol=1e-5)
    started_at_one = attacks.smooth_adv_ddn(model, x, np.ones(2, np.int64), zero, epsilon=1.2, num_steps=2,
                                            init_norm=1.0).numpy()
    np.testing.assert_allclose(_l2(started_at_one - x), [1.1025, 1.1025], rtol=1e-5)


def _ddn_clipped_norm(step_sizes):
    """|delta_T| of the set-up of the test below, by its recursion (worked out there)."""
    d = 0.0
    for alpha in step_sizes:
        d = (d + alpha / np.sqrt(2)) / np.sqrt((d + alpha / np.sqrt(2)) ** 2 + alpha ** 2 / 2)
    return d


@pytest.mark.parametrize("num_steps", [2, 3, 5])
def test_ddn_step_sizes_follow_the_reference_cosine_schedule(num_steps):
    # The reference (attacks.py::DDN of Salman et al., after Rony et al.) steps CosineAnnealingLR(T_max=T,
    # eta_min=0.01) before each step, so step k (from 0) has alpha_k = 0.01 + 0.99 (1 + cos(pi (k + 1) / T)) / 2,
    # 0.01 in the last step. Observing alpha: w = 1 on 16 pixels, margin >= 3 so nothing is adversarial and the norm
    # stays at its cap epsilon = 1; the direction is always u = -w/4 = (e_f + e_c) / sqrt(2), e_f on the 8 pixels
    # at 0.5 (free), e_c on the 8 at 0, which clipping zeroes. So delta_k = d_k e_f with d_1 = 1 / sqrt(2) and
    # d_{k+1} = (d_k + alpha_k / sqrt 2) / |(d_k + alpha_k / sqrt 2, alpha_k / sqrt 2)|: the larger alpha_k, the
    # more of the step is lost to clipping (T = 2: d_2 = 1.01 / |(1.01, 0.01)| = 0.99995 with alpha_1 = 0.01,
    # but 0.948 with the one-step-early alpha_1 = 0.505).
    x = np.full((1, *fixtures.SHAPE), 0.5, np.float32)
    x.reshape(1, -1)[:, 8:] = 0.0
    model = fixtures.linear_classifier(np.ones(fixtures.D, np.float32), 2.0)
    zero = np.zeros((1, 1, *fixtures.SHAPE), np.float32)
    x_adv = attacks.smooth_adv_ddn(model, x, np.ones(1, np.int64), zero, epsilon=1.0, num_steps=num_steps).numpy()
    reference = [0.01 + 0.99 * (1 + np.cos(np.pi * (k + 1) / num_steps)) / 2 for k in range(num_steps)]
    shifted = [0.01 + 0.99 * (1 + np.cos(np.pi * k / num_steps)) / 2 for k in range(num_steps)]
    assert reference[-1] == pytest.approx(0.01)
    np.testing.assert_allclose(_l2(x_adv - x), [_ddn_clipped_norm(reference)], rtol=1e-5)
    assert abs(_ddn_clipped_norm(shifted) - _ddn_clipped_norm(reference)) > 1e-3  # the test tells them apart
    assert not np.any((x_adv - x).reshape(-1)[8:])  # the clipped pixels stay at 0
    np.testing.assert_allclose((x_adv - x).reshape(-1)[:8], -_ddn_clipped_norm(reference) / np.sqrt(8), rtol=1e-5)


def test_seeded_randomness_is_per_example_and_reproducible():
    model, x, y, noise = _small_cnn_batch()
    seeds = np.array([[1, 7], [2, 7], [3, 7]])
    run = lambda images, labels, draws, s: attacks.smooth_adv_pgd(  # noqa: E731
        model, images, labels, draws, epsilon=0.5, num_steps=1, step_size=1e-9, random_start=True, seed=s).numpy()
    together = run(x, y, noise, seeds)
    alone = run(x[1:2], y[1:2], noise[1:2], seeds[1:2])
    np.testing.assert_allclose(alone[0], together[1], atol=1e-6)  # example 1's start depends on its seed only
    other = run(x, y, noise, seeds + 100)
    assert not np.allclose(other, together)


def test_zero_gradient_is_replaced_by_a_seeded_random_direction():
    # A constant classifier has an all-zero gradient: each step must still move, along a random unit direction.
    # One step of 2 eps from x = 0.5 is projected back to norm eps = 0.1 (no pixel can leave [0.4, 0.6]).
    model = fixtures.constant_classifier(label=1, num_classes=2)
    x = np.stack([fixtures.half_image()] * 2)
    noise = np.zeros((2, 1, *fixtures.SHAPE), np.float32)
    run = lambda seed: attacks.smooth_adv_pgd(model, x, [1, 1], noise, epsilon=0.1, num_steps=1,  # noqa: E731
                                              seed=seed).numpy()
    first, again, other = run([5, 6]), run([5, 6]), run([7, 8])
    np.testing.assert_allclose(_l2(first - x), 0.1, rtol=1e-5)
    np.testing.assert_array_equal(first, again)
    assert not np.allclose(first[0], first[1]) and not np.allclose(first, other)  # per example, per seed


def test_attacks_compile_inside_tf_function():
    model, x, y, noise = _small_cnn_batch()
    compiled = tf.function(lambda a, b, c: attacks.smooth_adv_pgd(model, a, b, c, epsilon=0.5, num_steps=2))
    np.testing.assert_allclose(compiled(x, y, noise).numpy(),
                               attacks.smooth_adv_pgd(model, x, y, noise, epsilon=0.5, num_steps=2).numpy(), atol=1e-5)
    compiled = tf.function(lambda a, b, c: attacks.smooth_adv_ddn(model, a, b, c, epsilon=0.5, num_steps=2))
    assert np.all(_l2(compiled(x, y, noise).numpy() - x) <= 0.5 * (1 + 1e-6))


@pytest.mark.parametrize("change, message", [
    (dict(epsilon=-0.1), "epsilon"),
    (dict(epsilon=float("nan")), "epsilon"),
    (dict(num_steps=0), "num_steps"),
    (dict(num_steps=2.5), "num_steps"),
    (dict(step_size=0.0), "step_size"),
    (dict(estimator="finite_differences"), "estimator"),
    (dict(noise=np.zeros((3, 2, 8, 8, 1), np.float32)), "noise"),
    (dict(noise=np.zeros((2, 2, 8, 8, 3), np.float32)), "noise"),
    (dict(noise=np.zeros((3, 8, 8, 3), np.float32)), "noise"),
    (dict(y=np.array([0, 1, 10])), "y"),
    (dict(y=np.array([0, -1, 2])), "y"),
    (dict(y=np.array([0, 1])), "y"),
    (dict(y=np.array([0.0, 1.0, 2.0])), "y"),
    (dict(x=np.full((3, 8, 8, 3), 1.5, np.float32)), "x"),
])
def test_pgd_bad_arguments_raise_value_error_naming_them(change, message):
    model, x, y, noise = _small_cnn_batch()
    arguments = dict(x=x, y=y, noise=noise, epsilon=0.5, num_steps=2)
    arguments.update(change)
    with pytest.raises(ValueError, match=message):
        attacks.smooth_adv_pgd(model, **arguments)


@pytest.mark.parametrize("change, message", [
    (dict(gamma=1.5), "gamma"),
    (dict(init_norm=0.0), "init_norm"),
    (dict(epsilon=-1.0), "epsilon"),
    (dict(y=np.array([0, 1, 99])), "y"),
])
def test_ddn_bad_arguments_raise_value_error_naming_them(change, message):
    model, x, y, noise = _small_cnn_batch()
    arguments = dict(x=x, y=y, noise=noise, epsilon=0.5, num_steps=2)
    arguments.update(change)
    with pytest.raises(ValueError, match=message):
        attacks.smooth_adv_ddn(model, **arguments)
