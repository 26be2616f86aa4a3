"""Host-side statistics of randomized smoothing (no TensorFlow).

Everything here follows Cohen, Rosenfeld & Kolter, "Certified Adversarial Robustness via Randomized
Smoothing" (ICML 2019), Sec. 3.2 (pseudocode of PREDICT and CERTIFY) and Theorem 1, as digested in
`METHODS.md` §1. The binomial computations are delegated to `scipy.stats`.

Units: sigma and radii are l2 norms on the [0, 1] pixel scale.
"""

from __future__ import annotations

import math
from typing import NamedTuple, Sequence, Tuple, Union

import numpy as np
from scipy import stats as _st

from tfsmooth import registry
from tfsmooth.checks import check_alpha, check_choice, check_count, check_sigma  # noqa: F401  (re-exported)

ABSTAIN = -1
"""Label returned by the smoothed classifier when it declines to answer."""


def _binomial_arguments(k, n, alpha):
    """(alpha, k, n as float64 arrays) of a Clopper-Pearson bound, checked; raises as `clopper_pearson_lower`."""
    alpha = check_alpha(alpha)
    k_arr = np.asarray(k)
    n_arr = np.asarray(n)
    if np.any(n_arr < 1):
        raise ValueError(f"n must be >= 1, got {n!r}")
    if np.any(k_arr < 0) or np.any(k_arr > n_arr):
        raise ValueError(f"k must be in [0, n], got k={k!r}, n={n!r}")
    return alpha, k_arr.astype(np.float64), n_arr.astype(np.float64)


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
    alpha, k_f, n_f = _binomial_arguments(k, n, alpha)
    with np.errstate(invalid="ignore"):
        bound = _st.beta.ppf(alpha, np.maximum(k_f, 1.0), n_f - k_f + 1.0)
    bound = np.where(k_f == 0, 0.0, bound)
    return float(bound) if bound.ndim == 0 else bound


def clopper_pearson_upper(k, n, alpha):
    """One-sided (1 - alpha) Clopper-Pearson upper confidence bound on a binomial proportion.

    With probability at least 1 - alpha over the n draws, the returned value is >= the true success
    probability. It equals `Beta.isf(alpha; k + 1, n - k)` (the upper alpha-quantile, computed as such
    rather than as 1 - a lower bound, so small bounds keep their relative precision) and is 1 when
    k = n; for k = 0 it is 1 - alpha ** (1 / n). It is non-decreasing in k, which is what lets T-CERTIFY
    bound the runner-up chosen on the same draws (`decide_certificate`).

    Args, Returns, Raises: as `clopper_pearson_lower`.
    """
    alpha, k_f, n_f = _binomial_arguments(k, n, alpha)
    with np.errstate(invalid="ignore"):
        bound = _st.beta.isf(alpha, k_f + 1.0, np.maximum(n_f - k_f, 1.0))
    bound = np.where(k_f == n_f, 1.0, bound)
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


def t_certify_radius(sigma: float, p_a_lower, p_b_upper):
    """Certified l2 radius sigma / 2 * (Phi^{-1}(p_a_lower) - Phi^{-1}(p_b_upper)).

    Theorem 1 of Cohen et al. (2019) in its general form: if P(f(x + delta) = c_A) >= p_a_lower >=
    p_b_upper >= max_{c != c_A} P(f(x + delta) = c), then g(x + e) = c_A for every ||e||_2 below this
    radius. With p_b_upper = 1 - p_a_lower it is `radius(sigma, p_a_lower)`. T-CERTIFY (Feng et al. 2020,
    METHODS.md §4) uses it with the runner-up bounded separately.

    Args:
        sigma: noise level, l2 on the [0, 1] pixel scale.
        p_a_lower, p_b_upper: floats (or float arrays of one shape) with 0 < p_b_upper <= p_a_lower < 1.

    Returns:
        float (or float64 array): the radius in sigma's units, >= 0 (0 where the two bounds are equal).

    Raises:
        ValueError: if sigma is not a finite number > 0, or the bounds are not numbers with
            0 < p_b_upper <= p_a_lower < 1.
    """
    sigma = check_sigma(sigma)
    p_a = np.asarray(p_a_lower)
    p_b = np.asarray(p_b_upper)
    if p_a.dtype.kind not in "iuf" or p_b.dtype.kind not in "iuf":
        raise ValueError(f"p_a_lower and p_b_upper must be numbers, got {p_a_lower!r} and {p_b_upper!r}")
    if not np.all((p_b > 0.0) & (p_b <= p_a) & (p_a < 1.0)):  # False for NaN
        raise ValueError(f"the bounds must satisfy 0 < p_b_upper <= p_a_lower < 1 (else T-CERTIFY abstains), got "
                         f"p_a_lower={p_a_lower!r}, p_b_upper={p_b_upper!r}")
    return 0.5 * sigma * (_st.norm.ppf(p_a) - _st.norm.ppf(p_b))


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


def min_n_to_t_certify(alpha: float, alpha_split: Union[float, str] = 0.5) -> int:
    """Smallest n for which T-CERTIFY (`decide_certificate`) can return a label at this alpha and split.

    The most decisive outcome is all n estimation draws on c_A: p_a_lower = alpha_A ** (1 / n) and
    p_b_upper = min(1 - alpha_B ** (1 / n), 1 - p_a_lower) (the cap), and an answer needs p_a_lower > p_b_upper,
    i.e. p_a_lower > 1/2 or p_a_lower > 1 - alpha_B ** (1 / n), whichever comes first. "auto" may choose the
    split 1.0 (CERTIFY), so its minimum is CERTIFY's.
    """
    alpha = check_alpha(alpha)
    alpha_split = check_alpha_split(alpha_split)
    if alpha_split == registry.ALPHA_SPLIT_AUTO or alpha_split >= 1.0:
        return min_n_to_certify(alpha)
    alpha_a, alpha_b = alpha * alpha_split, alpha * (1.0 - alpha_split)
    n = 1
    while not alpha_a ** (1.0 / n) > min(1.0 - alpha_b ** (1.0 / n), 1.0 - alpha_a ** (1.0 / n)):
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
    selection_counts, estimation_counts = _checked_pair(selection_counts, estimation_counts)
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


# --------------------------------------------------------------------------------------- T-CERTIFY
ALPHA_SPLIT_GRID = (0.1, 0.2, 0.3, 0.4, 0.5, 0.6, 0.7, 0.8, 0.9, 0.95, 0.99, 1.0)
"""Splits alpha_A / alpha that `choose_alpha_split` considers; 1.0 is CERTIFY at the full alpha."""


class Decision(NamedTuple):
    """A certification decision from the counts of the two sets of draws (`decide_certificate`).

    Attributes:
        label: the certified class c_A, or ABSTAIN (-1).
        radius: the certified l2 radius ([0, 1] pixel scale), 0.0 when abstaining.
        p_a_lower: lower confidence bound on p_A = P(f(x + delta) = c_A), at level alpha_a.
        p_b_upper: upper confidence bound on max_{c != c_A} P(f(x + delta) = c): for "cohen" 1 - p_a_lower;
            for "t-certify" the runner-up's Clopper-Pearson bound at level alpha - alpha_a, capped at
            1 - p_a_lower.
        runner_up: "t-certify": the estimation argmax over the classes other than c_A, whose count gave p_b_upper
            before the cap; -1 for "cohen".
        alpha_a: the failure probability spent on p_a_lower (alpha for "cohen", alpha * split for "t-certify").
    """

    label: int
    radius: float
    p_a_lower: float
    p_b_upper: float
    runner_up: int
    alpha_a: float


def check_alpha_split(alpha_split) -> Union[float, str]:
    """Validates T-CERTIFY's split: a number in (0, 1] (the fraction of alpha spent on p_a_lower), or "auto".

    Raises:
        ValueError: naming `alpha_split` and the expected values.
    """
    if alpha_split == registry.ALPHA_SPLIT_AUTO:
        return alpha_split
    if isinstance(alpha_split, (bool, str)) or not isinstance(alpha_split, (int, float, np.floating, np.integer)) \
            or not 0.0 < float(alpha_split) <= 1.0:
        raise ValueError(f"alpha_split must be a number in (0, 1] (the fraction of alpha spent on p_a_lower; 1 is "
                         f"CERTIFY) or {registry.ALPHA_SPLIT_AUTO!r}, got {alpha_split!r}")
    return float(alpha_split)


def choose_alpha_split(selection_counts, n: int, alpha: float, grid: Sequence[float] = ALPHA_SPLIT_GRID) -> float:
    """T-CERTIFY's split of alpha, chosen on the n0 selection draws only (so the guarantee keeps level alpha).

    Feng et al. (2020) maximize the radius over a grid of splits on the estimation draws; that is not a
    level-alpha procedure: each split's failure event (p_A < p_a_lower or p_B > p_b_upper) grows with its
    alpha_A and alpha_B, so the union over the grid is only bounded by max alpha_A + max alpha_B, nearly 2 alpha
    (METHODS.md §4). Here the split is a function of the selection counts, which are independent of the
    estimation draws: given the split, the failure probability is <= alpha_A + alpha_B = alpha, hence also
    unconditionally. This is this library's choice, not the paper's (whose full text is not at hand).

    The plug-in estimates p_A ~ k_A / n0 and p_B ~ max_{c != c_A} k_c / n0 of the selection draws predict the
    estimation counts (floor(p_A n), ceil(p_B n)); the split with the largest predicted margin
    Phi^{-1}(p_a_lower) - Phi^{-1}(p_b_upper) wins (the first one on ties). 1.0 in the grid is CERTIFY at the full
    alpha, so "auto" predicts no worse than CERTIFY.

    Args:
        selection_counts: int [num_classes >= 2], the n0 selection draws' counts.
        n: the number of estimation draws, >= 1.
        alpha: the total failure probability, in (0, 1).
        grid: candidate splits, each in (0, 1].

    Returns:
        float: the chosen split alpha_A / alpha.

    Raises:
        ValueError: bad counts (fewer than 2 classes), n, alpha or grid.
    """
    alpha = check_alpha(alpha)
    n = check_count(n, "n")
    counts = check_counts(selection_counts, "selection_counts")
    if counts.size < 2:
        raise ValueError(f"selection_counts must have >= 2 classes for T-CERTIFY, got {counts!r}")
    splits = np.array([check_alpha_split(float(s)) for s in grid], dtype=np.float64)
    if splits.size == 0:
        raise ValueError("grid must hold at least one split")
    c_a = int(np.argmax(counts))
    n0 = int(counts.sum())
    k_a = math.floor(counts[c_a] / n0 * n)
    k_b = math.ceil(float(np.max(np.delete(counts, c_a))) / n0 * n)
    p_a = np.array([clopper_pearson_lower(k_a, n, alpha * s) for s in splits])
    cap = 1.0 - p_a
    p_b = np.array([min(clopper_pearson_upper(k_b, n, alpha * (1.0 - s)), c) if s < 1.0 else c
                    for s, c in zip(splits, cap)])
    with np.errstate(divide="ignore"):
        margin = _st.norm.ppf(p_a) - _st.norm.ppf(p_b)
    return float(splits[int(np.argmax(margin))])


def decide_certificate(selection_counts: np.ndarray, estimation_counts: np.ndarray, sigma: float, alpha: float,
                       method: str = "cohen", alpha_split: Union[float, str] = 0.5) -> Decision:
    """CERTIFY (Cohen et al. 2019) or T-CERTIFY (Feng et al. 2020) given the counts of two independent sets of draws.

    "cohen": `certify_decision`, with p_b_upper = 1 - p_a_lower.

    "t-certify" (METHODS.md §4; the paper's own text is not at hand, the conditions below are what keep it sound):
      1. c_A = argmax of the selection counts (ties: lowest index), as in CERTIFY;
      2. on the n estimation draws, p_a_lower = Clopper-Pearson lower bound of c_A's count at alpha_A =
         alpha * split; the runner-up c_B = argmax of the estimation counts over c != c_A (ties: lowest index);
         p_b_upper = min(Clopper-Pearson upper bound of c_B's count at alpha_B = alpha - alpha_A, 1 - p_a_lower);
      3. answer c_A with radius sigma / 2 * (Phi^{-1}(p_a_lower) - Phi^{-1}(p_b_upper)) when p_a_lower > p_b_upper
         (possible below 1/2), else ABSTAIN.

    Why choosing c_B on the estimation draws needs no correction over classes: let c* be the true runner-up
    (p_{c*} = p_B = max_{c != c_A} p_c) and U(k) the upper bound of a count k, non-decreasing in k. The count of
    c_B is >= the count of c*, so U(count c_B) >= U(count c*), and P(p_B > U(count c*)) <= alpha_B by the
    Clopper-Pearson guarantee for the single fixed class c*. Hence P(p_B > p_b_upper) <= alpha_B. The cap keeps
    the bound valid on the event p_A >= p_a_lower (then p_B <= 1 - p_A <= 1 - p_a_lower), and makes the radius never
    smaller than CERTIFY's at level alpha_A. By the union bound, with probability >= 1 - alpha both bounds hold and
    Theorem 1 certifies the radius. With two classes, c_B is the other class and T-CERTIFY is CERTIFY at alpha_A
    when alpha_B <= alpha_A (at the default split, CERTIFY at alpha / 2).

    Args:
        selection_counts: int [num_classes], counts of the n0 selection draws.
        estimation_counts: int [num_classes], counts of the n estimation draws.
        sigma: noise level (l2, [0, 1] pixel scale).
        alpha: total failure probability in (0, 1).
        method: "cohen" or "t-certify" (`tfsmooth.registry.CERTIFY_METHODS`).
        alpha_split: "t-certify" only: the fraction alpha_A / alpha in (0, 1] (1 is CERTIFY), or "auto" to choose
            it on the selection draws (`choose_alpha_split`). Default 0.5.

    Returns:
        A `Decision`.

    Raises:
        ValueError: as `certify_decision`; an unknown method, a split outside (0, 1], or "t-certify" with
            fewer than 2 classes.
    """
    check_choice(method, "method", registry.CERTIFY_METHODS)
    alpha_split = check_alpha_split(alpha_split)
    alpha = check_alpha(alpha)
    if method == "cohen":
        label, rad, p_a_lower = certify_decision(selection_counts, estimation_counts, sigma, alpha)
        return Decision(label, rad, p_a_lower, 1.0 - p_a_lower, -1, alpha)
    sigma = check_sigma(sigma)
    selection_counts, estimation_counts = _checked_pair(selection_counts, estimation_counts)
    if estimation_counts.size < 2:
        raise ValueError(f"t-certify needs >= 2 classes (a runner-up), got counts {estimation_counts!r}")
    n = int(estimation_counts.sum())
    if alpha_split == registry.ALPHA_SPLIT_AUTO:
        alpha_split = choose_alpha_split(selection_counts, n, alpha)
    if alpha_split >= 1.0:  # all of alpha on p_A: CERTIFY
        label, rad, p_a_lower = certify_decision(selection_counts, estimation_counts, sigma, alpha)
        return Decision(label, rad, p_a_lower, 1.0 - p_a_lower, -1, alpha)
    alpha_a = alpha * alpha_split
    c_a = int(np.argmax(selection_counts))
    p_a_lower = float(clopper_pearson_lower(int(estimation_counts[c_a]), n, alpha_a))
    others = estimation_counts.copy()
    others[c_a] = -1
    runner_up = int(np.argmax(others))
    p_b_upper = float(clopper_pearson_upper(int(others[runner_up]), n, alpha - alpha_a))
    p_b_upper = min(p_b_upper, 1.0 - p_a_lower)
    if not p_a_lower > p_b_upper:
        return Decision(ABSTAIN, 0.0, p_a_lower, p_b_upper, runner_up, alpha_a)
    return Decision(c_a, float(t_certify_radius(sigma, p_a_lower, p_b_upper)), p_a_lower, p_b_upper, runner_up,
                    alpha_a)


def _checked_pair(selection_counts, estimation_counts):
    selection_counts = check_counts(selection_counts, "selection_counts")
    estimation_counts = check_counts(estimation_counts, "estimation_counts")
    if selection_counts.shape != estimation_counts.shape:
        raise ValueError(f"selection_counts and estimation_counts must have the same length (num_classes), got "
                         f"{selection_counts.size} and {estimation_counts.size}")
    return selection_counts, estimation_counts
