"""Noise scheme 3 (tfsmooth.noise.NOISE_SCHEMES): counter-based Philox draws, one RNG op per run of blocks."""

import fixtures
import numpy as np
import pytest
import tensorflow as tf
from scipy import stats as scipy_stats

from tfsmooth import counting, noise
from tfsmooth.smoothing import SmoothedClassifier

SHAPE = (4, 4, 3)  # 48 elements: a block of 3 draws is 144 normals, 36 Philox steps
BLOCK = 3


def _runs(seed, keys, streams, blocks, block_size=BLOCK, shape=SHAPE, sigma=1.0):
    keys, streams, blocks = (np.asarray(v, np.int64) for v in (keys, streams, blocks))
    run_seeds = noise.block_seeds(seed, keys, streams, np.zeros_like(blocks))
    return noise.gaussian_runs(run_seeds, tf.constant(blocks), block_size, shape, sigma).numpy()


def test_a_block_is_a_slice_of_its_key_s_one_long_sequence():
    # Block b of (seed, key, stream) is normals [b E, (b + 1) E) of the sequence of block 0's Philox key and counter:
    # a draw of 5 E normals under tf.random.stateless_normal (the same generator) sliced by hand.
    seed, key, stream = 7, 12, noise.STREAM_ESTIMATION
    blocks = _runs(seed, [key] * 5, [stream] * 5, range(5))
    elements = BLOCK * int(np.prod(SHAPE))
    long = tf.random.stateless_normal([5 * elements], seed=noise.block_seeds(seed, [key], stream, [0])[0]).numpy()
    np.testing.assert_array_equal(blocks.reshape(5, -1), long.reshape(5, elements))
    # block 0 is scheme 2's block 0 (same seed); block 1 is not scheme 2's block 1
    scheme_2 = noise.gaussian_blocks(noise.block_seeds(seed, [key, key], stream, [0, 1]), BLOCK, SHAPE, 1.0).numpy()
    np.testing.assert_array_equal(blocks[0], scheme_2[0])
    assert not np.allclose(blocks[1], scheme_2[1])


def test_a_block_does_not_depend_on_the_run_it_is_drawn_in():
    # The same blocks drawn one by one, in one run, and interleaved with other (key, stream)s and out of order.
    seed = 3
    alone = np.concatenate([_runs(seed, [5], [1], [b]) for b in range(4)])
    together = _runs(seed, [5] * 4, [1] * 4, range(4))
    np.testing.assert_array_equal(alone, together)
    mixed = _runs(seed, [5, 9, 5, 5, 5, 5, 9], [1, 1, 1, 1, 0, 1, 1], [2, 0, 0, 1, 0, 3, 1])
    np.testing.assert_array_equal(mixed[[2, 3, 0, 5]], together[[0, 1, 2, 3]])
    np.testing.assert_array_equal(mixed[[1, 6]], _runs(seed, [9, 9], [1, 1], [0, 1]))
    assert not np.allclose(mixed[4], together[0])  # stream 0 is another sequence
    # an odd element count: each block still starts at a whole Philox step (E rounded up to a multiple of 4)
    odd = _runs(seed, [5] * 3, [1] * 3, range(3), block_size=1, shape=(3, 1, 1))
    np.testing.assert_array_equal(odd[2], _runs(seed, [5], [1], [2], block_size=1, shape=(3, 1, 1))[0])


def test_runs_and_the_counter_carry():
    seeds = noise.block_seeds(0, [1, 1, 1, 2, 2, 1], 1, [0] * 6)
    starts = noise.run_starts(seeds, tf.constant([0, 1, 2, 3, 4, 5], tf.int64)).numpy()
    np.testing.assert_array_equal(starts, [0, 3, 5])  # key 2 starts a run, key 1's return too
    starts = noise.run_starts(seeds[:3], tf.constant([0, 1, 3], tf.int64)).numpy()
    np.testing.assert_array_equal(starts, [0, 2])  # a gap in the block indices
    top = tf.constant([2**64 - 1, 5], tf.uint64)
    np.testing.assert_array_equal(noise.add_counter(top, tf.constant(3, tf.uint64)).numpy(), [2, 6])
    # TensorFlow's Philox counts the same way: 8 normals from the top equal 4 from the carried counter, then 4 more
    key = tf.constant([99], tf.uint64)
    both = tf.raw_ops.StatelessRandomNormalV2(shape=[8], key=key, counter=top, alg=noise.PHILOX).numpy()
    after = tf.raw_ops.StatelessRandomNormalV2(shape=[4], key=key, counter=noise.add_counter(top, tf.constant(
        1, tf.uint64)), alg=noise.PHILOX).numpy()
    np.testing.assert_array_equal(both[4:], after)
    with pytest.raises(ValueError, match="noise_scheme must be one of"):
        noise.check_noise_scheme(1)


def test_scheme_3_noise_is_standard_normal_and_blocks_are_independent():
    # 40 blocks of 3 x 48 draws (5,760 numbers): KS against N(0, 1) and the correlation of consecutive blocks
    # (the slices of one sequence) with acceptance regions at level 0.001.
    blocks = _runs(11, [4] * 40, [1] * 40, range(40)).reshape(40, -1)
    assert scipy_stats.kstest(blocks.ravel(), "norm").pvalue > 0.001
    r = np.corrcoef(blocks[:-1].ravel(), blocks[1:].ravel())[0, 1]
    assert abs(r) < 3.3 / np.sqrt(blocks[1:].size)
    scaled = _runs(11, [4] * 2, [1] * 2, range(2), sigma=np.array([0.5, 2.0], np.float32))
    np.testing.assert_allclose(scaled, _runs(11, [4] * 2, [1] * 2, range(2)) * np.array([0.5, 2.0])[:, None, None,
                                                                                                     None, None])


def _linear(margin):
    w = np.ones(fixtures.D) / 4.0
    image = np.full(fixtures.SHAPE, (margin + 2.0) / 4.0, np.float32)
    return fixtures.linear_classifier(w, -2.0), image


def test_scheme_3_counts_do_not_depend_on_the_batch_and_estimate_p_a():
    base, image = _linear(0.1)  # P(class 1) = Phi(0.1 / 0.25) = 0.655
    smoothed = SmoothedClassifier(base, 2, 0.25, noise_block=100, noise_scheme=3)
    images = np.stack([image] * 3)
    counts = {batch: smoothed.sample_counts(images, 2_300, batch_size=batch, seed=5, keys=[0, 1, 7])
              for batch in (100, 700, 5_000)}
    for batch in (700, 5_000):
        np.testing.assert_array_equal(counts[100], counts[batch])
    scheme_2 = SmoothedClassifier(base, 2, 0.25, noise_block=100).sample_counts(images, 2_300, seed=5, keys=[0, 1, 7])
    assert not np.array_equal(counts[100], scheme_2)  # other numbers...
    p_a = scipy_stats.norm.cdf(0.4)
    for row in (*counts[100], *scheme_2):  # ...of the same distribution: each count in its 0.999 binomial region
        low, high = scipy_stats.binom.interval(0.999, 2_300, p_a)
        assert low <= row[1] <= high, row
    # many keys: the counts' spread is binomial (a chi-square test of the variance at level 0.001)
    many = smoothed.sample_counts(np.stack([image] * 60), 500, seed=2, keys=list(range(60)))[:, 1]
    statistic = np.sum((many - 500 * p_a) ** 2) / (500 * p_a * (1 - p_a))
    assert scipy_stats.chi2.ppf(0.0005, 60) < statistic < scipy_stats.chi2.ppf(0.9995, 60)


def test_a_scheme_3_pass_draws_one_rng_op_per_run(monkeypatch):
    # Executed eagerly (the loop over runs then runs in Python), the sampler is called once per run: once for ten
    # consecutive blocks of one stream -- scheme 2 draws ten times -- and three times for three runs.
    calls = []
    sampler = tf.raw_ops.StatelessRandomNormalV2

    def counted(**kwargs):
        calls.append(int(kwargs["shape"][0]))
        return sampler(**kwargs)

    monkeypatch.setattr(tf.raw_ops, "StatelessRandomNormalV2", counted)
    _runs(1, [4] * 10, [1] * 10, range(20, 30))
    assert calls == [10 * BLOCK * int(np.prod(SHAPE))]
    calls.clear()
    _runs(1, [4, 4, 6, 6, 4], [1] * 5, [0, 1, 0, 1, 2])
    assert len(calls) == 3
    monkeypatch.undo()
    # A whole counting pass (run eagerly): 8 blocks of one image's estimation stream and 2 padding blocks (key 0,
    # stream 0, blocks 0, 1 -- one run of their own) are 2 sampler calls; scheme 2 would make 10.
    base, image = _linear(0.0)
    fn = counting.pass_function(base, fixtures.SHAPE, noise_block=100, num_classes=2, parallel_passes=1,
                                noise_scheme=3)
    calls.clear()
    monkeypatch.setattr(tf.raw_ops, "StatelessRandomNormalV2", counted)
    tf.config.run_functions_eagerly(True)
    try:
        out = fn(image[None], np.zeros(10, np.int32), np.array([7] * 8 + [0] * 2, np.int64),
                 np.array([1] * 8 + [0] * 2, np.int64), np.array(list(range(3, 11)) + [0, 1], np.int64),
                 np.array([100] * 8 + [0] * 2, np.int32), np.array([0.25], np.float32), np.int64(0))
    finally:
        tf.config.run_functions_eagerly(False)
    assert calls == [8 * 100 * fixtures.D, 2 * 100 * fixtures.D] and np.asarray(out).sum() == 800
    monkeypatch.undo()
    with pytest.raises(ValueError, match="noise_scheme"):
        SmoothedClassifier(base, 2, 0.25, noise_scheme=4)
    with pytest.raises(ValueError, match="noise_scheme"):
        counting.count_blocks(base, image[None], [0], noise.block_seeds(0, [0], 1, [0]), [1], [0.25],
                              block_size=100, num_classes=2, noise_scheme="3")


def test_certify_cli_noise_scheme_3_is_recorded_resumes_only_under_it_and_does_not_depend_on_the_batch(
        sample_model, tmp_path):
    import json

    from click.testing import CliRunner

    from tfsmooth import results
    from tfsmooth.cli.main import cli

    out = tmp_path / "s3.tsv"
    args = ["certify", sample_model, "--dataset", "cifar10_sample", "--sigma", "0.25", "--skip", "200", "--n0", "100",
            "--n", "400", "--alpha", "0.01", "--noise-scheme", "3", "--out", str(out)]
    done = CliRunner().invoke(cli, [*args, "--batch", "200"])
    assert done.exit_code == 0, done.output
    assert json.loads(open(str(out) + ".json").read())["noise_scheme"] == 3
    other = tmp_path / "s3_batch.tsv"
    assert CliRunner().invoke(cli, [*args[:-1], str(other), "--batch", "1000"]).exit_code == 0
    a, b = results.read_results(out), results.read_results(other)
    assert len(a) == 5
    np.testing.assert_array_equal(a.radius, b.radius)
    np.testing.assert_array_equal(a.predict, b.predict)
    refused = CliRunner().invoke(cli, [*args[:-4], "--out", str(out)])  # without --noise-scheme 3: scheme 2
    assert refused.exit_code != 0 and "--noise-scheme 3" in refused.output, refused.output
    assert "Traceback" not in refused.output
    again = CliRunner().invoke(cli, args)
    assert again.exit_code == 0 and "0 new rows" in again.output, again.output
    scheme_2 = tmp_path / "s2.tsv"
    assert CliRunner().invoke(cli, [*args[:-4], "--out", str(scheme_2)]).exit_code == 0
    assert json.loads(open(str(scheme_2) + ".json").read())["noise_scheme"] == 2
    refused = CliRunner().invoke(cli, [*args[:-1], str(scheme_2)])  # a scheme-2 file continued with scheme 3
    assert refused.exit_code != 0 and "--noise-scheme 2" in refused.output, refused.output
    predicted = tmp_path / "p3.tsv"
    done = CliRunner().invoke(cli, ["predict", sample_model, "--dataset", "cifar10_sample", "--sigma", "0.25",
                                    "--skip", "200", "--n", "400", "--noise-scheme", "3", "--out", str(predicted)])
    assert done.exit_code == 0, done.output
    assert json.loads(open(str(predicted) + ".json").read())["noise_scheme"] == 3
    bad = CliRunner().invoke(cli, [*args[:-4], "--noise-scheme", "4", "--out", str(tmp_path / "bad.tsv")])
    assert bad.exit_code != 0 and "noise-scheme" in bad.output
    samplewise = CliRunner().invoke(cli, [*args[:-1], str(tmp_path / "sw.tsv"), "--sigma-grid", "0.25,0.5"])
    assert samplewise.exit_code != 0 and "scheme 2 only" in samplewise.output, samplewise.output


@pytest.mark.parametrize("parallel_passes", [1, 3])
def test_scheme_3_sequential_counts_are_the_fixed_n_prefix(parallel_passes):
    # Sequential certification draws look by look (each look's blocks continue the last's, spread over passes and
    # concurrent groups): under scheme 3 too, the draws up to n_used are a fixed-n run's first n_used.
    base, _ = _linear(0.0)
    smoothed = SmoothedClassifier(base, 2, 0.25, noise_block=100, noise_scheme=3, parallel_passes=parallel_passes)
    images = [_linear(m)[1] for m in (0.6, 0.3, 0.05)]
    answers = list(smoothed.iter_certify_sequential(zip([3, 8, 9], images), n0=100, n_max=3_200, alpha=0.01,
                                                    radii=(0.25, 0.5), seed=4, group=2, batch_size=300))
    used = set()
    for (key, answer), image in zip(answers, images):
        fixed = smoothed.sample_counts(image[None], answer.n_used, seed=4, keys=[key], stream=noise.STREAM_ESTIMATION,
                                       batch_size=1_000)
        np.testing.assert_array_equal(answer.counts, fixed[0])
        used.add(answer.n_used)
    assert len(used) > 1  # images stopped at different looks
