"""Host-side statistics of randomized smoothing (no TensorFlow).

Everything here follows Cohen, Rosenfeld & Kolter, "Certified Adversarial Robustness via Randomized
Smoothing" (ICML 2019), Sec. 3.2 (pseudocode of PREDICT and CERTIFY) and Theorem 1, as digested in
`METHODS.md` §1. The binomial computations are delegated to `scipy.stats`.

Units: sigma and radii are l2 norms on the [0, 1] pixel scale.
"""

from __future__ import annotations

import math
from typing import Tuple

import numpy as np
from scipy import stats as _st

from tfsmooth.checks import check_alpha, check_count, check_sigma  # noqa: F401  (re-exported: stats.check_*)

ABSTAIN = -1
"""Label returned by the smoothed classifier when it declines to answer."""


def clopper_pearson_lower(k, n, alpha):
    """One-sided (1 - alpha) Clopper-Pearson lower confidence bound on a binomial proportion.

    LowerConfBound of CERTIFY (Cohen et al. 2019, Sec. 3.2): with probability at least 1 - alpha
    over the n draws, the returned value is <= the true success probability. It equals
    `Beta.ppf(alpha; k, n - k + 1)` and is 0 when k = 0; for k = n it is alpha ** (1 / n).

    Args:
        k: successes, int or integer array, 0 <= k <= n.
        n: trials, int >= 1 (broadcasts with k).
        alpha: failure probability in (0, 1).

    Returns:
        float (or float64 array shaped like k): the lower bound in [0, 1].

    Raises:
        ValueError: if alpha is outside (0, 1), n < 1, or k outside [0, n].
    """
    alpha = check_alpha(alpha)
    k_arr = np.asarray(k)
    n_arr = np.asarray(n)
    if np.any(n_arr < 1):
        raise ValueError(f"n must be >= 1, got {n!r}")
    if np.any(k_arr < 0) or np.any(k_arr > n_arr):
        raise ValueError(f"k must be in [0, n], got k={k!r}, n={n!r}")
    k_f = k_arr.astype(np.float64)
    n_f = n_arr.astype(np.float64)
    with np.errstate(invalid="ignore"):
        bound = _st.beta.ppf(alpha, np.maximum(k_f, 1.0), n_f - k_f + 1.0)
    bound = np.where(k_f == 0, 0.0, bound)
    return float(bound) if bound.ndim == 0 else bound


def binomial_p_value(n_a: int, n_b: int) -> float:
    """Two-sided binomial test p-value of `n_a` successes in `n_a + n_b` trials at p = 1/2.

    The test of PREDICT (Cohen et al. 2019, Sec. 3.2, `BinomPValue`): a small p-value means the top
    class's lead over the runner-up is not due to chance. Returns 1.0 when n_a + n_b = 0.

    Raises:
        ValueError: if a count is negative.
    """
    if n_a < 0 or n_b < 0:
        raise ValueError(f"counts must be >= 0, got n_a={n_a}, n_b={n_b}")
    if n_a + n_b == 0:
        return 1.0
    return float(_st.binomtest(int(n_a), int(n_a + n_b), 0.5).pvalue)


def radius(sigma: float, p_a_lower):
    """Certified l2 radius sigma * Phi^{-1}(p_a_lower) (Cohen et al. 2019, Theorem 1 with p_B = 1 - p_A).

    CERTIFY calls it only when p_a_lower >= 0.5 (below, it abstains), and a Clopper-Pearson lower
    bound is always < 1, so [0.5, 1) is the whole valid range: below 0.5 the formula gives a negative
    "radius", at 1 an infinite one.

    Args:
        sigma: noise level, l2 on the [0, 1] pixel scale.
        p_a_lower: float or float array of any shape, each in [0.5, 1): a lower bound on the top
            class's probability.

    Returns:
        float (or float64 array shaped like p_a_lower): the radius in the same units as sigma, >= 0;
        0 at p_a_lower = 0.5.

    Raises:
        ValueError: if sigma is not a finite number > 0, or p_a_lower is not numeric or has a value
            that is NaN or outside [0.5, 1).
    """
    sigma = check_sigma(sigma)
    p = np.asarray(p_a_lower)
    if p.dtype.kind not in "iuf":
        raise ValueError(f"p_a_lower must be a number (or float array) in [0.5, 1), got {p_a_lower!r}")
    if not np.all((p >= 0.5) & (p < 1.0)):  # False for NaN
        raise ValueError(f"p_a_lower must be in [0.5, 1) (CERTIFY abstains below 0.5), got {p_a_lower!r}")
    return sigma * _st.norm.ppf(p)


def min_n_to_certify(alpha: float) -> int:
    """Smallest n for which CERTIFY can return a label at this alpha.

    With all n estimation draws on c_A the bound is alpha ** (1 / n); CERTIFY abstains below 1/2, so
    an answer needs alpha ** (1 / n) >= 1/2, i.e. n >= log2(1 / alpha).
    """
    alpha = check_alpha(alpha)
    n = max(1, math.ceil(math.log2(1.0 / alpha) - 1e-12))
    while alpha ** (1.0 / n) < 0.5:  # guard against rounding at exact powers of two
        n += 1
    return n


def min_n_to_predict(alpha: float) -> int:
    """Smallest n for which PREDICT can return a label at this alpha.

    The most decisive outcome is n_A = n, n_B = 0, with two-sided p-value 2 * 2**-n; PREDICT answers
    only when that is <= alpha (for alpha = 0.001 this gives n >= 11, METHODS.md §1).
    """
    alpha = check_alpha(alpha)
    n = 1
    while binomial_p_value(n, 0) > alpha:
        n += 1
    return n


def check_counts(counts, name: str) -> np.ndarray:
    """Validates a vector of class counts of noisy draws.

    Args:
        counts: integer array [num_classes], num_classes >= 1, entries >= 0, summing to >= 1.
        name: the argument's name, used in the error message.

    Returns:
        int64 array [num_classes]: the counts.

    Raises:
        ValueError: if `counts` is not a non-empty 1-D integer array, has a negative entry, or sums
            to 0 (no draws).
    """
    arr = np.asarray(counts)
    if arr.ndim != 1 or arr.size == 0 or not np.issubdtype(arr.dtype, np.integer):
        raise ValueError(f"{name} must be a 1-D integer array [num_classes], got {counts!r}")
    if np.any(arr < 0):
        raise ValueError(f"{name} must be counts >= 0, got {counts!r}")
    if arr.sum() < 1:
        raise ValueError(f"{name} must sum to >= 1 (the number of draws), got {counts!r}")
    return arr.astype(np.int64)


def certify_decision(
    selection_counts: np.ndarray, estimation_counts: np.ndarray, sigma: float, alpha: float
) -> Tuple[int, float, float]:
    """Steps 1 and 3-4 of CERTIFY given the class counts of the two independent sets of draws.

    Args:
        selection_counts: int array [num_classes], counts of the n0 selection draws.
        estimation_counts: int array [num_classes], counts of the n fresh estimation draws.
        sigma: noise level (l2, [0, 1] pixel scale).
        alpha: failure probability in (0, 1).

    Returns:
        (label, radius, p_a_lower): label = argmax of the selection counts (ties: lowest class
        index) or ABSTAIN with radius 0.0 when p_a_lower < 0.5.

    Raises:
        ValueError: if alpha is outside (0, 1), sigma is not > 0, either count vector is not a 1-D
            integer array with entries >= 0 and at least one draw (`check_counts`), or the two
            have different lengths.
    """
    alpha = check_alpha(alpha)
    sigma = check_sigma(sigma)
    selection_counts = check_counts(selection_counts, "selection_counts")
    estimation_counts = check_counts(estimation_counts, "estimation_counts")
    if selection_counts.shape != estimation_counts.shape:
        raise ValueError(f"selection_counts and estimation_counts must have the same length (num_classes), got "
                         f"{selection_counts.size} and {estimation_counts.size}")
    c_a = int(np.argmax(selection_counts))
    n = int(np.sum(estimation_counts))
    p_a_lower = clopper_pearson_lower(int(estimation_counts[c_a]), n, alpha)
    if p_a_lower < 0.5:
        return ABSTAIN, 0.0, float(p_a_lower)
    return c_a, float(radius(sigma, p_a_lower)), float(p_a_lower)


def predict_decision(counts: np.ndarray, alpha: float) -> Tuple[int, float]:
    """PREDICT's decision from the class counts of n noisy draws (Cohen et al. 2019, Sec. 3.2).

    Args:
        counts: int array [num_classes], num_classes >= 1: how many of the n draws f assigned to
            each class (entries >= 0, sum n >= 1).
        alpha: failure probability in (0, 1).

    Returns:
        (label, p_value): the top class, or ABSTAIN when the two-sided binomial test of the top two
        counts has p-value > alpha. With probability at least 1 - alpha the returned label (if not
        ABSTAIN) equals the smoothed classifier's prediction g(x) (Cohen et al., Prop. 1).

    Raises:
        ValueError: if alpha is outside (0, 1) or counts is not a 1-D integer array with entries
            >= 0 and at least one draw (`check_counts`).
    """
    alpha = check_alpha(alpha)
    counts = check_counts(counts, "counts")
    order = np.argsort(-counts, kind="stable")
    n_a = int(counts[order[0]])
    n_b = int(counts[order[1]]) if counts.size > 1 else 0
    p_value = binomial_p_value(n_a, n_b)
    if p_value > alpha:
        return ABSTAIN, p_value
    return int(order[0]), p_value
