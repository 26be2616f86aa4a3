"""Sample-wise noise levels (seed 003, METHODS.md §5): the transductive allocation of certified radii.

Only the abstract and introduction of the paper are at hand (`../shared/papers/samplewise-smoothing-excerpt.txt`):
it assigns each test sample its own sigma and "allocates specific robust regions" so that the certificate holds
in the transductive setting. The construction below is this library's, made so that the certificate is proven.

Why an allocation is needed. Cohen et al.'s theorem certifies the smoothed classifier g_sigma, one function with
one sigma. A classifier that smooths each input with its own sigma(x) is not a g_sigma anywhere, and its
certificates are void in general (Súkeník et al., ICML 2022). For a known test set x_1 ... x_N with chosen noise
levels sigma_j and CERTIFY radii R_j of g_{sigma_j} at x_j, define

    h(x) = g_{sigma_j}(x)  for x in B(x_j, r_j)   (open l2 balls),    h(x) = g_{sigma_0}(x) elsewhere,

with radii r_j <= R_j such that r_i + r_j <= ||x_i - x_j||_2 whenever sigma_i != sigma_j. Balls with different
sigma are then disjoint, and balls with the same sigma overlap only where both say "g_sigma", so h is well
defined. On B(x_j, r_j), h equals g_{sigma_j}, which is constant on B(x_j, R_j) whenever the CERTIFY bound of x_j
holds, i.e. with probability >= 1 - alpha (Cohen et al. 2019, Theorem 1 and Proposition 2). So with probability
>= 1 - alpha per image, h is constant on B(x_j, r_j) and equal to the label CERTIFY returned: the certified radius
of x_j is r_j -- for this test set only (h depends on it). Since r_j <= R_j always, the allocation never needs the
estimation draws to be independent of the other images' draws.

`allocate_radii` chooses the r_j maximizing sum_j r_j (a linear program, `scipy.optimize.linprog` with HiGHS), or
by a greedy pass that is feasible by construction. It does not look at labels: the objective is the sum over all
images, so the allocation is what a user without the labels would compute.
"""

from __future__ import annotations

import numpy as np
from scipy import optimize, sparse
from scipy.spatial import distance

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
        # The solver meets constraints to ~1e-9 absolute: shrink any pair that is over, by its excess, from both.
        # Cuts only shrink radii, so a pair fixed stays fixed.
        for k in np.nonzero(allocated[i] + allocated[j] > limit)[0]:
            over = allocated[i[k]] + allocated[j[k]] - limit[k]
            if over > 0:
                cut = min(over, allocated[i[k]])
                allocated[i[k]] -= cut
                allocated[j[k]] = max(0.0, allocated[j[k]] - (over - cut))
    if np.any(allocated[i] + allocated[j] > limit) or np.any(allocated > radii) or np.any(allocated < 0):
        raise AssertionError("allocate_radii: the allocation is not feasible (a bug)")
    return allocated
