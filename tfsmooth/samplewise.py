"""Sample-wise noise levels (seed 003, METHODS.md §5): the transductive allocation of certified radii.

Only the abstract and introduction of the paper are at hand (`../shared/papers/samplewise-smoothing-excerpt.txt`):
it assigns each test sample its own sigma and "allocates specific robust regions" so that the certificate holds
in the transductive setting. The construction below is this library's, made so that the certificate is proven.

Why an allocation is needed. Cohen et al.'s theorem certifies the smoothed classifier g_sigma, one function with
one sigma. A classifier that smooths each input with its own sigma(x) is not a g_sigma anywhere, and its
certificates are void in general (Súkeník et al., ICML 2022). For a known test set x_1 ... x_N with chosen noise
levels sigma_j and CERTIFY radii R_j of g_{sigma_j} at x_j, define

    h(x) = g_{sigma_j}(x)  for x = x_j and for x in B(x_j, r_j)   (open l2 balls),
    h(x) = g_{sigma_0}(x)  elsewhere,

with radii r_j <= R_j such that r_i + r_j <= (1 - DISTANCE_SLACK) ||x_i - x_j||_2 whenever sigma_i != sigma_j.
Balls with different sigma are then disjoint, no ball contains the centre of an image of another sigma
(r_i < ||x_i - x_j||), and balls with the same sigma overlap only where both say "g_sigma", so h is well defined
-- except at a point that two images of different sigma share exactly (distance 0): those images are not
certified (`coincident_conflicts`). On {x_j} and B(x_j, r_j), h equals g_{sigma_j}, which is constant on
B(x_j, R_j) whenever the CERTIFY bound of x_j holds, i.e. with probability >= 1 - alpha (Cohen et al. 2019,
Theorem 1 and Proposition 2). So with probability >= 1 - alpha per image, h(x_j) is the label CERTIFY returned
and h is constant on B(x_j, r_j): the certified radius of x_j is r_j (possibly 0: the prediction at x_j alone) --
for this test set only (h depends on it). Since r_j <= R_j always, the allocation never needs the estimation
draws to be independent of the other images' draws.

`allocate_radii` chooses the r_j maximizing sum_j r_j (a linear program, `scipy.optimize.linprog` with HiGHS), or
by a greedy pass that is feasible by construction. It does not look at labels: the objective is the sum over all
images, so the allocation is what a user without the labels would compute.
"""

from __future__ import annotations

import collections
import dataclasses
from typing import Iterable, Iterator, List, Optional, Sequence, Tuple, Union

import numpy as np
from scipy import optimize, sparse
from scipy.spatial import distance

from tfsmooth import checks, noise, stats
from tfsmooth.smoothing import Certificate, SmoothedClassifier, _resolve_seed, recertify

DEFAULT_SIGMA_GRID = (0.12, 0.25, 0.5, 1.0)
"""The noise levels sigma_j is chosen from by default (issue 13; the grid of Cohen et al.'s CIFAR-10 models)."""

ALLOCATIONS = ("linprog", "greedy")
"""Methods of `allocate_radii`."""

DISTANCE_SLACK = 1e-9
"""Relative slack of the disjointness constraint, r_i + r_j <= (1 - DISTANCE_SLACK) * d_ij: covers the rounding of
the float64 distance (relative error ~1e-15 per term) and of the LP solution, so the allocated balls are disjoint
in exact arithmetic too."""

_BLOCK = 256


def _checked(points, radii, sigmas):
    points = np.asarray(points)
    if points.ndim < 2 or points.shape[0] < 1:
        raise ValueError(f"points must be an array [N, ...] of N >= 1 inputs, got shape {points.shape}")
    if not np.issubdtype(points.dtype, np.number) or not np.all(np.isfinite(points)):
        raise ValueError("points must be finite numbers (pixels in [0, 1])")
    count = points.shape[0]
    radii = np.asarray(radii, dtype=np.float64)
    if radii.shape != (count,) or not np.all(np.isfinite(radii)) or np.any(radii < 0):
        raise ValueError(f"radii must be {count} finite numbers >= 0 (one per point; 0 where CERTIFY abstained), "
                         f"got shape {radii.shape}" + ("" if radii.shape != (count,) else
                                                       f" with min {np.nanmin(radii) if radii.size else 'n/a'}"))
    sigmas = np.asarray(sigmas, dtype=np.float64)
    if sigmas.shape != (count,) or not np.all(np.isfinite(sigmas)) or np.any(sigmas <= 0):
        raise ValueError(f"sigmas must be {count} finite noise levels > 0 (one per point), got shape {sigmas.shape}")
    return points.reshape(count, -1).astype(np.float64), radii, sigmas


def conflicting_pairs(points, radii, sigmas):
    """The pairs whose balls B(x_i, R_i), B(x_j, R_j) could meet while their sigmas differ.

    Args:
        points: [N, ...] inputs (e.g. float32 [N, H, W, C] pixels in [0, 1]).
        radii: [N] radii R_j >= 0 (l2, pixel scale), the CERTIFY radii before allocation.
        sigmas: [N] noise levels sigma_j > 0.

    Returns:
        (i [P], j [P], d [P]): int64 index pairs with i < j, sigma_i != sigma_j and R_i + R_j > (1 - DISTANCE_SLACK)
        * d_ij, and their float64 l2 distances d_ij. Every other pair's constraint holds for any r <= R.

    Raises:
        ValueError: shapes that do not match, non-finite values, negative radii, sigmas <= 0.
    """
    flat, radii, sigmas = _checked(points, radii, sigmas)
    rows, cols, dists = [], [], []
    for start in range(0, len(flat), _BLOCK):
        block = distance.cdist(flat[start:start + _BLOCK], flat)  # float64, exact differences
        i, j = np.nonzero(block * (1 - DISTANCE_SLACK) < radii[start:start + _BLOCK, None] + radii[None, :])
        i = i + start
        keep = (i < j) & (sigmas[i] != sigmas[j])
        rows.append(i[keep])
        cols.append(j[keep])
        dists.append(block[i[keep] - start, j[keep]])
    return np.concatenate(rows), np.concatenate(cols), np.concatenate(dists)


def allocate_radii(points, radii, sigmas, method: str = "linprog") -> np.ndarray:
    """Certified radii r_j <= R_j of the sample-wise smoothed classifier h of this test set (module docstring).

    Maximizes sum_j r_j subject to 0 <= r_j <= R_j and r_i + r_j <= (1 - DISTANCE_SLACK) * ||x_i - x_j||_2 for every
    pair with sigma_i != sigma_j (only the `conflicting_pairs` can bind). Where nothing conflicts, r = R exactly.

    Args:
        points: [N, ...] the test inputs (pixels in [0, 1]).
        radii: [N] CERTIFY radii R_j >= 0 at sigma_j (0 for an abstention).
        sigmas: [N] the noise level sigma_j > 0 each image was certified at.
        method: "linprog" (the optimum, `scipy.optimize.linprog`, HiGHS) or "greedy" (images in decreasing R_j
            order, each taking the largest radius the others leave it: r_j = min(R_j, min_i d_ij - r_i) over
            its conflicting neighbours i, r_i = 0 for those not placed yet; feasible by construction, not optimal).

    Returns:
        float64 [N] radii r_j, feasible (checked before returning).

    Raises:
        ValueError: bad inputs (see `conflicting_pairs`) or an unknown method.
        RuntimeError: the LP solver failed (it cannot be infeasible: r = 0 is feasible).
    """
    if method not in ALLOCATIONS:
        raise ValueError(f"method must be one of {ALLOCATIONS}, got {method!r}")
    _, radii, _ = _checked(points, radii, sigmas)
    i, j, d = conflicting_pairs(points, radii, sigmas)
    limit = d * (1 - DISTANCE_SLACK)
    if len(i) == 0:
        return radii.copy()
    allocated = radii.copy()
    if method == "greedy":
        neighbours = {}
        for a, b, room in zip(i, j, limit):
            neighbours.setdefault(a, []).append((b, room))
            neighbours.setdefault(b, []).append((a, room))
        placed = np.zeros(len(radii), dtype=bool)
        for k in np.argsort(-radii, kind="stable"):
            # A neighbour not placed yet will get >= 0, so this ball must fit inside the gap to it on its own.
            room = [limit_kb - (allocated[other] if placed[other] else 0.0) for other, limit_kb in neighbours.get(k, [])]
            allocated[k] = max(0.0, min([radii[k], *room]))
            placed[k] = True
        return _repaired(allocated, i, j, limit, radii)
    else:
        involved = np.unique(np.concatenate([i, j]))  # LP over the images with a conflict only
        position = np.full(len(radii), -1)
        position[involved] = np.arange(len(involved))
        rows = np.repeat(np.arange(len(i)), 2)
        columns = np.stack([position[i], position[j]], axis=1).reshape(-1)
        constraints = sparse.csr_matrix((np.ones(2 * len(i)), (rows, columns)), shape=(len(i), len(involved)))
        solution = optimize.linprog(-np.ones(len(involved)), A_ub=constraints, b_ub=limit,
                                    bounds=list(zip(np.zeros(len(involved)), radii[involved])), method="highs")
        if solution.status != 0:
            raise RuntimeError(f"allocate_radii: the linear program failed: {solution.message}")
        allocated[involved] = np.clip(solution.x, 0.0, radii[involved])
    return _repaired(allocated, i, j, limit, radii)


def _repaired(allocated, i, j, limit, radii):
    """`allocated` with every pair made feasible in floating point: HiGHS meets constraints to its feasibility
    tolerance (1e-7 absolute) and a greedy sum fl(limit - r) + r can exceed limit by an ulp, so each pair still
    over is cut by its excess plus a margin of a few ulps (from the larger radius first). Cuts only shrink radii,
    so a pair made feasible stays feasible; the loop ends after a few passes."""
    for _ in range(100):
        bad = np.nonzero(allocated[i] + allocated[j] > limit)[0]
        if len(bad) == 0:
            break
        for k in bad:
            a, b = (i[k], j[k]) if allocated[i[k]] >= allocated[j[k]] else (j[k], i[k])
            excess = allocated[a] + allocated[b] - limit[k]
            if excess <= 0:
                continue
            cut = excess + 4 * np.finfo(np.float64).eps * max(1.0, limit[k])
            taken = min(cut, allocated[a])
            allocated[a] -= taken
            allocated[b] = max(0.0, allocated[b] - (cut - taken))
    if np.any(allocated[i] + allocated[j] > limit) or np.any(allocated > radii) or np.any(allocated < 0):
        raise AssertionError("allocate_radii: the allocation is not feasible (a bug)")
    return allocated


def coincident_conflicts(points, sigmas) -> np.ndarray:
    """Which images coincide exactly (l2 distance 0) with an image of another sigma: bool [N].

    At such a point the sample-wise classifier h of the module docstring cannot follow both sigmas, so no
    prediction there is certified: `tfsmooth.jobs.samplewise` writes them as abstentions (their allocated radius
    is 0 anyway, as the distance is).
    """
    flat, _, sigmas = _checked(points, np.zeros(len(points)), sigmas)
    clash = np.zeros(len(flat), dtype=bool)
    for start in range(0, len(flat), _BLOCK):
        block = distance.cdist(flat[start:start + _BLOCK], flat)
        i, j = np.nonzero(block == 0.0)
        i = i + start
        clash[i[sigmas[i] != sigmas[j]]] = True
    return clash


# ------------------------------------------------------------------------------ choosing sigma per test image
def check_sigma_grid(sigma_grid) -> Tuple[float, ...]:
    """The grid as a sorted tuple of distinct floats; ValueError (naming `sigma_grid`) if empty or a level is not
    a finite number > 0."""
    if isinstance(sigma_grid, (str, bytes)) or not isinstance(sigma_grid, Iterable):
        raise ValueError(f"sigma_grid must be a non-empty sequence of noise levels > 0, got {sigma_grid!r}")
    levels = [checks.check_sigma(level, "sigma_grid level") for level in sigma_grid]
    if not levels:
        raise ValueError("sigma_grid must be a non-empty sequence of noise levels > 0, got an empty one")
    if len(set(levels)) != len(levels):
        raise ValueError(f"sigma_grid must hold distinct noise levels, got {levels}")
    return tuple(sorted(levels))


def selection_scores(selection_counts, sigma_grid, alpha: float) -> np.ndarray:
    """The radius each grid level promises on the sigma-selection draws: float64 [G].

    score_g = sigma_g * Phi^-1(p_lower_g), p_lower_g the one-sided Clopper-Pearson lower bound at `alpha` of the
    top class's count among the n_select draws at sigma_g (the CERTIFY radius those draws alone would give);
    -inf where p_lower_g <= 1/2. A lower bound rather than the plug-in p_hat so that a unanimous vote does not
    score +inf at every level: at equal votes the larger sigma scores more, as it would certify more.

    Args:
        selection_counts: int [G, K], counts of the n_select draws at each grid level (rows sum to n_select).
        sigma_grid: the G levels, sorted (`check_sigma_grid`).
        alpha: in (0, 1).
    """
    counts = np.asarray(selection_counts, dtype=np.int64)
    top = counts.max(axis=1)
    lower = np.asarray(stats.clopper_pearson_lower(top, counts.sum(axis=1), alpha), dtype=np.float64)
    scores = np.full(len(top), -np.inf)
    above = lower > 0.5
    scores[above] = np.asarray(sigma_grid, dtype=np.float64)[above] * np.asarray(
        stats.radius(1.0, lower[above]), dtype=np.float64)
    return scores


SIGMA_SELECTIONS = ("agree", "radius")
"""Rules of `choose_sigma`: "agree" (default) -- the largest promised radius among the levels whose vote agrees with
the vote at the smallest level; "radius" -- the largest promised radius over all levels."""


def choose_sigma(selection_counts, sigma_grid, alpha: float, rule: str = "agree") -> int:
    """Index into `sigma_grid` of the level to certify at, a function of the sigma-selection draws only.

    "radius": the largest `selection_scores`. "agree" (default): the same among the levels whose top class is the
    top class at the smallest level (the least-noisy view of the image); the others score -inf. Why "agree": a base
    classifier that collapses under heavy noise to one default class votes for it almost unanimously, and "radius"
    then picks that level -- a large radius for a wrong label (measured on MNIST: `benchmarks/RESULTS.md`, issue
    13); no label is needed to see that the vote changed class as sigma grew. If no eligible score is finite (no
    decisive vote), the eligible level with the largest top-class count. Ties go to the smaller sigma (it keeps more
    accuracy). My rule, not the paper's (its selection rule is not in the text at hand); either rule keeps the
    certificate sound, as sigma_j is chosen on draws the bound never sees.

    Raises:
        ValueError: an unknown rule.
    """
    checks.check_choice(rule, "rule", SIGMA_SELECTIONS)
    counts = np.asarray(selection_counts, dtype=np.int64)
    scores = selection_scores(counts, sigma_grid, alpha)
    eligible = np.ones(len(counts), bool)
    if rule == "agree":
        eligible = counts.argmax(axis=1) == counts[0].argmax()
        scores = np.where(eligible, scores, -np.inf)
    if np.isfinite(scores).any():
        return int(np.argmax(scores))  # first maximum: the smallest sigma among ties
    return int(np.argmax(np.where(eligible, counts.max(axis=1), -1)))


@dataclasses.dataclass(frozen=True)
class SampleWiseCertificate:
    """CERTIFY at the noise level chosen for one test image (before the allocation of `allocate_radii`).

    Attributes:
        sigma: the chosen level sigma_j (l2, [0, 1] pixel scale).
        certificate: CERTIFY (or T-CERTIFY) of g_{sigma_j} at the image, on its own selection and estimation
            draws; its `radius` is R_j, what `allocate_radii` cuts to r_j.
        selection_counts: int64 [G, K], the counts of the n_select sigma-selection draws at each grid level.
        scores: float64 [G], `selection_scores` of those counts.
    """

    sigma: float
    certificate: Certificate
    selection_counts: np.ndarray
    scores: np.ndarray

    label = property(lambda self: self.certificate.label, doc="The certified class, or ABSTAIN.")
    radius = property(lambda self: self.certificate.radius, doc="R_j, the radius of g_{sigma_j} before allocation.")
    seconds = property(lambda self: self.certificate.seconds, doc="Seconds of all its passes (both steps).")


class SampleWiseSmoothedClassifier:
    """Smoothed classifiers g_sigma of one base classifier at every level of a grid, one level per test image.

    For each image (Sec. "Certification" of issue 13; METHODS.md §5):

    1. n_select draws at every grid level sigma_g from `noise.STREAM_SIGMA_SELECTION` (the same standard-normal
       draws scaled by each sigma_g) choose sigma_j (`choose_sigma`);
    2. CERTIFY (or T-CERTIFY) of g_{sigma_j} with its own n0 selection and n estimation draws (streams 0 and 1:
       the counts a fixed-sigma `SmoothedClassifier(base, K, sigma_j)` gets for the same seed and key) gives R_j.

    Step 2's draws are independent of step 1's, so conditionally on the chosen sigma_j the CERTIFY guarantee holds
    as for a fixed sigma: with probability >= 1 - alpha, g_{sigma_j} is constant on B(x_j, R_j). The radius of the
    sample-wise classifier is the allocated r_j <= R_j of `allocate_radii` (module docstring), for this test set.

    Args:
        base_model, num_classes, noise_block, compute_dtype, parallel_passes, devices: as `SmoothedClassifier`.
        sigma_grid: the noise levels (default `DEFAULT_SIGMA_GRID`), distinct, > 0.

    Raises:
        ValueError: a bad grid (`check_sigma_grid`) or a bad argument of `SmoothedClassifier`.
    """

    def __init__(self, base_model, num_classes: int, sigma_grid: Sequence[float] = DEFAULT_SIGMA_GRID, *,
                 noise_block: int = 100, compute_dtype: str = "float32", parallel_passes: Optional[int] = None,
                 devices=None):
        self.sigma_grid = check_sigma_grid(sigma_grid)
        self._smoothed = SmoothedClassifier(base_model, num_classes, self.sigma_grid[0], noise_block=noise_block,
                                            compute_dtype=compute_dtype, parallel_passes=parallel_passes,
                                            devices=devices)
        self.num_classes = self._smoothed.num_classes

    def certify_batch(self, images, n0: int = 100, n: int = 100_000, alpha: float = 0.001,
                      batch_size: Optional[int] = None, seed: Optional[int] = None,
                      keys: Optional[Sequence[int]] = None, n_select: int = 100, method: str = "cohen",
                      alpha_split: Union[float, str] = 0.5, sigma_select: str = "agree") -> List[SampleWiseCertificate]:
        """`iter_certify` over float32 images [B, H, W, C] in [0, 1] with keys (default 0..B-1); in order."""
        images = self._smoothed._check_images(images, "images")
        keys = list(range(len(images))) if keys is None else list(keys)
        return [answer for _, answer in self.iter_certify(zip(keys, images), n0, n, alpha, batch_size, seed,
                                                          n_select, method, alpha_split, sigma_select)]

    def iter_certify(self, examples: Iterable[Tuple[int, np.ndarray]], n0: int = 100, n: int = 100_000,
                     alpha: float = 0.001, batch_size: Optional[int] = None, seed: Optional[int] = None,
                     n_select: int = 100, method: str = "cohen", alpha_split: Union[float, str] = 0.5,
                     sigma_select: str = "agree") -> Iterator[Tuple[int, SampleWiseCertificate]]:
        """Streams steps 1-2 over (key, image) pairs; yields (key, `SampleWiseCertificate`) in input order.

        Args:
            examples: (key, float32 [H, W, C] image in [0, 1]) pairs; keys in [0, 2**28) select the noise.
            n0, n, alpha, batch_size, method, alpha_split: as `SmoothedClassifier.iter_certify` (at sigma_j).
            seed: int >= 0 (None: a fresh one); the same seed gives the same choices and counts.
            n_select: sigma-selection draws per grid level, >= 1.
            sigma_select: the rule of `choose_sigma`, "agree" (default) or "radius".

        Raises:
            ValueError: as `SmoothedClassifier.iter_certify`, n_select not an integer >= 1, or an unknown
                sigma_select.
        """
        checks.check_choice(sigma_select, "sigma_select", SIGMA_SELECTIONS)
        smoothed = self._smoothed
        n_select = smoothed._check_draws(stats.check_count(n_select, "n_select"), "n_select")
        # Validates n0, n, alpha, method, alpha_split and batch_size at call time, as for a fixed sigma (the
        # returned generator is dropped unstarted: nothing is drawn).
        smoothed.iter_certify(iter(()), n0, n, alpha, batch_size, seed=0, method=method, alpha_split=alpha_split)
        alpha = stats.check_alpha(alpha)
        return self._stream(examples, n0, n, alpha, smoothed._batch_size(batch_size), _resolve_seed(seed), n_select,
                            method, stats.check_alpha_split(alpha_split), sigma_select)

    def _stream(self, examples, n0, n, alpha, batch_size, seed, n_select, method, alpha_split, sigma_select):
        """The generator behind `iter_certify`, on validated arguments."""
        smoothed, grid = self._smoothed, self.sigma_grid
        inputs = collections.deque()  # (key, image) in the order they entered step 1

        def selection_inputs():
            for key, image in examples:
                inputs.append((key, image))
                for level in grid:
                    yield key, image, level

        selection = smoothed._iter_counts(selection_inputs(), ((noise.STREAM_SIGMA_SELECTION, n_select),),
                                          batch_size, seed, with_sigma=True)
        chosen = collections.deque()  # (sigma_j, selection counts [G, K], scores [G]) in order

        def certify_inputs():
            rows, spent = [], 0.0
            for key, counts, seconds in selection:
                rows.append(counts[noise.STREAM_SIGMA_SELECTION])
                spent += seconds
                if len(rows) < len(grid):
                    continue
                selection_counts = np.stack(rows)
                level = grid[choose_sigma(selection_counts, grid, alpha, sigma_select)]
                chosen.append((level, selection_counts, selection_scores(selection_counts, grid, alpha), spent))
                rows, spent = [], 0.0
                _, image = inputs.popleft()
                yield key, image, level

        plan = ((noise.STREAM_SELECTION, n0), (noise.STREAM_ESTIMATION, n))
        for key, counts, seconds in smoothed._iter_counts(certify_inputs(), plan, batch_size, seed, with_sigma=True):
            level, selection_counts, scores, spent = chosen.popleft()
            counted = Certificate(stats.ABSTAIN, 0.0, 0.0, counts[noise.STREAM_ESTIMATION],
                                  counts[noise.STREAM_SELECTION], seconds + spent, seed)
            yield key, SampleWiseCertificate(level, recertify(counted, level, alpha, method, alpha_split),
                                             selection_counts, scores)
