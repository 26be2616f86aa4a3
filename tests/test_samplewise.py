"""Sample-wise smoothing (tfsmooth.samplewise): the transductive allocation of certified radii (METHODS.md §5)."""

import itertools

import fixtures
import numpy as np
import pytest
from scipy import stats as scipy_stats

from tfsmooth import noise, samplewise, stats
from tfsmooth.smoothing import SmoothedClassifier

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


# ------------------------------------------------------------------------ choosing sigma, then CERTIFY at it
GRID = (0.12, 0.25, 0.5, 1.0)


def test_choose_sigma_takes_the_largest_promised_radius_and_the_smaller_sigma_on_ties():
    # Unanimous votes at every level: the lower bound alpha^(1/n) is the same, so the score grows with sigma.
    unanimous = np.array([[100, 0]] * 4)
    assert samplewise.choose_sigma(unanimous, GRID, 0.001) == 3
    scores = samplewise.selection_scores(unanimous, GRID, 0.001)
    np.testing.assert_allclose(scores, np.array(GRID) * scipy_stats.norm.ppf(0.001 ** (1 / 100)), rtol=1e-9)
    # 100/100 at 0.12 and 0.25, 60/100 at 0.5 (not decisive: lower bound < 1/2), 50/100 at 1.0.
    mixed = np.array([[100, 0], [100, 0], [60, 40], [50, 50]])
    assert samplewise.choose_sigma(mixed, GRID, 0.001) == samplewise.choose_sigma(mixed, GRID, 0.001, "radius") == 1
    assert np.isneginf(samplewise.selection_scores(mixed, GRID, 0.001)[2:]).all()
    # Nothing decisive anywhere: the level with the largest top count; ties to the smaller sigma.
    assert samplewise.choose_sigma(np.array([[55, 45], [58, 42], [58, 42], [51, 49]]), GRID, 0.001) == 1


def test_agree_does_not_follow_a_base_classifier_that_collapses_to_one_class_under_heavy_noise():
    # Class 3 wins at 0.12 and 0.25; at 0.5 and 1.0 the vote goes, unanimously, to a default class 7.
    collapse = np.zeros((4, 10), np.int64)
    collapse[0, 3], collapse[0, 5] = 90, 10
    collapse[1, 3], collapse[1, 7] = 80, 20
    collapse[2, 7] = collapse[3, 7] = 100
    assert samplewise.choose_sigma(collapse, GRID, 0.001, "radius") == 3  # the largest promised radius: wrong class
    assert samplewise.choose_sigma(collapse, GRID, 0.001) == 1  # agree: the largest among the levels voting 3
    # Nothing decisive among the agreeing levels: the agreeing level with the largest top count, never level 2-3.
    weak = collapse.copy()
    weak[0, 3], weak[0, 5], weak[1, 3], weak[1, 7] = 52, 48, 55, 45
    assert samplewise.choose_sigma(weak, GRID, 0.001) == 1
    with pytest.raises(ValueError, match="rule must be one of agree, radius"):
        samplewise.choose_sigma(collapse, GRID, 0.001, "largest")


def _collapsing_classifier():
    """Class 0 on lightly noisy mid-grey images, class 1 once the noise energy mean((x - 1/2)^2) exceeds 0.09:
    unanimous class 1 at sigma = 0.5 and 1.0 -- a base classifier that collapses to one class under heavy noise."""
    import keras

    inputs = keras.Input(fixtures.SHAPE)
    energy = keras.layers.Lambda(lambda x: keras.ops.mean((x - 0.5) ** 2, axis=(1, 2, 3))[:, None])(inputs)
    logits = keras.layers.Lambda(lambda e: keras.ops.concatenate([keras.ops.zeros_like(e), 100.0 * (e - 0.09)],
                                                                axis=1))(energy)
    return keras.Model(inputs, logits)


def test_sigma_select_reaches_the_choice_agree_keeps_the_class_radius_follows_the_collapse():
    images = np.full((3, *fixtures.SHAPE), 0.5, np.float32)
    classifier = samplewise.SampleWiseSmoothedClassifier(_collapsing_classifier(), 2, GRID, noise_block=20)
    chosen = {}
    for rule in ("agree", "radius"):
        answers = classifier.certify_batch(images, n0=20, n=200, alpha=0.01, seed=3, n_select=40, sigma_select=rule)
        for answer in answers:
            assert answer.sigma == GRID[samplewise.choose_sigma(answer.selection_counts, GRID, 0.01, rule)]
        chosen[rule] = [answer.sigma for answer in answers]
        labels = [answer.label for answer in answers]
        assert labels == ([0] * 3 if rule == "agree" else [1] * 3)
    assert all(s <= 0.25 for s in chosen["agree"]) and chosen["radius"] == [1.0] * 3
    with pytest.raises(ValueError, match="sigma_select must be one of agree, radius"):
        classifier.certify_batch(images, n0=20, n=200, alpha=0.01, seed=3, sigma_select="largest")


@pytest.mark.parametrize("grid, message", [((), "empty"), ((0.25, 0.0), "sigma_grid level must be"),
                                           ((0.25, 0.25), "distinct"), ("0.25", "sequence"),
                                           ((0.25, float("nan")), "sigma_grid level")])
def test_bad_sigma_grids_are_refused(grid, message):
    with pytest.raises(ValueError, match=message):
        samplewise.SampleWiseSmoothedClassifier(fixtures.constant_classifier(), 10, grid)


def _linear_setup():
    w = np.ones(fixtures.D) / 4.0  # |w| = 1
    return w, fixtures.linear_classifier(w, -2.0)  # margin m = w.x - 2 on images of 4 x 4 pixels


def _images(margins):
    # Constant images with w.x = 4 * pixel, so the margin of pixel value v is 4 v - 2.
    return np.stack([np.full(fixtures.SHAPE, (m + 2.0) / 4.0, np.float32) for m in margins])


def test_sigma_is_chosen_on_its_own_draws_and_certified_on_the_fixed_sigma_draws():
    w, base = _linear_setup()
    margins = np.linspace(-0.9, 0.9, 24)
    images = _images(margins)
    classifier = samplewise.SampleWiseSmoothedClassifier(base, 2, GRID, noise_block=20)
    n_select, n0, n, alpha, seed = 40, 20, 200, 0.01, 11
    answers = classifier.certify_batch(images, n0=n0, n=n, alpha=alpha, seed=seed, n_select=n_select,
                                       keys=range(100, 124))
    leaky = []
    for key, image, answer in zip(range(100, 124), images, answers):
        fixed = {level: SmoothedClassifier(base, 2, level, noise_block=20) for level in GRID}
        selection = np.stack([fixed[level].sample_counts(image[None], n_select, seed=seed, keys=[key],
                                                         stream=noise.STREAM_SIGMA_SELECTION)[0] for level in GRID])
        np.testing.assert_array_equal(answer.selection_counts, selection)
        assert answer.sigma == GRID[samplewise.choose_sigma(selection, GRID, alpha)]
        reference = fixed[answer.sigma].certify_batch(image[None], n0=n0, n=n, alpha=alpha, seed=seed, keys=[key])[0]
        np.testing.assert_array_equal(answer.certificate.counts, reference.counts)
        np.testing.assert_array_equal(answer.certificate.selection_counts, reference.selection_counts)
        assert (answer.certificate.label, answer.certificate.radius) == (reference.label, reference.radius)
        # What a leaky implementation would pick: sigma chosen on the estimation draws that then give the bound.
        estimation = np.stack([fixed[level].sample_counts(image[None], n, seed=seed, keys=[key],
                                                          stream=noise.STREAM_ESTIMATION)[0] for level in GRID])
        leaky.append(GRID[samplewise.choose_sigma(estimation, GRID, alpha)])
    chosen = [answer.sigma for answer in answers]
    assert len(set(chosen)) >= 2  # the margins spread the choices over the grid
    assert chosen != leaky  # so the checks above would catch selection on the estimation draws


def test_the_bound_at_the_chosen_sigma_covers_the_true_probability():
    # p_A(sigma) of the linear classifier is Phi(|m| / sigma) (|w| = 1); the per-image bound at the chosen sigma
    # must miss it at most alpha of the time. 600 images (keys), alpha = 0.1: misses are at most Binomial(600, 0.1)
    # (Clopper-Pearson is conservative), so more than its 0.999 quantile fails.
    w, base = _linear_setup()
    rng = np.random.default_rng(0)
    margins = rng.uniform(0.02, 0.6, size=600) * rng.choice([-1, 1], size=600)
    classifier = samplewise.SampleWiseSmoothedClassifier(base, 2, GRID, noise_block=50)
    alpha = 0.1
    answers = classifier.certify_batch(_images(margins), n0=50, n=100, alpha=alpha, seed=3, n_select=50)
    misses = decided = 0
    for margin, answer in zip(margins, answers):
        certificate = answer.certificate
        if certificate.label == stats.ABSTAIN:
            continue
        decided += 1
        p_one = scipy_stats.norm.cdf(margin / answer.sigma)
        p_a = p_one if certificate.label == 1 else 1 - p_one
        misses += certificate.p_a_lower > p_a
    assert decided > 300
    assert misses <= scipy_stats.binom.ppf(0.999, decided, alpha), (misses, decided)
    assert len({answer.sigma for answer in answers}) >= 3


def test_samplewise_certification_is_seeded_and_refuses_bad_arguments():
    _, base = _linear_setup()
    classifier = samplewise.SampleWiseSmoothedClassifier(base, 2, GRID, noise_block=20)
    images = _images([0.3, -0.2])
    first = classifier.certify_batch(images, n0=20, n=100, alpha=0.01, seed=5, n_select=20)
    second = classifier.certify_batch(images, n0=20, n=100, alpha=0.01, seed=5, n_select=20)
    for a, b in zip(first, second):
        assert a.sigma == b.sigma and np.array_equal(a.certificate.counts, b.certificate.counts)
    for kwargs, message in [(dict(n_select=0), "n_select"), (dict(alpha=1.5), "alpha"), (dict(n=1), "too small"),
                            (dict(method="best"), "method")]:
        with pytest.raises(ValueError, match=message):
            classifier.iter_certify(zip([0], images), **{"n0": 20, "n": 100, "alpha": 0.01, **kwargs})
    with pytest.raises(ValueError, match="image"):
        classifier.certify_batch(np.zeros((2, 5, 5, 1), np.float32), n0=20, n=100, alpha=0.01, seed=0)


def test_coincident_images_of_different_sigma_get_no_radius_and_are_flagged():
    points = np.array([[0.0, 0.0], [0.0, 0.0], [3.0, 0.0], [3.0, 0.0]])
    sigmas = np.array([0.25, 0.5, 0.25, 0.25])  # 0 and 1 clash; 2 and 3 coincide at one sigma (no clash)
    radii = np.array([0.5, 0.5, 0.5, 0.5])
    for method in samplewise.ALLOCATIONS:
        allocated = samplewise.allocate_radii(points, radii, sigmas, method)
        assert allocated[0] == allocated[1] == 0.0 and np.array_equal(allocated[2:], [0.5, 0.5])
    np.testing.assert_array_equal(samplewise.coincident_conflicts(points, sigmas), [True, True, False, False])


@pytest.mark.parametrize("trial", range(10))
def test_tight_allocations_stay_feasible_in_floating_point(trial):
    # Many binding pairs at awkward distances: every constraint the LP or the greedy pass meets with equality is
    # where rounding could leave a pair an ulp over; the repair must leave none.
    rng = np.random.default_rng(500 + trial)
    points = rng.normal(size=(60, 2)) * 0.3
    radii = rng.uniform(0.5, 3.0, size=60)
    sigmas = rng.choice([0.12, 0.25, 0.5, 1.0], size=60)
    for method in samplewise.ALLOCATIONS:
        allocated = samplewise.allocate_radii(points, radii, sigmas, method)
        i, j, d = samplewise.conflicting_pairs(points, radii, sigmas)
        assert np.all(allocated[i] + allocated[j] <= d * SLACK)
        _feasible(points, radii, sigmas, allocated)
