"""Sampling the Gaussian noise of randomized smoothing, reproducibly: one seed domain per use.

Noise is added in pixel space ([0, 1] scale, no clipping) to inputs of the base classifier; its
normalization is the model's first layer (METHODS.md §1).

Every random draw of tfsmooth is stateless, `tf.random.stateless_normal(shape, seed=[seed, word])`:
the first element is the user's seed, the second a 64-bit *domain word* that names the use of the
draw and its coordinates within that use. The top 4 bits of the word are the domain tag:

    word = tag << 60 | payload,   payload < 2**60   (as int64: a tag >= 8 makes the word negative;
                                                    a seed is a bit pattern, the sign means nothing)

Keyed domains (tags 1-7): one seed per block of `block_size` draws of one example (`block_seeds`),

    payload = key << 32 | block,   key < MAX_KEY = 2**28, block < 2**32,

    tag 0  not used by tfsmooth: Keras' own draws (`keras.random.SeedGenerator`: weight
           initializers, dropout, `keras.random.*`) are [seed, counter] with a small counter, i.e.
           tag 0; before this layout, certification's selection draws of example 0 were exactly the
           Gaussian augmentation noise of the first training steps.
    tag 1  stream STREAM_SELECTION (0): CERTIFY's n0 selection draws
    tag 2  stream STREAM_ESTIMATION (1): CERTIFY's n estimation draws
    tag 3  stream STREAM_PREDICT (2): PREDICT's n draws
    tag 4  stream STREAM_ATTACK (3): the m draws (block 0) and the attack's per-example seeds
           (block 1) of a SmoothAdv evaluation attack (`tfsmooth.jobs.attack`)
    tag 5  reserved, stream 4: T-CERTIFY's runner-up draws
    tag 6  stream STREAM_SIGMA_SELECTION (5): the draws that choose a test image's sigma from a grid
           (sample-wise smoothing, METHODS.md §5)
    tag 7  reserved, stream 6: sequential certification

    (stream s has tag s + 1; `STREAMS` lists the streams in use, a later stream joins it.)

Step domains (tags 8-15): one seed per training step, replica and example (`step_seeds`),

    payload = replica << 46 | step << 16 | index,   replica < 2**14, step < 2**30, index < 2**16,

    tag 8  TRAIN_NOISE: the Gaussian copies of a training step (all copies of all examples of
           one replica are one draw, index 0)
    tag 9  TRAIN_ATTACK: the randomness of a training attack (SmoothAdv's random start and
           zero-gradient directions), index = example within the replica's batch
    tag 10 EVAL_NOISE: the Gaussian copies of `evaluate` (`test_step`) during training
    tags 11-15 reserved for later training methods

The replica is the global replica id (`replica_id_in_sync_group`, global across the workers of a
`MultiWorkerMirroredStrategy`), so every replica draws its own noise although all of them start
from the same user seed; the step is a counter saved with the training model. Step, replica and
index are taken modulo their ranges (2**30 steps is ~10^9): past them draws repeat within their
domain, never cross into another.

Distinct (domain, coordinates) give distinct words, so for one user seed no two uses share a seed.
The attacks (`tfsmooth.attacks`) derive the seed of each attack step as
`tf.random.experimental.stateless_fold_in(seed, step)`, a pseudo-random function of a seed of
their domain: such derived seeds are not in this layout, and meet one of it only by chance
(probability ~2**-64 per pair).

Certification draws depend only on (seed, key, stream, block_size) -- not on the batch size, on
which other examples share a forward pass, or on where a resumed run restarted. The counting
itself (`tfsmooth.counting`) is shared by the library and the exported SavedModel, so the export
reproduces the library's counts.
"""

from __future__ import annotations

import math

import tensorflow as tf

DOMAIN_SHIFT = 60
"""The domain tag occupies bits 60-63 of the second word of a seed (16 domains)."""

STREAM_SELECTION = 0
"""Stream of CERTIFY's n0 selection draws (Cohen et al. 2019, Sec. 3.2, step 1); domain tag 1."""
STREAM_ESTIMATION = 1
"""Stream of CERTIFY's n estimation draws: independent of the selection draws (step 2); tag 2."""
STREAM_PREDICT = 2
"""Stream of PREDICT's n draws; tag 3."""
STREAM_ATTACK = 3
"""Stream of the m noise draws a SmoothAdv evaluation attack reuses (`tfsmooth.jobs.attack`); tag 4."""
STREAM_SIGMA_SELECTION = 5
"""Stream of the draws that choose each test image's noise level from a grid (sample-wise smoothing,
`tfsmooth.samplewise`, METHODS.md §5): independent of CERTIFY's selection and estimation draws; tag 6."""
STREAMS = (STREAM_SELECTION, STREAM_ESTIMATION, STREAM_PREDICT, STREAM_ATTACK, STREAM_SIGMA_SELECTION)
"""Every stream in use. Stream s is domain tag s + 1; streams 4 and 6 (tags 5 and 7) are reserved
(`RESERVED_STREAMS`). T-CERTIFY draws nothing of its own: it bounds c_A and the runner-up on the same
estimation draws (`tfsmooth.stats.decide_certificate`), so its counts are CERTIFY's. Any other value
would reach a step domain (tags 8-15) or overflow: callers validate the stream."""
RESERVED_STREAMS = {4: "free (once kept for T-CERTIFY runner-up draws, which it does not need)",
                    6: "sequential certification"}
"""Streams (tags 5 and 7) kept free for later issues; `block_seeds` accepts them already."""

MAX_KEY = 2**28
"""Keys (example identifiers, e.g. the index in the test set) must lie in [0, MAX_KEY)."""
MAX_BLOCK = 2**32
"""Block indices of a keyed stream lie in [0, MAX_BLOCK)."""

TRAIN_NOISE = 8
"""Domain tag of the Gaussian copies of a training step (`tfsmooth.training`)."""
TRAIN_ATTACK = 9
"""Domain tag of a training attack's randomness (SmoothAdv's per-example attack seeds)."""
EVAL_NOISE = 10
"""Domain tag of the Gaussian copies of `evaluate` during training (`test_step`)."""
STEP_DOMAINS = (TRAIN_NOISE, TRAIN_ATTACK, EVAL_NOISE)
"""Step domains in use; tags 11-15 are reserved for later training methods."""

MAX_REPLICAS = 2**14
"""Replica ids lie in [0, MAX_REPLICAS) (taken modulo it)."""
MAX_STEP = 2**30
"""Step counters lie in [0, MAX_STEP) (taken modulo it: draws repeat after 2**30 steps)."""
MAX_INDEX = 2**16
"""Example indices within a replica's batch lie in [0, MAX_INDEX) (taken modulo it)."""


def _tag_word(tag: int) -> int:
    """tag << 60 as a signed int64 value (tags 8-15 set the sign bit)."""
    word = tag << DOMAIN_SHIFT
    return word - 2**64 if word >= 2**63 else word


def block_seeds(seed, keys, stream, block_index):
    """Stateless seeds of noise blocks of keyed streams (certification, prediction, attacks).

    Args:
        seed: int64 scalar, the user's seed.
        keys: int64 [M], the example key of each block (e.g. its index in the data set), in
            [0, MAX_KEY) (taken modulo MAX_KEY).
        stream: int64 [M] or scalar, each one of `STREAMS` (or a reserved stream 4-6; not checked
            here, in the graph: callers validate it).
        block_index: int64 [M], index of the block within the (example, stream) sequence, in
            [0, MAX_BLOCK) (taken modulo MAX_BLOCK).

    Returns:
        int64 [M, 2] seeds for `tf.random.stateless_normal`: [seed, (stream + 1) << 60 | key << 32 |
        block] (module docstring), distinct for distinct (key, stream, block_index) and distinct
        from the seeds of every other domain.
    """
    keys = tf.bitwise.bitwise_and(tf.cast(keys, tf.int64), MAX_KEY - 1)
    stream = tf.cast(stream, tf.int64)
    block_index = tf.bitwise.bitwise_and(tf.cast(block_index, tf.int64), MAX_BLOCK - 1)
    second = (stream + 1) * (2**DOMAIN_SHIFT) + keys * (2**32) + block_index
    first = tf.fill(tf.shape(second), tf.cast(seed, tf.int64))
    return tf.stack([first, second], axis=-1)


def step_seeds(seed, domain: int, replica, step, index=0):
    """Stateless seeds of a step domain (training noise, training attacks, evaluation noise).

    Args:
        seed: int64 scalar, the user's seed.
        domain: one of `STEP_DOMAINS` (a Python int).
        replica: int scalar, the global replica id (`replica_id`), taken modulo MAX_REPLICAS.
        step: int scalar, the step counter, taken modulo MAX_STEP.
        index: int scalar or [N], e.g. the example within the replica's batch, modulo MAX_INDEX.
            (replica, step and index broadcast: any of them may be [N].)

    Returns:
        int64 [2] (all scalars) or [N, 2] seeds [seed, domain << 60 | replica << 46 | step << 16 |
        index] (module docstring), distinct for distinct (domain, replica, step, index) and
        distinct from the seeds of every other domain.

    Raises:
        ValueError: if `domain` is not one of `STEP_DOMAINS` or a reserved step domain (11-15).
    """
    if isinstance(domain, bool) or not isinstance(domain, int) or not 8 <= domain < 16:
        raise ValueError(f"domain must be a step domain in [8, 16) ({STEP_DOMAINS} in use), got {domain!r}")

    def field(value, size, shift):
        return tf.bitwise.bitwise_and(tf.cast(value, tf.int64), size - 1) * (2**shift)

    second = (tf.constant(_tag_word(domain), tf.int64) + field(replica, MAX_REPLICAS, 46)
              + field(step, MAX_STEP, 16) + field(index, MAX_INDEX, 0))
    first = tf.fill(tf.shape(second), tf.cast(seed, tf.int64))
    return tf.stack([first, second], axis=-1)


def replica_id():
    """The global id of the calling replica: int64 scalar.

    `tf.distribute.get_replica_context().replica_id_in_sync_group` inside `strategy.run` (and so in
    Keras' `train_step` under a strategy), which under `MultiWorkerMirroredStrategy` is global
    across workers; 0 outside any strategy and in a cross-replica context.
    """
    context = tf.distribute.get_replica_context()
    if context is None:  # cross-replica context (e.g. eager code under strategy.scope())
        return tf.constant(0, tf.int64)
    return tf.cast(context.replica_id_in_sync_group, tf.int64)


def gaussian_blocks(seeds, block_size: int, image_shape, sigma):
    """Draws one block of isotropic Gaussian noise per seed.

    Args:
        seeds: int64 [M, 2], from `block_seeds`.
        block_size: draws per block.
        image_shape: (height, width, channels).
        sigma: standard deviation per coordinate (l2 on the [0, 1] pixel scale), > 0: a float, or
            float32 [M], one noise level per block (`tfsmooth.counting`: sigma is data).

    Returns:
        float32 [M, block_size, height, width, channels], delta ~ N(0, sigma^2 I), not clipped.
        Block m is sigma[m] times a standard normal block that depends on seeds[m] only.
    """
    shape = [block_size, *image_shape]

    def one_block(block_seed):
        return tf.random.stateless_normal(shape, seed=block_seed, dtype=tf.float32)

    return _scaled(tf.map_fn(one_block, seeds, fn_output_signature=tf.float32), sigma)


def _scaled(standard, sigma):
    """standard [M, block, H, W, C] times sigma: a float, or float32 [M] (one level per block)."""
    sigma = tf.cast(sigma, tf.float32)
    if sigma.shape.rank:
        sigma = tf.reshape(sigma, [-1] + [1] * (len(standard.shape) - 1))
    return standard * sigma


NOISE_SCHEMES = (2, 3)
"""How certification noise blocks are drawn from their seeds (the run record's `noise_scheme`):

    2  one stateless op per block: block b of (seed, key, stream) is `stateless_normal` under
       `block_seeds(seed, key, stream, b)` (`gaussian_blocks`; every file written before scheme 3).
    3  counter-based: one Philox key per (seed, key, stream), the key and counter of
       `block_seeds(seed, key, stream, 0)`; block b is the b-th slice of E = block_size * H * W * C
       normals (rounded up to a multiple of 4, Philox's output width) of the one long sequence of
       that key, i.e. the draw at counter + b * ceil(E / 4). Consecutive blocks of one (key, stream)
       are then one draw -- one RNG op per *run* of blocks instead of one per block
       (`gaussian_runs`); a pass of certification usually holds one run. Block 0 equals scheme 2's
       block 0 (same key and counter), later blocks differ: a file keeps its scheme.

Both give each block noise that depends only on (seed, key, stream, block) and the block's shape."""

PHILOX = 1
"""`tf.random.Algorithm.PHILOX.value`: the algorithm of the counter-based draws (scheme 3)."""


def check_noise_scheme(scheme) -> int:
    """A scheme of `NOISE_SCHEMES` (ValueError naming `noise_scheme` otherwise)."""
    if isinstance(scheme, bool) or scheme not in NOISE_SCHEMES:
        raise ValueError(f"noise_scheme must be one of {NOISE_SCHEMES}, got {scheme!r}")
    return int(scheme)


def add_counter(counter, offset):
    """counter + offset for a 128-bit Philox counter.

    Args:
        counter: uint64 [2], low word first (TensorFlow's layout: `StatelessRandomGetKeyCounter`).
        offset: uint64 scalar.

    Returns:
        uint64 [2]: the sum modulo 2**128 (the carry of the low word goes into the high word).
    """
    low = counter[0] + offset
    carry = tf.cast(low < counter[0], tf.uint64)
    return tf.stack([low, counter[1] + carry])


def run_starts(seeds, block_index):
    """Where the runs of a pass's blocks start: block i starts a run unless it continues block i - 1, i.e. has
    the same seed and block_index[i - 1] + 1.

    Args:
        seeds: int64 [M, 2], `block_seeds(seed, key, stream, 0)` of each block (the run key).
        block_index: int64 [M].

    Returns:
        int32 [R]: the first block of each run, increasing, starting at 0 (R >= 1 when M >= 1).
    """
    same_seed = tf.reduce_all(tf.equal(seeds[1:], seeds[:-1]), axis=-1)
    continues = tf.logical_and(same_seed, tf.equal(block_index[1:], block_index[:-1] + 1))
    starts = tf.concat([[True], tf.logical_not(continues)], axis=0)[:tf.shape(seeds)[0]]
    return tf.cast(tf.reshape(tf.where(starts), [-1]), tf.int32)


def gaussian_runs(seeds, block_index, block_size: int, image_shape, sigma):
    """Draws noise blocks by scheme 3 (`NOISE_SCHEMES`): one Philox draw per run of consecutive blocks.

    Args:
        seeds: int64 [M, 2], `block_seeds(seed, key, stream, 0)` of each block's (key, stream).
        block_index: int64 [M], each block's index within its (key, stream) sequence, in [0, MAX_BLOCK).
        block_size: draws per block.
        image_shape: (height, width, channels), static.
        sigma: a float or float32 [M] (one level per block), > 0.

    Returns:
        float32 [M, block_size, height, width, channels], delta ~ N(0, sigma^2 I): block m is sigma[m] times
        the block_index[m]-th slice of the standard normal sequence of seeds[m]'s Philox key, whatever the
        other blocks of the call (`run_starts` groups them; a run is one `StatelessRandomNormalV2`).
    """
    elements = int(block_size * math.prod(image_shape))
    step = -(-elements // 4)  # Philox counter increments per block (4 normals each)
    total = tf.shape(seeds)[0]
    starts = run_starts(seeds, block_index)
    ends = tf.concat([starts[1:], [total]], axis=0)
    runs = tf.shape(starts)[0]

    def one_run(r, out):
        first, length = starts[r], ends[r] - starts[r]
        key, counter = tf.raw_ops.StatelessRandomGetKeyCounter(seed=seeds[first])
        offset = tf.cast(block_index[first], tf.uint64) * tf.constant(step, tf.uint64)
        size = tf.cast(length, tf.int64) * (4 * step)  # int64: a long run of large images passes 2**31 numbers
        flat = tf.raw_ops.StatelessRandomNormalV2(shape=tf.reshape(size, [1]), key=key,
                                                  counter=add_counter(counter, offset), alg=PHILOX)
        return r + 1, out.write(r, tf.reshape(flat, [length, 4 * step])[:, :elements])

    out = tf.TensorArray(tf.float32, size=runs, infer_shape=False, element_shape=tf.TensorShape([None, elements]))
    _, out = tf.while_loop(lambda r, _: r < runs, one_run, (tf.constant(0), out))
    return _scaled(tf.reshape(out.concat(), [total, block_size, *image_shape]), sigma)
