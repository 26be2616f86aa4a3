"""Counting the base classifier's top-1 labels on noisy copies: the work of PREDICT and CERTIFY.

Cohen, Rosenfeld & Kolter (ICML 2019), Sec. 3.2: PREDICT and CERTIFY need, per input x, the class
counts of f(x + delta_i) over n independent draws delta_i ~ N(0, sigma^2 I). This module is the one
home of that work, shared by `tfsmooth.smoothing.SmoothedClassifier` (host loop) and the SavedModel of
`tfsmooth.export` (a `tf.while_loop`), so both run the same forward passes in the same order:

* **Blocks.** The draws of one (example, stream) are cut into blocks of `noise_block` draws; block b
  of stream s of the example with key k is `tfsmooth.noise.gaussian_block` under
  `tfsmooth.noise.block_seeds(seed, k, s, b)` (noise scheme 2; scheme 3 draws block b at a counter offset of the
  Philox key of block 0's seed, `tfsmooth.noise.gaussian_runs`, so a run of consecutive blocks is one op;
  `tfsmooth.noise.NOISE_SCHEMES`). The last block of a sequence may be partial (`valid`
  < noise_block draws count; the rest are drawn and discarded). `block_plan` lists an example's
  blocks, stream by stream in the plan's order: written once, read by both schedulers.
* **Passes.** A forward pass evaluates `blocks_per_pass(batch_size, noise_block)` blocks, taken in
  order across the queue of examples (one example's blocks may span passes; several examples may
  share one). The last pass is padded with dummy blocks (the pass's first image, key 0, stream 0,
  blocks 0, 1, ..., no valid draw) to a fixed shape.
* **sigma is data.** Every image carries its own noise level (float32 [B]), so per-image sigma needs
  no second path; the scalar-sigma API fills it.

The counts of an example depend only on (seed, key, stream, sigma, noise_block) -- not on the batch
size, on which other examples share a pass, or on where a resumed run restarted.

Units: pixels float32 in [0, 1]; sigma l2 per pixel on that scale.
"""

from __future__ import annotations

import collections
import contextlib
import math
import time
from typing import Callable, Iterable, Iterator, Optional, Sequence, Tuple, Union

import numpy as np
import tensorflow as tf

from tfsmooth import checks, noise

Plan = Sequence[Tuple[int, ...]]
"""((stream, number of draws), ...): the draws an example needs, e.g. ((SELECTION, n0), (ESTIMATION, n)); an entry
(stream, draws, first) starts at draw `first` of the stream (a multiple of the noise block): sequential
certification draws the estimation stream look by look, each look's blocks continuing the previous ones, so the
draws up to any look are the first draws of a fixed-n run (`tfsmooth.sequential`)."""


def blocks_per_pass(batch_size: int, noise_block: int) -> int:
    """Noise blocks per forward pass: max(1, batch_size // noise_block) (batch_size rounds down)."""
    return max(1, batch_size // noise_block)


def block_plan(plan: Plan, noise_block: int):
    """An example's blocks in counting order: stream by stream (in `plan` order), block 0, 1, ...

    Args:
        plan: ((stream, draws), ...) or ((stream, draws, first), ...), draws >= 1, first >= 0 a multiple of
            noise_block (default 0): the blocks first / noise_block, ... of the stream.
        noise_block: draws per block, >= 1.

    Returns:
        (stream int64 [T], block_index int64 [T], valid int32 [T]) numpy arrays, T the example's
        number of blocks; valid = draws of the block that count (noise_block except maybe the last).

    Raises:
        ValueError: a stream that is not one of `noise.STREAMS` (another value would draw from another
            use's seed domain, e.g. the training noise), a stream listed twice, or a number of draws
            that is < 1 or needs more than `noise.MAX_BLOCK` blocks.
    """
    streams, index, valid = [], [], []
    seen = set()
    for stream, num, *start in plan:
        first = start[0] if start else 0
        if isinstance(stream, bool) or stream not in noise.STREAMS or stream in seen:
            raise ValueError(f"plan streams must be distinct members of tfsmooth.noise.STREAMS {noise.STREAMS}, "
                             f"got {stream!r}")
        seen.add(stream)
        if isinstance(num, bool) or not isinstance(num, (int, np.integer)) or not 1 <= num <= noise.MAX_BLOCK * noise_block:
            raise ValueError(f"plan draws must be integers in [1, {noise.MAX_BLOCK} * noise_block], got {num!r}")
        if (isinstance(first, bool) or not isinstance(first, (int, np.integer)) or first < 0 or first % noise_block
                or (first + num) > noise.MAX_BLOCK * noise_block):
            raise ValueError(f"plan's first draw must be a multiple of noise_block ({noise_block}) >= 0, got {first!r}")
        for b in range(math.ceil(num / noise_block)):
            streams.append(stream)
            index.append(first // noise_block + b)
            valid.append(min(noise_block, num - b * noise_block))
    return np.array(streams, np.int64), np.array(index, np.int64), np.array(valid, np.int32)


def count_blocks(base_model, images, image_of_block, seeds, valid, sigma, *, block_size, num_classes,
                 parallel_passes=1, noise_scheme=2, block_index=None):
    """Top-1 class counts of the base classifier on noisy copies, one count vector per block.

    Args:
        base_model: callable Keras model, pixels [batch, H, W, C] in [0, 1] -> scores [batch, K].
        images: float32 [B, H, W, C] in [0, 1].
        image_of_block: int32 [M], which image each block perturbs.
        seeds: int64 [M, 2], from `tfsmooth.noise.block_seeds`: each block's own seed (noise_scheme 2) or the
            seed of block 0 of its (key, stream) (noise_scheme 3, with `block_index`).
        valid: int32 [M], how many of the block's draws count (its first `valid` draws; the rest
            are discarded).
        sigma: float32 [B], each image's noise level (l2 per pixel, [0, 1] scale), > 0.
        block_size: draws per block.
        num_classes: K.
        parallel_passes: split the M blocks into this many contiguous groups, each its own noise
            draw and forward pass with no data dependency between them, so TensorFlow's inter-op
            scheduler runs them at the same time (on a CPU this keeps the cores busier than one
            large pass whose kernels synchronize all threads). The counts do not depend on it:
            every block's noise comes from its own seed. Must not exceed M (no empty group).
        noise_scheme: 2 (one RNG op per block, `noise.gaussian_blocks`) or 3 (one per run of consecutive blocks
            of one (key, stream), `noise.gaussian_runs`; `noise.NOISE_SCHEMES`).
        block_index: int64 [M], scheme 3 only: each block's index in its (key, stream) sequence.

    Returns:
        int32 [M, num_classes]: counts of argmax f(x + delta) over the valid draws of each block.

    Raises:
        ValueError: (at trace time) if the model's output size is known and is not num_classes.
    """
    noise_scheme = noise.check_noise_scheme(noise_scheme)
    total = tf.shape(seeds)[0]
    block_sigma = tf.gather(tf.cast(sigma, tf.float32), image_of_block)
    bounds = [(total * i) // parallel_passes for i in range(parallel_passes + 1)]
    if noise_scheme == 3 and block_index is None:
        raise ValueError("noise_scheme 3 draws blocks by their index: pass block_index")
    index = block_index if block_index is not None else tf.zeros([total], tf.int64)
    return tf.concat([
        _count_group(base_model, images, image_of_block[lo:hi], seeds[lo:hi], valid[lo:hi], block_sigma[lo:hi],
                     block_size, num_classes, noise_scheme, index[lo:hi])
        for lo, hi in zip(bounds[:-1], bounds[1:])], axis=0)


def _count_group(base_model, images, image_of_block, seeds, valid, block_sigma, block_size, num_classes,
                 noise_scheme, block_index):
    image_shape = images.shape[1:]
    if noise_scheme == 3:
        delta = noise.gaussian_runs(seeds, block_index, block_size, image_shape, block_sigma)
    else:
        delta = noise.gaussian_blocks(seeds, block_size, image_shape, block_sigma)
    noisy = tf.gather(images, image_of_block)[:, None] + delta
    logits = base_model(tf.reshape(noisy, [-1, *image_shape]), training=False)
    if logits.shape[-1] is not None and logits.shape[-1] != num_classes:
        raise ValueError(f"the base model outputs {logits.shape[-1]} class scores, expected num_classes={num_classes}")
    top1 = tf.reshape(tf.argmax(logits, axis=-1, output_type=tf.int32), [-1, block_size])
    mask = tf.range(block_size)[None, :] < valid[:, None]
    one_hot = tf.one_hot(top1, num_classes, dtype=tf.int32) * tf.cast(mask, tf.int32)[..., None]
    return tf.reduce_sum(one_hot, axis=1)


def resolve_devices(devices) -> Optional[Tuple[str, ...]]:
    """The devices the noisy forward passes are spread over (`iter_counts`: pass p runs on device p mod D).

    Args:
        devices: None (TensorFlow's own placement: one device, a GPU if there is one); "all": every local logical
            GPU, or every logical CPU device where there is no GPU; or device names, a sequence or one
            comma-separated string ("GPU:0,GPU:1", "/device:GPU:0", "cpu:0"; case-insensitive).

    Returns:
        None, or a tuple of canonical names ("/device:GPU:0", ...), distinct, each a logical device of this process.

    Raises:
        ValueError: for a name TensorFlow cannot parse, one without a device index, one of another job or task, a
            device this process does not have (the message lists the ones it has), a repeated device, devices of
            different kinds (a CPU and a GPU), an empty list, or a value that is neither a string nor a list.
    """
    if devices is None:
        return None
    local = [d.name for d in tf.config.list_logical_devices()]
    if isinstance(devices, str) and devices.strip().lower() == "all":
        gpus = [d.name for d in tf.config.list_logical_devices("GPU")]
        return tuple(gpus or [d.name for d in tf.config.list_logical_devices("CPU")])
    if isinstance(devices, str):
        names = devices.split(",")
    elif isinstance(devices, (list, tuple)):
        names = list(devices)
    else:
        names = []
    if not names or not all(isinstance(n, str) and n.strip() for n in names):
        raise ValueError(f"devices must be None, 'all' or device names such as 'GPU:0,GPU:1', got {devices!r}")
    resolved = []
    for name in names:
        try:
            spec = tf.DeviceSpec.from_string(name.strip())
        except ValueError:
            spec = None
        if spec is None or spec.device_type is None or spec.device_index is None:
            raise ValueError(f"devices: {name.strip()!r} is not a device name with an index such as 'GPU:0' "
                             f"(this process has {', '.join(local)})")
        if spec.job not in (None, "localhost") or spec.replica not in (None, 0) or spec.task not in (None, 0):
            raise ValueError(f"devices: {name.strip()!r} names another job or task: only this process's own devices "
                             f"count ({', '.join(local)}); other machines take shards (`--shard`)")
        canonical = f"/device:{spec.device_type.upper()}:{spec.device_index}"
        if canonical not in local:
            raise ValueError(f"devices: {name.strip()!r} is not a device of this process (it has {', '.join(local)})")
        if canonical in resolved:
            raise ValueError(f"devices: {name.strip()!r} is listed twice")
        resolved.append(canonical)
    kinds = {tf.DeviceSpec.from_string(name).device_type for name in resolved}
    if len(kinds) > 1:
        raise ValueError(f"devices: {', '.join(resolved)} mix device kinds ({', '.join(sorted(kinds))}); their kernels "
                         "round differently, so which pass ran where would change the counts: name one kind")
    return tuple(resolved)


def pass_function(base_model, image_shape, *, noise_block: int, num_classes: int, parallel_passes: int,
                  device: Optional[str] = None, noise_scheme: int = 2):
    """A compiled forward pass of the host scheduler (`iter_counts`).

    Args:
        device: where the pass runs (a TensorFlow device name such as "/GPU:1"), or None (default): TensorFlow's
            own placement. The base model's variables stay where they are; a pass on another device reads them
            there (TensorFlow copies them for the pass: ~1 MB for a CIFAR-10 ResNet-20).
        noise_scheme: 2 (default) or 3 (`noise.NOISE_SCHEMES`): how the pass draws its blocks.

    Returns:
        A `tf.function` (images float32 [B, H, W, C], image_of_block int32 [M], keys int64 [M],
        streams int64 [M], block_index int64 [M], valid int32 [M], sigma float32 [B], seed int64 [])
        -> int32 [M, num_classes], traced once per image shape.
    """
    spec = [tf.TensorSpec([None, *image_shape], tf.float32), tf.TensorSpec([None], tf.int32),
            tf.TensorSpec([None], tf.int64), tf.TensorSpec([None], tf.int64), tf.TensorSpec([None], tf.int64),
            tf.TensorSpec([None], tf.int32), tf.TensorSpec([None], tf.float32), tf.TensorSpec([], tf.int64)]

    return tf.function(_Pass(base_model, noise_block, num_classes, parallel_passes, device,
                             noise.check_noise_scheme(noise_scheme)), input_signature=spec)


class _Pass:
    """The body of `pass_function`. A callable object, not a closure: TensorFlow counts traces per
    code object for its "excessive retracing" warning, so closures of one function traced once per
    `SmoothedClassifier` would add up and warn after five classifiers; an object is its own key."""

    def __init__(self, base_model, noise_block, num_classes, parallel_passes, device=None, noise_scheme=2):
        self.base_model, self.noise_block = base_model, noise_block
        self.num_classes, self.parallel_passes, self.device = num_classes, parallel_passes, device
        self.noise_scheme = noise_scheme

    def __call__(self, images, image_of_block, keys, streams, block_index, valid, sigma, seed):
        with contextlib.ExitStack() as scope:
            if self.device is not None:
                scope.enter_context(tf.device(self.device))
            if self.noise_scheme == 3:  # the run key of block 0; the blocks are counter offsets of it
                seeds = noise.block_seeds(seed, keys, streams, tf.zeros_like(block_index))
            else:
                seeds = noise.block_seeds(seed, keys, streams, block_index)
            return count_blocks(self.base_model, images, image_of_block, seeds, valid, sigma,
                                block_size=self.noise_block, num_classes=self.num_classes,
                                parallel_passes=self.parallel_passes, noise_scheme=self.noise_scheme,
                                block_index=block_index)


def iter_counts(examples: Iterable[Tuple[int, np.ndarray, float]], plan: Plan, *, noise_block: int,
                batch_size: int, num_classes: int, seed: int,
                run_pass: Union[Callable[..., object], Sequence[Callable[..., object]]],
                in_flight: Optional[int] = None) -> Iterator[Tuple[int, dict, float]]:
    """The host scheduler: yields (key, {stream: int64 [K] counts}, seconds) per example, in input order.

    Passes are *dispatched* before the counts of earlier ones are *read*: up to `in_flight` passes are
    outstanding, and pass p goes to `run_pass[p % D]` (one callable per device, D of them). A pass function that
    returns a device tensor without waiting for it (TensorFlow enqueues GPU kernels asynchronously; reading the
    tensor, `.numpy()`, is what waits) lets the host prepare pass p + 1 -- and D devices compute D passes -- while
    pass p runs: a double buffer. The counts read from every pass are added to its examples on the host (int64),
    so the answers do not depend on D, on `in_flight` or on which device ran which pass -- only on
    (seed, key, stream, sigma, noise_block), as the module docstring says (up to the devices' own roundings:
    counts equal across devices of one kind). With synchronous pass functions (a CPU) the order of the work is
    the same and only the reads are one pass later.

    Examples are read lazily: a new example is read only while fewer than one pass of blocks wait to be
    dispatched, so the host holds at most `in_flight` + 1 passes of blocks plus one example's, a stream of any
    length runs in constant memory, and an example is yielded as soon as the last pass holding one of its blocks
    has been read.

    `seconds` is the example's share of the wall-clock time of the passes it took part in: a pass is charged the
    host's time in its dispatch (preparing the inputs and starting it; all of the pass on a synchronous device)
    plus the time its read waited, so the charges add up to the counting's time without the reading of the
    examples (which may itself count, e.g. sample-wise selection feeding certification); a pass holding b of the
    example's blocks among its B real blocks adds charge * b / B (padding blocks count for nobody), independent
    of where a row lands in the output order.

    Args:
        examples: (key, image float32 [H, W, C] in [0, 1], sigma) triples; key and image already
            validated by the caller, sigma checked here (a finite number > 0, per image).
        plan: the draws of every example (`Plan`).
        noise_block, batch_size, num_classes: as in `SmoothedClassifier`.
        seed: int in [0, 2**63).
        run_pass: the pass of `pass_function` (or any callable of the same signature returning
            something with `.numpy()` or an array), or a non-empty sequence of them, one per device.
        in_flight: most passes dispatched and not yet read, >= 1; None (default): D + 1 (every device busy and
            one pass waiting). 1 is the unpipelined scheduler: each pass is read before the next is dispatched.

    Raises:
        ValueError: if run_pass is an empty sequence or in_flight < 1; an image's sigma that is not a finite
            number > 0 (when it is read). An error while reading the examples or dispatching a pass is raised
            after the passes already in flight have been read and every example they complete has been yielded
            (so a job writes the rows it finished, as the unpipelined scheduler did).
    """
    run_passes = tuple(run_pass) if isinstance(run_pass, (list, tuple)) else (run_pass,)
    if not run_passes or not all(callable(f) for f in run_passes):
        raise ValueError(f"run_pass must be a callable or a non-empty sequence of callables, got {run_pass!r}")
    in_flight = len(run_passes) + 1 if in_flight is None else checks.check_count(in_flight, "in_flight")
    per_pass = blocks_per_pass(batch_size, noise_block)
    streams_t, index_t, valid_t = block_plan(plan, noise_block)
    pending = collections.deque()  # (slot, stream, block_index, valid), not yet dispatched
    flight = collections.deque()  # (take, handle, seconds of its dispatch), dispatched and not yet read
    open_jobs = collections.OrderedDict()  # slot -> [key, image, sigma, counts, blocks left, seconds]
    examples = iter(examples)
    next_slot, exhausted, dispatched, failure = 0, False, 0, None
    while True:
        try:
            while len(flight) < in_flight and failure is None:
                while len(pending) < per_pass and not exhausted:
                    try:
                        key, image, sigma = next(examples)
                    except StopIteration:
                        exhausted = True
                        break
                    sigma = checks.check_sigma(sigma, f"sigma of the image with key {key}")
                    pending.extend(zip([next_slot] * len(streams_t), streams_t, index_t, valid_t))
                    counts = {stream: np.zeros(num_classes, np.int64) for stream, *_ in plan}
                    open_jobs[next_slot] = [key, image, sigma, counts, len(streams_t), 0.0]
                    next_slot += 1
                if not pending:
                    break
                take = [pending.popleft() for _ in range(min(per_pass, len(pending)))]
                start = time.perf_counter()
                handle = _dispatch(open_jobs, take, per_pass, seed, run_passes[dispatched % len(run_passes)])
                flight.append((take, handle, time.perf_counter() - start))
                dispatched += 1
        except Exception as error:  # noqa: BLE001 -- re-raised below, once the passes in flight are yielded
            failure = error  # a bad example or a failed dispatch: finish what was started, then raise it
        if not flight:
            if failure is not None:
                raise failure
            return
        take, handle, charge = flight.popleft()
        start = time.perf_counter()
        out = _read(handle, len(take))
        share = (charge + time.perf_counter() - start) / len(take)
        for row, (slot, stream, _, _) in zip(out, take):
            job = open_jobs[slot]
            job[3][int(stream)] += row
            job[4] -= 1
            job[5] += share
        while open_jobs and next(iter(open_jobs.values()))[4] == 0:
            key, _, _, counts, _, seconds = open_jobs.popitem(last=False)[1]
            yield key, counts, seconds


def _dispatch(open_jobs, take, per_pass, seed, run_pass):
    """Starts one pass over the blocks `take`; returns what `run_pass` returns (read by `_read`)."""
    slots = sorted({t[0] for t in take})
    local = {s: i for i, s in enumerate(slots)}
    images = np.stack([open_jobs[s][1] for s in slots])
    sigma = np.array([open_jobs[s][2] for s in slots], np.float32)
    pad = per_pass - len(take)  # pad to a fixed shape: a single trace of the graph
    image_of_block = np.array([local[t[0]] for t in take] + [0] * pad, np.int32)
    keys = np.array([open_jobs[t[0]][0] for t in take] + [0] * pad, np.int64)
    streams = np.array([t[1] for t in take] + [0] * pad, np.int64)
    block_index = np.array([t[2] for t in take] + list(range(pad)), np.int64)  # padding: one run (scheme 3)
    valid = np.array([t[3] for t in take] + [0] * pad, np.int32)
    return run_pass(images, image_of_block, keys, streams, block_index, valid, sigma, np.int64(seed))


def _read(handle, real_blocks):
    """The int64 [real_blocks, K] counts of a dispatched pass (waits for it: `.numpy()` of a device tensor)."""
    out = handle.numpy() if hasattr(handle, "numpy") else handle
    return np.asarray(out)[:real_blocks].astype(np.int64)


def graph_counts(base_model, images, sigma, seed, plan: Plan, *, noise_block: int, batch_size: int,
                 num_classes: int):
    """Class counts per image and stream in the graph, as `iter_counts` with keys 0..B-1.

    The same passes as the host scheduler run one at a time in a `tf.while_loop`, so each forward
    pass sees the library's tensor (the host may split a pass into concurrent groups,
    `parallel_passes`; the graph does not). One exception cuts latency: a request with fewer blocks
    than one pass runs a single unpadded pass (e.g. one image, n = 100, batch_size = 1,000: 100 noisy
    copies instead of 1,000). The noise is the same; only the base model's batch shape differs, which
    changes no logit bit on CPU in our tests (tests/test_export.py). On a GPU, kernels chosen by
    batch shape may round differently, so equality with the library is then up to such roundings.

    Args:
        base_model: callable, float32 [N, H, W, C] -> scores [N, K].
        images: float32 [B, H, W, C] in [0, 1], static image shape.
        sigma: float32 [B], each image's noise level.
        seed: int64 scalar.
        plan, noise_block, batch_size, num_classes: as in `iter_counts`.

    Returns:
        {stream: int64 [B, K]}.
    """
    streams_t, index_t, valid_t = block_plan(plan, noise_block)
    per_image = len(streams_t)
    batch = tf.shape(images)[0]
    image_of_block = tf.repeat(tf.range(batch), per_image)
    total = batch * per_image
    per_pass = tf.clip_by_value(total, 1, blocks_per_pass(batch_size, noise_block))
    passes = (total + per_pass - 1) // per_pass
    pad = passes * per_pass - total
    pad_image = tf.gather(tf.concat([image_of_block, [0]], 0), tf.maximum(passes - 1, 0) * per_pass)
    padded = lambda x, value: tf.concat([x, tf.fill([pad], tf.cast(value, x.dtype))], 0)  # noqa: E731
    image_of_block = padded(image_of_block, pad_image)
    keys = padded(tf.cast(tf.repeat(tf.range(batch), per_image), tf.int64), 0)
    streams = padded(tf.tile(streams_t, [batch]), 0)
    block_index = padded(tf.tile(index_t, [batch]), 0)
    valid = padded(tf.tile(valid_t, [batch]), 0)

    def one_pass(p, results):
        part = slice(p * per_pass, (p + 1) * per_pass)
        seeds = noise.block_seeds(seed, keys[part], streams[part], block_index[part])
        counts = count_blocks(base_model, images, image_of_block[part], seeds, valid[part], sigma,
                              block_size=noise_block, num_classes=num_classes)
        return p + 1, results.write(p, counts)

    results = tf.TensorArray(tf.int32, size=passes, element_shape=[None, num_classes])
    _, results = tf.while_loop(lambda p, _: p < passes, one_pass, (tf.constant(0), results),
                               parallel_iterations=1)
    counts = tf.reshape(results.concat()[:total], [batch, per_image, num_classes])
    out, start = {}, 0
    for stream, num, *_ in plan:
        blocks = math.ceil(num / noise_block)
        out[stream] = tf.cast(tf.reduce_sum(counts[:, start:start + blocks], axis=1), tf.int64)
        start += blocks
    return out
