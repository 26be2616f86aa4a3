"""Sample-wise smoothing (tfsmooth.samplewise): the transductive allocation of certified radii (METHODS.md §5)."""

import itertools

import numpy as np
import pytest

from tfsmooth import samplewise

SLACK = 1 - samplewise.DISTANCE_SLACK  # the library's constraint: r_a + r_b <= SLACK * d_ab
DISJOINT = 1 - samplewise.DISTANCE_SLACK / 2  # what the slack buys: disjoint balls with room for rounding to spare


def _feasible(points, radii, sigmas, allocated):
    flat = np.asarray(points, dtype=np.float64).reshape(len(points), -1)
    assert np.all(allocated >= 0) and np.all(allocated <= radii)
    for a, b in itertools.combinations(range(len(points)), 2):
        if sigmas[a] != sigmas[b]:
            assert allocated[a] + allocated[b] <= np.linalg.norm(flat[a] - flat[b]) * DISJOINT, (a, b)


def _brute_force_optimum(points, radii, sigmas):
    """max sum r over the vertices of {0 <= r <= R, r_a + r_b <= d_ab (sigma_a != sigma_b)}: every choice of N
    linearly independent active constraints, solved exactly, kept if feasible."""
    count = len(points)
    flat = np.asarray(points, dtype=np.float64).reshape(count, -1)
    rows, bounds = [], []
    for k in range(count):
        rows += [np.eye(count)[k], -np.eye(count)[k]]
        bounds += [radii[k], 0.0]
    for a, b in itertools.combinations(range(count), 2):
        if sigmas[a] != sigmas[b]:
            row = np.zeros(count)
            row[[a, b]] = 1.0
            rows.append(row)
            bounds.append(np.linalg.norm(flat[a] - flat[b]) * SLACK)
    rows, bounds = np.array(rows), np.array(bounds)
    best = -np.inf
    for active in itertools.combinations(range(len(rows)), count):
        matrix = rows[list(active)]
        if abs(np.linalg.det(matrix)) < 1e-12:
            continue
        vertex = np.linalg.solve(matrix, bounds[list(active)])
        if np.all(rows @ vertex <= bounds + 1e-9):
            best = max(best, vertex.sum())
    return best


def test_two_conflicting_balls_share_their_distance():
    # Distance 1 apart, R = 0.8 and 0.6 at different sigmas: the optimum fills the gap (sum = 1), the greedy pass
    # gives the larger radius first (0.8, then 1 - 0.8 = 0.2).
    points = np.array([[0.0, 0.0], [1.0, 0.0]])
    radii, sigmas = np.array([0.8, 0.6]), np.array([0.25, 0.5])
    optimum = samplewise.allocate_radii(points, radii, sigmas)
    assert optimum.sum() == pytest.approx(SLACK, abs=1e-9) and np.all(optimum <= radii)
    greedy = samplewise.allocate_radii(points, radii, sigmas, method="greedy")
    np.testing.assert_allclose(greedy, [0.8, SLACK - 0.8], atol=1e-12)


def test_nothing_conflicts_leaves_every_radius_as_certified():
    rng = np.random.default_rng(0)
    points = rng.uniform(size=(20, 4, 4, 1))
    radii = rng.uniform(0.0, 2.0, size=20)
    same_sigma = np.full(20, 0.25)  # overlapping balls of one sigma are one smoothed classifier: no constraint
    for method in samplewise.ALLOCATIONS:
        assert np.array_equal(samplewise.allocate_radii(points, radii, same_sigma, method), radii)
    far = points + 100.0 * np.arange(20)[:, None, None, None]  # different sigmas, balls far apart
    sigmas = rng.choice([0.12, 0.25, 0.5, 1.0], size=20)
    for method in samplewise.ALLOCATIONS:
        assert np.array_equal(samplewise.allocate_radii(far, radii, sigmas, method), radii)
    assert len(samplewise.conflicting_pairs(far, radii, sigmas)[0]) == 0


@pytest.mark.parametrize("trial", range(20))
def test_allocation_is_feasible_and_the_lp_beats_the_greedy_pass_on_random_sets(trial):
    rng = np.random.default_rng(trial)
    count = int(rng.integers(5, 40))
    points = rng.normal(size=(count, 3))
    radii = rng.uniform(0.0, 1.5, size=count) * (rng.uniform(size=count) > 0.1)  # some abstentions (R = 0)
    sigmas = rng.choice([0.25, 0.5], size=count)
    optimum = samplewise.allocate_radii(points, radii, sigmas)
    greedy = samplewise.allocate_radii(points, radii, sigmas, method="greedy")
    _feasible(points, radii, sigmas, optimum)
    _feasible(points, radii, sigmas, greedy)
    assert optimum.sum() >= greedy.sum() - 1e-7
    assert len(samplewise.conflicting_pairs(points, radii, sigmas)[0]) > 0  # the constraints do bind here


@pytest.mark.parametrize("trial", range(15))
def test_lp_allocation_equals_the_brute_force_optimum_on_tiny_sets(trial):
    rng = np.random.default_rng(100 + trial)
    count = int(rng.integers(2, 5))
    points = rng.normal(size=(count, 2)) * 0.6
    radii = rng.uniform(0.1, 1.2, size=count)
    sigmas = rng.choice([0.12, 0.25, 1.0], size=count)
    allocated = samplewise.allocate_radii(points, radii, sigmas)
    _feasible(points, radii, sigmas, allocated)
    assert allocated.sum() == pytest.approx(_brute_force_optimum(points, radii, sigmas), abs=1e-7)


@pytest.mark.parametrize("kwargs, message", [
    (dict(points=np.zeros((3, 2)), radii=[1.0, 1.0], sigmas=[0.25] * 3), "radii must be 3 finite numbers"),
    (dict(points=np.zeros((3, 2)), radii=[1.0, -0.1, 1.0], sigmas=[0.25] * 3), "radii must be 3 finite numbers >= 0"),
    (dict(points=np.zeros((3, 2)), radii=[1.0, np.nan, 1.0], sigmas=[0.25] * 3), "radii must be"),
    (dict(points=np.zeros((3, 2)), radii=[1.0] * 3, sigmas=[0.25, 0.0, 0.5]), "sigmas must be 3 finite noise levels > 0"),
    (dict(points=np.zeros((3,)), radii=[1.0] * 3, sigmas=[0.25] * 3), "points must be an array"),
    (dict(points=np.full((3, 2), np.nan), radii=[1.0] * 3, sigmas=[0.25] * 3), "points must be finite"),
    (dict(points=np.zeros((3, 2)), radii=[1.0] * 3, sigmas=[0.25] * 3, method="simplex"), "method must be one of"),
])
def test_allocation_refuses_bad_inputs(kwargs, message):
    with pytest.raises(ValueError, match=message):
        samplewise.allocate_radii(**kwargs)
