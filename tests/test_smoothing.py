"""SmoothedClassifier: PREDICT and CERTIFY on base classifiers with known behaviour under noise."""

import os

import numpy as np
import pytest
import tensorflow as tf
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


def test_linear_classifier_bound_misses_true_probability_at_the_exact_clopper_pearson_rate():
    # f(x) = 1 iff w.x + b > 0, so p_A = Phi((w.x + b) / (sigma |w|)) (tests/fixtures.py).
    rng = np.random.default_rng(0)
    w = rng.normal(size=fixtures.D)
    x = fixtures.half_image()
    sigma = 0.5
    b = 1.0 * sigma * np.linalg.norm(w) - float(w @ x.reshape(-1))  # margin = sigma |w|: p_A = Phi(1) = 0.8413
    p_a = st.norm.cdf(1.0)
    # noise_block 20: the n = 80 estimation draws span 4 blocks, so a reused block shows in the counts' spread.
    smoothed = SmoothedClassifier(fixtures.linear_classifier(w, b), 2, sigma, noise_block=20)
    trials, alpha, n0, n = 2000, 0.05, 20, 80
    # One call, 2000 independent trials: each key gets its own noise (tfsmooth.noise).
    certs = smoothed.certify_batch(np.stack([x] * trials), n0=n0, n=n, alpha=alpha, batch_size=4000, seed=11)
    k = np.array([c.counts[1] for c in certs])
    # The counts are Binomial(n, p_A). Mean: within 5 standard errors of n p_A (false failure 5.7e-7).
    assert abs(k.mean() - n * p_a) < 5 * np.sqrt(n * p_a * (1 - p_a) / trials)
    # Spread: (T - 1) s^2 / (n p_A (1 - p_A)) is about chi2(T - 1) (the binomial's excess kurtosis, 0.02, widens
    # it by 0.5%), accepted between its 2.5e-5 quantiles, [0.877, 1.133] (T - 1). Two of the four estimation
    # blocks repeating the other two would double it; a block index ignored would multiply it by 4.
    spread = (trials - 1) * k.var(ddof=1) / (n * p_a * (1 - p_a))
    assert st.chi2.ppf(2.5e-5, trials - 1) < spread < st.chi2.isf(2.5e-5, trials - 1)
    # Exact miss rate q of the bound, with Clopper-Pearson computed here from scipy's beta quantile. The
    # estimation count K ~ Binomial(n, p_A) is independent of the selection draws, which pick class 0 (ties:
    # lowest index) when their class-1 count is <= n0 / 2 (probability 4e-4). The bound on class 1 misses iff
    # CP(K) > p_A, the bound on class 0 iff CP(n - K) > 1 - p_A.
    j = np.arange(n + 1)
    pmf = st.binom.pmf(j, n, p_a)
    cp = np.where(j == 0, 0.0, st.beta.ppf(alpha, np.maximum(j, 1), n - j + 1))
    pick_0 = st.binom.cdf(n0 // 2, n0, p_a)
    q = (1 - pick_0) * pmf[cp > p_a].sum() + pick_0 * pmf[cp[::-1] > 1 - p_a].sum()
    assert q == pytest.approx(0.0486, abs=1e-4)  # CP misses iff K >= 73 (Clopper-Pearson is conservative: q < alpha)
    # The bound is on the probability of c_A, the selection draws' top class (class 1 or, rarely, class 0).
    true_p = [p_a if np.argmax(c.selection_counts) == 1 else 1 - p_a for c in certs]
    misses = sum(c.p_a_lower > p for c, p in zip(certs, true_p))
    # misses ~ Binomial(T, q), accepted in [61, 138], each tail <= 2.5e-5 (the whole test fails falsely with
    # probability <= 1e-4). A bound computed at 2 alpha or a one-sided Wald bound (both miss iff K >= 72,
    # rate 0.0947) pass with probability 2.5e-5. Repeated blocks fail the spread check above (and miss at 0.102).
    assert st.binom.ppf(2.5e-5, trials, q) <= misses <= st.binom.isf(2.5e-5, trials, q)


def test_predict_tied_classifier_answers_at_the_exact_two_sided_binomial_test_rate(tied):
    # P(f = 0) = P(f = 1) = 1/2, so any label PREDICT returns is an error, which it must make with probability
    # <= alpha. The count K of class 0 is Binomial(n, 1/2); PREDICT answers iff the two-sided binomial test of
    # the top two counts, max(K, n - K) of n, has p-value <= alpha: at n = 100, alpha = 0.05, iff |K - 50| >= 11,
    # rate 0.0352.
    trials, n, alpha = 2000, 100, 0.05
    preds = tied.predict_batch(np.stack([fixtures.half_image()] * trials), n=n, alpha=alpha, batch_size=10_000,
                               seed=13)
    j = np.arange(n + 1)
    answers = np.array([st.binomtest(int(max(i, n - i)), n, 0.5).pvalue <= alpha for i in j])
    rate = st.binom.pmf(j, n, 0.5)[answers].sum()
    assert rate == pytest.approx(0.0352, abs=1e-4)
    answered = sum(p.label != ABSTAIN for p in preds)
    # answered ~ Binomial(2000, 0.0352), accepted in [41, 105], each tail <= 5e-5 (false failure 7.8e-5). A
    # one-sided p-value (answers iff |K - 50| >= 9, rate 0.0886) passes with probability 7e-10.
    assert st.binom.ppf(5e-5, trials, rate) <= answered <= st.binom.isf(5e-5, trials, rate)


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


def test_noise_blocks_of_different_block_indices_are_distinct_and_uncorrelated():
    seeds = noise.block_seeds(4, [0, 0, 0], [noise.STREAM_ESTIMATION] * 3, [0, 1, 2]).numpy()
    assert len({tuple(row) for row in seeds.tolist()}) == 3
    blocks = noise.gaussian_blocks(seeds, 200, fixtures.SHAPE, 0.3).numpy().reshape(3, -1)
    # Independent blocks: the correlation of 3,200 pairs is about N(0, 1/3200); |r| < 0.08 is 4.5 sd (false
    # failure 1.8e-5 over the 3 pairs). One block repeated would give r = 1.
    corr = np.corrcoef(blocks)[np.triu_indices(3, 1)]
    assert np.all(np.abs(corr) < 0.08)


@pytest.mark.parametrize("stream", [4, 7, -1, True, 1.0])
def test_sample_counts_rejects_a_stream_outside_the_stream_constants(tied, stream):
    # Seeds tag each stream with its own domain (tfsmooth.noise): "stream 7" would land on tag 8, the
    # domain of the training noise, so the first estimation draws would be training step 0's noise.
    np.testing.assert_array_equal(noise.block_seeds(0, [0], 7, [0]), noise.step_seeds(0, noise.TRAIN_NOISE, 0, 0)[None])
    with pytest.raises(ValueError, match="stream must be one of"):
        tied.sample_counts(fixtures.half_image()[None], 100, 100, seed=0, stream=stream)


def test_sample_counts_accepts_every_stream_constant(tied):
    counts = [tied.sample_counts(fixtures.half_image()[None], 1000, 1000, seed=0, stream=s)
              for s in (*noise.STREAMS[:3], np.int64(noise.STREAM_ATTACK))]
    assert [c.sum() for c in counts] == [1000] * 4
    # Four independent Binomial(1000, 1/2) counts are all equal with probability 8e-6; one shared stream, always.
    assert len({tuple(c[0]) for c in counts}) > 1


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


@pytest.mark.parametrize("method, kwargs, message", [
    ("iter_certify", dict(n0=10, n=100, alpha=2.0), "alpha"),
    ("iter_certify", dict(n0=0, n=100, alpha=0.01), "n0"),
    ("iter_certify", dict(n0=10, n=9, alpha=0.001), "too small to ever certify"),
    ("iter_certify", dict(n0=10, n=100, alpha=0.01, batch_size=0), "batch_size"),
    ("iter_certify", dict(n0=10, n=100, alpha=0.01, seed=-1), "seed"),
    ("iter_predict", dict(n=10, alpha=0.001), "too small to ever predict"),
    ("iter_predict", dict(n=100, alpha=0.0), "alpha"),
    ("iter_predict", dict(n=100, alpha=0.01, batch_size=0), "batch_size"),
])
def test_iter_certify_and_iter_predict_reject_bad_arguments_when_called(constant, method, kwargs, message):
    # Checked when called, before any iteration (a lazy generator would only fail at its first next()).
    args = dict(batch_size=100, seed=0)
    args.update(kwargs)
    with pytest.raises(ValueError, match=message):
        getattr(constant, method)([(0, fixtures.half_image())], **args)


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


def test_jit_compile_keeps_the_noise_and_the_counts_of_a_model_far_from_its_boundaries():
    # The tied classifier's decision splits the draws about evenly, but no draw lies within float rounding of its
    # boundary (the probability of one among 1,260 draws is ~1e-4), so XLA's fused forward pass must give the same
    # counts; a jitted *noise* draw would not (XLA's normal sampler draws other numbers for the same seeds).
    images = np.stack([fixtures.half_image()] * 3)
    plain = SmoothedClassifier(fixtures.tied_classifier(), 2, 0.25, noise_block=50)
    jitted = SmoothedClassifier(fixtures.tied_classifier(), 2, 0.25, noise_block=50, jit_compile=True)
    counts = [smoothed.sample_counts(images, 420, 200, seed=7) for smoothed in (plain, jitted)]
    np.testing.assert_array_equal(counts[0], counts[1])
    assert 150 < counts[0][0, 0] < 270  # both classes drawn: a real comparison
    from tfsmooth.smoothing import _XlaForward

    passes = [fn.python_function for fn in jitted._count_fns.values()]
    assert passes and all(isinstance(p.base_model, _XlaForward) for p in passes)  # the XLA path was the one run
    assert not any(isinstance(fn.python_function.base_model, _XlaForward) for fn in plain._count_fns.values())
    model = models.small_cnn(3, input_shape=(8, 8, 3))
    image = np.random.default_rng(0).uniform(size=(8, 8, 3)).astype(np.float32)
    conv = [SmoothedClassifier(model, 3, 0.25, jit_compile=j).sample_counts(image[None], 300, 100, seed=1)
            for j in (False, True)]
    assert int(np.abs(conv[0] - conv[1]).sum()) <= 2  # a convolutional model: at most a boundary draw apart
    with pytest.raises(ValueError, match="jit_compile must be True or False"):
        SmoothedClassifier(fixtures.tied_classifier(), 2, 0.25, jit_compile="yes")


def test_parallel_passes_default_and_validation():
    smoothed = SmoothedClassifier(fixtures.tied_classifier(), 2, 0.25)
    has_gpu = bool(tf.config.list_logical_devices("GPU"))
    assert smoothed.parallel_passes == (2 if (os.cpu_count() or 1) >= 2 and not has_gpu else 1)
    with pytest.raises(ValueError, match="parallel_passes must be an integer >= 1"):
        SmoothedClassifier(fixtures.tied_classifier(), 2, 0.25, parallel_passes=0)


def test_certify_batch_and_iter_certify_accept_a_dataset_of_image_label_pairs():
    smoothed = SmoothedClassifier(fixtures.constant_classifier(), 10, 0.25)
    images = np.random.default_rng(0).uniform(size=(3, *fixtures.SHAPE)).astype(np.float32)
    expected = smoothed.certify_batch(images, 10, 100, 0.001, 200, seed=4)
    pairs = tf.data.Dataset.from_tensor_slices((images, np.arange(3)))
    for dataset in (pairs, pairs.batch(2), pairs.map(lambda x, y: x)):
        got = smoothed.certify_batch(dataset, 10, 100, 0.001, 200, seed=4)
        assert [c.counts.tolist() for c in got] == [c.counts.tolist() for c in expected]
        streamed = list(smoothed.iter_certify(dataset, 10, 100, 0.001, 200, seed=4))
        assert [key for key, _ in streamed] == [0, 1, 2]
    with pytest.raises(ValueError, match=r"must hold images \[H, W, C\]"):
        smoothed.certify_batch(tf.data.Dataset.from_tensor_slices(np.zeros((2, 3))), 10, 100, 0.001, 200)


def test_a_bad_key_is_named_without_dumping_an_image():
    smoothed = SmoothedClassifier(fixtures.constant_classifier(), 10, 0.25)
    image = np.full(fixtures.SHAPE, 0.5, np.float32)
    with pytest.raises(ValueError) as error:
        list(smoothed.iter_certify([(image, image)], 10, 100, 0.001, 200))  # (image, image) instead of (key, image)
    assert len(str(error.value)) < 300


def test_a_model_path_or_a_string_sigma_is_refused_at_construction(tmp_path):
    with pytest.raises(ValueError, match="load it first with tfsmooth.load_model"):
        SmoothedClassifier(str(tmp_path / "model.keras"), 10, 0.25)
    with pytest.raises(ValueError, match="sigma must be a positive number"):
        SmoothedClassifier(fixtures.constant_classifier(), 10, "0.25")


def test_api_defaults_match_the_cli_and_the_batch_size_comes_from_the_input_size():
    smoothed = SmoothedClassifier(fixtures.constant_classifier(), 10, 0.25)
    assert smoothed.default_batch_size == 1000  # a 4 x 4 x 1 image: capped at 1,000 copies
    certificate = smoothed.certify(np.full(fixtures.SHAPE, 0.5, np.float32), n=200)  # n0 = 100, alpha = 0.001
    assert certificate.selection_counts.sum() == 100 and certificate.counts.sum() == 200
    large = SmoothedClassifier(models.small_cnn(10, input_shape=(224, 224, 3)), 10, 0.25)
    assert large.default_batch_size == 100  # 4e6 / 150,528 floats: 26 copies, at least one block


def test_a_base_model_that_rescales_by_1_over_255_or_a_sigma_in_0_255_units_is_warned_about():
    import keras

    from tfsmooth import checks

    inputs = keras.Input(fixtures.SHAPE)
    x = keras.layers.Rescaling(1 / 255)(inputs)
    rescaling = keras.Model(inputs, keras.layers.Dense(10)(keras.layers.Flatten()(x)))
    with pytest.warns(checks.ScaleWarning, match=r"Rescaling\(1/255\)"):
        SmoothedClassifier(rescaling, 10, 0.25)
    with pytest.warns(checks.ScaleWarning, match="for 0-255 units use 0.251"):
        SmoothedClassifier(fixtures.constant_classifier(), 10, 64)
    import warnings

    with warnings.catch_warnings():
        warnings.simplefilter("error", checks.ScaleWarning)
        SmoothedClassifier(fixtures.constant_classifier(), 10, 0.25)  # no warning for a plausible setup


def test_many_smoothed_classifiers_in_one_process_trigger_no_retracing_warning():
    import logging

    messages = []

    class Collect(logging.Handler):
        def emit(self, record):
            messages.append(record.getMessage())

    handler = Collect()
    tf.get_logger().addHandler(handler)
    try:
        image = np.full(fixtures.SHAPE, 0.5, np.float32)
        for _ in range(7):  # TensorFlow warns from the fifth trace of one function on
            SmoothedClassifier(fixtures.constant_classifier(), 10, 0.25).certify(image, 10, 100, 0.001, 100, seed=0)
    finally:
        tf.get_logger().removeHandler(handler)
    assert not [m for m in messages if "retracing" in m]


def test_certify_batch_reports_progress_after_each_image():
    smoothed = SmoothedClassifier(fixtures.constant_classifier(), 10, 0.25)
    calls = []
    smoothed.certify_batch(np.zeros((3, *fixtures.SHAPE), np.float32), 10, 100, 0.001, 100, seed=0,
                           progress=lambda done, total: calls.append((done, total)))
    assert calls == [(1, 3), (2, 3), (3, 3)]
    calls.clear()
    smoothed.predict_batch(np.zeros((2, *fixtures.SHAPE), np.float32), 100, 0.001, 100, seed=0,
                           progress=lambda done, total: calls.append((done, total)))
    assert calls == [(1, 2), (2, 2)]


def test_radius_uses_the_float32_sigma_the_noise_is_drawn_with():
    # The draws are float32(sigma) times standard normals; a radius from float64 0.12 would overstate the
    # certificate of that smoothed classifier by 2e-8 relative (float32(0.12) < 0.12).
    from tfsmooth.smoothing import Certificate, recertify

    counted = Certificate(ABSTAIN, 0.0, 0.0, np.array([9990, 10]), np.array([100, 0]))
    certificate = recertify(counted, 0.12, 0.001)
    expected = float(np.float32(0.12)) * st.norm.ppf(certificate.p_a_lower)
    assert float(np.float32(0.12)) < 0.12 and certificate.radius == expected
    assert certificate.radius < 0.12 * st.norm.ppf(certificate.p_a_lower)
