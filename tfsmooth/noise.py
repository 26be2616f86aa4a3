"""Sampling the Gaussian noise of randomized smoothing, reproducibly.

Noise is added in pixel space ([0, 1] scale, no clipping) to inputs of the base classifier; its
normalization is the model's first layer (METHODS.md §1).

Certification draws are organized in *blocks* of `block_size` draws. Block `b` of stream `stream`
for the example with key `key` under the user seed `seed` is
`tf.random.stateless_normal([block_size, H, W, C], seed=block_seed(seed, key, stream, b))`,
so the counts of an example depend only on (seed, key, stream, block_size) -- not on the batch size,
on which other examples share a forward pass, or on where a resumed run restarted. The exported
SavedModel (`tfsmooth.export`) uses the same functions, so it reproduces the library's counts.
"""

from __future__ import annotations

import tensorflow as tf

STREAM_SELECTION = 0
"""Stream of CERTIFY's n0 selection draws (Cohen et al. 2019, Sec. 3.2, step 1)."""
STREAM_ESTIMATION = 1
"""Stream of CERTIFY's n estimation draws: independent of the selection draws (step 2)."""
STREAM_PREDICT = 2
"""Stream of PREDICT's n draws."""
STREAM_ATTACK = 3
"""Stream of the m noise draws a SmoothAdv evaluation attack reuses (`tfsmooth.runs.attack_dataset`)."""
STREAMS = (STREAM_SELECTION, STREAM_ESTIMATION, STREAM_PREDICT, STREAM_ATTACK)
"""Every valid stream. `block_seeds` packs (key, stream) as key * len(STREAMS) + stream, so any other
value would reuse another key's draws (stream 4 of key k is stream 0 of key k + 1)."""

MAX_KEY = 2**28
"""Keys (example identifiers, e.g. the index in the test set) must lie in [0, MAX_KEY)."""


def block_seeds(seed, keys, stream, block_index):
    """Stateless seeds of noise blocks.

    Args:
        seed: int64 scalar, the user's seed.
        keys: int64 [M], the example key of each block (e.g. its index in the data set).
        stream: int64 [M] or scalar, each one of `STREAMS` (not checked here, in the graph; callers
            validate it).
        block_index: int64 [M], index of the block within the (example, stream) sequence.

    Returns:
        int64 [M, 2] seeds for `tf.random.stateless_normal`, distinct for distinct
        (key, stream, block_index) with stream in `STREAMS` and block_index < 2**32.
    """
    keys = tf.cast(keys, tf.int64)
    stream = tf.cast(stream, tf.int64)
    block_index = tf.cast(block_index, tf.int64)
    second = (keys * len(STREAMS) + stream) * (2**32) + block_index
    first = tf.fill(tf.shape(second), tf.cast(seed, tf.int64))
    return tf.stack([first, second], axis=-1)


def gaussian_blocks(seeds, block_size: int, image_shape, sigma: float):
    """Draws one block of isotropic Gaussian noise per seed.

    Args:
        seeds: int64 [M, 2], from `block_seeds`.
        block_size: draws per block.
        image_shape: (height, width, channels).
        sigma: standard deviation, l2 on the [0, 1] pixel scale (per coordinate).

    Returns:
        float32 [M, block_size, height, width, channels], delta ~ N(0, sigma^2 I), not clipped.
    """
    shape = [block_size, *image_shape]

    def one_block(block_seed):
        return tf.random.stateless_normal(shape, seed=block_seed, stddev=sigma, dtype=tf.float32)

    return tf.map_fn(one_block, seeds, fn_output_signature=tf.float32)


def count_blocks(base_model, images, image_of_block, seeds, valid, *, block_size, sigma, num_classes,
                 parallel_passes=1):
    """Top-1 class counts of the base classifier on noisy copies, one count vector per block.

    Args:
        base_model: callable Keras model, pixels [batch, H, W, C] in [0, 1] -> scores [batch, K].
        images: float32 [B, H, W, C] in [0, 1].
        image_of_block: int32 [M], which image each block perturbs.
        seeds: int64 [M, 2], from `block_seeds`.
        valid: int32 [M], how many of the block's draws count (the last block of a sequence may be
            partial: its first `valid` draws are used, the rest discarded).
        block_size, sigma, num_classes: as in `SmoothedClassifier`.
        parallel_passes: split the M blocks into this many contiguous groups, each its own noise
            draw and forward pass with no data dependency between them, so TensorFlow's inter-op
            scheduler runs them at the same time (on a CPU this keeps the cores busier than one
            large pass whose kernels synchronize all threads). The counts do not depend on it:
            every block's noise comes from its own seed. Must not exceed M (no empty group).

    Returns:
        int32 [M, num_classes]: counts of argmax f(x + delta) over the valid draws of each block.
    """
    total = tf.shape(seeds)[0]
    bounds = [(total * i) // parallel_passes for i in range(parallel_passes + 1)]
    return tf.concat([
        _count_group(base_model, images, image_of_block[lo:hi], seeds[lo:hi], valid[lo:hi], block_size, sigma,
                     num_classes)
        for lo, hi in zip(bounds[:-1], bounds[1:])], axis=0)


def _count_group(base_model, images, image_of_block, seeds, valid, block_size, sigma, num_classes):
    image_shape = images.shape[1:]
    noise = gaussian_blocks(seeds, block_size, image_shape, sigma)
    noisy = tf.gather(images, image_of_block)[:, None] + noise
    logits = base_model(tf.reshape(noisy, [-1, *image_shape]), training=False)
    if logits.shape[-1] is not None and logits.shape[-1] != num_classes:
        raise ValueError(f"the base model outputs {logits.shape[-1]} class scores, expected num_classes={num_classes}")
    top1 = tf.reshape(tf.argmax(logits, axis=-1, output_type=tf.int32), [-1, block_size])
    mask = tf.range(block_size)[None, :] < valid[:, None]
    one_hot = tf.one_hot(top1, num_classes, dtype=tf.int32) * tf.cast(mask, tf.int32)[..., None]
    return tf.reduce_sum(one_hot, axis=1)
