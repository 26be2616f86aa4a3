"""SavedModel export of a smoothed classifier for TensorFlow Serving.

`export_saved_model` writes `export_dir/<version>/`, the layout TF Serving's `--model_base_path`
watches, with the whole smoothed classifier of Cohen, Rosenfeld & Kolter (ICML 2019, Sec. 3.2) in
the graph: the noise, the counting of the base classifier's top-1 labels, and the statistics (the
two-sided binomial test of PREDICT, the one-sided Clopper-Pearson bound and the radius
sigma * Phi^{-1}(p_a_lower) of CERTIFY). A client needs TensorFlow only, not tfsmooth.

Signatures (B images per request; pixels float32 in [0, 1]; K classes):

* `serving_default` (PREDICT): inputs `images` [B, H, W, C], optional `seed`; outputs `label`
  int64 [B] (-1 = abstain), `counts` int64 [B, K] (the n draws), `p_value` float64 [B] (in [0, 1]),
  `seed` int64 [B] (the seed used, to reproduce an unseeded answer).
* `certify` (CERTIFY): same inputs; outputs `label` int64 [B], `radius` float64 [B] (l2, [0, 1]
  pixel scale; 0 when abstaining), `p_a_lower` float64 [B], `counts` int64 [B, K] (the n estimation
  draws), `selection_counts` int64 [B, K] (the n0 selection draws), `seed` int64 [B].
* `t_certify` (T-CERTIFY, Feng et al. 2020; `tfsmooth.stats.decide_certificate` with `alpha_split`): same inputs and
  outputs as `certify`, plus `p_b_upper` float64 [B] (the runner-up's upper bound, capped at 1 - p_a_lower) and
  `runner_up` int64 [B] (the class whose count gave it); radius = sigma / 2 * (Phi^-1(p_a_lower) -
  Phi^-1(p_b_upper)), from the same draws as `certify` for the same seed.
* `base_logits`: input `images`; output `logits` float32 [B, K], the base classifier without noise.
* `metadata`: no input; sigma, n0, n, alpha, noise_block, batch_size, num_classes, image_shape,
  class_names, compute_dtype ("float32" or "bfloat16", the arithmetic of the noisy forward
  passes), alpha_split. The same record is in `assets/tfsmooth_export.json`.

The optional `seed` (int64, any shape): empty (the SignatureDef default, used when a request omits
`seed`) draws a fresh seed; a scalar, or a vector of copies of one value (what TF Serving's REST
row format makes of a per-instance `"seed"`), must be in [0, 2**63) and fixes the noise. Missing
inputs are filled from the SignatureDef's `defaults` by TF Serving builds that support them and by
Session-based loaders (`saved_model_cli run`); elsewhere, send `seed: []` for a fresh seed. With a
seed s the answers equal the library's `SmoothedClassifier(..., noise_block=noise_block)
.predict_batch / .certify_batch(images, ..., seed=s)` with the default keys 0..B-1: image i of a
request uses the noise of key i (`tfsmooth.noise`).

Inputs are checked in the graph: a bad `images` or `seed` fails with an InvalidArgument error
whose message names the input and the expected value.

The in-graph statistics are conservative where they are validated against scipy (`tfsmooth.stats`), for
n <= `MAX_N` = 10,000,000 and alpha in `ALPHA_RANGE` = [1e-12, 0.49] (`ExportConfig` refuses other values):
`p_a_lower` is never above the library's and at most 1e-9 below, the radius never above (the gap in p_a_lower
times dR/dp = sigma / phi(Phi^-1(p)), about 1.7e-8 * sigma at n = 1e7, k = n, alpha = 1e-3), `p_value` never
below the library's and at most a relative 1.2e-6 above (tests/test_graph_stats.py). So labels equal the
library's except at a bound within 1e-9 above 1/2 or a p-value within that relative distance below alpha.
"""

from __future__ import annotations

import dataclasses
import json
import os
import shutil
import tempfile
from typing import Optional, Sequence, Tuple

import numpy as np
import tensorflow as tf

from tfsmooth import checks, counting, noise, stats
from tfsmooth.models import folding
from tfsmooth.models import io as model_io
from tfsmooth.stats import ABSTAIN

METADATA_FILE = "tfsmooth_export.json"
"""Name of the JSON record of the export's parameters inside `<version>/assets/`."""
SIGNATURES = ("serving_default", "certify", "t_certify", "base_logits", "metadata")
_BISECTION_STEPS = 64  # halves [0, 1] below the float64 resolution of the bound


# ------------------------------------------------------------------------------- configuration
@dataclasses.dataclass(frozen=True)
class ExportConfig:
    """What an export computes; stored in `assets/tfsmooth_export.json` and the `metadata` signature.

    Attributes:
        sigma: noise level, l2 on the [0, 1] pixel scale, > 0.
        num_classes: K, the base classifier's output size, >= 2.
        n0: CERTIFY's selection draws, >= 1.
        n: CERTIFY's estimation draws and PREDICT's draws; must allow both to answer at alpha
            (`stats.min_n_to_predict(alpha)`, 11 for alpha = 0.001) and be at most `MAX_N` (10,000,000), the
            largest n whose in-graph statistics are validated against scipy (tests/test_graph_stats.py).
        alpha: failure probability in `ALPHA_RANGE` = [1e-12, 0.49], where the in-graph statistics are
            validated against scipy.
        batch_size: noisy copies per forward pass of the base classifier (rounded down to whole
            noise blocks, at least one block).
        noise_block: draws per noise block (`tfsmooth.noise`); the library's default is 100.
        image_shape: (height, width, channels) the base classifier takes.
        class_names: one name per class, in label order.
        compute_dtype: arithmetic of the noisy forward passes, "float32" or "bfloat16"
            (`tfsmooth.models.folding.InferenceView`); base_logits always answers in float32.
        alpha_split: the `t_certify` signature's alpha_A / alpha, in (0, 1) (default 0.5). "auto" (the split
            chosen on the selection draws) is a host-side choice and is not exported.

    Raises:
        ValueError: naming the first invalid field.
    """

    sigma: float
    num_classes: int
    image_shape: Tuple[int, int, int]
    n0: int = 100
    n: int = 10_000
    alpha: float = 0.001
    batch_size: int = 1_000
    noise_block: int = 100
    class_names: Optional[Tuple[str, ...]] = None
    compute_dtype: str = "float32"
    alpha_split: float = 0.5

    def __post_init__(self):
        folding.check_compute_dtype(self.compute_dtype)
        object.__setattr__(self, "sigma", stats.check_sigma(self.sigma))
        stats.check_count(self.num_classes, "num_classes", minimum=2)
        object.__setattr__(self, "alpha", stats.check_alpha(self.alpha))
        if not ALPHA_RANGE[0] <= self.alpha <= ALPHA_RANGE[1]:
            raise ValueError(f"alpha={self.alpha} is outside the range whose in-graph statistics are validated: "
                             f"use {ALPHA_RANGE[0]:g} <= alpha <= {ALPHA_RANGE[1]:g}")
        stats.check_count(self.n0, "n0")
        stats.check_count(self.n, "n")
        if self.n > MAX_N:
            raise ValueError(f"n={self.n} is above the largest n whose in-graph statistics are validated: "
                             f"use n <= {MAX_N:,}")
        if isinstance(self.alpha_split, (bool, str)) or not checks.is_real(self.alpha_split, 0.0, inclusive=False,
                                                                           maximum=1.0):
            raise ValueError(f"alpha_split must be a number in (0, 1) (the fraction of alpha that t_certify spends on "
                             f"p_a_lower), got {self.alpha_split!r}")
        object.__setattr__(self, "alpha_split", float(self.alpha_split))
        minimum = max(stats.min_n_to_certify(self.alpha), stats.min_n_to_predict(self.alpha),
                      stats.min_n_to_t_certify(self.alpha, self.alpha_split))
        if self.n < minimum:
            raise ValueError(f"n={self.n} is too small to ever certify or predict at alpha={self.alpha}: "
                             f"every input would abstain; use n >= {minimum}")
        stats.check_count(self.batch_size, "batch_size")
        stats.check_count(self.noise_block, "noise_block")
        shape = tuple(self.image_shape)
        if len(shape) != 3 or not all(isinstance(d, (int, np.integer)) and d >= 1 for d in shape):
            raise ValueError(f"image_shape must be (height, width, channels) of positive ints, "
                             f"got {self.image_shape!r}")
        object.__setattr__(self, "image_shape", tuple(int(d) for d in shape))
        if self.class_names is None:
            object.__setattr__(self, "class_names", tuple(str(i) for i in range(self.num_classes)))
        names = tuple(self.class_names)
        if len(names) != self.num_classes or not all(isinstance(s, str) and s for s in names):
            raise ValueError(f"class_names must be {self.num_classes} non-empty strings (one per class), "
                             f"got {names!r}")
        object.__setattr__(self, "class_names", names)

    def to_json(self) -> dict:
        """The record written to `assets/tfsmooth_export.json`."""
        record = dataclasses.asdict(self)
        record["image_shape"] = list(self.image_shape)
        record["class_names"] = list(self.class_names)
        record["abstain_label"] = ABSTAIN
        record["signatures"] = list(SIGNATURES)
        return record


# ----------------------------------------------------------------------------- graph statistics
MAX_N = 10_000_000
"""Largest n (draws per image) whose in-graph statistics are validated against scipy."""
ALPHA_RANGE = (1e-12, 0.49)
"""(smallest, largest) alpha whose in-graph statistics are validated against scipy."""
# `tf.math.betainc` sums a continued fraction capped at 300 iterations (Eigen's port of Cephes `incbet`), too few
# near the mean of Beta(a, b) once a + b is above ~1e6: within half a standard deviation of it the relative error
# is 1e-6 at n = 2e6, 3e-3 at 1e7, 0.2 at 1e8 (elsewhere ~eps * n ln n; none of this up to n = 1e6, a standard
# deviation of 500 draws). `_binomial_tail` moves arguments within _NEAR_MEAN_SD standard deviations of the mean
# _SHIFT_SD standard deviations away, when that deviation is at least _NEAR_MEAN_MIN_SD draws.
_NEAR_MEAN_SD = 1.0
_SHIFT_SD = 2.0
_NEAR_MEAN_MIN_SD = 100.0
# `_binomial_tail`'s relative error, measured against scipy over n <= MAX_N, is at most 2 eps (1 + (n + 1) ln(n + 1)
# + |ln I|) (1.64 on the grid of tests/test_graph_stats.py, 1.99 on 136,000 random points): rounding of logarithms of
# that size in x^a (1 - x)^b / B(a, b). The statistics are made conservative by _SAFETY_FACTOR times the unit.
_SAFETY_FACTOR = 16.0
_EPS = float(np.finfo(np.float64).eps)
# `tf.math.ndtri` is within 2 ulps of scipy's `norm.ppf` on [0.5, 1): the radius is scaled down by this factor.
_NDTRI_SAFETY = 1.0 - 4.0 * _EPS


def _float64(value):
    """A float64 tensor of `value`; Python floats go straight to float64 (`tf.cast` would round them to float32)."""
    return tf.cast(tf.convert_to_tensor(value, dtype_hint=tf.float64), tf.float64)


def _tail_error_bound(n, tail):
    """Bound on the relative error of `_binomial_tail(k, n, x)` where its value is `tail` (float64 tensors)."""
    log_tail = tf.math.log(tf.maximum(tail, tf.constant(np.finfo(np.float64).tiny, tf.float64)))
    return _SAFETY_FACTOR * _EPS * (1.0 + (n + 1.0) * tf.math.log(n + 1.0) - log_tail)


def _binomial_terms(k, n, x, m):
    """sum_{j=k}^{k+m-1} C(n, j) x^j (1 - x)^(n - j) for float64 vectors k, n, x (0 < x < 1), m (whole, >= 0).

    The first term from log-gamma functions, the others by the ratio (n - j) / (j + 1) * x / (1 - x) of successive
    terms (a cumulative product: relative rounding error ~ m eps, negligible beside the first term's).
    """
    steps = tf.range(tf.maximum(tf.reduce_max(tf.concat([m, [0.0]], 0)), 0.0), dtype=tf.float64)
    first = tf.exp(tf.math.lgamma(n + 1.0) - tf.math.lgamma(k + 1.0) - tf.math.lgamma(n - k + 1.0)
                   + k * tf.math.log(x) + (n - k) * tf.math.log1p(-x))
    j = k[:, None] + steps
    ratios = (n[:, None] - j) / (j + 1.0) * (x / (1.0 - x))[:, None]
    terms = first[:, None] * tf.math.cumprod(ratios, axis=-1, exclusive=True)
    return tf.reduce_sum(tf.where(steps < m[:, None], terms, tf.zeros_like(terms)), axis=-1)


def _binomial_tail(k, n, x):
    """P(X >= k) for X ~ Binomial(n, x), i.e. I_x(k, n - k + 1), in float64.

    `tf.math.betainc`, except within _NEAR_MEAN_SD standard deviations of the mean of Beta(k, n - k + 1), where its
    continued fraction has not converged for large n (a standard deviation of more than _NEAR_MEAN_MIN_SD draws):
    there I_x(k, n - k + 1) = I_x(k + m, n - k - m + 1) +
    sum_{j=k}^{k+m-1} C(n, j) x^j (1 - x)^(n - j) (DLMF 8.17.20 applied m times), with m = _SHIFT_SD standard
    deviations (at most n - k + 1: then the first term is P(X >= n + 1) = 0), puts betainc's argument off the mean.
    Relative error at most 2 eps (1 + (n + 1) ln(n + 1) + |ln I|) for n <= MAX_N (measured against scipy), an
    eighth of `_tail_error_bound`.

    Args:
        k: float64 tensor, successes, 1 <= k <= n (not checked).
        n: float64 tensor broadcasting with k and x, trials >= 1.
        x: float64 tensor (or float) in [0, 1], the success probability.

    Returns:
        float64 tensor, the broadcast shape of k, n and x, values in [0, 1].
    """
    k, n, x = (_float64(v) for v in (k, n, x))
    shape = tf.shape(k + n + x)
    k, n, x = (tf.reshape(tf.broadcast_to(v, shape), [-1]) for v in (k, n, x))
    b = n - k + 1.0
    sd = tf.sqrt(k * b / (n + 2.0))  # of Beta(k, b) times n + 1: in draws
    near = (tf.abs(x * (n + 1.0) - k) < _NEAR_MEAN_SD * sd) & (sd >= _NEAR_MEAN_MIN_SD)
    m = tf.where(near, tf.minimum(tf.math.ceil(_SHIFT_SD * sd), b), tf.zeros_like(b))
    shifted = tf.where(m < b, tf.math.betainc(k + m, tf.maximum(b - m, 1.0), x), tf.zeros_like(x))
    rows = tf.where(near)
    terms = tf.scatter_nd(rows, _binomial_terms(*(tf.gather_nd(v, rows) for v in (k, n, x, m))),
                          tf.shape(b, out_type=tf.int64))
    return tf.reshape(shifted + terms, shape)


def tf_clopper_pearson_lower(k, n, alpha):
    """One-sided (1 - alpha) Clopper-Pearson lower bound, in the graph (float64), never above the exact bound.

    LowerConfBound of CERTIFY (Cohen et al. 2019, Sec. 3.2): the x with I_x(k, n - k + 1) = alpha, 0 when k = 0.
    Bisection keeps the end `low` of its bracket, where the computed I_low(k, n - k + 1) (`_binomial_tail`) is below
    alpha * (1 - `_tail_error_bound`): so the true I_low is below alpha and low below the exact bound. For
    1 <= n <= MAX_N and alpha in ALPHA_RANGE it is below `tfsmooth.stats.clopper_pearson_lower` (scipy's
    `beta.ppf(alpha, k, n - k + 1)`) by at most 1.2e-10 (measured, at n = 1e7 near the median; 1e-9 asserted by
    tests/test_graph_stats.py).
    (`tfp.math.betaincinv` iterates on the same `tf.math.betainc`: 2.4e-7 above scipy at n = 1e7, alpha = 0.49.)

    Args:
        k: integer tensor, successes, 0 <= k <= n (not checked).
        n: integer tensor broadcasting with k, trials >= 1.
        alpha: float, or float tensor broadcasting with k and n: failure probability in (0, 1).

    Returns:
        float64 tensor shaped like broadcast(k, n, alpha), values in [0, 1).
    """
    k, n, alpha = (_float64(v) for v in (k, n, alpha))
    shape = tf.shape(k + n + alpha)
    k, n, alpha = (tf.broadcast_to(v, shape) for v in (k, n, alpha))
    successes = tf.maximum(k, 1.0)
    target = alpha * (1.0 - _tail_error_bound(n, alpha))  # computed I < target implies the true I < alpha

    def halve(step, low, high):
        mid = 0.5 * (low + high)
        below = _binomial_tail(successes, n, mid) < target  # I_x(a, b) increases with x
        return step + 1, tf.where(below, mid, low), tf.where(below, high, mid)

    _, low, _ = tf.while_loop(lambda step, *_: step < _BISECTION_STEPS, halve,
                              (tf.constant(0), tf.zeros_like(k), tf.ones_like(k)))
    return tf.where(k == 0.0, tf.zeros_like(low), low)


def tf_binomial_p_value(n_a, n_b):
    """Two-sided binomial test p-value of n_a successes in n_a + n_b trials at p = 1/2, in the graph, never too small.

    BinomPValue of PREDICT (Cohen et al. 2019, Sec. 3.2). The distribution is symmetric, so the p-value is
    min(1, 2 P(X <= min(n_a, n_b))) with P(X <= m) = P(X >= N - m) = I_{1/2}(N - m, m + 1), N = n_a + n_b; 1 when
    n_a = n_b (including N = 0). The tail (`_binomial_tail`) is raised by its error bound, so the p-value is never
    below the exact one (PREDICT answers when p <= alpha). For N <= MAX_N it is above
    `tfsmooth.stats.binomial_p_value` (scipy's `binomtest`) by a relative 2 * `_tail_error_bound` at most
    (1.2e-6 at N = 1e7, 6.5e-10 at N = 1e4; tests/test_graph_stats.py); both are 0 below ~1e-308.

    Args:
        n_a, n_b: integer tensors (same shape), counts >= 0.

    Returns:
        float64 tensor, p-values in [0, 1].
    """
    n_a, n_b = _float64(n_a), _float64(n_b)
    total, low = n_a + n_b, tf.minimum(n_a, n_b)
    total_or_one = tf.maximum(total, 1.0)
    tail = _binomial_tail(tf.maximum(total - low, 1.0), total_or_one, 0.5)
    p_value = 2.0 * tail * (1.0 + _tail_error_bound(total_or_one, tail))
    one = tf.ones_like(p_value)
    return tf.where(tf.equal(n_a, n_b), one, tf.minimum(one, p_value))


def tf_radius(sigma: float, p_a_lower):
    """Certified l2 radius sigma * Phi^{-1}(p_a_lower) (Cohen et al. 2019, Theorem 1), float64, never above it.

    `tf.math.ndtri` is within 2 ulps of scipy's `norm.ppf` on [0.5, 1); the result is scaled by 1 - 4 eps, so it is
    at most `tfsmooth.stats.radius` and at least (1 - 8 eps) times it: with a conservative p_a_lower
    (`tf_clopper_pearson_lower`), a conservative radius.

    Args:
        sigma: noise level (l2, [0, 1] pixel scale).
        p_a_lower: float tensor in [0.5, 1).

    Returns:
        float64 tensor shaped like p_a_lower: the radius (l2, [0, 1] pixel scale), 0 at p_a_lower = 0.5.
    """
    return tf.constant(sigma * _NDTRI_SAFETY, tf.float64) * tf.math.ndtri(_float64(p_a_lower))


def tf_certify_decision(selection_counts, estimation_counts, sigma: float, alpha: float):
    """Steps 1 and 3-4 of CERTIFY for a batch, in the graph (as `stats.certify_decision`).

    The bound is never above the library's and at most 1e-9 below, the radius never above it (for n <= MAX_N,
    alpha in ALPHA_RANGE), so the label is the library's unless its bound is within 1e-9 above 1/2.

    Args:
        selection_counts, estimation_counts: integer [B, K] class counts of the n0 selection and n
            estimation draws.
        sigma, alpha: as in `ExportConfig`.

    Returns:
        (label int64 [B], radius float64 [B], p_a_lower float64 [B]): label = the top selection
        class (ties: lowest index) or ABSTAIN (-1) with radius 0 when p_a_lower < 0.5.
    """
    c_a = tf.math.top_k(selection_counts, k=1).indices[:, 0]  # top_k breaks ties by lowest index
    k = tf.gather(estimation_counts, c_a, batch_dims=1)
    p_a_lower = tf_clopper_pearson_lower(k, tf.reduce_sum(estimation_counts, axis=-1), alpha)
    abstain = p_a_lower < 0.5
    label = tf.where(abstain, tf.constant(ABSTAIN, tf.int64), tf.cast(c_a, tf.int64))
    radius = tf.where(abstain, tf.zeros_like(p_a_lower), tf_radius(sigma, p_a_lower))
    return label, radius, p_a_lower


def tf_clopper_pearson_upper(k, n, alpha):
    """One-sided (1 - alpha) Clopper-Pearson upper bound, in the graph (float64), never below the exact bound.

    1 - `tf_clopper_pearson_lower`(n - k, n, alpha) (the binomial's symmetry), moved one float64 ulp up so that the
    rounding of the subtraction cannot take it below 1 - (a bound never above the exact lower bound of n - k). At most
    about 1.2e-10 above `tfsmooth.stats.clopper_pearson_upper` for n <= MAX_N (tests/test_graph_stats.py).

    Args:
        k: integer tensor, successes, 0 <= k <= n (not checked).
        n: integer tensor broadcasting with k, trials >= 1.
        alpha: float or float tensor, failure probability in (0, 1).

    Returns:
        float64 tensor shaped like broadcast(k, n, alpha), values in (0, 1]; 1 where k = n.
    """
    k, n = _float64(k), _float64(n)
    lower = tf_clopper_pearson_lower(n - k, n, alpha)
    one = tf.ones_like(lower)
    return tf.minimum(one, tf.math.nextafter(1.0 - lower, 2.0 * one))


def tf_t_certify_decision(selection_counts, estimation_counts, sigma: float, alpha: float, alpha_split: float):
    """T-CERTIFY (Feng et al. 2020) for a batch, in the graph (as `stats.decide_certificate(..., "t-certify")`).

    p_a_lower is never above the library's, p_b_upper never below it (both within ~1e-9), and the radius
    sigma / 2 * (ndtri(p_a_lower) - ndtri(p_b_upper)) is lowered by 8 eps (|ndtri(p_a_lower)| + |ndtri(p_b_upper)|)
    (ndtri is within 2 ulps of scipy's `norm.ppf`, plus the subtraction's rounding), so it is never above the
    exact radius of its (conservative) bounds.

    Args:
        selection_counts, estimation_counts: integer [B, K], K >= 2.
        sigma, alpha, alpha_split: as in `ExportConfig` (alpha_A = alpha * alpha_split).

    Returns:
        (label int64 [B], radius float64 [B], p_a_lower float64 [B], p_b_upper float64 [B], runner_up int64 [B]):
        label c_A (the top selection class, ties: lowest index) when p_a_lower > p_b_upper, else ABSTAIN with radius 0;
        runner_up the estimation argmax over the other classes (ties: lowest index), whose bound is capped at
        1 - p_a_lower.
    """
    alpha_a = alpha * alpha_split
    alpha_b = alpha - alpha_a
    c_a = tf.math.top_k(selection_counts, k=1).indices[:, 0]
    n = tf.reduce_sum(estimation_counts, axis=-1)
    k_a = tf.gather(estimation_counts, c_a, batch_dims=1)
    p_a_lower = tf_clopper_pearson_lower(k_a, n, alpha_a)
    num_classes = tf.shape(estimation_counts)[-1]
    others = tf.where(tf.one_hot(c_a, num_classes) > 0.0, -tf.ones_like(estimation_counts),
                      estimation_counts)
    top_other = tf.math.top_k(others, k=1)
    runner_up = tf.cast(top_other.indices[:, 0], tf.int64)
    p_b_upper = tf_clopper_pearson_upper(top_other.values[:, 0], n, alpha_b)
    p_b_upper = tf.minimum(p_b_upper, 1.0 - p_a_lower)
    answer = p_a_lower > p_b_upper
    safe_a = tf.where(answer, p_a_lower, 0.75 * tf.ones_like(p_a_lower))  # keep ndtri finite off the answers
    safe_b = tf.where(answer, p_b_upper, 0.25 * tf.ones_like(p_b_upper))
    q_a, q_b = tf.math.ndtri(safe_a), tf.math.ndtri(safe_b)
    margin = (q_a - q_b) - 8.0 * _EPS * (tf.abs(q_a) + tf.abs(q_b))
    radius = tf.where(answer, tf.constant(0.5 * sigma, tf.float64) * tf.maximum(margin, 0.0), tf.zeros_like(margin))
    label = tf.where(answer, tf.cast(c_a, tf.int64), tf.constant(ABSTAIN, tf.int64))
    return label, radius, p_a_lower, p_b_upper, runner_up


def tf_predict_decision(counts, alpha: float):
    """PREDICT's decision for a batch, in the graph (as `stats.predict_decision`).

    The p-value is never below the library's (`tf_binomial_p_value`), so the label is the library's unless its
    p-value is within a relative 2 * `_tail_error_bound` (1.2e-6 at n = 1e7) below alpha.

    Args:
        counts: integer [B, K], K >= 2, class counts of the n draws.
        alpha: failure probability in (0, 1).

    Returns:
        (label int64 [B], p_value float64 [B]): the top class (ties: lowest index), or ABSTAIN when
        the binomial test of the top two counts has p-value > alpha.
    """
    top = tf.math.top_k(counts, k=2)
    p_value = tf_binomial_p_value(top.values[:, 0], top.values[:, 1])
    label = tf.where(p_value > alpha, tf.constant(ABSTAIN, tf.int64), tf.cast(top.indices[:, 0], tf.int64))
    return label, p_value


# ------------------------------------------------------------------------------ graph plumbing
def _checked_images(images, image_shape):
    """Asserts images are float32 [B, *image_shape], finite, in [0, 1]; returns them with static shape."""
    expected = "images must be float32 pixels [batch, {}, {}, {}] in [0, 1]".format(*image_shape)
    shape = tf.shape(images)
    spatial = tf.concat([shape, tf.zeros([4], tf.int32)], 0)[1:4]  # length 3 whatever the rank
    shape_ok = tf.equal(tf.size(shape), 4) & tf.reduce_all(tf.equal(spatial, image_shape))
    check_shape = tf.debugging.Assert(shape_ok, [expected + "; got shape", shape], summarize=8)
    with tf.control_dependencies([check_shape]):
        images = tf.ensure_shape(tf.identity(images), [None, *image_shape])
        check_finite = tf.debugging.Assert(tf.reduce_all(tf.math.is_finite(images)),
                                           [expected + "; got NaN or infinite values"])
    with tf.control_dependencies([check_finite]):
        low, high = tf.reduce_min(images), tf.reduce_max(images)
        check_range = tf.debugging.Assert((low >= 0.0) & (high <= 1.0),
                                          [expected + "; got values in [min, max] =", low, high])
    with tf.control_dependencies([check_range]):
        return tf.identity(images)


def _resolved_seed(seed):
    """int64 scalar seed from the optional `seed` input: empty -> fresh, else all entries equal, >= 0."""
    flat = tf.reshape(tf.cast(seed, tf.int64), [-1])
    ok = tf.reduce_all(flat >= 0) & tf.reduce_all(tf.equal(flat, tf.reduce_max(flat)))
    check = tf.debugging.Assert(ok, ["seed must be one integer in [0, 2**63) (a scalar, or copies of "
                                     "one value), or empty for a fresh seed; got", flat], summarize=8)
    with tf.control_dependencies([check]):
        return tf.cond(tf.size(flat) > 0, lambda: flat[0], _fresh_seed)


def _fresh_seed():
    """A random int64 in [0, 2**62) that differs between calls, loads and replicas.

    The raw op with seed = seed2 = 0 is seeded by the OS when the kernel is created; `tf.random.uniform`
    would instead take a fixed op seed from a global seed set at export time (the same sequence after
    every server start).
    """
    return tf.raw_ops.RandomUniformInt(shape=tf.constant([], tf.int32), minval=tf.constant(0, tf.int64),
                                       maxval=tf.constant(2**62, tf.int64), seed=0, seed2=0)


def _count(base_model, images, seed, plan, config: ExportConfig):
    """Class counts per image and stream, as the library's (`counting.graph_counts`, keys 0..B-1)."""
    sigma = tf.fill(tf.shape(images)[:1], tf.constant(config.sigma, tf.float32))
    return counting.graph_counts(base_model, images, sigma, seed, plan, noise_block=config.noise_block,
                                 batch_size=config.batch_size, num_classes=config.num_classes)


def _predict(base_model, cfg: ExportConfig, images, seed):
    images = _checked_images(images, cfg.image_shape)
    seed = _resolved_seed(seed)
    counts = _count(base_model, images, seed, ((noise.STREAM_PREDICT, cfg.n),), cfg)[noise.STREAM_PREDICT]
    label, p_value = tf_predict_decision(counts, cfg.alpha)
    return {"label": label, "counts": counts, "p_value": p_value,  # float64: float32 underflows below 1e-45
            "seed": tf.fill(tf.shape(label), seed)}


def _certify(base_model, cfg: ExportConfig, images, seed):
    images = _checked_images(images, cfg.image_shape)
    seed = _resolved_seed(seed)
    plan = ((noise.STREAM_SELECTION, cfg.n0), (noise.STREAM_ESTIMATION, cfg.n))
    counts = _count(base_model, images, seed, plan, cfg)
    label, radius, p_a_lower = tf_certify_decision(counts[noise.STREAM_SELECTION], counts[noise.STREAM_ESTIMATION],
                                                   cfg.sigma, cfg.alpha)
    # float64, as computed: rounding to float32 (to nearest) could lift them above the conservative value.
    return {"label": label, "radius": radius, "p_a_lower": p_a_lower,
            "counts": counts[noise.STREAM_ESTIMATION], "selection_counts": counts[noise.STREAM_SELECTION],
            "seed": tf.fill(tf.shape(label), seed)}


def _t_certify(base_model, cfg: ExportConfig, images, seed):
    images = _checked_images(images, cfg.image_shape)
    seed = _resolved_seed(seed)
    plan = ((noise.STREAM_SELECTION, cfg.n0), (noise.STREAM_ESTIMATION, cfg.n))
    counts = _count(base_model, images, seed, plan, cfg)
    label, radius, p_a_lower, p_b_upper, runner_up = tf_t_certify_decision(
        counts[noise.STREAM_SELECTION], counts[noise.STREAM_ESTIMATION], cfg.sigma, cfg.alpha, cfg.alpha_split)
    return {"label": label, "radius": radius, "p_a_lower": p_a_lower, "p_b_upper": p_b_upper,
            "runner_up": runner_up, "counts": counts[noise.STREAM_ESTIMATION],
            "selection_counts": counts[noise.STREAM_SELECTION], "seed": tf.fill(tf.shape(label), seed)}


def _metadata(cfg: ExportConfig):
    scalars = {"sigma": (cfg.sigma, tf.float64), "alpha": (cfg.alpha, tf.float64), "n0": (cfg.n0, tf.int64),
               "n": (cfg.n, tf.int64), "noise_block": (cfg.noise_block, tf.int64),
               "batch_size": (cfg.batch_size, tf.int64), "num_classes": (cfg.num_classes, tf.int64),
               "image_shape": (cfg.image_shape, tf.int64), "class_names": (cfg.class_names, tf.string),
               "compute_dtype": (cfg.compute_dtype, tf.string), "alpha_split": (cfg.alpha_split, tf.float64)}
    return {key: tf.constant(value, dtype) for key, (value, dtype) in scalars.items()}


def _serving_module(base_model, cfg: ExportConfig):
    """The exported tf.Module: the base classifier's variables and the four signature functions.

    The Keras model is captured by the functions, not tracked as an attribute: a tracked Keras 3
    model leaves its variables unrestored for Session-based loaders (TF Serving, `saved_model_cli
    run`: "Could not find variable conv2d/kernel"); the plain list of its tf.Variables works.
    """
    module = tf.Module(name="tfsmooth_export")
    view = folding.InferenceView(base_model, cfg.compute_dtype)  # as SmoothedClassifier: the same logit bits
    inference_model = view.model
    variables = list(base_model.variables) + view.copied_variables  # a bfloat16 view has its own copies
    module.model_variables = [getattr(v, "value", v) for v in variables]
    image_spec = tf.TensorSpec(None, tf.float32, name="images")
    seed_spec = tf.TensorSpec(None, tf.int64, name="seed")
    no_seed = tf.constant([], tf.int64)  # a tensor default becomes the SignatureDef's `defaults`

    def predict(images, seed=no_seed):
        return _predict(inference_model, cfg, images, seed)

    def certify(images, seed=no_seed):
        return _certify(inference_model, cfg, images, seed)

    def t_certify(images, seed=no_seed):
        return _t_certify(inference_model, cfg, images, seed)

    def base_logits(images):
        images = _checked_images(images, cfg.image_shape)
        return {"logits": tf.cast(base_model(images, training=False), tf.float32)}

    module.predict = tf.function(predict, input_signature=[image_spec, seed_spec])
    module.certify = tf.function(certify, input_signature=[image_spec, seed_spec])
    module.t_certify = tf.function(t_certify, input_signature=[image_spec, seed_spec])
    module.base_logits = tf.function(base_logits, input_signature=[image_spec])
    module.metadata = tf.function(lambda: _metadata(cfg), input_signature=[])
    return module


# ------------------------------------------------------------------------------------ export
def export_saved_model(base_model, export_dir: str, *, sigma: float, num_classes: int, n0: int = 100,
                       n: int = 10_000, alpha: float = 0.001, batch_size: int = 1_000, version: int = 1,
                       noise_block: int = 100, class_names: Optional[Sequence[str]] = None,
                       compute_dtype: str = "float32", alpha_split: float = 0.5) -> str:
    """Exports the smoothed classifier of `base_model` as `export_dir/<version>/` for TF Serving.

    See the module docstring for the signatures. The version directory is written under a hidden
    temporary name and renamed when complete, so a server watching `export_dir` never loads a
    partial export.

    Args:
        base_model: Keras model, float32 pixels [batch, H, W, C] in [0, 1] -> scores [batch, K],
            with a static input shape (H, W, C).
        export_dir: the model base path (created if missing).
        sigma: noise level the base classifier was trained for (l2, [0, 1] pixel scale), > 0.
        num_classes: K, >= 2; must match the model's output size.
        n0: CERTIFY's selection draws, >= 1.
        n: CERTIFY's estimation draws and PREDICT's draws (latency grows linearly with n).
        alpha: failure probability in (0, 1).
        batch_size: noisy copies per forward pass (memory: about batch_size images).
        version: TF Serving version number, int >= 1.
        noise_block: draws per noise block; answers equal the library's for the same value.
        class_names: K names (default: "0" ... "K-1"), stored in the metadata.
        compute_dtype: "float32" (default) or "bfloat16": the arithmetic of the noisy forward passes,
            as in `SmoothedClassifier` (answers equal the library's with the same value).
        alpha_split: the `t_certify` signature's alpha_A / alpha, in (0, 1) (default 0.5).

    Returns:
        str: the path of the version directory.

    Raises:
        ValueError: naming the argument, if sigma <= 0, alpha outside `ALPHA_RANGE` = [1e-12, 0.49] (where
            the in-graph statistics are validated), n0 < 1, n too small to ever certify or predict at
            alpha or above `MAX_N` = 10,000,000, batch_size / noise_block < 1, version not an int >= 1,
            compute_dtype not "float32" / "bfloat16",
            `export_dir/<version>` exists and is not an empty directory, class_names has the wrong
            length, or the model's input shape is unknown or its output size is not num_classes.
    """
    if isinstance(version, bool) or not isinstance(version, (int, np.integer)) or version < 1:
        raise ValueError(f"version must be an integer >= 1, got {version!r}")
    config = ExportConfig(sigma=sigma, num_classes=num_classes, image_shape=_image_shape(base_model), n0=n0, n=n,
                          alpha=alpha, batch_size=batch_size, noise_block=noise_block,
                          class_names=None if class_names is None else tuple(class_names),
                          compute_dtype=compute_dtype, alpha_split=alpha_split)
    _check_output_size(base_model, config.num_classes)
    version_dir = os.path.join(export_dir, str(int(version)))
    if os.path.exists(version_dir) and (not os.path.isdir(version_dir) or os.listdir(version_dir)):
        raise ValueError(f"version={version}: {version_dir} already exists and is not empty; "
                         f"choose another version or remove it")
    os.makedirs(export_dir, exist_ok=True)
    staging = tempfile.mkdtemp(prefix=f".tmp-{int(version)}-", dir=export_dir)  # not numeric: ignored by TF Serving
    try:
        module = _serving_module(base_model, config)
        tf.saved_model.save(module, staging, signatures={"serving_default": module.predict, "certify": module.certify,
                                                         "t_certify": module.t_certify,
                                                         "base_logits": module.base_logits,
                                                         "metadata": module.metadata})
        os.makedirs(os.path.join(staging, "assets"), exist_ok=True)
        with open(os.path.join(staging, "assets", METADATA_FILE), "w") as f:
            json.dump(config.to_json(), f, indent=2)
            f.write("\n")
        os.chmod(staging, 0o755)
        os.replace(staging, version_dir)
    except BaseException:
        shutil.rmtree(staging, ignore_errors=True)
        raise
    return version_dir


def export_smoothed(smoothed, export_dir: str, *, n0: int = 100, n: int = 10_000, alpha: float = 0.001,
                    batch_size: int = 1_000, version: int = 1, class_names: Optional[Sequence[str]] = None,
                    alpha_split: float = 0.5) -> str:
    """Exports a `tfsmooth.SmoothedClassifier` as a TF Serving SavedModel, `export_dir/<version>/`.

    Calls `export_saved_model` with the classifier's base model, sigma, num_classes, noise_block and
    compute_dtype, so the export's `serving_default` / `certify` signatures answer, for a seed s,
    exactly as `smoothed.predict_batch` / `smoothed.certify_batch(images, ..., seed=s)`.

    Returns:
        str: the version directory.

    Raises:
        ValueError: as `export_saved_model` (bad n0, n, alpha, version, an existing non-empty version
            directory, ...).
    """
    return export_saved_model(smoothed.base_model, export_dir, sigma=smoothed.sigma, num_classes=smoothed.num_classes,
                              noise_block=smoothed.noise_block, n0=n0, n=n, alpha=alpha, batch_size=batch_size,
                              version=version, class_names=class_names, compute_dtype=smoothed.compute_dtype,
                              alpha_split=alpha_split)


def export_model_file(model_path: str, export_dir: str, *, class_names: Optional[Sequence[str]] = None,
                      **kwargs) -> str:
    """Loads a base classifier saved as `.keras` and exports it (`export_saved_model`).

    K is the model's output size; `class_names`, if given, must hold K names.

    Args:
        model_path: `.keras` file (a `GaussianAugmentedModel` is unwrapped to its base model).
        export_dir: the model base path.
        class_names: optional K names.
        **kwargs: sigma, n0, n, alpha, batch_size, version, noise_block, compute_dtype, alpha_split of
            `export_saved_model`.

    Returns:
        str: the path of the version directory.

    Raises:
        FileNotFoundError: if `model_path` does not exist.
        ValueError: as `export_saved_model`, or if the file is not a Keras model.
    """
    model = model_io.load_base_model(model_path)
    out_shape = _output_shape(model)
    if out_shape is None or out_shape[-1] is None:
        raise ValueError(f"cannot tell the number of classes of {model_path}: its output shape is unknown")
    return export_saved_model(model, export_dir, num_classes=int(out_shape[-1]), class_names=class_names, **kwargs)


def read_metadata(version_dir: str) -> dict:
    """Reads `assets/tfsmooth_export.json` of an export (sigma, n0, n, alpha, class_names, ...).

    Raises:
        FileNotFoundError: if the directory holds no tfsmooth export record.
    """
    path = os.path.join(version_dir, "assets", METADATA_FILE)
    if not os.path.isfile(path):
        raise FileNotFoundError(f"no tfsmooth export record at {path}")
    with open(path) as f:
        return json.load(f)


def _image_shape(model):
    try:
        shape = tuple(model.input_shape)
    except (AttributeError, ValueError, RuntimeError, TypeError):
        shape = None
    if shape is None or len(shape) != 4 or any(d is None for d in shape[1:]):
        raise ValueError(f"base_model must have a static input shape [batch, height, width, channels], got {shape}; "
                         f"build it with keras.Input(shape=(H, W, C))")
    return tuple(int(d) for d in shape[1:])


def _output_shape(model):
    try:
        return tuple(model.output_shape)
    except (AttributeError, ValueError, RuntimeError, TypeError):
        return None


def _check_output_size(model, num_classes):
    shape = _output_shape(model)
    if shape is not None and shape[-1] is not None and shape[-1] != num_classes:
        raise ValueError(f"num_classes={num_classes} but the base model outputs {shape[-1]} class scores")
