"""tfsmooth.counting: the block order shared by the library and the export, the host scheduler, sigma as data."""

import time

import numpy as np
import pytest
import tensorflow as tf

import fixtures
from tfsmooth import SmoothedClassifier, counting, noise


def test_block_plan_lists_blocks_stream_by_stream_with_a_partial_last_block():
    streams, index, valid = counting.block_plan(((noise.STREAM_SELECTION, 150), (noise.STREAM_ESTIMATION, 100)), 100)
    assert streams.tolist() == [noise.STREAM_SELECTION, noise.STREAM_SELECTION, noise.STREAM_ESTIMATION]
    assert index.tolist() == [0, 1, 0]
    assert valid.tolist() == [100, 50, 100]
    assert counting.blocks_per_pass(1999, 100) == 19 and counting.blocks_per_pass(50, 100) == 1


def _fake_pass(log, seconds_per_pass):
    def run_pass(images, image_of_block, keys, streams, block_index, valid, sigma, seed):
        log.append((keys.copy(), valid.copy(), sigma.copy(), image_of_block.copy()))
        time.sleep(seconds_per_pass)
        return np.zeros((len(keys), 3), np.int32) + (np.arange(3) == 0) * valid[:, None]

    return run_pass


def test_iter_counts_takes_passes_across_examples_in_order_and_pads_the_last():
    log = []
    examples = [(k, np.zeros((2, 2, 1), np.float32), 0.1 * (k + 1)) for k in range(3)]
    out = list(counting.iter_counts(examples, ((noise.STREAM_PREDICT, 250),), noise_block=100, batch_size=400,
                                    num_classes=3, seed=0, run_pass=_fake_pass(log, 0.0)))
    assert [key for key, _, _ in out] == [0, 1, 2]
    assert all(counts[noise.STREAM_PREDICT].tolist() == [250, 0, 0] for _, counts, _ in out)
    # 9 blocks (3 per example), 4 per pass: [0 0 0 1] [1 1 2 2] [2 pad pad pad]
    assert [keys.tolist() for keys, _, _, _ in log] == [[0, 0, 0, 1], [1, 1, 2, 2], [2, 0, 0, 0]]
    assert [v.tolist() for _, v, _, _ in log][-1] == [50, 0, 0, 0]  # the padding counts nothing
    # sigma is carried per image of the pass, in the order image_of_block indexes
    keys, _, sigma, image_of_block = log[1]
    np.testing.assert_allclose(sigma[image_of_block], 0.1 * (keys + 1))


@pytest.mark.parametrize("in_flight", [1, 2, 3])
def test_each_example_gets_its_share_of_the_passes_it_used_not_the_gap_between_rows(monkeypatch, in_flight):
    # 6 examples of 2 blocks, 10 blocks per pass: pass 1 holds examples 0-4, pass 2 example 5 alone.
    # A fake clock makes each pass last exactly 1 s and the consumer spend 5 s on every row: examples 0-4 get 2/10
    # of pass 1, example 5 all of pass 2, whatever the number of passes in flight.
    ticks = {"now": 0.0}
    monkeypatch.setattr(counting.time, "perf_counter", lambda: ticks["now"])

    def run_pass(*args):
        ticks["now"] += 1.0
        return _fake_pass([], 0.0)(*args)

    examples = [(k, np.zeros((2, 2, 1), np.float32), 0.25) for k in range(6)]
    seconds = []
    for _, _, spent in counting.iter_counts(examples, ((noise.STREAM_SELECTION, 100), (noise.STREAM_ESTIMATION, 100)),
                                            noise_block=100, batch_size=1000, num_classes=3, seed=0,
                                            run_pass=run_pass, in_flight=in_flight):
        seconds.append(spent)
        ticks["now"] += 5.0  # the consumer's own work (writing the row) is nobody's pass time
    np.testing.assert_allclose(seconds, [0.2, 0.2, 0.2, 0.2, 0.2, 1.0])
    assert sum(seconds) == pytest.approx(2.0)  # the shares add up to the passes' time


class _AsyncHandle:
    """What an asynchronous device returns: the counts exist only once read."""

    def __init__(self, log, number, counts):
        self.log, self.number, self.counts = log, number, counts

    def numpy(self):
        self.log.append(("read", self.number))
        return self.counts


@pytest.mark.parametrize("devices,in_flight", [(1, None), (2, None), (3, 2), (2, 1)])
def test_passes_are_dispatched_round_robin_before_earlier_ones_are_read(devices, in_flight):
    log, runs = [], []
    for d in range(devices):
        def run_pass(*args, device=d):
            number = sum(1 for event in log if event[0] == "dispatch")
            log.append(("dispatch", number, device))
            return _AsyncHandle(log, number, _fake_pass([], 0.0)(*args))
        runs.append(run_pass)
    examples = [(k, np.zeros((2, 2, 1), np.float32), 0.25) for k in range(7)]
    out = list(counting.iter_counts(examples, ((noise.STREAM_PREDICT, 300),), noise_block=100, batch_size=200,
                                    num_classes=3, seed=0, run_pass=runs if devices > 1 else runs[0],
                                    in_flight=in_flight))
    depth = devices + 1 if in_flight is None else in_flight
    # 21 blocks, 2 per pass: 11 passes, each dispatched once and read once, in order
    dispatches = [e for e in log if e[0] == "dispatch"]
    assert [e[1] for e in dispatches] == list(range(11))
    assert [e[2] for e in dispatches] == [p % devices for p in range(11)]  # pass p on device p mod D
    assert [e[1] for e in log if e[0] == "read"] == list(range(11))
    for p in range(11):  # when pass p is read, exactly min(p + depth, 11) passes have been dispatched
        at = log.index(("read", p))
        assert sum(1 for e in log[:at] if e[0] == "dispatch") == min(p + depth, 11)
    assert [k for k, _, _ in out] == list(range(7))


def _keyed_pass(*, handle=False, log=None):
    """A fake pass whose counts depend on every block's key, stream, block index and valid draws (so a block counted
    twice, dropped, or credited to another example changes the answers); optionally returns an `_AsyncHandle`."""
    def run_pass(images, image_of_block, keys, streams, block_index, valid, sigma, seed):
        first = (keys * 7 + streams * 3 + block_index * 5 + seed) % np.maximum(valid, 1)
        counts = np.stack([first, valid - first, np.zeros_like(valid)], axis=1).astype(np.int32)
        if not handle:
            return counts
        number = sum(1 for event in log if event[0] == "dispatch")
        log.append(("dispatch", number))
        return _AsyncHandle(log, number, counts)

    return run_pass


@pytest.mark.parametrize("batch_size", [100, 300, 700, 2500])
def test_pipelined_and_multi_device_schedules_give_the_unpipelined_counts(batch_size):
    examples = [(k * 11 + 3, np.zeros((2, 2, 1), np.float32), 0.25) for k in range(9)]
    plan = ((noise.STREAM_SELECTION, 150), (noise.STREAM_ESTIMATION, 430))

    def run(run_pass, in_flight):
        return [(k, {s: c.tolist() for s, c in counts.items()}) for k, counts, _ in counting.iter_counts(
            examples, plan, noise_block=100, batch_size=batch_size, num_classes=3, seed=2, run_pass=run_pass,
            in_flight=in_flight)]

    reference = run(_keyed_pass(), 1)
    assert [k for k, _ in reference] == [k for k, _, _ in examples]
    assert len({str(c) for _, c in reference}) > 1  # the fake counts differ across examples
    for devices in (1, 2, 3):
        for in_flight in (None, 1, 2, 5):
            passes = [_keyed_pass(handle=True, log=[]) for _ in range(devices)]
            assert run(passes if devices > 1 else passes[0], in_flight) == reference, (devices, in_flight)


@pytest.mark.parametrize("in_flight", [1, 2, 3])
def test_examples_are_read_at_most_in_flight_passes_ahead_and_yielded_once_counted(in_flight):
    # one block per example and per pass: when example k is yielded, passes 0..k have been read, and at most
    # in_flight + 1 examples beyond it have been read from the input
    log, read = [], []

    def examples():
        for k in range(8):
            read.append(k)
            yield k, np.zeros((2, 2, 1), np.float32), 0.25

    seen = []
    for key, _, _ in counting.iter_counts(examples(), ((noise.STREAM_PREDICT, 100),), noise_block=100,
                                          batch_size=100, num_classes=3, seed=0,
                                          run_pass=_keyed_pass(handle=True, log=log), in_flight=in_flight):
        assert ("read", key) in log  # its pass was read before it was yielded
        assert len(read) <= key + 1 + in_flight
        seen.append((key, len(read)))
    assert [k for k, _ in seen] == list(range(8))
    assert [n for _, n in seen] == [min(k + in_flight, 8) for k in range(8)]  # and no later than needed


@pytest.mark.parametrize("in_flight", [1, 2, 4])
def test_an_error_mid_stream_comes_after_the_examples_already_counted(in_flight):
    # example 3 has a bad sigma: 0, 1 and 2 (one block, one pass each) are yielded first, as without pipelining
    examples = [(k, np.zeros((2, 2, 1), np.float32), -1.0 if k == 3 else 0.25) for k in range(6)]
    seen = []
    with pytest.raises(ValueError, match="sigma of the image with key 3"):
        for key, _, _ in counting.iter_counts(examples, ((noise.STREAM_PREDICT, 100),), noise_block=100,
                                              batch_size=100, num_classes=3, seed=0,
                                              run_pass=_keyed_pass(handle=True, log=[]), in_flight=in_flight):
            seen.append(key)
    assert seen == [0, 1, 2]

    def failing(*args):  # a pass that fails on its third dispatch
        failing.calls += 1
        if failing.calls == 3:
            raise RuntimeError("out of memory")
        return _keyed_pass()(*args)

    failing.calls, seen = 0, []
    with pytest.raises(RuntimeError, match="out of memory"):
        for key, _, _ in counting.iter_counts(examples[:3], ((noise.STREAM_PREDICT, 100),), noise_block=100,
                                              batch_size=100, num_classes=3, seed=0, run_pass=failing,
                                              in_flight=in_flight):
            seen.append(key)
    assert seen == [0, 1]


def test_a_pass_is_charged_the_time_its_read_waited_too(monkeypatch):
    # an asynchronous pass: 0.1 s to dispatch, 0.9 s waiting when read -> 1 s per pass, whatever the depth
    ticks = {"now": 0.0}
    monkeypatch.setattr(counting.time, "perf_counter", lambda: ticks["now"])

    class Slow(_AsyncHandle):
        def numpy(self):
            ticks["now"] += 0.9
            return self.counts

    def run_pass(*args):
        ticks["now"] += 0.1
        return Slow([], 0, _keyed_pass()(*args))

    examples = [(k, np.zeros((2, 2, 1), np.float32), 0.25) for k in range(4)]
    seconds = [s for _, _, s in counting.iter_counts(examples, ((noise.STREAM_PREDICT, 200),), noise_block=100,
                                                     batch_size=100, num_classes=3, seed=0, run_pass=run_pass,
                                                     in_flight=3)]
    np.testing.assert_allclose(seconds, [2.0] * 4)  # two one-block passes each


@pytest.mark.parametrize("bad", [[], (), "not callable", ["x"]])
def test_iter_counts_refuses_no_pass_function(bad):
    with pytest.raises(ValueError, match="run_pass"):
        list(counting.iter_counts([], ((noise.STREAM_PREDICT, 10),), noise_block=10, batch_size=10, num_classes=3,
                                  seed=0, run_pass=bad))


def test_iter_counts_refuses_in_flight_below_one():
    with pytest.raises(ValueError, match="in_flight"):
        list(counting.iter_counts([], ((noise.STREAM_PREDICT, 10),), noise_block=10, batch_size=10, num_classes=3,
                                  seed=0, run_pass=_fake_pass([], 0.0), in_flight=0))


def test_certificates_report_their_seconds_and_the_seed_drawn():
    smoothed = SmoothedClassifier(fixtures.constant_classifier(), 10, 0.25)
    images = np.zeros((3, *fixtures.SHAPE), np.float32)
    certificates = smoothed.certify_batch(images, n0=10, n=100, alpha=0.001, batch_size=200)
    assert all(c.seconds > 0 for c in certificates)
    seeds = {c.seed for c in certificates}
    assert len(seeds) == 1 and isinstance(seeds.pop(), int)  # seed=None: one fresh seed, reported
    again = smoothed.certify_batch(images, n0=10, n=100, alpha=0.001, batch_size=200, seed=certificates[0].seed)
    assert [c.counts.tolist() for c in again] == [c.counts.tolist() for c in certificates]


def test_gaussian_blocks_scale_one_standard_block_by_each_blocks_sigma():
    seeds = noise.block_seeds(3, [0, 1], noise.STREAM_ESTIMATION, [0, 0])
    unit = noise.gaussian_blocks(seeds, 5, (2, 2, 1), 1.0).numpy()
    per_block = noise.gaussian_blocks(seeds, 5, (2, 2, 1), tf.constant([0.5, 2.0])).numpy()
    np.testing.assert_array_equal(per_block[0], (unit[0] * np.float32(0.5)))
    np.testing.assert_array_equal(per_block[1], (unit[1] * np.float32(2.0)))
    with pytest.raises((ValueError, tf.errors.InvalidArgumentError)):
        noise.gaussian_blocks(seeds, 5, (2, 2, 1), tf.constant([0.5, 2.0, 1.0])).numpy()


def test_host_scheduler_and_graph_count_the_same_with_a_sigma_per_image():
    import keras

    from tfsmooth import models

    keras.utils.set_random_seed(0)
    model = models.small_cnn(3, input_shape=(8, 8, 3))
    images = np.random.default_rng(1).uniform(size=(3, 8, 8, 3)).astype(np.float32)
    sigmas = np.array([0.05, 0.5, 2.0], np.float32)  # per image: the counts must differ with sigma
    plan = ((noise.STREAM_SELECTION, 150), (noise.STREAM_ESTIMATION, 250))
    run_pass = counting.pass_function(model, (8, 8, 3), noise_block=100, num_classes=3, parallel_passes=2)
    host = list(counting.iter_counts(zip(range(3), images, sigmas), plan, noise_block=100, batch_size=300,
                                     num_classes=3, seed=5, run_pass=lambda *a: run_pass(*a).numpy()))
    graph = counting.graph_counts(model, tf.constant(images), tf.constant(sigmas), tf.constant(5, tf.int64), plan,
                                  noise_block=100, batch_size=300, num_classes=3)
    for stream, _ in plan:
        np.testing.assert_array_equal(np.stack([counts[stream] for _, counts, _ in host]), graph[stream].numpy())
    # each image drew at its own sigma: the same image at sigma 0.05 and at 2.0 gets other counts
    alone = [next(counting.iter_counts([(0, images[0], s)], plan, noise_block=100, batch_size=300, num_classes=3,
                                       seed=5, run_pass=lambda *a: run_pass(*a).numpy()))[1] for s in (0.05, 2.0)]
    assert alone[0][noise.STREAM_ESTIMATION].tolist() != alone[1][noise.STREAM_ESTIMATION].tolist()
    np.testing.assert_array_equal(alone[0][noise.STREAM_ESTIMATION], host[0][1][noise.STREAM_ESTIMATION])


@pytest.mark.parametrize("sigma", [0.0, -1.0, float("nan"), "0.25"])
def test_iter_counts_refuses_a_bad_sigma_of_an_image(sigma):
    with pytest.raises(ValueError, match="sigma of the image with key 7"):
        list(counting.iter_counts([(7, np.zeros((2, 2, 1), np.float32), sigma)], ((noise.STREAM_PREDICT, 10),),
                                  noise_block=10, batch_size=10, num_classes=3, seed=0,
                                  run_pass=_fake_pass([], 0.0)))


@pytest.mark.parametrize("plan", [((7, 10),), ((noise.STREAM_PREDICT, 10), (noise.STREAM_PREDICT, 10)),
                                  ((noise.STREAM_PREDICT, 0),), ((True, 10),)])
def test_block_plan_refuses_streams_outside_the_stream_constants_and_empty_draws(plan):
    with pytest.raises(ValueError, match="plan"):
        counting.block_plan(plan, 100)


def test_more_draws_than_a_stream_has_blocks_are_refused():
    smoothed = SmoothedClassifier(fixtures.constant_classifier(), 10, 0.25, noise_block=1)
    with pytest.raises(ValueError, match="later draws would repeat earlier ones"):
        smoothed.certify(np.full(fixtures.SHAPE, 0.5, np.float32), n0=10, n=noise.MAX_BLOCK + 1)
