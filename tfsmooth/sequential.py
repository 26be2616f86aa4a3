"""Sequential certification: decide "is R >= r_k?" for a list of target radii with as few draws as each image needs.

Fixed-n CERTIFY (Cohen et al. 2019, Sec. 3.2) spends n draws on every image. For a certified-accuracy table only
the targets r_1 < ... < r_m matter: R >= r_k <=> p_A >= q_k = Phi(r_k / sigma) (CERTIFY's radius
sigma * Phi^-1(p_a_lower), Theorem 1 with p_B = 1 - p_A). An image whose top class wins almost every draw is decided
at the largest target after a few thousand draws; a borderline one needs many. Here each image draws in *looks*
at n_1 < n_2 < ... < n_L = n_max (growing by 1.5 or 2 from `n_first`: the designs below) and stops as soon as
its answer is decided.

The bound (this library's derivation; cf. the confidence sequences of Voracek & Hein, NeurIPS 2024, and the
adaptive sampling of Horvath et al., ICLR 2022, METHODS.md §6): at look l the one-sided Clopper-Pearson lower bound
L_l = CP_lower(k_l, n_l, alpha_l) of the top class's count k_l among the first n_l estimation draws, with levels
alpha_1 + ... + alpha_L = alpha fixed before any draw (`design_schedule`). Each L_l misses p_A with probability
<= alpha_l, so by the union bound

    P(p_A < L_l for some l) <= alpha_1 + ... + alpha_L = alpha,

whatever the looks that actually happen: the event "all L bounds hold" does not depend on when the test stops,
so the reported answer is sound *at whatever time it stops*, by any stopping rule -- including the futility stops
below. The radius reported is r_k for the largest k with max_{l <= tau} L_l >= q_k (tau the last look), 0 if none;
the label is c_A (chosen on n0 separate selection draws, as CERTIFY) if some L_l > 1/2, else ABSTAIN. The price
against fixed-n CERTIFY at n_max is alpha_L instead of alpha in the last bound.

Reusing a fixed-n bound at level alpha at every look is not valid: its error grows with the number of looks (the
"optional stopping" of `tests/test_sequential.py` shows it).

Designs (`DESIGNS`; both sound by the argument above, they differ only in draws and power):
  1 (session 11's): looks doubling from n_first (11 from 100 to 100,000), alpha_l = alpha / L, and stop after look l
    if the largest target is decided, if CP_upper(k_l, n_l, alpha_l) < q_{k+1} for the next undecided target, if the
    budget rule below fires, or at n_max. Its last bound is at alpha / 11 (Phi^-1 of 1 - 9.1e-5 instead of 1 - 1e-3).
  2 (the default): looks growing by 1.5 (17 from 100 to 100,000: 100, 200, 300, 500, 800, ...), alpha_l = alpha n_l /
    sum_j n_j -- the late looks, where the borderline images are decided, get most of alpha (the last 0.32 alpha,
    the first 3.2e-4 alpha, still enough for a unanimous vote of 100 draws to decide r = 0.25 at sigma = 0.25) --
    and the futility stop is *conditional power* at level beta = `FUTILITY_LEVEL` (0.05): with
    p_A^+ = CP_upper(k_l, n_l, beta), stop if even a share p_A^+ of every remaining draw (count
    k_l + p_A^+ (n_max - n_l) at n_max) would leave the last look's bound below q_{k+1}. Until some bound exceeds
    1/2 the next target is g's prediction itself (radius 0, threshold 1/2; the r = 0 column of a table): an image
    whose p_A is, say, 0.6 draws on until it is predicted, not only until r_1 is seen to be out of reach. It gives up on an image whose
    p_A is unlikely to be high enough for the budget to decide it -- the images just above a threshold that drew to
    n_max in design 1 -- and costs power only on those (an image whose p_A lies above its beta-upper bound at a
    look: probability <= beta per look, ~0.2-0.3 over the 16 interim looks, but only images near a threshold are
    then stopped short of a radius they could have reached). Chosen by simulating binomial counts at the p_A of
    issue 11's fixed-n rows (`benchmarks/sequential/simulate_designs.py`; RESULTS.md "Issue 15", session 12).
The budget rule (both designs): stop if q_{k+1} is out of reach even if every remaining draw went to c_A -- the
last look's bound CP_lower(k_l + n_max - n_l, n_max, alpha_L) (the best any later look can get: CP_lower(k + m, n + m)
grows with m and alpha_l never falls with l) stays below it. It matters for the largest targets: at sigma = 0.25,
n_max = 100,000, alpha = 0.001 a unanimous vote reaches radius 0.934 (design 1) or 0.943 (design 2), so a target
r = 1.0 is never decided, and without the rule every image that decided 0.75 would draw on to n_max for it.

T-CERTIFY analogue (`method="t-certify"`; Feng et al. 2020's radius sigma / 2 * (Phi^-1(p_A) - Phi^-1(p_B)),
`tfsmooth.stats.decide_certificate`): alpha is split into alpha_A = split * alpha and alpha_B = alpha - alpha_A, and
each look spends split * alpha_l on L_l = CP_lower(k_l, n_l, split * alpha_l) and (1 - split) alpha_l on
U_l = CP_upper(b_l, n_l, (1 - split) alpha_l), b_l the count of the runner-up among the first n_l draws (the largest count
of a class other than c_A at that look; it may change from look to look). With c* the true runner-up, b_l >= the
count of c*, and U is non-decreasing in the count, so U_l >= U(count of c*) at every look; the union bound over the
L looks of both bounds gives (alpha_A = split * alpha, alpha_B = alpha - alpha_A)

    P(p_A < L_l for some l, or p_B > U_l for some l) <= alpha_A + alpha_B = alpha.

On the complement, p_A >= max_l L_l and p_B <= min(min_l U_l, 1 - max_l L_l) = p_b_upper (the cap as in T-CERTIFY),
so Theorem 1 of Cohen et al. certifies sigma / 2 * (Phi^-1(max_l L_l) - Phi^-1(p_b_upper)), which never decreases from
look to look: r_k is decided once it is <= that radius, and the answer is sound at whatever look the test stops.
Futility: design 1 (only with the number of classes K): p_A <= CP_upper(k_l, n_l, split * alpha_l) and p_B >=
max((1 - p_A) / (K - 1), CP_lower(b_l, n_l, (1 - split) alpha_l)) bound the radius any further look could reach;
the test stops when that bound is below the next target. Design 2: conditional power as for CERTIFY, with
p_A^+ = CP_upper(k_l, n_l, beta) and p_B^- = max((1 - p_A^+) / (K - 1) (with K), CP_lower(b_l, n_l, beta)) as the
shares of the remaining draws, the last look's radius compared with the next target. Stopping rules only: they never
change what a decided radius certifies. The budget rule, always on: the best radius any later look could report --
every remaining draw to c_A (lower bound CP_lower(k_l + n_max - n_l, n_max, split * alpha_L)) and the runner-up's
count not growing (upper bound CP_upper(b_l, n_max, (1 - split) alpha_L): a later runner-up count is >= b_l and U
falls with n) -- below the next target stops the image.
"""

from __future__ import annotations

import dataclasses
import math
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


def look_schedule(n_first: int, n_max: int, noise_block: int = 100, growth: float = 2.0) -> Tuple[int, ...]:
    """The looks n_1 < ... < n_L: n_1 = n_first, n_{l+1} = n_l * growth rounded up to whole noise blocks, while below
    n_max, then n_max; multiples of `noise_block` (so each look's draws are whole blocks of the estimation stream, the
    prefix of a fixed-n run's) except possibly n_max. growth 2 (design 1) doubles; 1.5 (design 2, the default) gives
    100, 200, 300, 500, 800, 1,200, ..., 71,000, 100,000 (17 looks).

    Raises:
        ValueError: n_first or n_max not integers >= 1, n_first > n_max, n_first not a multiple of noise_block, or
            growth not > 1.
    """
    n_first = checks.check_count(n_first, "n_first")
    n_max = checks.check_count(n_max, "n_max")
    growth = checks.check_real(growth, "growth", 1.0, inclusive=False)
    if n_first > n_max:
        raise ValueError(f"n_first must be <= n_max, got n_first={n_first}, n_max={n_max}")
    if n_first % noise_block:
        raise ValueError(f"n_first must be a multiple of the noise block ({noise_block} draws), got {n_first}")
    looks, n = [], n_first
    while n < n_max:
        looks.append(n)
        n = max(n + noise_block, int(math.ceil(n * growth / noise_block - 1e-9)) * noise_block)
    return tuple(looks + [n_max])


DESIGNS = (1, 2)
"""The stopping designs (module docstring, "Designs"): 1 = doubling looks, alpha spent evenly, futility at the looks'
own level; 2 (the default) = looks growing by 1.5, alpha spent in proportion to n_l, conditional-power futility at
level 0.05. Both are sound at any stopping time; they differ in draws and power."""
DEFAULT_DESIGN = 2
_GROWTH = {1: 2.0, 2: 1.5}
FUTILITY_LEVEL = 0.05  # design 2's beta


def check_design(design) -> int:
    """A design of `DESIGNS` (an int; ValueError naming `design` otherwise)."""
    if isinstance(design, bool) or design not in DESIGNS:
        raise ValueError(f"design must be one of {DESIGNS}, got {design!r}")
    return int(design)


def _weights(looks, design: int) -> np.ndarray:
    return np.ones(len(looks)) if design == 1 else np.asarray(looks, np.float64)


def design_schedule(n_first: int, n_max: int, noise_block: int = 100, design: int = DEFAULT_DESIGN):
    """(looks, spending): the look schedule of `design` and the fraction of alpha spent at each look (sums to 1):
    1/L each (design 1) or n_l / sum_j n_j (design 2). Fixed before any draw, which is all the union bound needs."""
    design = check_design(design)
    looks = look_schedule(n_first, n_max, noise_block, _GROWTH[design])
    return looks, _levels(1.0, 1.0, looks, design)[0]


def _levels(alpha: float, split: float, looks, design: int):
    """(alpha_l on p_A, alpha_l on p_B) of every look: alpha * split * w_l / sum w (design 1: exactly alpha * split /
    L, the levels of the files written before designs existed)."""
    weights = _weights(looks, design)
    return alpha * split * weights / weights.sum(), alpha * (1.0 - split) * weights / weights.sum()


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


def _last_levels(alpha: float, split: float, n_first: int, n_max: int, noise_block: int, design: int):
    """(alpha spent on p_A, on p_B) at the last look -- the largest any look has in both designs."""
    looks, _ = design_schedule(n_first, n_max, noise_block, design)
    level_a, level_b = _levels(alpha, split, looks, design)
    return level_a[-1], level_b[-1]


def _unanimous_radius(n_max: int, level_a: float, level_b: float, sigma: float, split: float) -> float:
    """The radius of a unanimous vote of n_max draws bounded at level_a (and, "t-certify", level_b on p_B)."""
    lower = stats.clopper_pearson_lower(n_max, n_max, level_a)
    if split >= 1.0:
        return float(sigma * scipy_stats.norm.ppf(lower))
    upper = min(stats.clopper_pearson_upper(0, n_max, level_b), 1.0 - lower)
    return float(_t_radius(sigma, lower, upper))


def _unanimous_decides(alpha: float, sigma: float, split: float, r_1: float, n_first: int, n_max: int,
                       noise_block: int, design: int) -> bool:
    """Whether a unanimous vote of n_max draws decides r_1 at the last look, by the decision rule's own comparison
    (CERTIFY: p_lower >= Phi(r_1 / sigma); T-CERTIFY: its radius >= r_1)."""
    level_a, level_b = _last_levels(alpha, split, n_first, n_max, noise_block, design)
    if split >= 1.0:
        return bool(stats.clopper_pearson_lower(n_max, n_max, level_a) >= scipy_stats.norm.cdf(r_1 / sigma))
    return _unanimous_radius(n_max, level_a, level_b, sigma, split) >= r_1


def reachable_radius(alpha: float, sigma: float, n_first: int, n_max: int, noise_block: int = 100,
                     method: str = "cohen", alpha_split: float = 0.5, design: int = DEFAULT_DESIGN) -> float:
    """The largest radius any image can be certified at: a unanimous vote of n_max draws at the last look's level
    (CERTIFY: sigma * Phi^-1(CP_lower(n_max, n_max, alpha_L)); T-CERTIFY: its radius with no runner-up draw).
    Targets above it are never decided (`SequentialTest` stops for them at once: the budget rule). l2, [0, 1]
    pixels."""
    sigma = checks.check_sigma(sigma)
    split = _check_method(method, alpha_split)
    alpha = checks.check_alpha(alpha)
    level_a, level_b = _last_levels(alpha, split, n_first, n_max, noise_block, check_design(design))
    return _unanimous_radius(n_max, level_a, level_b, sigma, split)


def min_n_max(alpha: float, radii, sigma: float, n_first: int = 100, noise_block: int = 100,
              method: str = "cohen", alpha_split: float = 0.5, design: int = DEFAULT_DESIGN) -> int:
    """The smallest n_max (n_first times a power of 2) with which a unanimous vote decides the first target r_1
    (smaller: nothing can ever be certified beyond radius 0 -- refused by `SequentialTest`)."""
    r_1 = check_radii(radii)[0]
    sigma = checks.check_sigma(sigma)
    split = _check_method(method, alpha_split)
    design = check_design(design)
    n_max = n_first
    while not _unanimous_decides(alpha, sigma, split, r_1, n_first, n_max, noise_block, design):
        n_max *= 2
    return n_max


@dataclasses.dataclass
class SequentialTest:
    """The decision of one image, updated look by look (module docstring).

    Args:
        sigma: noise level (l2, [0, 1] pixels), > 0.
        radii: target radii r_1 < ... < r_m, > 0.
        alpha: total failure probability in (0, 1), spent as alpha_l on look l (`design_schedule`; "t-certify":
            alpha_split * alpha_l on p_A and the rest on the runner-up).
        n_first, n_max: the first look and the budget (`design_schedule`).
        noise_block: draws per block; looks are multiples of it.
        method: "cohen" (CERTIFY's radius) or "t-certify" (the runner-up bounded too; module docstring).
        alpha_split: "t-certify": the fraction of alpha spent on p_A, in (0, 1) (default 0.5).
        num_classes: K, for the futility stop of "t-certify" (a floor (1 - p_A) / (K - 1) on the runner-up; None:
            design 2 without the floor, design 1 without its confidence stop).
        design: 1 or 2 (`DESIGNS`, module docstring "Designs"; default 2).

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
    design: int = DEFAULT_DESIGN

    def __post_init__(self):
        self.sigma = checks.check_sigma(self.sigma)
        self.radii = check_radii(self.radii)
        self.alpha = checks.check_alpha(self.alpha)
        self.split = _check_method(self.method, self.alpha_split)
        self.design = check_design(self.design)
        if self.num_classes is not None:
            self.num_classes = checks.check_count(self.num_classes, "num_classes", minimum=2)
        self.looks, _ = design_schedule(self.n_first, self.n_max, self.noise_block, self.design)
        # spent on p_A and ("t-certify") on p_B at each look
        self.alpha_looks, self.alpha_looks_b = _levels(self.alpha, self.split, self.looks, self.design)
        self.thresholds = scipy_stats.norm.cdf(np.asarray(self.radii) / self.sigma)  # q_k
        if not _unanimous_decides(self.alpha, self.sigma, self.split, self.radii[0], self.n_first, self.n_max,
                                  self.noise_block, self.design):
            minimum = min_n_max(self.alpha, self.radii, self.sigma, self.n_first, self.noise_block, self.method,
                                self.alpha_split, self.design)
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
        lower = stats.clopper_pearson_lower(count_a, n, self.alpha_looks[self.look])
        self.best_lower = max(self.best_lower, lower)
        if self.method == "cohen":
            self.decided = int(np.sum(self.thresholds <= self.best_lower))
        else:
            if count_b is None or not 0 <= int(count_b) <= n - count_a:
                raise ValueError(f"t-certify needs count_b, the runner-up's count, in [0, {n - count_a}], got "
                                 f"{count_b!r}")
            count_b = int(count_b)
            upper_b = stats.clopper_pearson_upper(count_b, n, self.alpha_looks_b[self.look])
            self.best_upper_b = min(self.best_upper_b, upper_b)
            self.decided = int(np.sum(np.asarray(self.radii) <= self.t_radius))
        self.look += 1
        self.stopped = (self.decided == len(self.radii) or self.look == len(self.looks)
                        or self._futile(count_a, count_b, n))
        return self.stopped

    def _futile(self, count_a: int, count_b: Optional[int], n: int) -> bool:
        """Whether the next undecided target is out of reach of any further look (module docstring)."""
        if self.design == 1:
            return self._beyond_reach(count_a, count_b, n, 1.0, 0.0) or self._beyond_confidence(count_a, count_b, n)
        # Design 2: the budget rule (all remaining draws to c_A), then conditional power at FUTILITY_LEVEL, both
        # aimed first at g's prediction itself (radius 0: the r = 0 column of a table) until it is certified.
        predict_first = not self.certifies
        if self._beyond_reach(count_a, count_b, n, 1.0, 0.0, predict_first):
            return True
        p_a_plus = stats.clopper_pearson_upper(count_a, n, FUTILITY_LEVEL)
        p_b_minus = 0.0
        if self.method != "cohen":
            floor = (1.0 - p_a_plus) / (self.num_classes - 1) if self.num_classes else 0.0
            p_b_minus = max(floor, stats.clopper_pearson_lower(count_b, n, FUTILITY_LEVEL))
        return self._beyond_reach(count_a, count_b, n, p_a_plus, p_b_minus, predict_first)

    def _beyond_reach(self, count_a: int, count_b: Optional[int], n: int, rate_a: float, rate_b: float,
                      predict_first: bool = False) -> bool:
        """Whether no later look could decide the next target if c_A got a fraction `rate_a` and the runner-up
        `rate_b` of every further draw: the last look's bounds on the counts count_a + rate_a (n_max - n) and
        count_b + rate_b (n_max - n) (fractional counts: Beta quantiles). The last look is the best of the later ones
        when rate_a >= count_a / n and rate_b <= count_b / n (the projected share moves towards the rate, the interval
        narrows with n and alpha_l never falls with l), which holds for the rates used: 1 and 0 (the budget rule:
        no draw could do better), CP_upper(count_a, n, beta) and max((1 - p_A^+) / (K - 1), CP_lower(count_b, n,
        beta)) (conditional power; the floor is <= count_b / n, the runner-up being the largest of the K - 1 other
        counts). The counts may be fractional (Beta quantiles; `stats` clamps k < 1 and n - k < 1 to 1, which only
        makes these bounds more optimistic: the test stops less, never certifies more). With `predict_first` the
        target is g's prediction itself (radius 0): CERTIFY's bound > 1/2, T-CERTIFY's lower bound > the runner-up's
        upper bound (`certifies`)."""
        if n >= self.n_max:
            return False  # the last look: the test stops anyway
        extra = self.n_max - n
        lower = stats.clopper_pearson_lower(min(count_a + rate_a * extra, self.n_max), self.n_max,
                                            self.alpha_looks[-1])
        best_lower = max(self.best_lower, float(lower))
        if self.method == "cohen":
            return best_lower <= 0.5 if predict_first else best_lower < self.thresholds[self.decided]
        upper = stats.clopper_pearson_upper(min(count_b + rate_b * extra, self.n_max), self.n_max,
                                            self.alpha_looks_b[-1])
        best_upper = min(self.best_upper_b, float(upper), 1.0 - best_lower)
        if predict_first:
            return best_lower <= best_upper
        return _t_radius(self.sigma, best_lower, best_upper) < self.radii[self.decided]

    def _beyond_confidence(self, count_a: int, count_b: Optional[int], n: int) -> bool:
        """Design 1's futility: the next target lies above what the upper confidence bound of p_A at this look's level
        (and, for "t-certify" with K, the lower bound of the runner-up) allows."""
        level = self.alpha_looks[self.look - 1]
        upper_a = stats.clopper_pearson_upper(count_a, n, level)
        if self.method == "cohen":
            return upper_a < self.thresholds[self.decided]
        if self.num_classes is None or upper_a >= 1.0:
            return False
        least_b = max((1.0 - upper_a) / (self.num_classes - 1),
                      stats.clopper_pearson_lower(count_b, n, self.alpha_looks_b[self.look - 1]))
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
             seed: int = 0, alpha_per_look=None, probs=None, method: str = "cohen", alpha_split: float = 0.5,
             design: int = DEFAULT_DESIGN):
    """The test on simulated counts: a base classifier whose top class has probability `p_a` (binomial draws), or,
    with `probs` (class probabilities, class 0 being c_A; then `p_a` is ignored), multinomial draws whose runner-up
    count feeds "t-certify".

    For studying the error rate and the draws of the procedure without a model (`tests/test_sequential.py`,
    `benchmarks/sequential/simulate_error.py`). `alpha_per_look` overrides every look's alpha_l (e.g. alpha itself:
    the invalid "optional stopping" variant).

    Returns:
        (decided int64 [trials], n_used int64 [trials]): the number of targets decided and the draws used.
    """
    rng = np.random.default_rng(checks.check_seed(seed))
    looks, _ = design_schedule(n_first, n_max, design=design)
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
                              num_classes=num_classes, design=design)
        if alpha_per_look is not None:  # both bounds at their fixed-n level at every look
            test.alpha_looks = np.full(len(looks), checks.check_alpha(alpha_per_look) * test.split)
            test.alpha_looks_b = np.full(len(looks), alpha_per_look * (1.0 - test.split))
        for look in row:
            count_b = None if probs is None else int(look[1:].max())
            if test.update(int(look[0]), count_b):
                break
        decided.append(test.decided)
        used.append(test.n_used)
    return np.array(decided, np.int64), np.array(used, np.int64)
