"""l2 attacks on smoothed classifiers: SmoothAdv-PGD, SmoothAdv-DDN and vanilla PGD.

Salman et al., "Provably Robust Deep Learning via Adversarially Trained Smoothed Classifiers"
(NeurIPS 2019; METHODS.md §2). The smoothed *soft* classifier of a base classifier f with logits is
G(x) = E_delta[softmax(f(x + delta))], delta ~ N(0, sigma^2 I), and the SmoothAdv objective (S) of
Sec. 2.2 is

    x_adv = argmax_{||x' - x||_2 <= epsilon} -log G(x')_y.

Sec. 3 approximates G with the m Gaussian draws delta_1..delta_m that the caller passes as `noise`,
the plug-in estimator (6): -log((1/m) sum_i softmax(f(x' + delta_i))_y). The same draws are used in
every step (footnote 4 of Sec. 3.2), so the attack optimizes one fixed function of x'.

Common contract of the attacks:

* pixels are float32 in [0, 1]; epsilon, step sizes and norms are l2 norms on that scale;
* every returned point satisfies ||x_adv - x||_2 <= epsilon (up to float32 rounding, relative
  1e-6) and x_adv in [0, 1]; the Gaussian noise itself is never clipped;
* the model runs with `training=False` (batch-norm statistics untouched), gradients are taken with
  respect to the input only, and the result carries no gradient (`tf.stop_gradient`): the attack
  never contributes to weight gradients (Pseudocode 1);
* plain TensorFlow ops and a `tf.while_loop` over the steps: usable eagerly, inside `tf.function`
  and inside a Keras `train_step`, also under a `tf.distribute` strategy;
* randomness (random start, and the random direction that replaces an all-zero gradient) comes
  from `seed`: int [2] for the batch or int [B, 2] per example (stateless, so a given example with
  a given seed is attacked identically in any batch), or None for TensorFlow's global generator.

The m copies of a batch are evaluated as one forward pass of shape [B * m, H, W, C], built by
broadcasting x[:, None] + noise (a new copy axis, never tiling along channels, METHODS.md §3).
"""

from __future__ import annotations

import math
import numbers

import numpy as np
import tensorflow as tf

from tfsmooth import checks, registry

ESTIMATORS = registry.ESTIMATORS
"""Gradient estimators of `smooth_adv_pgd`: eq. (6) by automatic differentiation, or eq. (7)."""

_DDN_MIN_STEP = 0.01  # cosine-annealed DDN step size: its value at the last step (Rony et al. 2019, Sec. 3)
DDN_GAMMA = 0.05
"""Default norm update factor of `smooth_adv_ddn` (Rony et al.; the reference training code's value)."""


# ------------------------------------------------------------------------------------- objective
def smoothed_log_probs(model, x, noise):
    """Log of the plug-in estimate (6) of G(x): log((1/m) sum_i softmax(f(x + delta_i))).

    Computed as logsumexp_i(log_softmax(f(x + delta_i))) - log m, which stays finite (and keeps a
    non-zero gradient) where a confident model's softmax rounds to exactly 1 in float32.

    Args:
        model: Keras model / callable, float32 [N, H, W, C] pixels in [0, 1] -> logits [N, K].
        x: float32 [B, H, W, C] in [0, 1].
        noise: float32 [B, m, H, W, C], the m noise draws of each example.

    Returns:
        float32 [B, K]: log of the estimated soft-smoothed class probabilities (<= 0).
    """
    return tf.reduce_logsumexp(_copy_log_probs(model, x, noise), axis=1) - tf.math.log(
        tf.cast(tf.shape(noise)[1], tf.float32))


def _copy_log_probs(model, x, noise):
    """log_softmax(f(x + delta_i)) for every copy: float32 [B, m, K]."""
    noise = tf.convert_to_tensor(noise, tf.float32)
    noisy = tf.convert_to_tensor(x, tf.float32)[:, None] + noise
    flat = tf.reshape(noisy, _copies_shape(noisy))
    logits = tf.cast(model(flat, training=False), tf.float32)
    shape = tf.shape(noise)
    return tf.reshape(tf.nn.log_softmax(logits), [shape[0], shape[1], -1])


def _copies_shape(noisy):
    """[B * m, H, W, C], static where the image shape is static (keeps Keras' shape checks)."""
    image_shape = noisy.shape[2:]
    if image_shape.is_fully_defined():
        return [-1, *image_shape.as_list()]
    return tf.concat([[-1], tf.shape(noisy)[2:]], axis=0)


def _objective_gradient(model, x_adv, y, noise, estimator):
    """Ascent direction of the SmoothAdv objective S at x_adv (unnormalized), float32 [B, H, W, C].

    "plug_in": the gradient of -log((1/m) sum_i softmax(f(x' + delta_i))_y), eq. (6).
    "stein": minus Stein's estimate of the gradient of G(x')_y, eq. (7),
    (1/m) sum_i delta_i / sigma^2 * softmax(f(x' + delta_i))_y, without any gradient of f. The
    positive factors 1/sigma^2 and 1/G_y (the derivative of -log) do not change the direction, so
    sigma need not be known: the attacks only use the normalized direction.
    """
    if estimator == "stein":
        log_p_y = tf.gather(_copy_log_probs(model, x_adv, noise), y, axis=2, batch_dims=1)  # [B, m]
        weights = tf.reshape(tf.exp(log_p_y), [tf.shape(noise)[0], -1, *([1] * (noise.shape.rank - 2))])
        return -tf.reduce_mean(weights * noise, axis=1)
    with tf.GradientTape(watch_accessed_variables=False) as tape:
        tape.watch(x_adv)
        loss = -tf.gather(smoothed_log_probs(model, x_adv, noise), y, axis=1, batch_dims=1)
    return tape.gradient(loss, x_adv)


# ------------------------------------------------------------------------------ shared geometry
def _per_example(values, like):
    """Reshapes [B] to [B, 1, 1, 1] (rank of `like`) for broadcasting."""
    return tf.reshape(values, [-1] + [1] * (like.shape.rank - 1))


def _l2(t):
    """Per-example l2 norm of [B, ...]: float32 [B]."""
    return tf.sqrt(tf.reduce_sum(tf.square(t), axis=list(range(1, t.shape.rank))))


def _random_normal(like, seeds, salt):
    """Standard normal draws shaped like `like` [B, H, W, C]; per-example stateless when seeded."""
    if seeds is None:
        return tf.random.normal(tf.shape(like))
    shape = like.shape[1:]

    def one(seed):
        seed = tf.random.experimental.stateless_fold_in(seed, salt)
        return tf.random.stateless_normal(shape, seed=seed)

    return tf.map_fn(one, seeds, fn_output_signature=tf.float32)


def _unit_direction(grad, seeds, salt):
    """Per-example l2-normalized `grad`; an all-zero gradient is replaced by a random direction."""
    zero = _per_example(tf.equal(_l2(grad), 0.0), grad)
    grad = tf.cond(tf.reduce_any(zero), lambda: tf.where(zero, _random_normal(grad, seeds, salt), grad),
                   lambda: grad)  # draw only when needed: the draws cost a pass over the batch
    return grad / _per_example(_l2(grad), grad)


def _clip_and_project(x, delta, epsilon):
    """Clips x + delta to [0, 1], then scales delta onto the epsilon-ball (METHODS.md §2).

    Scaling a delta whose x + delta lies in [0, 1] keeps it there: x + c * delta with c in [0, 1]
    is a convex combination of x and x + delta.
    """
    delta = tf.clip_by_value(x + delta, 0.0, 1.0) - x
    norm = _l2(delta)
    factor = tf.where(norm > epsilon, epsilon / tf.maximum(norm, 1e-30), 1.0)
    return delta * _per_example(factor, delta)


def _finish(x, delta, epsilon):
    """Final point: clipped and projected once more, in [0, 1], without gradient."""
    return tf.stop_gradient(tf.clip_by_value(x + _clip_and_project(x, delta, epsilon), 0.0, 1.0))


def _step_seeds(seed, batch):
    """None, or int64 [B, 2] per-example seeds from an int [2] batch seed or int [B, 2] seeds."""
    if seed is None:
        return None
    seed = tf.cast(tf.convert_to_tensor(seed), tf.int64)
    if seed.shape.rank == 1:
        return tf.stack([tf.fill([batch], seed[0]), seed[1] * 1_000_003 + tf.range(batch, dtype=tf.int64)], axis=1)
    return seed


# --------------------------------------------------------------------------------------- attacks
def smooth_adv_pgd(model, x, y, noise, *, epsilon, num_steps: int, step_size=None, random_start: bool = False,
                   estimator: str = "plug_in", seed=None):
    """SmoothAdv-PGD: l2 projected gradient ascent on the SmoothAdv objective (S).

    Salman et al. 2019, Sec. 3 (estimator (6), or Stein's estimator (7) of Sec. 3.1) and
    Pseudocode 1. delta_adv starts at 0 (or, with `random_start`, at a random point of norm
    epsilon); each of the `num_steps` steps moves delta_adv by `step_size` along the per-example
    l2-normalized ascent direction, clips x + delta_adv to [0, 1] and projects delta_adv onto the
    epsilon-ball. The same `noise` is used in every step. With noise = 0 and m = 1 this is
    vanilla l2 PGD on the cross-entropy of f (`pgd`).

    Args:
        model: base classifier, float32 [N, H, W, C] pixels in [0, 1] -> logits [N, K]; called with
            `training=False`.
        x: float32 [B, H, W, C] in [0, 1], the clean inputs.
        y: int [B] in [0, K), their labels.
        noise: float32 [B, m, H, W, C], m >= 1 Gaussian draws delta_i ~ N(0, sigma^2 I) per example
            (pixel scale, not clipped), reused in every step.
        epsilon: l2 radius of the threat model on the [0, 1] scale, >= 0 (float or float32 scalar
            tensor, e.g. a warmed-up value inside a train_step).
        num_steps: number of steps T, Python int >= 1.
        step_size: l2 length of each step; default 2 * epsilon / T (METHODS.md §2).
        random_start: start from a random direction of norm epsilon instead of 0.
        estimator: "plug_in" (eq. (6), autodiff through f) or "stein" (eq. (7), forward passes
            only; unbiased but high-variance, the paper found it weak, Sec. 3.1).
        seed: None, int [2] or int [B, 2]; fixes the random start and zero-gradient directions.

    Returns:
        float32 [B, H, W, C] x_adv in [0, 1] with ||x_adv - x||_2 <= epsilon per example; no gradient.

    Raises:
        ValueError: epsilon < 0 or not finite, num_steps < 1, step_size <= 0, an unknown estimator,
            or (checked eagerly) x not [B, H, W, C] in [0, 1], y not B integers in [0, K), noise not
            [B, m, H, W, C].
    """
    x, y, noise = _check_inputs(model, x, y, noise)
    epsilon = _check_epsilon(epsilon)
    num_steps = _check_steps(num_steps)
    if estimator not in ESTIMATORS:
        raise ValueError(f"estimator must be one of {ESTIMATORS}, got {estimator!r}")
    step_size = 2.0 * epsilon / num_steps if step_size is None else _check_positive(step_size, "step_size")
    seeds = _step_seeds(seed, tf.shape(x)[0])
    delta = tf.zeros_like(x)
    if random_start:
        start = _random_normal(x, seeds, num_steps)
        delta = _clip_and_project(x, start * _per_example(epsilon / _l2(start), x), epsilon)

    def step(k, delta):
        grad = _objective_gradient(model, x + delta, y, noise, estimator)
        delta = _clip_and_project(x, delta + step_size * _unit_direction(grad, seeds, k), epsilon)
        return k + 1, delta

    _, delta = tf.while_loop(lambda k, _: k < num_steps, step, (tf.constant(0), delta))
    return _finish(x, delta, epsilon)


def pgd(model, x, y, *, epsilon, num_steps: int, step_size=None, random_start: bool = False, seed=None):
    """Vanilla l2 PGD on the cross-entropy of the base classifier (no noise).

    The "vanilla adversarial training" baseline of Salman et al. 2019 (Sec. 4.1, App. C.1) and the
    vanilla attack of Sec. 4.3: `smooth_adv_pgd` with m = 1 and zero noise, where (6) reduces to
    -log softmax(f(x'))_y. Arguments, guarantees and errors as in `smooth_adv_pgd`.

    Args:
        model, x, y, epsilon, num_steps, step_size, random_start, seed: as in `smooth_adv_pgd`.

    Returns:
        float32 [B, H, W, C] x_adv in [0, 1], ||x_adv - x||_2 <= epsilon.
    """
    x = tf.convert_to_tensor(x, tf.float32)
    return smooth_adv_pgd(model, x, y, tf.zeros_like(x)[:, None], epsilon=epsilon, num_steps=num_steps,
                          step_size=step_size, random_start=random_start, seed=seed)


def smooth_adv_ddn(model, x, y, noise, *, epsilon, num_steps: int, gamma: float = DDN_GAMMA, init_norm=None,
                   seed=None):
    """SmoothAdv-DDN: decoupled direction and norm (Rony et al., CVPR 2019) on objective (S).

    Salman et al. 2019, Sec. 3 with estimator (6). Step k = 0, ..., T - 1 moves delta along the
    normalized ascent direction by the cosine-annealed step size

        alpha_k = 0.01 + 0.99 * (1 + cos(pi * (k + 1) / T)) / 2,

    which ends at exactly 0.01 in the last step, as in the reference code (`attacks.py::DDN` of
    Salman et al., from Rony et al.'s `fast_adversarial`), whose `CosineAnnealingLR(T_max=T,
    eta_min=0.01)` is stepped at the start of every iteration, so iteration k runs at the
    schedule's epoch k + 1 (the size of step 0 does not matter: delta = 0 is rescaled to the
    norm). Then it rescales delta to the current norm: the norm shrinks by a factor (1 - gamma)
    when x + delta is already misclassified by the estimated smoothed soft classifier (argmax of
    (6) != y) and grows by (1 + gamma) otherwise, capped at epsilon and at the largest
    perturbation the [0, 1] box allows; x + delta is clipped to [0, 1]. The smallest perturbation
    found that misclassifies is returned, else the last one, projected onto the epsilon-ball.

    Deliberate differences from the paper's reference code (`attacks.py::DDN` of Salman et al.):
    "misclassified" is the argmax of the soft classifier G that the objective attacks (the
    reference takes a majority vote of the m hard labels, an estimate of g); the norm is capped at
    epsilon during the search, not only at the end; when nothing misclassifies, the last iterate is
    returned rather than a zero perturbation (so training still sees an attacked point); delta is
    not rounded to 256 levels. As in the reference's training loop, the search starts at norm
    epsilon (`init_norm=None`), so with T steps it can reach any epsilon.

    Args:
        model, x, y, noise, epsilon, num_steps, seed: as in `smooth_adv_pgd`.
        gamma: norm update factor in (0, 1).
        init_norm: initial l2 norm of delta (capped at epsilon), > 0; None (default) starts at
            epsilon itself (a tensor inside a train_step), as the reference training code does
            with the warmed-up epsilon.

    Returns:
        float32 [B, H, W, C] x_adv in [0, 1], ||x_adv - x||_2 <= epsilon; no gradient.

    Raises:
        ValueError: as in `smooth_adv_pgd`, and gamma not in (0, 1) or init_norm <= 0.
    """
    x, y, noise = _check_inputs(model, x, y, noise)
    epsilon = _check_epsilon(epsilon)
    num_steps = _check_steps(num_steps)
    if not (isinstance(gamma, numbers.Real) and 0.0 < gamma < 1.0):
        raise ValueError(f"gamma must be a number in (0, 1), got {gamma!r}")
    init_norm = epsilon if init_norm is None else _check_positive(init_norm, "init_norm")
    seeds = _step_seeds(seed, tf.shape(x)[0])
    step_sizes = tf.constant([_DDN_MIN_STEP + (1 - _DDN_MIN_STEP) * (1 + math.cos(math.pi * (k + 1) / num_steps)) / 2
                              for k in range(num_steps)], tf.float32)  # alpha_0 .. alpha_{T-1}
    cap = tf.minimum(_l2(tf.maximum(x, 1.0 - x)), epsilon)  # [B] largest useful norm
    state = dict(delta=tf.zeros_like(x), norm=tf.minimum(init_norm, cap), best=tf.zeros_like(x),
                 best_l2=tf.fill(tf.shape(cap), np.inf), found=tf.zeros(tf.shape(cap), tf.bool))

    def step(k, state):
        delta = state["delta"]
        with tf.GradientTape(watch_accessed_variables=False) as tape:
            tape.watch(delta)
            log_g = smoothed_log_probs(model, x + delta, noise)
            loss = -tf.gather(log_g, y, axis=1, batch_dims=1)
        direction = _unit_direction(tape.gradient(loss, delta), seeds, k)
        is_adv = tf.not_equal(tf.argmax(log_g, axis=1, output_type=y.dtype), y)
        better = is_adv & (_l2(delta) < state["best_l2"])
        rate = tf.gather(step_sizes, k)
        norm = tf.minimum(state["norm"] * tf.where(is_adv, 1.0 - gamma, 1.0 + gamma), cap)
        delta = delta + rate * direction
        delta = delta * _per_example(norm / tf.maximum(_l2(delta), 1e-30), delta)
        return k + 1, dict(
            delta=tf.clip_by_value(x + delta, 0.0, 1.0) - x, norm=norm,
            best=tf.where(_per_example(better, x), state["delta"], state["best"]),
            best_l2=tf.where(better, _l2(state["delta"]), state["best_l2"]), found=state["found"] | better)

    _, state = tf.while_loop(lambda k, _: k < num_steps, step, (tf.constant(0), state))
    delta = tf.where(_per_example(state["found"], x), state["best"], state["delta"])
    return _finish(x, delta, epsilon)


SMOOTHADV_ATTACKS = {"pgd": smooth_adv_pgd, "ddn": smooth_adv_ddn}
"""The SmoothAdv attacks by name, the ATTACKER of Salman et al. 2019, Pseudocode 1: the one registry
that `tfsmooth.training.SmoothAdvModel` trains with (and `training.SMOOTHADV_ATTACKS`, its names, the
jobs and the CLI offer). Each is called as `attack(model, x, y, noise, epsilon=..., num_steps=...,
seed=...)` with the contract of this module."""
registry.check_covers(SMOOTHADV_ATTACKS, registry.SMOOTHADV_ATTACKS, "tfsmooth.attacks.SMOOTHADV_ATTACKS")


# ------------------------------------------------------------------------------------ validation
def _check_epsilon(epsilon):
    """epsilon >= 0: a Python number, or a float32 scalar tensor (value checked when eager)."""
    if isinstance(epsilon, bool):
        raise ValueError(f"epsilon must be a finite number >= 0, got {epsilon!r}")
    if isinstance(epsilon, numbers.Real):
        if not (math.isfinite(epsilon) and epsilon >= 0):
            raise ValueError(f"epsilon must be a finite number >= 0 (l2, pixels in [0, 1]), got {epsilon!r}")
        return float(epsilon)
    epsilon = tf.cast(epsilon, tf.float32)
    if epsilon.shape.rank != 0:
        raise ValueError(f"epsilon must be a scalar, got shape {epsilon.shape}")
    if tf.executing_eagerly() and not (np.isfinite(epsilon.numpy()) and epsilon.numpy() >= 0):
        raise ValueError(f"epsilon must be a finite number >= 0 (l2, pixels in [0, 1]), got {epsilon.numpy()!r}")
    return epsilon


def _check_steps(num_steps):
    return checks.check_count(num_steps, "num_steps")


def _check_positive(value, name):
    return checks.check_real(value, name, 0.0, inclusive=False)


def _check_inputs(model, x, y, noise):
    """Converts and checks x [B, H, W, C], y [B], noise [B, m, H, W, C]; values only when eager."""
    x = tf.convert_to_tensor(x, tf.float32)
    noise = tf.convert_to_tensor(noise, tf.float32)
    y = tf.convert_to_tensor(y)
    if not y.dtype.is_integer:
        raise ValueError(f"y must hold integer labels, got dtype {y.dtype.name}")
    if x.shape.rank != 4:
        raise ValueError(f"x must have shape [batch, height, width, channels], got shape {x.shape}")
    if y.shape.rank != 1 or not y.shape[:1].is_compatible_with(x.shape[:1]):
        raise ValueError(f"y must have shape [batch] = {x.shape[:1]}, got shape {y.shape}")
    if noise.shape.rank != 5 or not noise.shape[:1].is_compatible_with(x.shape[:1]) \
            or not noise.shape[2:].is_compatible_with(x.shape[1:]):
        raise ValueError(f"noise must have shape [batch, m, height, width, channels] matching x {x.shape}, "
                         f"got shape {noise.shape}")
    if noise.shape[1] == 0:
        raise ValueError("noise must hold m >= 1 draws per example, got m = 0")
    if tf.executing_eagerly():
        _check_values(model, x, y, noise)
    return x, tf.cast(y, tf.int32), noise


def _check_values(model, x, y, noise):
    x_np, y_np = x.numpy(), y.numpy()
    if not np.all(np.isfinite(x_np)) or (x_np.size and (x_np.min() < 0 or x_np.max() > 1)):
        raise ValueError("x must be finite pixels in [0, 1]"
                         + (f", got values in [{x_np.min()}, {x_np.max()}]" if x_np.size else ""))
    if not np.all(np.isfinite(noise.numpy())):
        raise ValueError("noise contains NaN or infinite values")
    num_classes = _num_classes(model)
    if y_np.size and (y_np.min() < 0 or (num_classes is not None and y_np.max() >= num_classes)):
        raise ValueError(f"y must be labels in [0, {num_classes if num_classes is not None else 'K'}), "
                         f"got values in [{y_np.min()}, {y_np.max()}]")


def _num_classes(model):
    try:
        return int(model.output_shape[-1])
    except (AttributeError, ValueError, RuntimeError, TypeError, IndexError):
        return None
