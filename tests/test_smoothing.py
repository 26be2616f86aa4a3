"""SmoothedClassifier: PREDICT and CERTIFY on base classifiers with known behaviour under noise."""

import os

import numpy as np
import pytest
from scipy import stats as st

import fixtures
from tfsmooth import ABSTAIN, SmoothedClassifier, models, noise


@pytest.fixture(scope="module")
def constant():
    return SmoothedClassifier(fixtures.constant_classifier(3, 10), 10, 0.5)


@pytest.fixture(scope="module")
def tied():
    return SmoothedClassifier(fixtures.tied_classifier(), 2, 0.25)


def test_certify_constant_classifier_bound_is_alpha_to_the_one_over_n(constant):
    cert = constant.certify(fixtures.half_image(), n0=10, n=1000, alpha=0.001, batch_size=300, seed=0)
    # k = n = 1000, so p_a_lower = 0.001 ** (1 / 1000) and radius = sigma * Phi^-1(p_a_lower).
    assert cert.label == 3
    assert cert.counts.tolist() == [0, 0, 0, 1000, 0, 0, 0, 0, 0, 0]
    assert cert.selection_counts.sum() == 10
    assert cert.p_a_lower == pytest.approx(0.001 ** (1 / 1000), rel=1e-12)
    assert cert.radius == pytest.approx(0.5 * st.norm.ppf(0.001 ** (1 / 1000)), rel=1e-12)


def test_predict_constant_classifier_returns_its_label(constant):
    assert constant.predict(fixtures.half_image(), n=100, alpha=0.001, batch_size=100, seed=1) == 3


def test_certify_tied_classifier_abstains(tied):
    # P(f = 0) = P(f = 1) = 1/2: p_a_lower >= 1/2 would need the bound to fail (probability <= alpha).
    certs = tied.certify_batch(np.stack([fixtures.half_image()] * 20), n0=100, n=2000, alpha=0.001,
                               batch_size=1000, seed=7)
    assert all(c.label == ABSTAIN and c.radius == 0.0 and c.p_a_lower < 0.5 for c in certs)


def test_predict_tied_classifier_abstains(tied):
    preds = tied.predict_batch(np.stack([fixtures.half_image()] * 20), n=2000, alpha=0.001, batch_size=1000, seed=7)
    assert [p.label for p in preds] == [ABSTAIN] * 20
    # Counts are those of fair coin flips: each within 5 sd of 1000 (sd = sqrt(2000)/2 = 22.4).
    assert all(abs(p.counts[0] - 1000) < 112 for p in preds)


def test_linear_classifier_bound_covers_true_probability_in_at_least_one_minus_alpha_of_trials():
    # f(x) = 1 iff w.x + b > 0, so p_A = Phi((w.x + b) / (sigma |w|)) (tests/fixtures.py).
    rng = np.random.default_rng(0)
    w = rng.normal(size=fixtures.D)
    x = fixtures.half_image()
    sigma = 0.5
    b = 1.0 * sigma * np.linalg.norm(w) - float(w @ x.reshape(-1))  # margin = sigma |w|: p_A = Phi(1) = 0.8413
    p_a = st.norm.cdf(1.0)
    smoothed = SmoothedClassifier(fixtures.linear_classifier(w, b), 2, sigma)
    trials, alpha, n = 400, 0.05, 400
    # One call, 400 independent trials: each key gets its own noise (tfsmooth.noise).
    certs = smoothed.certify_batch(np.stack([x] * trials), n0=20, n=n, alpha=alpha, batch_size=2000, seed=11)
    k = np.array([c.counts[1] for c in certs])
    # The counts are Binomial(n, p_A): their mean over 400 trials is within 5 standard errors of n p_A.
    assert abs(k.mean() - n * p_a) < 5 * np.sqrt(n * p_a * (1 - p_a) / trials)
    # The bound is on the probability of c_A, the selection draws' top class (class 1 or, rarely, class 0).
    true_p = [p_a if np.argmax(c.selection_counts) == 1 else 1 - p_a for c in certs]
    misses = sum(c.p_a_lower > p for c, p in zip(certs, true_p))
    # Each trial misses with probability <= alpha (Clopper-Pearson is conservative). Under the worst case
    # Binomial(400, 0.05) (mean 20, sd 4.36), P(misses > 41) < 1e-4: a wrong bound (e.g. the point estimate,
    # missing about half the time) fails this, a correct one passes except with probability < 1e-4.
    assert st.binom.sf(41, trials, alpha) < 1e-4
    assert misses <= 41


def test_same_seed_same_counts_regardless_of_batch_size(tied):
    images = np.stack([fixtures.half_image()] * 3)
    a = tied.sample_counts(images, 750, batch_size=200, seed=5)
    b = tied.sample_counts(images, 750, batch_size=1000, seed=5)
    c = tied.sample_counts(images, 750, batch_size=1000, seed=6)
    assert a.tolist() == b.tolist()
    assert a.sum(axis=1).tolist() == [750, 750, 750]
    assert a.tolist() != c.tolist()


def test_single_certify_equals_batch_entry_with_key_zero(tied):
    x = fixtures.half_image()
    single = tied.certify(x, n0=50, n=500, alpha=0.01, batch_size=100, seed=3)
    batch = tied.certify_batch(np.stack([x, x]), n0=50, n=500, alpha=0.01, batch_size=400, seed=3, keys=[5, 0])
    assert single.counts.tolist() == batch[1].counts.tolist()
    assert single.selection_counts.tolist() == batch[1].selection_counts.tolist()
    assert batch[0].counts.tolist() != batch[1].counts.tolist()


def test_selection_and_estimation_draws_are_independent(tied):
    # With the tied classifier each count is Binomial(n, 1/2) of its own draws. Reused draws would make the
    # selection and estimation counts of an image equal (correlation 1); independent ones have correlation
    # about N(0, 1/300): |r| < 0.25 is a 4.3 sd bound.
    certs = tied.certify_batch(np.stack([fixtures.half_image()] * 300), n0=100, n=100, alpha=0.1,
                               batch_size=3000, seed=9)
    sel = np.array([c.selection_counts[0] for c in certs])
    est = np.array([c.counts[0] for c in certs])
    assert abs(np.corrcoef(sel, est)[0, 1]) < 0.25
    assert np.mean(sel == est) < 0.2  # P(two independent Binomial(100, 1/2) are equal) = 0.056


def test_noise_blocks_have_requested_sigma_and_distinct_streams():
    seeds = noise.block_seeds(4, [0, 0, 1], [noise.STREAM_SELECTION, noise.STREAM_ESTIMATION, noise.STREAM_SELECTION],
                              [0, 0, 0])
    blocks = noise.gaussian_blocks(seeds, 200, fixtures.SHAPE, 0.3).numpy()
    assert blocks.shape == (3, 200, 4, 4, 1)
    # 3,200 draws per block: sample sd within 5% of sigma (relative se = 1/sqrt(2 * 3200) = 1.25%).
    assert np.allclose(blocks.reshape(3, -1).std(axis=1), 0.3, rtol=0.05)
    assert not np.allclose(blocks[0], blocks[1]) and not np.allclose(blocks[0], blocks[2])


@pytest.mark.parametrize("kwargs, message", [
    (dict(n0=0), "n0"),
    (dict(n=9), "too small to ever certify"),  # alpha = 0.001 needs n >= 10
    (dict(alpha=1.0), "alpha"),
    (dict(alpha=0.0), "alpha"),
    (dict(batch_size=0), "batch_size"),
    (dict(seed=-1), "seed"),
    (dict(x=np.full((4, 4), 0.5, np.float32)), "shape"),
    (dict(x=np.full((5, 4, 1), 0.5, np.float32)), "base model expects"),
    (dict(x=np.full((4, 4, 1), 1.5, np.float32)), r"\[0, 1\]"),
    (dict(x=np.full((4, 4, 1), np.nan, np.float32)), "NaN"),
])
def test_certify_rejects_bad_arguments(constant, kwargs, message):
    args = dict(x=fixtures.half_image(), n0=10, n=100, alpha=0.001, batch_size=100, seed=0)
    args.update(kwargs)
    with pytest.raises(ValueError, match=message):
        constant.certify(**args)


def test_predict_rejects_n_too_small_to_decide(constant):
    with pytest.raises(ValueError, match="n=10 is too small to ever predict"):
        constant.predict(fixtures.half_image(), n=10, alpha=0.001, batch_size=10, seed=0)
    assert constant.predict(fixtures.half_image(), n=11, alpha=0.001, batch_size=10, seed=0) == 3


def test_constructor_rejects_bad_sigma_and_wrong_num_classes():
    with pytest.raises(ValueError, match="sigma"):
        SmoothedClassifier(fixtures.tied_classifier(), 2, 0.0)
    with pytest.raises(ValueError, match="sigma"):
        SmoothedClassifier(fixtures.tied_classifier(), 2, -0.25)
    with pytest.raises(ValueError, match="num_classes=3"):
        SmoothedClassifier(fixtures.tied_classifier(), 3, 0.25)


def test_keys_are_validated(tied):
    images = np.stack([fixtures.half_image()] * 2)
    with pytest.raises(ValueError, match="keys"):
        tied.certify_batch(images, 10, 100, 0.01, 100, seed=0, keys=[0])
    with pytest.raises(ValueError, match="keys"):
        tied.certify_batch(images, 10, 100, 0.01, 100, seed=0, keys=[0, -2])


@pytest.mark.parametrize("batch_size", [50, 100, 300, 700])
def test_counts_do_not_depend_on_parallel_passes(batch_size):
    # Blocks are split between concurrent forward passes; each block's noise comes from its own seed, so
    # the counts are the same for any split, including more passes than blocks (empty groups).
    images = np.stack([fixtures.half_image()] * 3)
    counts = [SmoothedClassifier(fixtures.tied_classifier(), 2, 0.25, noise_block=50, parallel_passes=p)
              .sample_counts(images, 420, batch_size, seed=7) for p in (1, 2, 3)]
    np.testing.assert_array_equal(counts[0], counts[1])
    np.testing.assert_array_equal(counts[0], counts[2])
    assert counts[0].sum(axis=1).tolist() == [420] * 3 and 150 < counts[0][0, 0] < 270


def test_parallel_passes_with_a_single_block_per_pass_on_a_convolutional_model():
    # batch_size == noise_block: one block per pass, so no split (a conv on an empty batch fails in oneDNN).
    model = models.small_cnn(3, input_shape=(8, 8, 3))
    image = np.random.default_rng(0).uniform(size=(8, 8, 3)).astype(np.float32)
    counts = [SmoothedClassifier(model, 3, 0.25, noise_block=100, parallel_passes=p)
              .sample_counts(image[None], 250, 100, seed=1) for p in (1, 2)]
    np.testing.assert_array_equal(counts[0], counts[1])


def test_parallel_passes_default_and_validation():
    smoothed = SmoothedClassifier(fixtures.tied_classifier(), 2, 0.25)
    assert smoothed.parallel_passes == (2 if (os.cpu_count() or 1) >= 2 else 1)  # no GPU in CI
    with pytest.raises(ValueError, match="parallel_passes must be an integer >= 1"):
        SmoothedClassifier(fixtures.tied_classifier(), 2, 0.25, parallel_passes=0)
