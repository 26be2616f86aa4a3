"""Tests for the in-graph statistics of tfsmooth.export against the host statistics (tfsmooth.stats, scipy).

The export's answers must be conservative: the Clopper-Pearson bound and the radius never above the library's,
the p-value never below it (PREDICT answers when p <= alpha), for every n <= export.MAX_N and alpha in
export.ALPHA_RANGE (what ExportConfig accepts). The grids span that whole domain, with the places where
`tf.math.betainc` alone is wrong: near the mean of the beta distribution at large n (the old bound was 2.4e-7
above scipy's at n = 1e7, alpha = 0.49) and the end k = n. Each grid runs as one graph call.
"""

import math

import numpy as np
import pytest
import tensorflow as tf
from scipy import special as scipy_special
from scipy import stats as scipy_stats

from tfsmooth import export, stats

EPS = np.finfo(np.float64).eps
ALPHA_MIN, ALPHA_MAX = export.ALPHA_RANGE
# Several n per decade up to the largest n an export accepts (11: the smallest that predicts at alpha = 0.001).
N_GRID = sorted({1, 2, 3, 5, 10, 11, 20, 50, 100, 200, 500, 1_000, 2_000, 5_000, 10_000, 20_000, 50_000,
                 100_000, 200_000, 500_000, 1_000_000, 2_000_000, 3_000_000, 5_000_000, 7_000_000, export.MAX_N})
ALPHAS = (ALPHA_MIN, 1e-9, 1e-6, 1e-4, 0.001, 0.01, 0.05, 0.1, 0.25, 0.4, ALPHA_MAX)


def _successes_grid(n):
    """k near 0, around the median (within a few binomial standard deviations) and near n, and k = 0, k = n."""
    sd = math.sqrt(n) / 2
    near_median = {n // 2 + round(c * sd) for c in (-3, -1, -0.3, -0.1, 0, 0.1, 0.3, 1, 3)}
    return sorted(k for k in {0, 1, 2, 5, n // 100, *near_median, (n + 1) // 2, n - n // 100, n - 2, n - 1, n}
                  if 0 <= k <= n)


# ------------------------------------------------------------------------------------ the binomial tail
def test_binomial_tail_relative_error_is_within_a_quarter_of_the_safety_margin_even_near_the_mean():
    # The margins of the bound and the p-value assume the relative error of I_x(k, n - k + 1) is below
    # 16 eps (1 + (n + 1) ln(n + 1) + |ln I|) (`export._tail_error_bound`); measured: 1.64 eps (...) here, 1.99 on
    # random points. Asserted: 4 eps (...), a quarter of the margin. tf.math.betainc alone misses by 2.7e-3
    # (relative) at the mean at n = 1e7.
    rows = []
    for n in N_GRID:
        for k in _successes_grid(n):
            if k == 0:
                continue
            a, b = k, n - k + 1
            mean, sd = a / (a + b), math.sqrt(a * b / ((a + b) ** 2 * (a + b + 1)))
            z = np.concatenate([np.linspace(-9, 9, 37), [-1.001, -0.999, -0.3, -0.01, 0.01, 0.3, 0.999, 1.001]])
            rows += [(k, n, x) for x in np.unique(np.clip(mean + z * sd, 0.0, 1.0))]
    k, n, x = (np.array(v, np.float64) for v in zip(*rows))
    want = scipy_special.betainc(k, n - k + 1, x)
    got = tf.function(export._binomial_tail)(k, n, x).numpy()
    # Where scipy's reference is reliable (it underflows to 0 below ~1e-280) and the tail is relevant (>= alpha).
    checked = (want >= 1e-200) & (want <= 1 - 1e-9)
    assert checked.sum() > 10_000
    unit = EPS * (1 + (n + 1) * np.log(n + 1) + np.abs(np.log(np.where(checked, want, 1.0))))
    scaled = np.abs(got - want)[checked] / want[checked] / unit[checked]
    worst = np.argmax(scaled)
    assert scaled.max() <= 4.0, (scaled.max(), k[checked][worst], n[checked][worst], x[checked][worst])
    np.testing.assert_array_equal(got[want == 0.0] <= 1e-280, True)


# ------------------------------------------------------------------------------- Clopper-Pearson bound
def test_clopper_pearson_bound_is_never_above_scipy_and_at_most_1e_9_below_over_the_export_domain():
    grid = [(k, n, alpha) for n in N_GRID for k in _successes_grid(n) for alpha in ALPHAS]
    k, n, alpha = (np.array(v) for v in zip(*grid))
    host = np.zeros(len(grid))
    for value in ALPHAS:
        host[alpha == value] = stats.clopper_pearson_lower(k[alpha == value], n[alpha == value], value)
    graph = tf.function(export.tf_clopper_pearson_lower)(k, n, alpha).numpy()
    above = graph > host  # exact comparison: an anti-conservative bound by any amount fails
    assert not above.any(), [(k[i], n[i], alpha[i], graph[i] - host[i]) for i in np.flatnonzero(above)[:5]]
    assert np.max(host - graph) <= 1e-9  # measured: 1.1e-10, at n = 1e7 near the median with alpha = 0.49
    np.testing.assert_array_equal(graph[k == 0], 0.0)


def test_clopper_pearson_bound_near_the_median_at_the_largest_n():
    # The case of the issue: n = 1e7, k = n / 2, alpha = 0.49, where the old bisection on tf.math.betainc
    # returned 0.4999962271 against scipy's 0.4999959863 (2.4e-7 above).
    host = stats.clopper_pearson_lower(5_000_000, 10_000_000, 0.49)
    got = float(export.tf_clopper_pearson_lower(5_000_000, 10_000_000, 0.49))
    assert host - 1e-9 <= got <= host


def test_clopper_pearson_bound_hand_values():
    # k = 0: the bound is 0. k = n: I_x(n, 1) = x**n = alpha, so x = alpha**(1/n);
    # n = 10, alpha = 0.001: 10**-0.3 = 0.501187...
    got = export.tf_clopper_pearson_lower([0, 10, 100], [10, 10, 100], 0.001).numpy()
    want = np.array([0.0, 10 ** -0.3, 0.001 ** 0.01])
    assert np.all(got <= want)
    np.testing.assert_allclose(got, want, atol=1e-12)


# ------------------------------------------------------------------------------------------ p-value
def _p_value_grid():
    pairs = [(0, 0), (1, 0), (1, 1), (2, 1), (3, 1)]
    for total in N_GRID:
        sd = math.sqrt(total) / 2
        lows = {0, 1, 2, total // 4, total // 2, (total - 1) // 2,
                *(total // 2 - round(c * sd) for c in (0.05, 0.3, 0.7, 1, 2, 3, 5, 8, 12))}
        pairs += [(total - low, low) for low in lows if 0 <= low <= total - low]
    return pairs


def test_binomial_p_value_is_never_below_scipy_and_close_above_it_over_the_export_domain():
    pairs = _p_value_grid()
    n_a, n_b = (np.array(v) for v in zip(*pairs))
    host = np.array([stats.binomial_p_value(int(a), int(b)) for a, b in pairs])
    graph = tf.function(export.tf_binomial_p_value)(n_a, n_b).numpy()
    below = graph < host  # exact comparison: a p-value too small by any amount fails
    assert not below.any(), [(n_a[i], n_b[i], graph[i] - host[i]) for i in np.flatnonzero(below)[:5]]
    # Above by at most twice the margin: relative 36 eps (1 + (N + 1) ln(N + 1) + |ln p|), 1.3e-6 at N = 1e7.
    total = n_a + n_b
    tolerance = 36 * EPS * (1 + (total + 1) * np.log(total + 1) + np.abs(np.log(np.maximum(host, 1e-300))))
    assert np.all(graph <= host * (1 + tolerance)), np.max((graph - host) / np.maximum(host, 1e-300) / tolerance)
    assert np.all(graph <= 1.0) and np.all(graph[n_a == n_b] == 1.0)
    assert (host < 1e-200).any() and (host[total > 1_000_000] > 0.5).any()  # the grid spans the tails and the middle


def test_binomial_p_value_hand_values():
    # 10 of 10: 2 * 2**-10. 3 of 4: 2 * P(X <= 1) = 2 * (1 + 4) / 16 = 0.625. 5 vs 5 and 0 vs 0: 1.
    got = export.tf_binomial_p_value([10, 3, 5, 0], [0, 1, 5, 0]).numpy()
    want = np.array([2 * 2.0 ** -10, 0.625, 1.0, 1.0])
    assert np.all(got >= want)
    np.testing.assert_allclose(got, want, rtol=1e-12, atol=0)


def test_binomial_p_value_of_a_strong_prediction_does_not_underflow():
    # 200 of 200: 2 * 2**-200 = 1.2e-60, below float32's smallest value (1.4e-45) but a float64 (raised by the
    # margin, 16 eps (1 + 201 ln 201 + |ln 2**-199|) = 4.3e-12 relative).
    got = export.tf_binomial_p_value([200], [0]).numpy()
    assert got.dtype == np.float64 and 2.0 ** -199 <= got[0] <= 2.0 ** -199 * (1 + 1e-11)


# -------------------------------------------------------------------------------------------- radius
def test_radius_is_never_above_scipy_and_within_8_eps_below():
    rng = np.random.default_rng(0)
    p = np.concatenate([0.5 + rng.uniform(0, 0.5, 100_000), 1 - np.geomspace(1e-16, 0.5, 20_000),
                        0.5 + np.geomspace(1e-16, 1e-3, 2_000), [0.5, 0.6, 0.9, 0.999, 0.999_999, 1 - 1e-9]])
    p = p[(p >= 0.5) & (p < 1.0)]
    got = tf.function(export.tf_radius, reduce_retracing=True)(0.25, p).numpy()
    want = stats.radius(0.25, p)
    assert np.all(got <= want), np.max(got - want)
    assert np.all(got >= want * (1 - 8 * EPS))
    assert got[p == 0.5].tolist() == [0.0] * int(np.sum(p == 0.5))
    # Phi^-1(0.5) = 0 and Phi^-1(0.975) = 1.959964: radius 0.5 * 1.959964
    np.testing.assert_allclose(export.tf_radius(0.5, [0.5, 0.975]).numpy(), [0.0, 0.5 * 1.959964], atol=1e-6)


# ------------------------------------------------------------------------------------------ decisions
def test_certify_decision_breaks_ties_by_lowest_index_and_abstains_below_half():
    # Row 0: selection tie between classes 1 and 2 -> c_A = 1; 10/10 estimation draws on it,
    # p_a_lower = 0.001**0.1 = 0.501187 >= 0.5 -> label 1, radius 0.5 * Phi^-1(0.501187).
    # Row 1: 9/10 -> p_a_lower = Beta.ppf(0.001; 9, 2) = 0.3763 < 0.5 -> ABSTAIN, radius 0.
    selection = np.array([[0, 5, 5], [0, 5, 5]])
    estimation = np.array([[0, 10, 0], [0, 9, 1]])
    label, radius, p_a_lower = (t.numpy() for t in export.tf_certify_decision(selection, estimation, 0.5, 0.001))
    np.testing.assert_array_equal(label, [1, stats.ABSTAIN])
    np.testing.assert_allclose(p_a_lower, [10 ** -0.3, scipy_stats.beta.ppf(0.001, 9, 2)], atol=1e-12)
    np.testing.assert_allclose(radius, [0.5 * scipy_stats.norm.ppf(10 ** -0.3), 0.0], atol=1e-12)
    for row in range(2):
        lib_label, lib_radius, lib_p_a_lower = stats.certify_decision(selection[row], estimation[row], 0.5, 0.001)
        assert label[row] == lib_label and radius[row] <= lib_radius and p_a_lower[row] <= lib_p_a_lower
        assert radius[row] == pytest.approx(lib_radius, abs=1e-12)


def test_t_certify_decision_agrees_with_the_host_and_errs_on_the_safe_side_up_to_the_largest_n():
    # Ten classes, Dirichlet(0.3) probabilities (mass often spread over several classes), n up to MAX_N, and the
    # ends: unanimous estimation draws (p_b_upper from a count of 0) and a tie between c_A and the runner-up.
    rng = np.random.default_rng(11)
    rows = []
    for n in (11, 20, 100, 1_000, 10_000, 100_000, 1_000_000, export.MAX_N):
        for _ in range(12):
            p = rng.dirichlet(np.full(10, 0.3))
            rows.append((rng.multinomial(100, p), rng.multinomial(n, p)))
        rows.append((np.eye(10, dtype=np.int64)[3] * 100, np.eye(10, dtype=np.int64)[3] * n))
        rows.append((np.eye(10, dtype=np.int64)[0] * 100, np.r_[n // 2, n - n // 2, np.zeros(8, np.int64)]))
    selection, estimation = (np.stack(v) for v in zip(*rows))
    decide = tf.function(export.tf_t_certify_decision, reduce_retracing=True)
    worst = {"p_a_lower": 0.0, "p_b_upper": 0.0, "radius": 0.0}
    for alpha, split in [(1e-6, 0.5), (0.001, 0.5), (0.001, 0.1), (0.001, 0.9), (0.05, 0.3)]:
        label, radius, p_a, p_b, runner_up = (t.numpy() for t in decide(selection, estimation, 0.5, alpha, split))
        host = [stats.decide_certificate(s, e, 0.5, alpha, "t-certify", split) for s, e in rows]
        np.testing.assert_array_equal(runner_up, [d.runner_up for d in host])
        host_p_a, host_p_b = np.array([d.p_a_lower for d in host]), np.array([d.p_b_upper for d in host])
        host_radius = np.array([d.radius for d in host])
        assert np.all(p_a <= host_p_a) and np.all(p_b >= host_p_b)  # exact comparisons: conservative
        near_tie = np.abs(host_p_a - host_p_b) < 1e-8  # where a 1e-9 conservative shift may turn an answer off
        np.testing.assert_array_equal(label[~near_tie], np.array([d.label for d in host])[~near_tie])
        answered = (label != stats.ABSTAIN) & ~near_tie
        assert np.all(radius <= host_radius) and np.all(radius[label == stats.ABSTAIN] == 0.0)
        worst["p_a_lower"] = max(worst["p_a_lower"], np.max(host_p_a - p_a))
        worst["p_b_upper"] = max(worst["p_b_upper"], np.max(p_b - host_p_b))
        worst["radius"] = max(worst["radius"], np.max((host_radius - radius)[answered]))
    # Measured: 3.7e-11, 4.3e-11 and 1.5e-8 (sigma 0.5; the radius error is the bounds' times 1 / phi(ndtri(p))).
    assert worst["p_a_lower"] <= 1e-9 and worst["p_b_upper"] <= 1e-9, worst
    assert worst["radius"] <= 1e-7, worst


def test_predict_decision_tests_the_top_two_counts_not_the_top_count_out_of_n():
    # [60, 10, 30]: PREDICT tests n_A = 60 against n_A + n_B = 90 (the top two): p = 0.00206 <= 0.01 -> label 0.
    # A test of n_A = 60 out of n = 100 would give p = 0.057 > 0.01 and abstain.
    label, p_value = (t.numpy() for t in export.tf_predict_decision(np.array([[60, 10, 30]]), 0.01))
    np.testing.assert_allclose(p_value, [scipy_stats.binomtest(60, 90).pvalue], atol=1e-12, rtol=0)
    assert p_value[0] == pytest.approx(0.00206, abs=1e-5) and scipy_stats.binomtest(60, 100).pvalue > 0.05
    np.testing.assert_array_equal(label, [0])


def test_predict_decision_answers_only_when_p_value_at_most_alpha():
    # [0, 10, 0]: p = 2**-9 = 0.00195 -> answers 1 at alpha 0.002, abstains at 0.001.
    # [4, 4, 2]: tie of the top two, p = 1 -> abstains.
    counts = np.array([[0, 10, 0], [4, 4, 2]])
    label, p_value = (t.numpy() for t in export.tf_predict_decision(counts, 0.002))
    np.testing.assert_array_equal(label, [1, stats.ABSTAIN])
    np.testing.assert_allclose(p_value, [2.0 ** -9, 1.0], atol=1e-15)
    label, _ = export.tf_predict_decision(counts, 0.001)
    np.testing.assert_array_equal(label.numpy(), [stats.ABSTAIN, stats.ABSTAIN])


# ----------------------------------------------------------------------------------- the domain
@pytest.mark.parametrize("kwargs, fragment", [
    ({"n": export.MAX_N + 1}, r"n=10000001 is above the largest n .* use n <= 10,000,000"),
    ({"alpha": 0.5}, r"alpha=0.5 is outside .* use 1e-12 <= alpha <= 0.49"),
    ({"alpha": 1e-13}, r"alpha=1e-13 is outside .* use 1e-12 <= alpha <= 0.49"),
])
def test_export_config_refuses_n_and_alpha_outside_the_validated_domain(kwargs, fragment):
    arguments = dict(sigma=0.25, num_classes=4, image_shape=(8, 8, 3), n=100, alpha=0.01)
    arguments.update(kwargs)
    with pytest.raises(ValueError, match=fragment):
        export.ExportConfig(**arguments)


def test_export_config_accepts_the_ends_of_the_validated_domain():
    for n, alpha in ((export.MAX_N, ALPHA_MAX), (export.MAX_N, ALPHA_MIN), (100, ALPHA_MAX)):
        config = export.ExportConfig(sigma=0.25, num_classes=4, image_shape=(8, 8, 3), n=n, alpha=alpha)
        assert (config.n, config.alpha) == (n, alpha)
