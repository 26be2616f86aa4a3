"""Sequential certification: decide "is R >= r_k?" for a list of target radii with as few draws as each image needs.

Fixed-n CERTIFY (Cohen et al. 2019, Sec. 3.2) spends n draws on every image. For a certified-accuracy table only
the targets r_1 < ... < r_m matter: R >= r_k <=> p_A >= q_k = Phi(r_k / sigma) (CERTIFY's radius
sigma * Phi^-1(p_a_lower), Theorem 1 with p_B = 1 - p_A). An image whose top class wins almost every draw is decided
at the largest target after a few thousand draws; a borderline one needs many. Here each image draws in *looks*
at n_1 < n_2 < ... < n_L = n_max (doubling from `n_first`, `look_schedule`) and stops as soon as its answer is
decided.

The bound (this library's derivation; cf. the confidence sequences of Voracek & Hein, NeurIPS 2024, and the
adaptive sampling of Horvath et al., ICLR 2022, METHODS.md §6): at look l the one-sided Clopper-Pearson lower bound
L_l = CP_lower(k_l, n_l, alpha / L) of the top class's count k_l among the first n_l estimation draws. Each L_l
misses p_A with probability <= alpha / L, so by the union bound

    P(p_A < L_l for some l) <= L * alpha / L = alpha,

whatever the looks that actually happen: the event "all L bounds hold" does not depend on when the test stops,
so the reported answer is sound *at whatever time it stops*, by any stopping rule -- including the futility stop
below. The radius reported is r_k for the largest k with max_{l <= tau} L_l >= q_k (tau the last look), 0 if none;
the label is c_A (chosen on n0 separate selection draws, as CERTIFY) if some L_l > 1/2, else ABSTAIN. The price
against fixed-n CERTIFY at n_max is alpha / L instead of alpha in the last bound (L = 11 looks from 100 to 100,000:
Phi^-1 of 1 - 9.1e-5 instead of 1 - 1e-3, a few percent of the radius at the largest targets).

Reusing a fixed-n bound at level alpha at every look is not valid: its error grows with the number of looks (the
"optional stopping" of `tests/test_sequential.py` shows it).

Stopping (any rule keeps the guarantee; this one saves draws): after look l, stop if the largest target is decided,
or if CP_upper(k_l, n_l, alpha / L) < q_{k+1} for the next undecided target (it cannot be reached with the
confidence the test keeps), or if q_{k+1} is out of reach *within the budget* -- even if every remaining draw went
to c_A, the last look's bound CP_lower(k_l + n_max - n_l, n_max, alpha / L) (the best any later look can get:
CP_lower(k + m, n + m) grows with m) stays below it -- or at n_max. The budget rule matters for the largest targets:
at sigma = 0.25, n_max = 100,000, alpha = 0.001 (L = 11) a unanimous vote's bound reaches radius 0.935, so a target
r = 1.0 is never decided, and without the rule every image that decided 0.75 would draw on to n_max for it.

T-CERTIFY analogue (`method="t-certify"`; Feng et al. 2020's radius sigma / 2 * (Phi^-1(p_A) - Phi^-1(p_B)),
`tfsmooth.stats.decide_certificate`): alpha is split into alpha_A = split * alpha and alpha_B = alpha - alpha_A, and
each look spends alpha_A / L on L_l = CP_lower(k_l, n_l, alpha_A / L) and alpha_B / L on
U_l = CP_upper(b_l, n_l, alpha_B / L), b_l the count of the runner-up among the first n_l draws (the largest count
of a class other than c_A at that look; it may change from look to look). With c* the true runner-up, b_l >= the
count of c*, and U is non-decreasing in the count, so U_l >= U(count of c*) at every look; the union bound over the
L looks of both bounds gives

    P(p_A < L_l for some l, or p_B > U_l for some l) <= alpha_A + alpha_B = alpha.

On the complement, p_A >= max_l L_l and p_B <= min(min_l U_l, 1 - max_l L_l) = p_b_upper (the cap as in T-CERTIFY),
so Theorem 1 of Cohen et al. certifies sigma / 2 * (Phi^-1(max_l L_l) - Phi^-1(p_b_upper)), which never decreases from
look to look: r_k is decided once it is <= that radius, and the answer is sound at whatever look the test stops.
Futility (optional, with the number of classes K): p_A <= CP_upper(k_l, n_l, alpha_A / L) and p_B >= max((1 - p_A) /
(K - 1), CP_lower(b_l, n_l, alpha_B / L)) bound the radius any further look could reach; the test stops when that
bound is below the next target (a stopping rule only: it never changes what a decided radius certifies). The budget
rule, always on: the best radius any later look could report -- every remaining draw to c_A (lower bound
CP_lower(k_l + n_max - n_l, n_max, alpha_A / L)) and the runner-up's count not growing (upper bound
CP_upper(b_l, n_max, alpha_B / L): a later runner-up count is >= b_l and U falls with n) -- below the next target
stops the image.
"""

from __future__ import annotations

import dataclasses
from typing import Optional, Sequence, Tuple

import numpy as np
from scipy import stats as scipy_stats

from tfsmooth import checks, stats


def check_radii(radii) -> Tuple[float, ...]:
    """Target radii: a non-empty, strictly increasing sequence of finite numbers > 0 (l2, [0, 1] pixels)."""
    if isinstance(radii, (str, bytes)) or not hasattr(radii, "__iter__"):
        raise ValueError(f"radii must be a non-empty increasing sequence of l2 radii > 0, got {radii!r}")
    values = [checks.check_real(r, "radii entry", 0.0, inclusive=False) for r in radii]
    if not values:
        raise ValueError("radii must be a non-empty increasing sequence of l2 radii > 0, got an empty one")
    if any(b <= a for a, b in zip(values, values[1:])):
        raise ValueError(f"radii must be strictly increasing, got {values}")
    return tuple(values)


def look_schedule(n_first: int, n_max: int, noise_block: int = 100) -> Tuple[int, ...]:
    """The looks n_1 < ... < n_L: n_first * 2^l while below n_max, then n_max; multiples of `noise_block` (so each
    look's draws are whole blocks of the estimation stream, the prefix of a fixed-n run's) except possibly n_max.

    Raises:
        ValueError: n_first or n_max not integers >= 1, n_first > n_max, or n_first not a multiple of noise_block.
    """
    n_first = checks.check_count(n_first, "n_first")
    n_max = checks.check_count(n_max, "n_max")
    if n_first > n_max:
        raise ValueError(f"n_first must be <= n_max, got n_first={n_first}, n_max={n_max}")
    if n_first % noise_block:
        raise ValueError(f"n_first must be a multiple of the noise block ({noise_block} draws), got {n_first}")
    looks, n = [], n_first
    while n < n_max:
        looks.append(n)
        n *= 2
    return tuple(looks + [n_max])


METHODS = ("cohen", "t-certify")
"""The radius a sequential test decides: CERTIFY's (p_B = 1 - p_A) or T-CERTIFY's (p_B bounded on its own)."""


def _check_method(method, alpha_split):
    checks.check_choice(method, "method", METHODS)
    if method == "cohen":
        return 1.0
    if isinstance(alpha_split, str):
        raise ValueError(f"sequential T-CERTIFY takes a fixed alpha_split in (0, 1), got {alpha_split!r} ('auto' "
                         "chooses it on fixed-n counts)")
    return checks.check_real(alpha_split, "alpha_split", 0.0, inclusive=False, maximum=1.0)  # 1 is "cohen"


def _t_radius(sigma: float, p_a_lower: float, p_b_upper: float) -> float:
    """sigma / 2 * (Phi^-1(p_a_lower) - Phi^-1(p_b_upper)) when p_a_lower > p_b_upper, else -inf."""
    if p_a_lower <= p_b_upper:
        return -np.inf
    return 0.5 * sigma * float(scipy_stats.norm.ppf(p_a_lower) - scipy_stats.norm.ppf(p_b_upper))


def _unanimous_decides(n_max: int, looks: int, alpha: float, sigma: float, split: float, r_1: float) -> bool:
    """Whether a unanimous vote of n_max draws decides r_1 at the last of `looks` looks, by the decision rule's own
    comparison (CERTIFY: p_lower >= Phi(r_1 / sigma); T-CERTIFY: its radius >= r_1)."""
    lower = stats.clopper_pearson_lower(n_max, n_max, alpha * split / looks)
    if split >= 1.0:
        return bool(lower >= scipy_stats.norm.cdf(r_1 / sigma))
    upper = min(stats.clopper_pearson_upper(0, n_max, alpha * (1.0 - split) / looks), 1.0 - lower)
    return _t_radius(sigma, lower, upper) >= r_1


def reachable_radius(alpha: float, sigma: float, n_first: int, n_max: int, noise_block: int = 100,
                     method: str = "cohen", alpha_split: float = 0.5) -> float:
    """The largest radius any image can be certified at: a unanimous vote of n_max draws at the last look's level
    (CERTIFY: sigma * Phi^-1(CP_lower(n_max, n_max, alpha / L)); T-CERTIFY: its radius with no runner-up draw).
    Targets above it are never decided (`SequentialTest` stops for them at once: the budget rule). l2, [0, 1]
    pixels."""
    sigma = checks.check_sigma(sigma)
    split = _check_method(method, alpha_split)
    looks = len(look_schedule(n_first, n_max, noise_block))
    lower = stats.clopper_pearson_lower(n_max, n_max, checks.check_alpha(alpha) * split / looks)
    if split >= 1.0:
        return float(sigma * scipy_stats.norm.ppf(lower))
    upper = min(stats.clopper_pearson_upper(0, n_max, alpha * (1.0 - split) / looks), 1.0 - lower)
    return float(_t_radius(sigma, lower, upper))


def min_n_max(alpha: float, radii, sigma: float, n_first: int = 100, noise_block: int = 100,
              method: str = "cohen", alpha_split: float = 0.5) -> int:
    """The smallest n_max with which a unanimous vote decides the first target r_1 (smaller: nothing can ever be
    certified beyond radius 0 -- refused by `SequentialTest`)."""
    r_1 = check_radii(radii)[0]
    sigma = checks.check_sigma(sigma)
    split = _check_method(method, alpha_split)
    n_max = n_first
    while True:
        looks = look_schedule(n_first, n_max, noise_block)
        if _unanimous_decides(n_max, len(looks), alpha, sigma, split, r_1):
            return n_max
        n_max *= 2


@dataclasses.dataclass
class SequentialTest:
    """The decision of one image, updated look by look (module docstring).

    Args:
        sigma: noise level (l2, [0, 1] pixels), > 0.
        radii: target radii r_1 < ... < r_m, > 0.
        alpha: total failure probability in (0, 1), spent as alpha / L on each of the L looks ("t-certify":
            alpha_split * alpha / L on p_A and the rest / L on the runner-up).
        n_first, n_max: the first look and the budget (`look_schedule`).
        noise_block: draws per block; looks are multiples of it.
        method: "cohen" (CERTIFY's radius) or "t-certify" (the runner-up bounded too; module docstring).
        alpha_split: "t-certify": the fraction of alpha spent on p_A, in (0, 1) (default 0.5).
        num_classes: "t-certify": K, for the futility stop (None: stop only when decided or at n_max).

    Raises:
        ValueError: bad arguments, or an n_max too small to ever decide r_1 (`min_n_max`).
    """

    sigma: float
    radii: Sequence[float]
    alpha: float
    n_first: int
    n_max: int
    noise_block: int = 100
    method: str = "cohen"
    alpha_split: float = 0.5
    num_classes: Optional[int] = None

    def __post_init__(self):
        self.sigma = checks.check_sigma(self.sigma)
        self.radii = check_radii(self.radii)
        self.alpha = checks.check_alpha(self.alpha)
        self.split = _check_method(self.method, self.alpha_split)
        if self.num_classes is not None:
            self.num_classes = checks.check_count(self.num_classes, "num_classes", minimum=2)
        self.looks = look_schedule(self.n_first, self.n_max, self.noise_block)
        self.alpha_look = self.alpha * self.split / len(self.looks)  # spent on p_A at each look
        self.alpha_look_b = self.alpha * (1.0 - self.split) / len(self.looks)  # on p_B ("t-certify")
        self.thresholds = scipy_stats.norm.cdf(np.asarray(self.radii) / self.sigma)  # q_k
        if not _unanimous_decides(self.n_max, len(self.looks), self.alpha, self.sigma, self.split, self.radii[0]):
            minimum = min_n_max(self.alpha, self.radii, self.sigma, self.n_first, self.noise_block, self.method,
                                self.alpha_split)
            raise ValueError(f"n_max={self.n_max} is too small to ever certify radius {self.radii[0]} at alpha="
                             f"{self.alpha} over {len(self.looks)} looks: use n_max >= {minimum}")
        self.look = 0  # looks done
        self.best_lower = 0.0  # max over looks of L_l
        self.best_upper_b = 1.0  # min over looks of U_l ("t-certify")
        self.decided = 0  # number of targets decided (r_1 .. r_decided certified)
        self.stopped = False

    @property
    def next_n(self) -> int:
        """Draws the next look needs in total (the current look's n)."""
        return self.looks[self.look]

    def update(self, count_a: int, count_b: Optional[int] = None) -> bool:
        """Records look `self.look` -- count_a of the top class c_A among its `next_n` draws and, for "t-certify",
        count_b, the largest count of another class among them -- and returns whether to stop."""
        if self.stopped:
            raise ValueError("the test has stopped: no more looks")
        n = self.looks[self.look]
        count_a = int(count_a)
        if not 0 <= count_a <= n:
            raise ValueError(f"count_a must be in [0, {n}], got {count_a}")
        lower = stats.clopper_pearson_lower(count_a, n, self.alpha_look)
        self.best_lower = max(self.best_lower, lower)
        if self.method == "cohen":
            self.decided = int(np.sum(self.thresholds <= self.best_lower))
        else:
            if count_b is None or not 0 <= int(count_b) <= n - count_a:
                raise ValueError(f"t-certify needs count_b, the runner-up's count, in [0, {n - count_a}], got "
                                 f"{count_b!r}")
            count_b = int(count_b)
            self.best_upper_b = min(self.best_upper_b, stats.clopper_pearson_upper(count_b, n, self.alpha_look_b))
            self.decided = int(np.sum(np.asarray(self.radii) <= self.t_radius))
        self.look += 1
        self.stopped = self.decided == len(self.radii) or self._futile(count_a, count_b, n) or self.look == len(self.looks)
        return self.stopped

    def _futile(self, count_a: int, count_b: Optional[int], n: int) -> bool:
        """Whether the next undecided target is out of reach of any further look (module docstring)."""
        if self.decided == len(self.radii):
            return False
        return self._beyond_budget(count_a, count_b, n) or self._beyond_confidence(count_a, count_b, n)

    def _beyond_budget(self, count_a: int, count_b: Optional[int], n: int) -> bool:
        """Even if every draw up to n_max went to c_A, no later look could decide the next target."""
        if n >= self.n_max:
            return False  # the last look: the test stops anyway
        best_lower = max(self.best_lower,
                         stats.clopper_pearson_lower(count_a + self.n_max - n, self.n_max, self.alpha_look))
        if self.method == "cohen":
            return best_lower < self.thresholds[self.decided]
        best_upper_b = min(self.best_upper_b, stats.clopper_pearson_upper(count_b, self.n_max, self.alpha_look_b))
        return _t_radius(self.sigma, best_lower, min(best_upper_b, 1.0 - best_lower)) < self.radii[self.decided]

    def _beyond_confidence(self, count_a: int, count_b: Optional[int], n: int) -> bool:
        """The next target lies above what the upper confidence bound of p_A (and, for "t-certify" with K, the lower
        bound of the runner-up) allows."""
        upper_a = stats.clopper_pearson_upper(count_a, n, self.alpha_look)
        if self.method == "cohen":
            return upper_a < self.thresholds[self.decided]
        if self.num_classes is None or upper_a >= 1.0:
            return False
        least_b = max((1.0 - upper_a) / (self.num_classes - 1),
                      stats.clopper_pearson_lower(count_b, n, self.alpha_look_b))
        return _t_radius(self.sigma, upper_a, least_b) < self.radii[self.decided]

    @property
    def p_b_upper(self) -> float:
        """The bound on the runner-up's probability the radius uses: 1 - max_l L_l ("cohen"), or
        min(min_l U_l, 1 - max_l L_l) ("t-certify")."""
        return min(self.best_upper_b, 1.0 - self.best_lower)

    @property
    def t_radius(self) -> float:
        """sigma / 2 * (Phi^-1(max_l L_l) - Phi^-1(p_b_upper)), -inf while p_a_lower <= p_b_upper."""
        return _t_radius(self.sigma, self.best_lower, self.p_b_upper)

    @property
    def radius(self) -> float:
        """The largest decided target radius, 0.0 if none."""
        return float(self.radii[self.decided - 1]) if self.decided else 0.0

    @property
    def certifies(self) -> bool:
        """Whether g predicts c_A at x (radius >= 0): some look's lower bound exceeds 1/2 ("cohen"), or
        max_l L_l > p_b_upper ("t-certify")."""
        return self.best_lower > self.p_b_upper

    @property
    def n_used(self) -> int:
        """Estimation draws used: the last look's n (0 before the first look)."""
        return self.looks[self.look - 1] if self.look else 0



def simulate(p_a: float, sigma: float, radii, alpha: float, trials: int, n_first: int = 100, n_max: int = 100_000,
             seed: int = 0, alpha_per_look=None, probs=None, method: str = "cohen", alpha_split: float = 0.5):
    """The test on simulated counts: a base classifier whose top class has probability `p_a` (binomial draws), or,
    with `probs` (class probabilities, class 0 being c_A; then `p_a` is ignored), multinomial draws whose runner-up
    count feeds "t-certify".

    For studying the error rate and the draws of the procedure without a model (`tests/test_sequential.py`,
    `benchmarks/sequential/simulate_error.py`). `alpha_per_look` overrides alpha / L (e.g. alpha itself: the
    invalid "optional stopping" variant).

    Returns:
        (decided int64 [trials], n_used int64 [trials]): the number of targets decided and the draws used.
    """
    rng = np.random.default_rng(checks.check_seed(seed))
    looks = look_schedule(n_first, n_max)
    trials = checks.check_count(trials, "trials")
    steps = np.diff((0,) + looks)
    if probs is None:
        counts = np.cumsum(rng.binomial(steps, p_a, size=(trials, len(looks))), axis=1)[..., None]
        num_classes = 2
    else:
        probs = np.asarray(probs, np.float64)
        counts = np.cumsum(np.stack([rng.multinomial(step, probs, size=trials) for step in steps], axis=1), axis=1)
        num_classes = len(probs)
    decided, used = [], []
    for row in counts:
        test = SequentialTest(sigma, radii, alpha, n_first, n_max, method=method, alpha_split=alpha_split,
                              num_classes=num_classes)
        if alpha_per_look is not None:  # both bounds at their fixed-n level at every look
            test.alpha_look = checks.check_alpha(alpha_per_look) * test.split
            test.alpha_look_b = alpha_per_look * (1.0 - test.split)
        for look in row:
            count_b = None if probs is None else int(look[1:].max())
            if test.update(int(look[0]), count_b):
                break
        decided.append(test.decided)
        used.append(test.n_used)
    return np.array(decided, np.int64), np.array(used, np.int64)
