"""noise: the seed layout (one domain per use), its bijectivity, and separation of training from certification draws."""

import keras
import numpy as np
import pytest
import tensorflow as tf

import fixtures
from tfsmooth import noise
from tfsmooth.training import GaussianAugmentedModel


def _decode(word):
    """The fields of a domain word by the layout of noise's module docstring: (tag, fields...)."""
    word = int(word) % 2**64  # the int64 bit pattern
    tag, payload = word >> 60, word & (2**60 - 1)
    if tag < 8:
        return tag, payload >> 32, payload & (2**32 - 1)
    return tag, payload >> 46, (payload >> 16) & (2**30 - 1), payload & (2**16 - 1)


def test_block_seeds_put_the_stream_tag_key_and_block_in_their_bits():
    seeds = noise.block_seeds(5, [0, 3, noise.MAX_KEY - 1], noise.STREAM_ESTIMATION, [0, 7, 2**32 - 1]).numpy()
    np.testing.assert_array_equal(seeds[:, 0], [5, 5, 5])
    # Stream 1 has tag 2: 2 * 2**60 = 2305843009213693952.
    assert seeds[:, 1].tolist() == [2305843009213693952, 2305843009213693952 + 3 * 2**32 + 7,
                                    2305843009213693952 + (2**28 - 1) * 2**32 + 2**32 - 1]
    assert [_decode(w) for w in seeds[:, 1]] == [(2, 0, 0), (2, 3, 7), (2, 2**28 - 1, 2**32 - 1)]


def test_step_seeds_put_the_domain_replica_step_and_index_in_their_bits():
    seeds = noise.step_seeds(9, noise.TRAIN_ATTACK, 1, 5, tf.range(3)).numpy()
    np.testing.assert_array_equal(seeds[:, 0], [9, 9, 9])
    # Tag 9 sets the sign bit: 9 * 2**60 - 2**64 = -8070450532247928832; + replica 1 * 2**46 + step 5 * 2**16 + index.
    first = -8070450532247928832 + 2**46 + 5 * 2**16
    assert seeds[:, 1].tolist() == [first, first + 1, first + 2]
    assert [_decode(w) for w in seeds[:, 1]] == [(9, 1, 5, 0), (9, 1, 5, 1), (9, 1, 5, 2)]
    assert noise.step_seeds(9, noise.TRAIN_NOISE, 0, 0).numpy().tolist() == [9, -(2**63)]  # tag 8, all fields 0


def test_distinct_uses_never_share_a_seed():
    # Property test over random and extreme coordinates of every domain, in use or reserved: each word decodes back
    # to its coordinates (so distinct coordinates give distinct words), all words differ, none is in tag 0 (Keras').
    rng = np.random.default_rng(0)
    count = 5000
    words, coordinates = [], []
    for stream in (*noise.STREAMS, *noise.RESERVED_STREAMS):
        keys = np.array([*rng.integers(0, noise.MAX_KEY, count), 0, noise.MAX_KEY - 1, 0, noise.MAX_KEY - 1])
        blocks = np.array([*rng.integers(0, noise.MAX_BLOCK, count), 0, noise.MAX_BLOCK - 1, noise.MAX_BLOCK - 1, 0])
        words += noise.block_seeds(0, keys, stream, blocks).numpy()[:, 1].tolist()
        coordinates += [(stream + 1, int(k), int(b)) for k, b in zip(keys, blocks)]
    for domain in range(8, 16):
        fields = [np.array([*rng.integers(0, size, count), 0, size - 1])
                  for size in (noise.MAX_REPLICAS, noise.MAX_STEP, noise.MAX_INDEX)]
        words += noise.step_seeds(0, domain, *fields).numpy()[:, 1].tolist()
        coordinates += [(domain, int(r), int(t), int(i)) for r, t, i in zip(*fields)]
    assert [_decode(word) for word in words] == coordinates
    assert len(set(words)) == len(set(coordinates)) > 15 * count
    assert all(_decode(word)[0] != 0 for word in words)


def test_out_of_range_coordinates_wrap_within_their_domain():
    assert noise.step_seeds(0, noise.EVAL_NOISE, 0, noise.MAX_STEP + 3).numpy().tolist() == \
        noise.step_seeds(0, noise.EVAL_NOISE, 0, 3).numpy().tolist()
    np.testing.assert_array_equal(noise.block_seeds(0, [noise.MAX_KEY + 2], noise.STREAM_PREDICT, [1]),
                                  noise.block_seeds(0, [2], noise.STREAM_PREDICT, [1]))


@pytest.mark.parametrize("domain", [noise.STREAM_SELECTION, 7, 16, 8.0, True])
def test_step_seeds_refuse_a_domain_that_is_not_a_step_domain(domain):
    with pytest.raises(ValueError, match="domain"):
        noise.step_seeds(0, domain, 0, 0)


def test_training_noise_differs_from_certification_noise_for_the_same_seed():
    # Defect 3: with seed 0 for `train` and `certify`, Gaussian augmentation's first step drew [0, 0] (Keras'
    # SeedGenerator) and so did the selection block 0 of image 0: the same numbers.
    batch = 8
    images = np.zeros((batch, *fixtures.SHAPE), np.float32)
    training = GaussianAugmentedModel(fixtures.constant_classifier(), 0.5, seed=0).add_noise(images).numpy()
    for stream in noise.STREAMS:
        certification = noise.gaussian_blocks(noise.block_seeds(0, [0], stream, [0]), batch, fixtures.SHAPE, 0.5)
        assert np.abs(training - certification.numpy()[0]).min() > 0  # not one coordinate in common
    keras_first = keras.random.normal((batch, *fixtures.SHAPE), stddev=0.5, seed=keras.random.SeedGenerator(0))
    selection_seeds = noise.block_seeds(0, [0], noise.STREAM_SELECTION, [0])
    selection = noise.gaussian_blocks(selection_seeds, batch, fixtures.SHAPE, 0.5)
    assert np.abs(keras_first.numpy() - selection.numpy()[0]).min() > 0  # nor with Keras' own first draw


def test_replica_id_is_zero_outside_a_strategy_and_in_a_cross_replica_context():
    assert int(noise.replica_id()) == 0
    with tf.distribute.OneDeviceStrategy("/cpu:0").scope():
        assert int(noise.replica_id()) == 0


def test_gaussian_blocks_depend_only_on_their_seed_and_scale_by_sigma():
    seeds = noise.block_seeds(3, [0, 1], noise.STREAM_PREDICT, [0, 0])
    both = noise.gaussian_blocks(seeds, 4, fixtures.SHAPE, [0.5, 2.0]).numpy()
    alone = noise.gaussian_blocks(seeds[1:], 4, fixtures.SHAPE, 1.0).numpy()
    np.testing.assert_allclose(both[1], 2.0 * alone[0], rtol=1e-6)
    np.testing.assert_array_equal(both[0] / 0.5, tf.random.stateless_normal([4, *fixtures.SHAPE], seeds[0]).numpy())
