"""Sequential certification (tfsmooth.sequential, SmoothedClassifier.certify_sequential): sound at any stopping time."""

import fixtures
import numpy as np
import pytest
from scipy import stats as scipy_stats

from tfsmooth import noise, sequential
from tfsmooth.smoothing import SmoothedClassifier

SIGMA, RADII = 0.25, (0.25, 0.5)
Q = scipy_stats.norm.cdf(np.array(RADII) / SIGMA)  # p_A thresholds of the targets: Phi(1), Phi(2)


def _decide(p, alpha, trials, n_max=12_800, naive=False, seed=0, design=2):
    """`sequential.simulate` at SIGMA and RADII; `naive` reuses a fixed-n bound at level alpha at every look."""
    return sequential.simulate(p, SIGMA, RADII, alpha, trials, n_max=n_max, seed=seed,
                               alpha_per_look=alpha if naive else None, design=design)


@pytest.mark.parametrize("design", sequential.DESIGNS)
@pytest.mark.parametrize("target", [0, 1])
def test_error_is_at_most_alpha_at_any_stopping_time_just_below_a_target(target, design):
    # p_A just below q_k: deciding r_k is an error. Over 1,500 seeded trials at alpha = 0.05 the errors are
    # stochastically below Binomial(1500, 0.05) (union bound over the looks), so more than its 0.999 quantile fails.
    alpha, trials = 0.05, 1500
    decided, used = _decide(Q[target] - 0.002, alpha, trials, seed=target, design=design)
    errors = int(np.sum(decided > target))
    assert errors <= scipy_stats.binom.ppf(0.999, trials, alpha), errors
    assert errors > 0 or target == 1  # near the boundary the test does decide wrongly now and then (not vacuous)
    assert np.all(used <= 12_800)


def test_reusing_a_fixed_n_bound_at_every_look_is_not_valid():
    # The same looks with alpha (not alpha / L) at each: "optional stopping" errs far more often than alpha.
    alpha, trials = 0.05, 1500
    decided, _ = _decide(Q[0] - 0.003, alpha, trials, naive=True, seed=7)
    assert np.sum(decided > 0) > scipy_stats.binom.ppf(0.999, trials, alpha)
    valid, _ = _decide(Q[0] - 0.003, alpha, trials, seed=7)
    assert np.sum(valid > 0) <= scipy_stats.binom.ppf(0.999, trials, alpha)


@pytest.mark.parametrize("design", sequential.DESIGNS)
def test_easy_images_stop_early_and_clear_ones_are_decided(design):
    decided, used = _decide(0.9999, 0.001, 200, n_max=100_000, design=design)
    assert np.all(decided == 2) and used.max() <= 1_600  # Phi(2) = 0.977: unanimous votes decide it at 400-1,600
    decided, used = _decide(Q[0] + 0.04, 0.001, 200, n_max=100_000, design=design)
    assert np.mean(decided == 1) > 0.95  # r_1 decided, r_2 (q = 0.977) out of reach: stopped by futility
    assert np.median(used) < 100_000
    decided, used = _decide(0.3, 0.001, 50, n_max=100_000, design=design)
    # hopeless: stops at the first look (design 2 pursues the prediction, a bound > 1/2, a look longer when the first
    # 100 draws happen to put p_A's 0.05-upper bound above 1/2)
    assert np.all(decided == 0) and np.mean(used == 100) >= 0.9 and used.max() <= 400


@pytest.mark.parametrize("p_a, probs, seed, decided_sum, used_sum", [
    (0.9, None, 1, 40, 30_000), (0.99, None, 2, 80, 100_800), (0.9987, None, 3, 80, 4_000_000),
    (0.9995, None, 4, 120, 1_497_600), (None, [0.8, 0.15] + [0.00625] * 8, 5, 0, 531_200),
    (None, [0.97, 0.02] + [0.00125] * 8, 6, 40, 3_643_200)])
def test_design_1_answers_as_session_11_s_code(p_a, probs, seed, decided_sum, used_sum):
    # Files written before designs existed resume under design 1: its decisions and n_used must be those of the
    # code that wrote them (commit 742ce6c^). The sums over 40 seeded trials, recorded by running that code
    # (`simulate` has not changed its draws): cohen at four p_A, t-certify (K = 10) on two class distributions.
    method = "cohen" if probs is None else "t-certify"
    decided, used = sequential.simulate(p_a, SIGMA, (0.25, 0.5, 0.75, 1.0), 0.001, 40, n_max=100_000, seed=seed,
                                        probs=probs, method=method, design=1)
    assert (int(decided.sum()), int(used.sum())) == (decided_sum, used_sum)


@pytest.mark.parametrize("method", ["cohen", "t-certify"])
def test_design_2_pursues_the_prediction_before_giving_up_on_the_first_target(method):
    # p_A = 0.6 at sigma = 0.25: r_1 = 0.25 (q = 0.841) is out of reach, but g's prediction (radius 0, a bound > 1/2)
    # is not: design 2 draws on until the image is certified at radius 0 (the r = 0 column of a table). Design 1
    # (kept for its files) stops at the first look when r_1 is out of reach and mostly abstains.
    probs = [0.6, 0.3] + [0.0125] * 8
    answers = {}
    for design in sequential.DESIGNS:
        predicted, used = 0, []
        rng = np.random.default_rng(design)
        for _ in range(100):
            test = sequential.SequentialTest(SIGMA, RADII, 0.001, 100, 100_000, method=method, num_classes=10,
                                             design=design)
            counts, drawn = np.zeros(10, np.int64), 0
            while not test.stopped:
                counts += rng.multinomial(test.next_n - drawn, probs)
                drawn = test.next_n
                test.update(counts[0], counts[1:].max())
            predicted += test.certifies and test.radius == 0.0
            used.append(test.n_used)
        answers[design] = predicted, np.median(used)
    assert answers[2][0] >= 95 and answers[2][1] < 10_000, answers
    assert answers[1][0] < 50 and answers[1][1] == 100, answers


def test_design_2_gives_up_on_images_the_budget_is_unlikely_to_decide():
    # r = 0.75 at sigma = 0.25 needs p_A >= Phi(3) = 0.99865. Just above it (p_A = 0.99885) design 1 draws to
    # n_max for a target it decides in ~1 % of the images; design 2's conditional power stops most far earlier.
    # Well above it (0.99935) both decide it, design 2 with fewer draws and at most a few percent less often.
    radii, q = (0.25, 0.5, 0.75), scipy_stats.norm.cdf(3.0)
    near = {d: sequential.simulate(q + 0.0002, SIGMA, radii, 0.001, 200, n_max=100_000, seed=1, design=d)
            for d in sequential.DESIGNS}
    assert np.all(near[1][1] == 100_000) and near[1][1].mean() > 2 * near[2][1].mean()
    assert np.mean(near[2][1] < 100_000) > 0.5
    clear = {d: sequential.simulate(q + 0.0007, SIGMA, radii, 0.001, 200, n_max=100_000, seed=1, design=d)
             for d in sequential.DESIGNS}
    assert np.mean(clear[1][0] == 3) > 0.97 and np.mean(clear[2][0] == 3) > 0.9
    assert clear[2][1].mean() < clear[1][1].mean()


@pytest.mark.parametrize("design, last_share, decided_at", [(1, 1 / 11, 12_800), (2, 100_000 / 312_000, 9_300)])
@pytest.mark.parametrize("method", ["cohen", "t-certify"])
def test_a_target_out_of_reach_within_the_budget_stops_the_image(method, design, last_share, decided_at):
    # sigma = 0.25, n_max = 100,000, alpha = 0.001: a unanimous vote's last bound (alpha_L = alpha / 11 in design 1,
    # alpha * 100,000 / sum of the 17 looks in design 2) reaches radius 0.934 / 0.943 (CERTIFY), so r = 1.0 is never
    # decided; the image stops at the look that decides 0.75 instead of drawing on to n_max.
    radii = (0.25, 0.5, 0.75, 1.0)
    looks, spending = sequential.design_schedule(100, 100_000, design=design)
    assert spending[-1] == pytest.approx(last_share, rel=1e-9) and spending.sum() == pytest.approx(1.0)
    reach = SIGMA * scipy_stats.norm.ppf(scipy_stats.beta.ppf(0.001 * last_share, 100_000, 1))
    assert 0.9 < reach < 1.0
    assert sequential.reachable_radius(0.001, SIGMA, 100, 100_000, design=design) == pytest.approx(reach, rel=1e-9)
    assert 0.75 < sequential.reachable_radius(0.001, SIGMA, 100, 100_000, method="t-certify", design=design) < 1.0
    test = sequential.SequentialTest(SIGMA, radii, 0.001, 100, 100_000, method=method, num_classes=10, design=design)
    while not test.stopped:
        test.update(test.next_n, 0)  # every draw to c_A
    assert test.radius == 0.75
    assert test.n_used == decided_at  # where 0.75 is decided (t-certify: its small runner-up bound makes up for alpha/2)
    decided, used = sequential.simulate(0.99999, SIGMA, radii, 0.001, 50, n_max=100_000, seed=4, design=design)
    assert np.all(decided == 3) and used.max() <= 25_600
    # the rule looks only at the budget: the same target with a larger budget is pursued (n_max = 10^6 reaches 1.0)
    big = sequential.SequentialTest(SIGMA, radii, 0.001, 100, 1_000_000, design=design)
    while not big.stopped:
        big.update(big.next_n, 0)
    assert big.radius == 1.0


def test_schedule_and_bad_arguments():
    assert sequential.look_schedule(100, 100_000) == (100, 200, 400, 800, 1600, 3200, 6400, 12800, 25600, 51200,
                                                      100_000)
    assert sequential.look_schedule(100, 100) == (100,)
    looks, spending = sequential.design_schedule(100, 100_000)  # design 2: x1.5 rounded up to whole blocks
    assert looks[:8] == (100, 200, 300, 500, 800, 1200, 1800, 2700) and looks[-2:] == (71_000, 100_000)
    assert len(looks) == 17 and all(n % 100 == 0 for n in looks)
    np.testing.assert_allclose(spending, np.array(looks) / sum(looks))  # alpha_l in proportion to n_l
    looks_1, spending_1 = sequential.design_schedule(100, 100_000, design=1)
    assert looks_1 == sequential.look_schedule(100, 100_000) and np.allclose(spending_1, 1 / 11)
    with pytest.raises(ValueError, match="design must be one of"):
        sequential.design_schedule(100, 100_000, design=3)
    with pytest.raises(ValueError, match="growth"):
        sequential.look_schedule(100, 1_000, growth=1.0)
    for kwargs, message in [(dict(radii=(0.5, 0.25)), "strictly increasing"), (dict(radii=(0.0, 0.5)), "radii"),
                            (dict(radii=()), "empty"), (dict(alpha=1.0), "alpha"), (dict(n_first=150), "multiple"),
                            (dict(n_max=50), "n_first must be <= n_max"), (dict(sigma=0.0), "sigma"),
                            (dict(radii=(0.75,), n_max=800), "too small to ever certify radius 0.75")]:
        args = {"sigma": SIGMA, "radii": RADII, "alpha": 0.001, "n_first": 100, "n_max": 10_000, **kwargs}
        with pytest.raises(ValueError, match=message):
            sequential.SequentialTest(**args)
    minimum = sequential.min_n_max(0.001, (0.75,), SIGMA)
    sequential.SequentialTest(SIGMA, (0.75,), 0.001, 100, minimum)  # accepted
    with pytest.raises(ValueError, match="too small"):
        sequential.SequentialTest(SIGMA, (0.75,), 0.001, 100, minimum // 2)


# --------------------------------------------------------------------------------- on a base classifier
def _linear(margin):
    w = np.ones(fixtures.D) / 4.0  # |w| = 1, so P(f(x + delta) = 1) = Phi(margin / sigma)
    image = np.full(fixtures.SHAPE, (margin + 2.0) / 4.0, np.float32)
    return fixtures.linear_classifier(w, -2.0), image


def test_certify_sequential_counts_are_the_fixed_n_prefix_and_seeded():
    base, _ = _linear(0.0)
    smoothed = SmoothedClassifier(base, 2, SIGMA, noise_block=100)
    images = [_linear(m)[1] for m in (0.6, 0.3, 0.05, -0.4)]
    answers = list(smoothed.iter_certify_sequential(zip([3, 8, 9, 11], images), n0=100, n_max=6_400, alpha=0.01,
                                                    radii=RADII, seed=4, group=3))
    again = list(smoothed.iter_certify_sequential(zip([3, 8, 9, 11], images), n0=100, n_max=6_400, alpha=0.01,
                                                  radii=RADII, seed=4, group=1, batch_size=300))
    for (key, answer), (_, other), image in zip(answers, again, images):
        fixed = smoothed.sample_counts(image[None], answer.n_used, seed=4, keys=[key], stream=noise.STREAM_ESTIMATION)
        np.testing.assert_array_equal(answer.counts, fixed[0])
        assert (answer.label, answer.radius, answer.n_used) == (other.label, other.radius, other.n_used)
        assert answer.n_used <= 6_400
    radii = [answer.radius for _, answer in answers]
    assert radii[0] == 0.5 and answers[0][1].n_used < 6_400  # p_A = Phi(2.4) = 0.992 > Phi(2): decided early
    assert answers[3][1].label == 0  # the other side of the boundary: class 0


def test_certify_sequential_bound_covers_on_the_linear_classifier():
    # Margins just below the first target's threshold (p_A = Phi(0.97) < Phi(1)): the radius 0.25 is wrong for
    # every image; 300 images (keys) at alpha = 0.1: errors at most the Binomial(300, 0.1) 0.999 quantile.
    base, _ = _linear(0.0)
    smoothed = SmoothedClassifier(base, 2, SIGMA, noise_block=100)
    image = _linear(0.97 * SIGMA)[1]
    answers = smoothed.iter_certify_sequential(((k, image) for k in range(300)), n0=100, n_max=3_200, alpha=0.1,
                                               radii=(0.25,), seed=1, group=100)
    errors = sum(answer.radius >= 0.25 for _, answer in answers)
    assert errors <= scipy_stats.binom.ppf(0.999, 300, 0.1)


def test_certify_sequential_refuses_bad_arguments():
    base, image = _linear(0.3)
    smoothed = SmoothedClassifier(base, 2, SIGMA, noise_block=100)
    for kwargs, message in [(dict(n_max=0), "n_max"), (dict(radii=(0.5, 0.5)), "strictly increasing"),
                            (dict(alpha=0.0), "alpha"), (dict(n_max=100, radii=(1.0,)), "too small"),
                            (dict(n_first=50), "multiple")]:
        with pytest.raises(ValueError, match=message):
            smoothed.certify_sequential(image, **{"n_max": 1_000, "radii": RADII, **kwargs})


def test_certify_cli_sequential_writes_n_used_and_analyze_reports_draws(sample_model, tmp_path):
    import json

    from click.testing import CliRunner

    from tfsmooth import results
    from tfsmooth.cli.main import cli

    out = tmp_path / "seq.tsv"
    args = ["certify", sample_model, "--dataset", "cifar10_sample", "--sigma", "0.25", "--skip",
            "200", "--alpha", "0.01", "--sequential", "--radii", "0.25,0.5", "--n-max", "1600", "--out", str(out)]
    result = CliRunner().invoke(cli, args)
    assert result.exit_code == 0, result.output
    rows = results.read_results(out)
    assert rows.kind == "certify" and len(rows) == 5 and np.all((rows.n_used >= 100) & (rows.n_used <= 1600))
    assert set(rows.radius.tolist()) <= {0.0, 0.25, 0.5}
    record = json.loads(open(str(out) + ".json").read())
    assert record["radii"] == [0.25, 0.5] and record["n"] == 1600 and record["n_first"] == 100
    assert record["sequential_design"] == 2
    again = CliRunner().invoke(cli, args)
    assert again.exit_code == 0 and "0 new rows" in again.output
    # design 1 (session 11's files: no sequential_design in the record) resumes only when asked for by name
    old = tmp_path / "seq_design1.tsv"
    first = CliRunner().invoke(cli, [*args[:-2], "--sequential-design", "1", "--out", str(old)])
    assert first.exit_code == 0, first.output
    assert "sequential_design" not in json.loads(open(str(old) + ".json").read())
    refused = CliRunner().invoke(cli, [*args[:-2], "--out", str(old)])
    assert refused.exit_code != 0 and "sequential_design" in refused.output, refused.output
    resumed = CliRunner().invoke(cli, [*args[:-2], "--sequential-design", "1", "--out", str(old)])
    assert resumed.exit_code == 0 and "0 new rows" in resumed.output, resumed.output
    old_rows = results.read_results(old)
    assert len(old_rows) == 5 and set(old_rows.radius.tolist()) <= {0.0, 0.25, 0.5}
    bad = CliRunner().invoke(cli, [*args[:-7], "--sequential-design", "1", "--out", str(tmp_path / "bad.tsv")])
    assert bad.exit_code != 0 and "--sequential-design is a setting of --sequential" in bad.output
    analyzed = CliRunner().invoke(cli, ["analyze", str(out)])
    assert analyzed.exit_code == 0 and "draws (total)" in analyzed.output
    assert str(int(rows.n_used.sum())) in analyzed.output
    for extra, message in [(["--radii", "0.5,0.25"], "strictly increasing"), (["--n-max", "200", "--radii", "1.0"],
                                                                              "too small"),
                           (["--method", "t-certify", "--alpha-split", "auto"], "not 'auto'"),
                           (["--sigma-grid", "0.25,0.5"], "does not combine with a sigma_grid")]:
        bad = CliRunner().invoke(cli, [*args[:-2], *extra, "--out", str(tmp_path / "bad.tsv")])
        assert bad.exit_code != 0 and message in bad.output and "Traceback" not in bad.output, bad.output
    assert "will not be decided" not in result.output  # 0.5 is reachable at n_max 1,600, alpha 0.01
    # a target beyond what a unanimous vote reaches at this budget is named (0.25 * Phi^-1 bound ~ 0.62 here)
    noted = CliRunner().invoke(cli, [*args[:-5], "0.25,0.5,0.75", "--n-max", "1600", "--max", "1",
                                     "--out", str(tmp_path / "noted.tsv")])
    assert noted.exit_code == 0 and "0.75 will not be decided" in noted.output, noted.output
    bad = CliRunner().invoke(cli, [*args[:-7], "--n-max", "100", "--out", str(tmp_path / "bad.tsv")])
    assert bad.exit_code != 0 and "--n-max is the budget of --sequential" in bad.output
    t_out = tmp_path / "seq_t.tsv"
    done = CliRunner().invoke(cli, [*args[:-2], "--method", "t-certify", "--out", str(t_out)])
    assert done.exit_code == 0, done.output
    t_rows = results.read_results(t_out)
    assert len(t_rows) == 5 and set(t_rows.radius.tolist()) <= {0.0, 0.25, 0.5}
    t_record = json.loads(open(str(t_out) + ".json").read())
    assert t_record["method"] == "t-certify" and t_record["alpha_split"] == 0.5 and t_record["radii"] == [0.25, 0.5]


# --------------------------------------------------------------------------------- the T-CERTIFY analogue
K = 10


def _probs(p_a, p_b):
    """Class probabilities: c_A = 0 with p_a, the runner-up 1 with p_b, the rest spread evenly (each below p_b)."""
    rest = (1.0 - p_a - p_b) / (K - 2)
    assert 0 <= rest < p_b
    return [p_a, p_b] + [rest] * (K - 2)


def _t_radius(p_a, p_b):
    return SIGMA / 2 * (scipy_stats.norm.ppf(p_a) - scipy_stats.norm.ppf(p_b))


@pytest.mark.parametrize("design", sequential.DESIGNS)
@pytest.mark.parametrize("target, p_a, p_b", [(0, 0.8, 0.1263), (1, 0.95, 0.0098)])
def test_t_certify_error_is_at_most_alpha_at_any_stopping_time_just_below_a_target(target, p_a, p_b, design):
    # True T-CERTIFY radius just below r_k: deciding r_k is an error. 1,500 seeded trials at alpha = 0.05 (split
    # 0.5): errors are stochastically below Binomial(1500, 0.05) by the union bound over both bounds and all looks.
    assert RADII[target] - 0.01 < _t_radius(p_a, p_b) < RADII[target]
    alpha, trials = 0.05, 1500
    decided, used = sequential.simulate(None, SIGMA, RADII, alpha, trials, n_max=12_800, seed=20 + target,
                                        probs=_probs(p_a, p_b), method="t-certify", design=design)
    errors = int(np.sum(decided > target))
    assert errors <= scipy_stats.binom.ppf(0.999, trials, alpha), errors
    assert errors > 0 or target == 1  # near the boundary the test does decide wrongly now and then (not vacuous)
    assert np.all(used <= 12_800)


def test_t_certify_reusing_fixed_n_bounds_at_every_look_is_not_valid():
    # Negative control: both bounds at their fixed-n levels (alpha_A, alpha_B) at each of 10 looks err far more often
    # than alpha; the valid test (alpha_A / L, alpha_B / L) stays within the acceptance region on the same counts.
    alpha, trials, probs = 0.05, 1500, _probs(0.8, 0.12417)  # true radius 0.2495, just below 0.25
    naive, _ = sequential.simulate(None, SIGMA, RADII, alpha, trials, n_max=51_200, seed=5, probs=probs,
                                   method="t-certify", alpha_per_look=alpha)
    valid, _ = sequential.simulate(None, SIGMA, RADII, alpha, trials, n_max=51_200, seed=5, probs=probs,
                                   method="t-certify")
    limit = scipy_stats.binom.ppf(0.999, trials, alpha)
    assert np.sum(naive > 0) > limit and np.sum(valid > 0) <= limit


@pytest.mark.parametrize("design", sequential.DESIGNS)
def test_t_certify_levels_and_bounds_look_by_look(design):
    test = sequential.SequentialTest(SIGMA, RADII, 0.001, 100, 1_600, method="t-certify", alpha_split=0.25,
                                     design=design)
    _, spending = sequential.design_schedule(100, 1_600, design=design)
    np.testing.assert_allclose(test.alpha_looks, 0.001 * 0.25 * spending)
    np.testing.assert_allclose(test.alpha_looks_b, 0.001 * 0.75 * spending)
    assert test.alpha_looks.sum() + test.alpha_looks_b.sum() == pytest.approx(0.001)
    uppers, lowers = [], []
    for look, (n, (count_a, count_b)) in enumerate(zip(test.looks, [(80, 12), (165, 25), (250, 38)])):
        test.update(count_a, count_b)
        uppers.append(float(scipy_stats.beta.ppf(1 - test.alpha_looks_b[look], count_b + 1, n - count_b)))
        lowers.append(float(scipy_stats.beta.ppf(test.alpha_looks[look], count_a, n - count_a + 1)))
    assert test.best_upper_b == pytest.approx(min(uppers), rel=1e-9)
    assert test.best_lower == pytest.approx(max(lowers), rel=1e-9)


@pytest.mark.parametrize("design", sequential.DESIGNS)
def test_t_certify_stops_early_when_a_real_runner_up_keeps_the_target_out_of_reach(design):
    # p_A = 0.7, p_B = 0.29: T-CERTIFY's radius 0.125 * (0.524 + 0.553) = 0.13 < 0.25; the runner-up's own lower
    # bound shows it after a few hundred draws (the (1 - p_A) / (K - 1) bound alone would draw to n_max).
    decided, used = sequential.simulate(None, SIGMA, RADII, 0.001, 30, n_max=100_000, seed=9,
                                        probs=[0.7, 0.29] + [0.00125] * 8, method="t-certify", design=design)
    assert np.all(decided == 0) and np.median(used) <= 800


@pytest.mark.parametrize("design", sequential.DESIGNS)
def test_t_certify_decides_radii_certify_cannot_when_the_runner_up_is_small(design):
    # p_A = 0.8, p_B = 0.03: CERTIFY's radius 0.25 * Phi^-1(0.8) = 0.21 < 0.25; T-CERTIFY's 0.34 >= 0.25.
    probs = _probs(0.8, 0.03)
    t_decided, t_used = sequential.simulate(None, SIGMA, RADII, 0.001, 100, n_max=100_000, seed=3, probs=probs,
                                            method="t-certify", design=design)
    c_decided, c_used = sequential.simulate(0.8, SIGMA, RADII, 0.001, 100, n_max=100_000, seed=3, design=design)
    assert np.all(c_decided == 0) and np.median(c_used) < 100_000  # CERTIFY: never, and stopped by futility
    assert np.mean(t_decided == 1) > 0.95 and np.median(t_used) < 100_000  # r_1 decided early, r_2 out of reach


@pytest.mark.parametrize("design", sequential.DESIGNS)
def test_t_certify_with_two_classes_is_certify_at_alpha_a(design):
    # With two classes the runner-up count is n - k: at split 1/2, U_l = 1 - L_l, and the T-CERTIFY radius is
    # CERTIFY's at alpha / 2 -- the same decisions, draws and futility stops, image for image.
    base, _ = _linear(0.0)
    smoothed = SmoothedClassifier(base, 2, SIGMA, noise_block=100)
    images = [_linear(m)[1] for m in (0.6, 0.3, 0.2, 0.05, -0.4)]
    keys = [1, 2, 3, 4, 5]
    t = list(smoothed.iter_certify_sequential(zip(keys, images), n0=100, n_max=6_400, alpha=0.02, radii=RADII,
                                              seed=2, method="t-certify", design=design))
    c = list(smoothed.iter_certify_sequential(zip(keys, images), n0=100, n_max=6_400, alpha=0.01, radii=RADII, seed=2,
                                              design=design))
    for (_, a), (_, b) in zip(t, c):
        assert (a.label, a.radius, a.n_used) == (b.label, b.radius, b.n_used)
        assert a.method == "t-certify" and b.method == "cohen"
        assert a.p_a_lower == pytest.approx(b.p_a_lower) and a.p_b_upper == pytest.approx(1 - a.p_a_lower)
    assert {answer.radius for _, answer in t} >= {0.5, 0.0}  # both ends reached: not a vacuous comparison


def test_t_certify_on_a_three_class_base_classifier_bounds_the_largest_other_count():
    # The runner-up bound the certificate reports can only be tighter than the last look's bound of the largest
    # count of another class (min over looks), and at most the cap.
    import keras

    from tfsmooth import stats

    rng = np.random.default_rng(3)
    model = keras.Sequential([keras.Input((8, 8, 3)), keras.layers.Flatten(), keras.layers.Dense(3)])
    model.set_weights([rng.normal(0, 0.3, (192, 3)).astype(np.float32), np.array([1.0, 0.0, -0.5], np.float32)])
    images = rng.uniform(size=(4, 8, 8, 3)).astype(np.float32)
    smoothed = SmoothedClassifier(model, 3, 0.5)  # logit noise ~ N(0, 2^2): the votes spread over the 3 classes
    answers = list(smoothed.iter_certify_sequential(zip(range(4), images), n0=100, n_max=3_200, alpha=0.01,
                                                    radii=(0.1, 0.2), seed=0, method="t-certify"))
    looks, spending = sequential.design_schedule(100, 3_200)
    bitten = 0
    for _, answer in answers:
        c_a = int(np.argmax(answer.selection_counts))
        other = int(np.max(np.delete(answer.counts, c_a)))
        level = 0.005 * spending[looks.index(answer.n_used)]
        last = float(stats.clopper_pearson_upper(other, answer.n_used, level))
        assert answer.p_b_upper <= min(last, 1 - answer.p_a_lower) + 1e-12
        bitten += answer.p_b_upper < 1 - answer.p_a_lower - 1e-6
    assert bitten >= 1  # a third class takes draws: the runner-up bound is below the cap somewhere


def test_t_certify_bad_arguments():
    for kwargs, message in [(dict(alpha_split="auto"), "not 'auto'|fixed alpha_split"),
                            (dict(alpha_split=1.0), "alpha_split must be a number in \\(0, 1\\)"), (dict(alpha_split=0.0), "alpha_split"),
                            (dict(method="bonferroni"), "method must be one of")]:
        args = {"sigma": SIGMA, "radii": RADII, "alpha": 0.001, "n_first": 100, "n_max": 10_000,
                "method": "t-certify", **kwargs}
        with pytest.raises(ValueError, match=message):
            sequential.SequentialTest(**args)
    test = sequential.SequentialTest(SIGMA, RADII, 0.001, 100, 10_000, method="t-certify")
    with pytest.raises(ValueError, match="needs count_b"):
        test.update(90)
    with pytest.raises(ValueError, match="needs count_b"):
        test.update(90, 20)  # more than the 10 draws left
    # T-CERTIFY spends half of alpha on p_A: its smallest budget is at least CERTIFY's.
    assert (sequential.min_n_max(0.001, (0.75,), SIGMA, method="t-certify")
            >= sequential.min_n_max(0.001, (0.75,), SIGMA))


@pytest.mark.parametrize("design", [1, 2])
@pytest.mark.parametrize("method", ["cohen", "t-certify"])
def test_levels_are_the_schedule_and_the_first_target_is_refused_just_beyond_reach(method, design):
    # The levels a test uses are alpha (times the split) times `design_schedule`'s shares, and they spend exactly alpha.
    n_max = 1_600
    looks, spending = sequential.design_schedule(100, n_max, design=design)
    test = sequential.SequentialTest(SIGMA, (0.25,), 0.001, 100, n_max, method=method, num_classes=10, design=design)
    split = 1.0 if method == "cohen" else 0.5
    assert test.looks == looks
    np.testing.assert_allclose(test.alpha_looks, 0.001 * split * spending, rtol=1e-12)
    assert test.alpha_looks.sum() + test.alpha_looks_b.sum() == pytest.approx(0.001, rel=1e-12)
    # r_1 is accepted just inside what a unanimous vote of n_max draws reaches at the last level, refused just beyond
    reach = sequential.reachable_radius(0.001, SIGMA, 100, n_max, method=method, design=design)
    sequential.SequentialTest(SIGMA, (reach * (1 - 1e-6),), 0.001, 100, n_max, method=method, num_classes=10,
                              design=design)
    with pytest.raises(ValueError, match="too small to ever certify"):
        sequential.SequentialTest(SIGMA, (reach * (1 + 1e-6),), 0.001, 100, n_max, method=method, num_classes=10,
                                  design=design)
