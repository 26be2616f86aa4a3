"""T-CERTIFY (Feng et al. 2020; METHODS.md §4): the runner-up bounded separately, alpha split between two bounds.

The guarantee tested: over the selection and the estimation draws, P(p_a_lower > p_{c_A} or
p_b_upper < max_{c != c_A} p_c) <= alpha (both bounds hold together with probability >= 1 - alpha, which is
what Theorem 1 needs; this is unconditional, so it also bounds P(answered and wrong)). Where the class
probabilities are known, the failure probability is computed *exactly* by enumerating every count vector of
the selection and the estimation draws (no Monte Carlo error), so a rule that is not level alpha fails on the
configuration constructed for it, deterministically.
"""

import itertools

import numpy as np
import pytest
import scipy.stats as st

import fixtures
from tfsmooth import smoothing, stats
from tfsmooth.smoothing import SmoothedClassifier
from tfsmooth.stats import ABSTAIN


def _compositions(n, k):
    """Every count vector of n draws over k classes: int64 [C(n + k - 1, k - 1), k]."""
    cuts = np.array(list(itertools.combinations(range(n + k - 1), k - 1)), np.int64).reshape(-1, k - 1)
    bars = np.concatenate([np.full((len(cuts), 1), -1), cuts, np.full((len(cuts), 1), n + k - 1)], axis=1)
    return np.diff(bars, axis=1) - 1


def _failed(decision, p, c_a):
    return decision.p_a_lower > p[c_a] or decision.p_b_upper < np.max(np.delete(p, c_a))


def _exact_failure(p, n0, n, alpha, decide, by_split=False):
    """Exact P(failure) of `decide(selection_counts, estimation_counts) -> (Decision, c_A)` under class probabilities p.

    Selection vectors that `decide` treats alike (same argmax and, with `by_split` (for "auto"), same chosen split)
    are grouped, so each estimation vector is decided once per group.
    """
    p = np.asarray(p, np.float64)
    selections, estimations = _compositions(n0, p.size), _compositions(n, p.size)
    w_estimation = st.multinomial.pmf(estimations, n, p)
    groups = {}
    for selection, weight in zip(selections, st.multinomial.pmf(selections, n0, p)):
        key = (int(np.argmax(selection)), stats.choose_alpha_split(selection, n, alpha) if by_split else None)
        total, _ = groups.get(key, (0.0, selection))
        groups[key] = (total + weight, selection)
    failure = 0.0
    for weight, selection in groups.values():
        for estimation, w in zip(estimations, w_estimation):
            decision, c_a = decide(selection, estimation)
            failure += weight * w * _failed(decision, p, c_a)
    return failure


def _t_certify(alpha, split):
    def decide(selection, estimation):
        return (stats.decide_certificate(selection, estimation, 1.0, alpha, "t-certify", split),
                int(np.argmax(selection)))
    return decide


# ------------------------------------------------------------------------------- exact level alpha
_CONFIGS = [
    ((0.34, 0.33, 0.33), 30, 0.2),  # three near-ties: runner-up picked among two equal classes
    ((0.4, 0.3, 0.3), 30, 0.2),
    ((0.5, 0.3, 0.2), 30, 0.3),
    ((0.45, 0.1, 0.45), 30, 0.2),  # the selection often picks class 2, a tie with class 0
    ((0.7, 0.15, 0.15), 30, 0.1),
    ((0.52, 0.4, 0.08), 100, 0.1),  # where maximizing over splits fails (below)
    ((0.5, 0.2, 0.2, 0.1), 20, 0.2),  # four classes
]
# "auto" decides each estimation vector once per chosen split: kept to the small three-class configurations.
_AUTO = [c for c in _CONFIGS if len(c[0]) == 3 and c[1] <= 30][:3]


@pytest.mark.parametrize("p, n, alpha, split", [c + (s,) for c in _CONFIGS for s in (0.5, 0.9)]
                         + [c + ("auto",) for c in _AUTO])
def test_t_certify_fails_with_exact_probability_at_most_alpha(p, n, alpha, split):
    failure = _exact_failure(p, 10, n, alpha, _t_certify(alpha, split), by_split=split == "auto")
    assert failure <= alpha, (failure, alpha)
    assert failure > 0.2 * alpha  # the bounds are not trivially loose (the check could fail)


def test_choosing_c_a_on_the_estimation_draws_is_not_level_alpha():
    # c_A = argmax of the same draws that bound it: among near-tied classes the largest count is biased up.
    p, n, alpha = (0.4, 0.3, 0.3), 30, 0.2

    def on_estimation(selection, estimation):
        return stats.decide_certificate(estimation, estimation, 1.0, alpha, "t-certify", 0.5), int(np.argmax(estimation))

    assert _exact_failure(p, 10, n, alpha, on_estimation) == pytest.approx(0.2578, abs=1e-4)  # > alpha
    assert _exact_failure(p, 10, n, alpha, _t_certify(alpha, 0.5)) == pytest.approx(0.0916, abs=1e-4)


def test_maximizing_the_radius_over_splits_at_full_alpha_is_not_level_alpha():
    # Feng et al. maximize over a grid of splits on the estimation draws. The failure event of each split grows
    # with its alpha_A and its alpha_B, so the union can reach max alpha_A + max alpha_B: with the grid {0.01, 0.99}
    # and p = (0.52, 0.40, 0.08), n = 100, the exact failure probability is 1.196 alpha.
    p, n, alpha = (0.52, 0.4, 0.08), 100, 0.1

    def best_split(selection, estimation):
        decisions = [stats.decide_certificate(selection, estimation, 1.0, alpha, "t-certify", s) for s in (0.01, 0.99)]
        # The split whose bounds separate most (the radius up to sigma / 2): the choice that maximizes R.
        margin = [st.norm.ppf(d.p_a_lower) - st.norm.ppf(d.p_b_upper) for d in decisions]
        return decisions[int(np.argmax(margin))], int(np.argmax(selection))

    failure = _exact_failure(p, 10, n, alpha, best_split)
    assert failure > 1.15 * alpha and failure == pytest.approx(0.11956, abs=1e-5)
    # The sound choice at the same configuration: a split fixed in advance. (The split chosen on the selection
    # draws, "auto", is checked at level alpha in test_t_certify_fails_with_exact_probability_at_most_alpha.)
    assert _exact_failure(p, 10, n, alpha, _t_certify(alpha, 0.5)) < 0.7 * alpha


# ----------------------------------------------------------------------- the runner-up on the same draws
def test_runner_up_bound_covers_the_true_runner_up_although_chosen_on_the_same_draws():
    # Proof in stats.decide_certificate: count(c_B) >= count(c*) and the upper bound is non-decreasing in the
    # count. Exactly: P(p_b_upper < p_B) <= alpha_B, with p_B shared by two classes (the choice matters most).
    p, n, alpha = np.array([0.4, 0.3, 0.3]), 30, 0.2
    estimations = _compositions(n, 3)
    weights = st.multinomial.pmf(estimations, n, p)
    selection = np.array([10, 0, 0])
    miss = sum(w for e, w in zip(estimations, weights)
               if stats.decide_certificate(selection, e, 1.0, alpha, "t-certify", 0.5).p_b_upper < 0.3)
    assert 0.0 < miss <= alpha / 2
    k = np.arange(n + 1)
    upper = stats.clopper_pearson_upper(k, n, 0.1)
    assert np.all(np.diff(upper) > 0)  # monotone in the count
    assert (st.binom.pmf(k, n, 0.3) * (upper < 0.3)).sum() <= 0.1  # and a valid bound for one fixed class


# ------------------------------------------------------------------- the pipeline, on a closed-form model
def test_t_certify_on_an_interval_classifier_misses_at_the_exact_rate():
    # Classes are the intervals of one projection: every p_c is a difference of Phi values (tests/fixtures.py).
    rng = np.random.default_rng(3)
    u = rng.normal(size=fixtures.D)
    x = fixtures.half_image()
    sigma, alpha, n0, n, trials = 0.5, 0.2, 10, 30, 3000
    scale = sigma * np.linalg.norm(u)
    mean = float(u @ x.reshape(-1))
    thresholds = mean + scale * np.array([-0.25, 0.55])  # p = (0.401, 0.308, 0.291)
    p = fixtures.interval_probabilities(u, thresholds, x, sigma)
    assert np.allclose(p, [0.4013, 0.3075, 0.2912], atol=1e-4)
    smoothed = SmoothedClassifier(fixtures.interval_classifier(u, thresholds), 3, sigma, noise_block=10)
    certs = smoothed.certify_batch(np.stack([x] * trials), n0=n0, n=n, alpha=alpha, batch_size=4000, seed=5,
                                   method="t-certify")
    counts = np.stack([c.counts for c in certs])
    # The counts are Multinomial(n, p): each class's mean within 5 standard errors (false failure ~1e-6 each).
    assert np.all(np.abs(counts.mean(axis=0) - n * p) < 5 * np.sqrt(n * p * (1 - p) / trials))
    q = _exact_failure(p, n0, n, alpha, _t_certify(alpha, 0.5))
    assert 0.05 < q <= alpha
    misses = sum(_failed(c, p, int(np.argmax(c.selection_counts))) for c in certs)
    # misses ~ Binomial(T, q), accepted between its 2.5e-5 quantiles (false failure <= 5e-5). A rule at level
    # 2 alpha, or with c_A from the estimation draws (exact rates above 0.25 here), is far outside.
    assert st.binom.ppf(2.5e-5, trials, q) <= misses <= st.binom.isf(2.5e-5, trials, q)
    for c in certs[:50]:
        others = c.counts.copy()
        others[int(np.argmax(c.selection_counts))] = -1
        assert c.runner_up == int(np.argmax(others)) and c.method == "t-certify" and c.alpha_a == alpha / 2


# ------------------------------------------------------------------------- decisions, computed by hand
def test_radius_identity_matches_the_issue_examples():
    assert stats.t_certify_radius(1.0, 0.6, 0.2) == pytest.approx(0.5475, abs=1e-4)
    assert stats.t_certify_radius(1.0, 0.9, 0.05) == pytest.approx(1.4632, abs=1e-4)
    assert stats.t_certify_radius(1.0, 0.5, 0.2) == pytest.approx(0.4208, abs=1e-4)
    assert stats.t_certify_radius(0.25, 0.8, 0.2) == pytest.approx(stats.radius(0.25, 0.8), rel=1e-12)
    for p_a, p_b in [(0.5, 0.6), (1.0, 0.1), (0.6, 0.0), (float("nan"), 0.1)]:
        with pytest.raises(ValueError, match="0 < p_b_upper <= p_a_lower < 1"):
            stats.t_certify_radius(1.0, p_a, p_b)


def test_decision_uses_selection_argmax_and_the_estimation_runner_up():
    selection, estimation = np.array([2, 7, 1, 0]), np.array([100, 600, 250, 50])
    d = stats.decide_certificate(selection, estimation, 0.5, 0.001, "t-certify")
    p_a = stats.clopper_pearson_lower(600, 1000, 0.0005)
    p_b = stats.clopper_pearson_upper(250, 1000, 0.0005)
    assert (d.label, d.runner_up, d.alpha_a) == (1, 2, 0.0005)
    assert d.p_a_lower == p_a and d.p_b_upper == p_b
    assert d.radius == pytest.approx(0.25 * (st.norm.ppf(p_a) - st.norm.ppf(p_b)), rel=1e-12)
    # CERTIFY on the same counts: p_a_lower 0.56 at the full alpha, radius 0.5 * Phi^-1(0.56) = 0.07; T-CERTIFY's
    # (p_b_upper 0.29) is 0.25 * (0.12 + 0.55) = 0.17.
    cohen = stats.decide_certificate(selection, estimation, 0.5, 0.001, "cohen")
    assert cohen.label == 1 and d.radius > 2 * cohen.radius and cohen.p_b_upper == 1 - cohen.p_a_lower


def test_t_certify_answers_below_one_half_where_certify_abstains():
    selection, estimation = np.array([50, 30, 20]), np.array([4800, 2000, 3200]) * 10
    d = stats.decide_certificate(selection, estimation, 1.0, 0.001, "t-certify")
    assert d.p_a_lower < 0.5 and d.label == 0 and d.radius > 0.1 and d.runner_up == 2
    assert stats.decide_certificate(selection, estimation, 1.0, 0.001, "cohen").label == ABSTAIN


def test_t_certify_abstains_when_the_bounds_do_not_separate_and_breaks_ties_by_lowest_index():
    d = stats.decide_certificate(np.array([5, 5, 0]), np.array([40, 40, 20]), 1.0, 0.01, "t-certify")
    assert (d.label, d.radius, d.runner_up) == (ABSTAIN, 0.0, 1)  # c_A = 0 (tie), runner-up 1 (tie with 0's count)
    d = stats.decide_certificate(np.array([0, 9, 1]), np.array([10, 900, 10]), 1.0, 0.01, "t-certify")
    assert d.runner_up == 0  # tie between classes 0 and 2: the lowest index


def test_t_certify_is_never_below_certify_at_alpha_a():
    rng = np.random.default_rng(0)
    for _ in range(300):
        k = int(rng.integers(2, 11))
        p = rng.dirichlet(np.full(k, 0.5))
        n = int(rng.choice([50, 1000, 100_000]))
        selection, estimation = rng.multinomial(100, p), rng.multinomial(n, p)
        split = float(rng.choice([0.1, 0.5, 0.9]))
        tight = stats.decide_certificate(selection, estimation, 0.25, 0.001, "t-certify", split)
        at_alpha_a = stats.decide_certificate(selection, estimation, 0.25, 0.001 * split, "cohen")
        assert tight.p_a_lower == at_alpha_a.p_a_lower and tight.p_b_upper <= 1 - tight.p_a_lower
        if at_alpha_a.label != ABSTAIN and at_alpha_a.radius > 0:
            assert tight.label == at_alpha_a.label and tight.radius >= at_alpha_a.radius * (1 - 1e-12)


def test_two_classes_reduce_to_certify_at_alpha_a_when_alpha_b_is_not_larger():
    for k_a in (60, 80, 99, 100):
        selection, estimation = np.array([10, 0]), np.array([k_a, 100 - k_a])
        for split in (0.5, 0.7):
            tight = stats.decide_certificate(selection, estimation, 0.5, 0.01, "t-certify", split)
            cohen = stats.decide_certificate(selection, estimation, 0.5, 0.01 * split, "cohen")
            assert tight.label == cohen.label
            assert tight.radius == pytest.approx(cohen.radius, rel=1e-9, abs=1e-12)
            assert tight.p_b_upper == pytest.approx(1 - tight.p_a_lower, rel=1e-12)  # the cap binds: the runner-up's bound is weaker


def test_split_one_is_certify_and_auto_depends_on_the_selection_draws_only():
    selection, estimation = np.array([60, 25, 15]), np.array([5500, 3000, 1500])
    assert stats.decide_certificate(selection, estimation, 1.0, 0.001, "t-certify", 1.0) == \
        stats.decide_certificate(selection, estimation, 1.0, 0.001, "cohen")
    split = stats.choose_alpha_split(selection, 10_000, 0.001)
    assert split in stats.ALPHA_SPLIT_GRID
    for other in (np.array([9000, 500, 500]), np.array([4000, 3000, 3000])):
        d = stats.decide_certificate(selection, other, 1.0, 0.001, "t-certify", "auto")
        assert d.alpha_a == pytest.approx(0.001 * split)
    # Unanimous selection draws predict a runner-up count of 0, whose bound is no better than the cap: CERTIFY.
    for n in (10_000, 100_000):
        assert stats.choose_alpha_split(np.array([100] + [0] * 9), n, 0.001) == 1.0


def test_recertify_decides_another_method_on_the_same_counts():
    smoothed = SmoothedClassifier(fixtures.constant_classifier(3, 10), 10, 0.25, noise_block=10)
    cert = smoothed.certify(fixtures.half_image(), n0=10, n=100, alpha=0.01, batch_size=100, seed=1)
    tight = smoothing.recertify(cert, 0.25, 0.01, "t-certify")
    direct = smoothed.certify(fixtures.half_image(), n0=10, n=100, alpha=0.01, batch_size=100, seed=1,
                              method="t-certify")
    assert (tight.label, tight.radius, tight.p_b_upper, tight.method) == \
        (direct.label, direct.radius, direct.p_b_upper, "t-certify")
    np.testing.assert_array_equal(tight.counts, cert.counts)
    assert cert.method == "cohen" and cert.p_b_upper == 1 - cert.p_a_lower and cert.runner_up == -1


@pytest.mark.parametrize("kwargs, message", [
    (dict(method="t_certify"), "method must be one of cohen, t-certify"),
    (dict(method="t-certify", alpha_split=0.0), "alpha_split must be a number in"),
    (dict(method="t-certify", alpha_split=1.5), "alpha_split must be a number in"),
    (dict(method="t-certify", alpha_split="best"), "alpha_split must be a number in"),
    (dict(method="t-certify", alpha_split=True), "alpha_split must be a number in"),
    (dict(method="t-certify", n=10), "too small to ever certify with t-certify"),
])
def test_bad_arguments_name_the_argument(kwargs, message):
    smoothed = SmoothedClassifier(fixtures.constant_classifier(3, 10), 10, 0.25, noise_block=10)
    args = dict(n0=10, n=100, alpha=0.001, batch_size=100, seed=0)
    args.update(kwargs)
    with pytest.raises(ValueError, match=message):
        smoothed.certify(fixtures.half_image(), **args)


def test_t_certify_needs_two_classes_and_valid_counts():
    with pytest.raises(ValueError, match="needs >= 2 classes"):
        stats.decide_certificate(np.array([5]), np.array([50]), 1.0, 0.01, "t-certify")
    with pytest.raises(ValueError, match="same length"):
        stats.decide_certificate(np.array([5, 1]), np.array([50, 1, 1]), 1.0, 0.01, "t-certify")
    assert stats.min_n_to_t_certify(0.001) == 11 and stats.min_n_to_t_certify(0.001, "auto") == 10
    # At the minimum n a unanimous vote answers; one draw fewer never can.
    n = stats.min_n_to_t_certify(0.001, 0.5)
    assert stats.decide_certificate(np.array([1, 0]), np.array([n, 0]), 1.0, 0.001, "t-certify").label == 0
    assert stats.decide_certificate(np.array([1, 0]), np.array([n - 1, 0]), 1.0, 0.001, "t-certify").label == ABSTAIN


@pytest.mark.parametrize("alpha", [1e-6, 0.001, 0.01, 0.05, 0.3])
@pytest.mark.parametrize("split", [0.01, 0.1, 0.5, 0.7, 0.9, 0.99, 1.0])
def test_min_n_is_where_a_unanimous_vote_first_answers_for_every_split(alpha, split):
    # With the cap p_b_upper <= 1 - p_a_lower, any p_a_lower > 1/2 answers: for splits above 1/2 that comes before
    # p_a_lower > 1 - alpha_B^(1/n) (alpha 0.001, split 0.99: n = 10, not 14).
    n = stats.min_n_to_t_certify(alpha, split)
    for k in (2, 3, 10):
        selection = np.eye(k, dtype=np.int64)[0] * 5
        assert stats.decide_certificate(selection, np.eye(k, dtype=np.int64)[0] * n, 1.0, alpha, "t-certify",
                                        split).label == 0
        if n > 1:
            assert stats.decide_certificate(selection, np.eye(k, dtype=np.int64)[0] * (n - 1), 1.0, alpha,
                                            "t-certify", split).label == ABSTAIN
    if split == 0.99 and alpha == 0.001:
        assert n == 10
