"""Host statistics of PREDICT and CERTIFY (tfsmooth.stats) against closed forms and scipy."""

import math

import numpy as np
import pytest
from scipy import stats as st

from tfsmooth import stats


def test_clopper_pearson_all_successes_is_alpha_to_the_one_over_n():
    # k = n: Beta.ppf(alpha; n, 1) solves x**n = alpha, so the bound is alpha ** (1 / n).
    for n, alpha in [(1, 0.5), (10, 0.001), (100_000, 0.001), (37, 0.05)]:
        assert stats.clopper_pearson_lower(n, n, alpha) == pytest.approx(alpha ** (1 / n), rel=1e-12)


def test_clopper_pearson_zero_successes_is_zero():
    assert stats.clopper_pearson_lower(0, 50, 0.01) == 0.0


def test_clopper_pearson_matches_scipy_binomtest_one_sided_interval():
    # METHODS.md §1: the one-sided bound is binomtest(k, n, alternative="greater").proportion_ci(1 - alpha).low.
    for k, n, alpha in [(1, 10, 0.1), (7, 10, 0.001), (503, 1000, 0.05), (9990, 10_000, 0.001)]:
        expected = st.binomtest(k, n, alternative="greater").proportion_ci(confidence_level=1 - alpha).low
        assert stats.clopper_pearson_lower(k, n, alpha) == pytest.approx(expected, rel=1e-9)


def test_clopper_pearson_vectorized_equals_scalar():
    ks = np.array([0, 3, 10])
    bounds = stats.clopper_pearson_lower(ks, 10, 0.01)
    assert bounds.shape == (3,)
    assert [stats.clopper_pearson_lower(int(k), 10, 0.01) for k in ks] == pytest.approx(list(bounds))


@pytest.mark.parametrize("k, n, alpha, message", [
    (5, 10, 0.0, "alpha"), (5, 10, 1.0, "alpha"), (5, 10, float("nan"), "alpha"),
    (11, 10, 0.01, "k must be in"), (-1, 10, 0.01, "k must be in"), (0, 0, 0.01, "n must be"),
])
def test_clopper_pearson_rejects_bad_arguments(k, n, alpha, message):
    with pytest.raises(ValueError, match=message):
        stats.clopper_pearson_lower(k, n, alpha)


def test_binomial_p_value_closed_forms():
    # All n trials on one side: two-sided p = 2 * 2**-n; a perfect tie gives p = 1.
    assert stats.binomial_p_value(11, 0) == pytest.approx(2 * 2.0 ** -11)
    assert stats.binomial_p_value(5, 5) == pytest.approx(1.0)
    assert stats.binomial_p_value(0, 0) == 1.0
    with pytest.raises(ValueError, match="counts"):
        stats.binomial_p_value(-1, 3)


def test_radius_is_sigma_times_inverse_normal_cdf():
    assert stats.radius(0.25, 0.5) == 0.0
    # Phi(1.6448536) = 0.95.
    assert stats.radius(0.5, 0.95) == pytest.approx(0.5 * 1.6448536269514722)
    # Largest radius at n = 100,000, alpha = 0.001 is 3.81 sigma (METHODS.md §1).
    assert stats.radius(1.0, 0.001 ** (1 / 100_000)) == pytest.approx(3.81, abs=0.005)
    with pytest.raises(ValueError, match="sigma"):
        stats.radius(0.0, 0.9)


def test_radius_vectorized_equals_scalar():
    p = np.array([[0.5, 0.7], [0.9, 1 - 1e-9]])
    np.testing.assert_allclose(stats.radius(0.25, p), 0.25 * st.norm.ppf(p), rtol=1e-12)


@pytest.mark.parametrize("p_a_lower", [
    0.3,  # below 1/2 CERTIFY abstains: the formula would give a negative radius (-0.1311 at sigma 0.25)
    0.4999, float("nan"), 1.0, 1.2, -0.1, np.array([0.6, 0.3]), np.array([0.6, np.nan]), "0.9", None,
])
def test_radius_rejects_p_a_lower_outside_one_half_to_one(p_a_lower):
    with pytest.raises(ValueError, match=r"p_a_lower must be .*\[0\.5, 1\)"):
        stats.radius(0.25, p_a_lower)


def test_min_n_to_certify_is_first_n_with_alpha_root_at_least_half():
    # 0.001 ** (1/9) = 0.464 < 0.5 <= 0.001 ** (1/10) = 0.501.
    assert stats.min_n_to_certify(0.001) == 10
    # Exact power of two: 0.25 ** (1/2) = 0.5 is enough (p_a_lower = 0.5 is not an abstention).
    assert stats.min_n_to_certify(0.25) == 2
    for alpha in [0.1, 0.01, 0.001, 1e-6]:
        n = stats.min_n_to_certify(alpha)
        assert alpha ** (1 / n) >= 0.5 > alpha ** (1 / (n - 1))


def test_min_n_to_predict_is_eleven_at_alpha_one_in_a_thousand():
    # 2 * 2**-10 = 0.00195 > 0.001 >= 2 * 2**-11 = 0.000977 (METHODS.md §1).
    assert stats.min_n_to_predict(0.001) == 11


def test_certify_decision_uses_selection_argmax_and_estimation_count():
    selection = np.array([1, 8, 1])
    estimation = np.array([2, 97, 1])
    label, radius, p_a_lower = stats.certify_decision(selection, estimation, 0.5, 0.001)
    assert label == 1
    assert p_a_lower == pytest.approx(st.beta.ppf(0.001, 97, 4))
    assert radius == pytest.approx(0.5 * st.norm.ppf(p_a_lower))


def test_certify_decision_abstains_below_one_half_even_if_estimation_disagrees():
    # c_A comes from the selection draws only; here the estimation draws rarely see it.
    label, radius, p_a_lower = stats.certify_decision(np.array([9, 1]), np.array([30, 70]), 0.25, 0.001)
    assert (label, radius) == (stats.ABSTAIN, 0.0)
    assert p_a_lower < 0.5


def test_predict_decision_abstains_on_close_top_two():
    assert stats.predict_decision(np.array([50, 48, 2]), 0.001)[0] == stats.ABSTAIN
    label, p_value = stats.predict_decision(np.array([5, 95, 0]), 0.001)
    assert label == 1 and p_value == pytest.approx(st.binomtest(95, 100, 0.5).pvalue)


@pytest.mark.parametrize("selection, estimation, message", [
    ([5, 5], [0, 0], "estimation_counts must sum to >= 1"),  # n = 0 draws
    ([0, 0], [3, 7], "selection_counts must sum to >= 1"),
    ([5, 5], [-1, 11], "estimation_counts must be counts >= 0"),
    ([-1, 5], [3, 7], "selection_counts must be counts >= 0"),
    ([5, 5, 0], [3, 7], "same length"),
    ([5, 5], [[3, 7]], "estimation_counts must be a 1-D integer array"),
    ([5, 5], [3.0, 7.0], "estimation_counts must be a 1-D integer array"),
    ([], [3, 7], "selection_counts must be a 1-D integer array"),
])
def test_certify_decision_rejects_bad_counts_naming_the_argument(selection, estimation, message):
    with pytest.raises(ValueError, match=message):
        stats.certify_decision(np.array(selection), np.array(estimation), 0.25, 0.001)


def test_decisions_reject_bad_sigma_and_alpha():
    with pytest.raises(ValueError, match="sigma"):
        stats.certify_decision(np.array([0, 10]), np.array([0, 100]), 0.0, 0.001)
    with pytest.raises(ValueError, match="alpha"):
        stats.certify_decision(np.array([0, 10]), np.array([0, 100]), 0.25, 1.0)
    with pytest.raises(ValueError, match="alpha"):
        stats.predict_decision(np.array([5, 95]), 0.0)


@pytest.mark.parametrize("counts, message", [
    ([0, 0, 0], "counts must sum to >= 1"),
    ([-2, 12, 0], "counts must be counts >= 0"),
    ([[50, 48], [2, 0]], "counts must be a 1-D integer array"),
    ([], "counts must be a 1-D integer array"),
    ([50.0, 48.0], "counts must be a 1-D integer array"),
])
def test_predict_decision_rejects_bad_counts(counts, message):
    with pytest.raises(ValueError, match=message):
        stats.predict_decision(np.array(counts), 0.001)


def test_check_count_rejects_bool_float_and_small_values():
    for bad in [True, 2.0, 0, "3"]:
        with pytest.raises(ValueError, match="n0"):
            stats.check_count(bad, "n0")
    assert stats.check_count(np.int64(3), "n0") == 3
    assert math.isclose(stats.check_sigma(0.12), 0.12)
