"""The smoothed classifier: PREDICT and CERTIFY of Cohen, Rosenfeld & Kolter (ICML 2019), and T-CERTIFY.

g(x) = argmax_c P(f(x + delta) = c), delta ~ N(0, sigma^2 I), with f the base classifier. Counting
of f's top-1 labels under noise runs in a compiled `tf.function`; the decisions (binomial test,
Clopper-Pearson bounds, radius) run on the host in `tfsmooth.stats` (scipy). Certification takes
`method="cohen"` (CERTIFY) or `method="t-certify"` (Feng et al. 2020: the runner-up bounded separately,
`tfsmooth.stats.decide_certificate`); both decide from the same counts, so `recertify` turns one
`Certificate` into the other method's without new draws.

Units: images are float32 pixels in [0, 1]; sigma and radii are l2 norms on that scale.
"""

from __future__ import annotations

import dataclasses
import os
import time
from typing import Callable, Iterable, Iterator, List, Optional, Sequence, Tuple, Union

import numpy as np
import tensorflow as tf

from tfsmooth import checks, counting, noise, registry, sequential, stats
from tfsmooth.models import folding
from tfsmooth.models import io as model_io
from tfsmooth.stats import ABSTAIN


@dataclasses.dataclass(frozen=True)
class Certificate:
    """Result of CERTIFY (or T-CERTIFY) for one input.

    Attributes:
        label: the certified class, or ABSTAIN (-1).
        radius: l2 radius ([0, 1] pixel scale) within which g is constant; 0.0 when abstaining.
        p_a_lower: one-sided Clopper-Pearson lower bound on P(f(x + delta) = c_A), at level `alpha_a`.
        counts: int64 [num_classes], class counts of the n estimation draws.
        selection_counts: int64 [num_classes], class counts of the n0 selection draws.
        seconds: this input's share of the wall-clock time of the noisy forward passes it used
            (`tfsmooth.counting.iter_counts`), plus its statistics; what the TSV's `time` column holds.
        seed: the seed of the noise (the one drawn when `seed=None` was passed), to reproduce it.
        p_b_upper: upper bound on max_{c != c_A} P(f(x + delta) = c): 1 - p_a_lower for "cohen", the
            runner-up's Clopper-Pearson bound (capped at 1 - p_a_lower) for "t-certify".
        runner_up: "t-certify": the class other than c_A with the largest estimation count, whose upper
            bound (capped at 1 - p_a_lower) is p_b_upper; -1 for "cohen".
        alpha_a: the failure probability spent on p_a_lower (alpha for "cohen").
        method: "cohen" or "t-certify".
    """

    label: int
    radius: float
    p_a_lower: float
    counts: np.ndarray
    selection_counts: np.ndarray
    seconds: float = 0.0
    seed: Optional[int] = None
    p_b_upper: float = float("nan")
    runner_up: int = -1
    alpha_a: float = float("nan")
    method: str = "cohen"


def recertify(certificate: Certificate, sigma: float, alpha: float, method: str = "cohen",
              alpha_split: Union[float, str] = 0.5) -> Certificate:
    """The certificate another rule (or alpha) gives on the same counts: no new noisy draws.

    The selection and estimation counts of `certificate` are decided again by
    `tfsmooth.stats.decide_certificate(selection_counts, counts, sigma, alpha, method, alpha_split)`; `seconds`
    and `seed` are kept. One counting pass thus yields both CERTIFY and T-CERTIFY, each with its own guarantee
    (the two are not valid *together* at level alpha: reporting the better of the two per image is not a
    level-alpha procedure).

    Raises:
        ValueError: as `tfsmooth.stats.decide_certificate`.
    """
    start = time.perf_counter()
    # The draws were sigma rounded to float32 times standard normals (`tfsmooth.counting`): the radius is that
    # smoothed classifier's, so it uses the same float32 sigma (for 0.12, float64 would overstate it by 2e-8).
    noise_sigma = float(np.float32(sigma))
    decision = stats.decide_certificate(certificate.selection_counts, certificate.counts, noise_sigma, alpha, method,
                                        alpha_split)
    return dataclasses.replace(certificate, label=decision.label, radius=decision.radius,
                               p_a_lower=decision.p_a_lower, p_b_upper=decision.p_b_upper,
                               runner_up=decision.runner_up, alpha_a=decision.alpha_a, method=method,
                               seconds=certificate.seconds + time.perf_counter() - start)


@dataclasses.dataclass(frozen=True)
class SequentialCertificate:
    """Result of sequential certification for one input (`SmoothedClassifier.certify_sequential`).

    Attributes:
        label: c_A, or ABSTAIN (-1) when no look's lower bound exceeded 1/2.
        radius: the largest target radius decided (l2, [0, 1] pixels), 0.0 if none.
        p_a_lower: the largest lower bound over the looks done (look l at its level alpha_l, `tfsmooth.sequential`).
        n_used: estimation draws used (the last look's n); the n0 selection draws come on top.
        counts: int64 [num_classes], class counts of the first n_used estimation draws (the counts a fixed-n
            CERTIFY with n = n_used gets for the same seed and key).
        selection_counts: int64 [num_classes], counts of the n0 selection draws.
        seconds: this input's share of the forward passes' time.
        seed: the seed of the noise.
        p_b_upper: the runner-up bound the radius used: 1 - p_a_lower (CERTIFY), or T-CERTIFY's
            min(min over looks of U_l, 1 - p_a_lower).
        method: "cohen" or "t-certify" (`tfsmooth.sequential.METHODS`).
    """

    label: int
    radius: float
    p_a_lower: float
    n_used: int
    counts: np.ndarray
    selection_counts: np.ndarray
    seconds: float = 0.0
    seed: Optional[int] = None
    p_b_upper: Optional[float] = None
    method: str = "cohen"


@dataclasses.dataclass(frozen=True)
class Prediction:
    """Result of PREDICT for one input.

    Attributes:
        label: the predicted class, or ABSTAIN (-1).
        p_value: two-sided binomial test p-value of the top two counts.
        counts: int64 [num_classes], class counts of the n draws.
        seconds, seed: as in `Certificate`.
    """

    label: int
    p_value: float
    counts: np.ndarray
    seconds: float = 0.0
    seed: Optional[int] = None


class SmoothedClassifier:
    """A smoothed classifier g built on a base classifier f (Cohen et al. 2019).

    Args:
        base_model: a Keras model mapping float32 pixels [batch, H, W, C] in [0, 1] to class scores
            [batch, num_classes] (logits or probabilities; only the argmax is used). Normalization,
            if any, must be inside the model: the noise is added in pixel space.
        num_classes: number of classes K of the base classifier's output.
        sigma: noise level, standard deviation of each pixel's Gaussian noise (l2, [0, 1] scale).
        noise_block: draws per noise block (see `tfsmooth.noise`); the counts under a given seed
            depend on it but not on `batch_size`. Default 100.

        compute_dtype: arithmetic of the noisy forward passes, "float32" (default) or "bfloat16".
            bfloat16 is about twice as fast on CPUs with native bfloat16 dot products (AVX512_BF16,
            AMX) and on accelerators; the guarantee then holds for the smoothing of the bfloat16
            base classifier, whose labels can differ from float32's near decision boundaries
            (`tfsmooth.models.folding.InferenceView`). Needs a functional or Sequential model.
        parallel_passes: forward passes run concurrently, each on a share of a batch's noise blocks
            (`tfsmooth.counting.count_blocks`). None (default): 2 on a machine with at least 2 CPU
            cores and no GPU, else 1. The counts do not depend on it; only the speed does (on a
            2-core CPU, 2 concurrent passes were 7-19 % faster than one, benchmarks/RESULTS.md).
        jit_compile: compile the base classifier's forward pass with XLA (`tf.function(jit_compile=True)`), an
            option to measure on accelerators (`benchmarks/device_check.sh`). Only the forward pass: XLA's
            stateless normal sampler draws other numbers than TensorFlow's kernels for the same seeds (measured:
            max |difference| 1.74), so the noise stays outside the XLA cluster and is the same with or without
            it; the logits may differ by float rounding of fused kernels, so counts can differ only where a draw
            lies on a decision boundary. Default False.
        devices: the devices the noisy forward passes are spread over (`tfsmooth.counting.resolve_devices`): None
            (default, TensorFlow's placement: one device), "all" (every local GPU, or the CPU devices where there is
            none), or names of one kind such as "GPU:0,GPU:1". The classifier's p-th forward pass (counted across
            calls) runs on device p mod D. The counts do not depend on it: on CPU devices they are bitwise those of
            one device (tested); on GPUs, those of one GPU up to the kernels' roundings near decision boundaries.
        in_flight: forward passes dispatched before the oldest one's counts are read (`tfsmooth.counting.iter_counts`),
            >= 1. None (default): 1 where every device is a CPU (synchronous kernels: reading later gains nothing),
            else D + 1, so that with asynchronous GPU kernels the host prepares the next pass while the devices
            compute (expected to keep them busy; not yet measured on a GPU). The counts do not depend on it.
        noise_scheme: how noise blocks are drawn from their seeds (`tfsmooth.noise.NOISE_SCHEMES`): 2 (default; one
            RNG op per block, every result file so far) or 3 (counter-based Philox: one RNG op per run of consecutive
            blocks of an image's stream, usually one per forward pass -- for accelerators, where an op per block
            costs a kernel launch each). Either way a block's noise depends only on (seed, key, stream, block), so
            the counts do not depend on batch size, devices or resumption; the two schemes draw different
            numbers (same distribution), so a result file keeps its scheme (in its run record). The exported
            SavedModel draws scheme 2.

    The noisy forward passes use `tfsmooth.models.folding.fold_batch_norm(base_model)`: each
    Conv2D + BatchNormalization pair runs as one fused convolution (about 20% faster on CPU), with
    the base model's own variables and the same logits up to float32 rounding.

    Raises:
        ValueError: if base_model is a file path or not callable, sigma is not a number > 0 (a string is
            refused), num_classes < 2, noise_block < 1, parallel_passes < 1, compute_dtype is not "float32"
            or "bfloat16" (or is "bfloat16" for a subclassed model), noise_scheme is not 2 or 3, devices names no
            device of this process
            (or one twice, or devices of two kinds), in_flight < 1, or the model's output size is known and differs
            from num_classes.
    """

    def __init__(self, base_model, num_classes: int, sigma: float, *, noise_block: int = 100,
                 compute_dtype: str = "float32", parallel_passes: Optional[int] = None, jit_compile: bool = False,
                 devices: Union[None, str, Sequence[str]] = None, in_flight: Optional[int] = None,
                 noise_scheme: int = 2):
        if isinstance(base_model, (str, bytes, os.PathLike)):
            raise ValueError(f"base_model must be a Keras model, got the path {base_model!r}: load it first with "
                             "tfsmooth.load_model(path) or tfsmooth.models.io.load_base_model(path)")
        if not callable(base_model):
            raise ValueError(f"base_model must be a callable Keras model, got {type(base_model).__name__}")
        self.base_model = base_model
        model_io.warn_if_rescaled_to_unit_range(base_model)
        self.num_classes = stats.check_count(num_classes, "num_classes", minimum=2)
        self.sigma = checks.warn_sigma_scale(stats.check_sigma(sigma))
        self.noise_block = stats.check_count(noise_block, "noise_block")
        out_shape = _static_output_shape(base_model)
        if out_shape is not None and out_shape[-1] is not None and out_shape[-1] != self.num_classes:
            raise ValueError(
                f"num_classes={num_classes} but the base model outputs {out_shape[-1]} class scores"
            )
        self.input_shape = _static_input_shape(base_model)
        self.compute_dtype = folding.check_compute_dtype(compute_dtype)
        self.parallel_passes = (_default_parallel_passes() if parallel_passes is None
                                else stats.check_count(parallel_passes, "parallel_passes"))
        self._view = folding.InferenceView(base_model, self.compute_dtype)
        if not isinstance(jit_compile, bool):
            raise ValueError(f"jit_compile must be True or False, got {jit_compile!r}")
        self.jit_compile = jit_compile
        self.devices = counting.resolve_devices(devices)
        self.in_flight = None if in_flight is None else stats.check_count(in_flight, "in_flight")
        self.noise_scheme = noise.check_noise_scheme(noise_scheme)
        self._count_fns = {}
        self._passes = 0  # forward passes dispatched so far: the next one runs on device _passes mod D

    # ----------------------------------------------------------------------------------- CERTIFY
    def certify(self, x, n0: int = 100, n: int = 100_000, alpha: float = 0.001, batch_size: Optional[int] = None,
                seed: Optional[int] = None, method: str = "cohen",
                alpha_split: Union[float, str] = 0.5) -> Certificate:
        """CERTIFY (Cohen et al. 2019, Sec. 3.2) or T-CERTIFY (Feng et al. 2020) for one input.

        With probability at least 1 - alpha over the noise, if the returned label is not ABSTAIN,
        the smoothed classifier g predicts that label everywhere in the l2 ball of the returned
        radius around x. Both methods pick c_A on the n0 selection draws and bound on the n estimation
        draws; "t-certify" also upper-bounds the strongest other class and certifies
        sigma / 2 * (Phi^{-1}(p_a_lower) - Phi^{-1}(p_b_upper)) (`tfsmooth.stats.decide_certificate`).

        Args:
            x: float32 [H, W, C] in [0, 1].
            n0: number of selection draws (>= 1), used only to pick the top class c_A (default 100,
                as the CLI).
            n: number of fresh estimation draws used to lower-bound p_A (default 100,000).
            alpha: failure probability in (0, 1) (default 0.001).
            batch_size: noisy copies per forward pass of the base model, rounded down to a multiple
                of the noise block (`noise_block` draws, default 100), at least one block: at the
                default, 50 runs 100 copies per pass and 1999 runs 1900. Only the speed and memory
                depend on it, not the counts. None: `default_batch_size` (from the model's input size).
            seed: int >= 0; the same seed gives the same counts. None draws a fresh seed, reported
                in `Certificate.seed`.
            method: "cohen" (default) or "t-certify" (`tfsmooth.registry.CERTIFY_METHODS`).
            alpha_split: "t-certify" only: alpha_A / alpha in (0, 1] (default 0.5: alpha / 2 on each
                bound; 1 is CERTIFY), or "auto" to choose it on the selection draws
                (`tfsmooth.stats.choose_alpha_split`). A split maximized on the estimation draws would
                not be level alpha, so it is not offered.

        Returns:
            A `Certificate`.

        Raises:
            ValueError: on a bad argument (see `certify_batch`).
        """
        return self.certify_batch(_as_batch(x, "x"), n0, n, alpha, batch_size, seed=seed, method=method,
                                  alpha_split=alpha_split)[0]

    def certify_batch(self, images, n0: int = 100, n: int = 100_000, alpha: float = 0.001,
                      batch_size: Optional[int] = None, seed: Optional[int] = None,
                      keys: Optional[Sequence[int]] = None,
                      progress: Optional[Callable[[int, int], None]] = None, method: str = "cohen",
                      alpha_split: Union[float, str] = 0.5) -> List[Certificate]:
        """CERTIFY (or T-CERTIFY) for many inputs, sharing forward passes between them.

        Args:
            images: float32 [B, H, W, C] in [0, 1], or a `tf.data.Dataset` of images or of
                (image, label) pairs (what `tfsmooth.data.load_dataset` returns; labels are ignored),
                batched or not.
            n0, n, alpha, batch_size, seed, method, alpha_split: as in `certify`.
            keys: int [B] in [0, 2**28), identifiers that select each input's noise (default
                0..B-1).
            progress: optional callable `progress(done, total)`, called after each input is finished
                (e.g. `keras.utils.Progbar(total).update`), for long batches. An input certified with key k and seed s gets the same counts as
                `certify(x, seed=s)` when k = 0; the CLI uses the data set index as key.

        Returns:
            One `Certificate` per image, in order.

        Raises:
            ValueError: if sigma, n0, n, batch_size or alpha are invalid, n is too small to ever
                certify at this alpha (n < log2(1/alpha)), images are not [B, H, W, C], contain NaN
                or values outside [0, 1], keys are invalid, method is not "cohen" or "t-certify", or
                alpha_split is not in (0, 1] or "auto".
        """
        images = self._check_images(images, "images")
        keys = _check_keys(keys, len(images))
        return _collect(self.iter_certify(zip(keys, images), n0, n, alpha, batch_size, seed=seed, method=method,
                                          alpha_split=alpha_split), len(images), progress)

    def iter_certify(self, examples: Iterable[Tuple[int, np.ndarray]], n0: int = 100, n: int = 100_000,
                     alpha: float = 0.001, batch_size: Optional[int] = None,
                     seed: Optional[int] = None, method: str = "cohen",
                     alpha_split: Union[float, str] = 0.5) -> Iterator[Tuple[int, Certificate]]:
        """Streams CERTIFY over `(key, image)` pairs; yields `(key, Certificate)` as each finishes.

        `examples` may also be a `tf.data.Dataset` of images or (image, label) pairs (batched or
        not); the key of each image is then its position in the data set (0, 1, ...).

        Images are consumed lazily and several share a forward pass, so the CPU stays busy even
        when n0 + n is smaller than batch_size. Arguments as in `certify_batch` (batch_size is
        rounded down to a multiple of the noise block (`noise_block` draws), at least one block).

        Returns:
            An iterator of `(key, Certificate)`, in input order.

        Raises:
            ValueError: at call time if n0, n, alpha, batch_size, seed, method or alpha_split are
                invalid (as in `certify_batch`); during iteration if an image or key is invalid (each
                is validated as it is read).
        """
        alpha = stats.check_alpha(alpha)
        checks.check_choice(method, "method", registry.CERTIFY_METHODS)
        alpha_split = stats.check_alpha_split(alpha_split)
        n0 = self._check_draws(stats.check_count(n0, "n0"), "n0")
        minimum = stats.min_n_to_certify(alpha) if method == "cohen" else stats.min_n_to_t_certify(alpha, alpha_split)
        n = self._check_n(n, alpha, minimum, "certify" if method == "cohen" else
                          f"certify with t-certify (alpha_split={alpha_split})")
        batch_size = self._batch_size(batch_size)
        seed = _resolve_seed(seed)
        return self._certify_stream(_keyed_examples(examples), n0, n, alpha, batch_size, seed, method, alpha_split)

    def _certify_stream(self, examples, n0, n, alpha, batch_size, seed, method, alpha_split):
        """The generator behind `iter_certify`, on validated arguments."""
        plan = ((noise.STREAM_SELECTION, n0), (noise.STREAM_ESTIMATION, n))
        for key, counts, seconds in self._iter_counts(examples, plan, batch_size, seed):
            counted = Certificate(stats.ABSTAIN, 0.0, 0.0, counts[noise.STREAM_ESTIMATION],
                                  counts[noise.STREAM_SELECTION], seconds, seed)
            yield key, recertify(counted, self.sigma, alpha, method, alpha_split)

    # ------------------------------------------------------------------------- sequential CERTIFY
    def certify_sequential(self, x, n0: int = 100, n_max: int = 100_000, alpha: float = 0.001,
                           batch_size: Optional[int] = None, radii: Sequence[float] = (0.25, 0.5, 0.75, 1.0),
                           seed: Optional[int] = None, n_first: int = 100, method: str = "cohen",
                           alpha_split: float = 0.5, design: int = sequential.DEFAULT_DESIGN) -> SequentialCertificate:
        """Sequential certification of one input at target radii (`tfsmooth.sequential`).

        With probability at least 1 - alpha over the noise -- at whatever look the test stops -- if the returned
        label is not ABSTAIN, the smoothed classifier g predicts it at x and everywhere in the l2 ball of the
        returned radius (one of `radii`, or 0). c_A is chosen on n0 selection draws; the estimation draws come in
        looks n_first < n_2 < ... < n_max, look l bounded at alpha_l (the alpha_l sum to alpha), and stop as soon as
        the largest target is decided or the next one is out of reach or unlikely (design 2: looks x1.5, alpha_l in
        proportion to n_l, conditional-power futility; design 1: doubling looks, alpha / L each; the module
        docstring of `tfsmooth.sequential`, "Designs"). method="t-certify" decides T-CERTIFY's radius instead
        (Feng et al. 2020; the runner-up bounded too, alpha_split * alpha on p_A, the rest on p_B).

        Args:
            x: float32 [H, W, C] in [0, 1].
            n0: selection draws, >= 1.
            n_max: the budget of estimation draws, large enough to ever decide radii[0] (`sequential.min_n_max`).
            alpha: failure probability in (0, 1).
            batch_size, seed: as `certify`.
            radii: target radii, strictly increasing, > 0 (l2, [0, 1] pixels).
            n_first: the first look, a multiple of `noise_block`.
            method, alpha_split: "cohen" (CERTIFY's radius) or "t-certify" with the fraction of alpha on p_A in
                (0, 1).
            design: the stopping design, 2 (default) or 1 (`sequential.DESIGNS`).

        Returns:
            A `SequentialCertificate`.

        Raises:
            ValueError: on a bad argument (see `iter_certify_sequential`).
        """
        return next(self.iter_certify_sequential([(0, _as_batch(x, "x")[0])], n0, n_max, alpha, batch_size, radii,
                                                 seed, n_first, method=method, alpha_split=alpha_split,
                                                 design=design))[1]

    def iter_certify_sequential(self, examples: Iterable[Tuple[int, np.ndarray]], n0: int = 100,
                                n_max: int = 100_000, alpha: float = 0.001, batch_size: Optional[int] = None,
                                radii: Sequence[float] = (0.25, 0.5, 0.75, 1.0), seed: Optional[int] = None,
                                n_first: int = 100, group: int = 64, method: str = "cohen",
                                alpha_split: float = 0.5,
                                design: int = sequential.DEFAULT_DESIGN) -> Iterator[Tuple[int, SequentialCertificate]]:
        """Streams sequential certification over (key, image) pairs; yields (key, `SequentialCertificate`) in order.

        Images are taken `group` at a time and advance look by look together: each round counts the next look's
        draws of every image still undecided in one stream of shared forward passes, so passes stay full while
        images stop at different times. An image's answer depends only on (seed, key), not on `group` or
        `batch_size`.

        Raises:
            ValueError: at call time, for n0, n_max, alpha, radii, n_first, group or batch_size out of range or an
                n_max too small to ever decide radii[0]; during iteration, for a bad image or key.
        """
        alpha = stats.check_alpha(alpha)
        n0 = self._check_draws(stats.check_count(n0, "n0"), "n0")
        n_max = self._check_draws(stats.check_count(n_max, "n_max"), "n_max")
        sequential.SequentialTest(self.sigma, radii, alpha, n_first, n_max, self.noise_block, method, alpha_split,
                                  self.num_classes, design)  # validates, early
        group = stats.check_count(group, "group")
        return self._sequential_stream(examples, n0, n_max, alpha, self._batch_size(batch_size),
                                       sequential.check_radii(radii), _resolve_seed(seed), n_first, group, method,
                                       alpha_split, design)

    def _sequential_stream(self, examples, n0, n_max, alpha, batch_size, radii, seed, n_first, group, method,
                           alpha_split, design):
        """The generator behind `iter_certify_sequential`, on validated arguments."""
        examples = iter(_keyed_examples(examples))
        while True:
            chunk = [example for _, example in zip(range(group), examples)]
            if not chunk:
                return
            # Targets are decided for the smoothing the draws perform: sigma rounded to float32 (as `recertify`).
            tests = [sequential.SequentialTest(float(np.float32(self.sigma)), radii, alpha, n_first, n_max,
                                               self.noise_block, method, alpha_split, self.num_classes, design)
                     for _ in chunk]
            counts = [np.zeros(self.num_classes, np.int64) for _ in chunk]
            selection = [None] * len(chunk)
            seconds = [0.0] * len(chunk)
            active = list(range(len(chunk)))
            while active:
                look = tests[active[0]].look  # every active test is at the same look
                start = tests[active[0]].looks[look - 1] if look else 0
                plan = ((noise.STREAM_ESTIMATION, tests[active[0]].next_n - start, start),)
                if look == 0:
                    plan = ((noise.STREAM_SELECTION, n0), *plan)
                inputs = [chunk[i] for i in active]
                for i, (_, found, spent) in zip(active, self._iter_counts(inputs, plan, batch_size, seed)):
                    if look == 0:
                        selection[i] = found[noise.STREAM_SELECTION]
                    counts[i] = counts[i] + found[noise.STREAM_ESTIMATION]
                    seconds[i] += spent
                    c_a = int(np.argmax(selection[i]))
                    tests[i].update(counts[i][c_a], int(np.max(np.delete(counts[i], c_a))))
                active = [i for i in active if not tests[i].stopped]
            for i, (key, _) in enumerate(chunk):
                test = tests[i]
                label = int(np.argmax(selection[i])) if test.certifies else ABSTAIN
                yield key, SequentialCertificate(label, test.radius if test.certifies else 0.0, float(test.best_lower),
                                                 test.n_used, counts[i], selection[i], seconds[i], seed,
                                                 float(test.p_b_upper), method)

    # ----------------------------------------------------------------------------------- PREDICT
    def predict(self, x, n: int = 1000, alpha: float = 0.001, batch_size: Optional[int] = None,
                seed: Optional[int] = None) -> int:
        """PREDICT (Cohen et al. 2019, Sec. 3.2) for one input.

        With probability at least 1 - alpha, a returned label other than ABSTAIN equals g(x).

        Args:
            x: float32 [H, W, C] in [0, 1].
            n: number of noisy draws; must allow a decision at this alpha (n >= 11 for 0.001).
            alpha, seed: as in `certify`.
            batch_size: noisy copies per forward pass, rounded down to a multiple of the noise block
                (`noise_block` draws, default 100), at least one block (as in `certify`).

        Returns:
            int: the predicted class or ABSTAIN (-1).

        Raises:
            ValueError: on a bad argument, including an n too small to ever decide.
        """
        return self.predict_batch(_as_batch(x, "x"), n, alpha, batch_size, seed=seed)[0].label

    def predict_batch(self, images, n: int = 1000, alpha: float = 0.001, batch_size: Optional[int] = None,
                      seed: Optional[int] = None, keys: Optional[Sequence[int]] = None,
                      progress: Optional[Callable[[int, int], None]] = None) -> List[Prediction]:
        """PREDICT for many inputs; arguments as in `certify_batch`. Returns `Prediction`s."""
        images = self._check_images(images, "images")
        keys = _check_keys(keys, len(images))
        return _collect(self.iter_predict(zip(keys, images), n, alpha, batch_size, seed=seed), len(images), progress)

    def iter_predict(self, examples: Iterable[Tuple[int, np.ndarray]], n: int = 1000, alpha: float = 0.001,
                     batch_size: Optional[int] = None, seed: Optional[int] = None) -> Iterator[Tuple[int, Prediction]]:
        """Streams PREDICT over `(key, image)` pairs; yields `(key, Prediction)` in order.

        `examples` may be a `tf.data.Dataset`, as in `iter_certify`.

        Arguments as in `predict_batch` (batch_size is rounded down to a multiple of the noise block
        (`noise_block` draws), at least one block).

        Returns:
            An iterator of `(key, Prediction)`, in input order.

        Raises:
            ValueError: at call time if n, alpha, batch_size or seed are invalid (as in `predict`);
                during iteration if an image or key is invalid (each is validated as it is read).
        """
        alpha = stats.check_alpha(alpha)
        n = self._check_n(n, alpha, stats.min_n_to_predict(alpha), "predict")
        batch_size = self._batch_size(batch_size)
        seed = _resolve_seed(seed)
        return self._predict_stream(_keyed_examples(examples), n, alpha, batch_size, seed)

    def _predict_stream(self, examples, n, alpha, batch_size, seed):
        """The generator behind `iter_predict`, on validated arguments."""
        for key, counts, seconds in self._iter_counts(examples, ((noise.STREAM_PREDICT, n),), batch_size, seed):
            start = time.perf_counter()
            label, p_value = stats.predict_decision(counts[noise.STREAM_PREDICT], alpha)
            yield key, Prediction(label, p_value, counts[noise.STREAM_PREDICT], seconds + time.perf_counter() - start,
                                  seed)

    # ---------------------------------------------------------------------------------- counting
    def sample_counts(self, images, num: int, batch_size: Optional[int] = None, seed: Optional[int] = None, *,
                      stream: int = noise.STREAM_ESTIMATION,
                      keys: Optional[Sequence[int]] = None) -> np.ndarray:
        """Counts of f's top-1 class over `num` noisy draws per image.

        Args:
            images: float32 [B, H, W, C] in [0, 1].
            num: draws per image (>= 1).
            batch_size: noisy copies per forward pass, rounded down to a multiple of the noise block
                (`noise_block` draws, default 100), at least one block; the counts do not depend on it.
            seed: int in [0, 2**63); the same seed gives the same counts. None draws a fresh seed.
            stream: which independent stream of draws, one of `tfsmooth.noise.STREAMS` (the
                `STREAM_*` constants).
            keys: as in `certify_batch`.

        Returns:
            int64 [B, num_classes]; each row sums to `num`.

        Raises:
            ValueError: if images are not [B, H, W, C] finite pixels in [0, 1] of the base model's
                image shape, keys are invalid, num or batch_size is not an integer >= 1, seed is
                not an integer in [0, 2**63) or None, or stream is not one of `tfsmooth.noise.STREAMS`.
        """
        images = self._check_images(images, "images")
        keys = _check_keys(keys, len(images))
        num = self._check_draws(stats.check_count(num, "num"), "num")
        batch_size = self._batch_size(batch_size)
        seed = _resolve_seed(seed)
        if isinstance(stream, bool) or not isinstance(stream, (int, np.integer)) or stream not in noise.STREAMS:
            raise ValueError(f"stream must be one of tfsmooth.noise.STREAMS {noise.STREAMS}, got {stream!r}")
        stream = int(stream)
        return np.stack([c[stream] for _, c, _ in self._iter_counts(zip(keys, images), ((stream, num),), batch_size,
                                                                       seed)])

    def _iter_counts(self, examples, plan, batch_size, seed, with_sigma=False):
        """Yields (key, {stream: int64 [K] counts}, seconds) per example, in input order (`counting.iter_counts`).

        `examples` are (key, image) pairs counted at `self.sigma`, or with `with_sigma` (key, image, sigma)
        triples, each counted at its own sigma (`tfsmooth.samplewise`; checked by `counting`). Each image and
        key is validated as it is read.
        """
        self._view.sync()  # a bfloat16 view copies the base model's current weights

        def checked():
            for example in examples:
                key, image, sigma = example if with_sigma else (*example, self.sigma)
                image = self._check_images(np.asarray(image)[None], f"image with key {_short(key)}")[0]
                yield _check_keys([key], 1)[0], image, sigma

        per_pass = counting.blocks_per_pass(batch_size, self.noise_block)
        return counting.iter_counts(checked(), plan, noise_block=self.noise_block, batch_size=batch_size,
                                    num_classes=self.num_classes, seed=seed,
                                    run_pass=self._pass_fn(min(self.parallel_passes, per_pass)),
                                    in_flight=self._in_flight())

    def _in_flight(self):
        """`in_flight` as given, else 1 when every device is a CPU, else D + 1 (see `__init__`)."""
        if self.in_flight is not None:
            return self.in_flight
        if self.devices is None:
            synchronous = not tf.config.list_logical_devices("GPU")
        else:
            synchronous = all(tf.DeviceSpec.from_string(name).device_type == "CPU" for name in self.devices)
        return 1 if synchronous else len(self.devices or (None,)) + 1

    def _pass_fn(self, parallel_passes):
        """The forward pass for `counting.iter_counts`: the classifier's p-th pass (counted across calls, so short
        calls such as the last looks of sequential certification still rotate over the devices) on device p mod D
        of `self.devices` (TensorFlow's placement without them), `counting.pass_function` compiled once per (image
        shape, concurrency level, device). It returns the counts tensor without waiting for it, so the scheduler
        can dispatch the next pass first. Never more concurrent passes than blocks: an empty group would run the
        model on an empty batch."""

        def on(device):
            def run(images, *rest):
                key = (tuple(int(d) for d in images.shape[1:]), parallel_passes, device)
                if key not in self._count_fns:
                    model = self._view.model
                    if self.jit_compile:
                        model = _XlaForward(model)
                    self._count_fns[key] = counting.pass_function(
                        model, key[0], noise_block=self.noise_block, num_classes=self.num_classes,
                        parallel_passes=parallel_passes, device=device, noise_scheme=self.noise_scheme)
                return self._count_fns[key](images, *rest)

            return run

        runs = [on(device) for device in (self.devices or (None,))]

        def next_device(*args):
            run = runs[self._passes % len(runs)]
            self._passes += 1
            return run(*args)

        return next_device

    # -------------------------------------------------------------------------------- validation
    @property
    def default_batch_size(self) -> int:
        """The batch size used when none is given: about 4 million input floats per pass (whole noise
        blocks, at most 1,000 copies): 1,000 for CIFAR-10 or MNIST, 100 for 224 x 224 x 3 images."""
        pixels = int(np.prod(self.input_shape)) if self.input_shape and None not in self.input_shape else 3072
        blocks = max(1, min(1000, 4_000_000 // pixels) // self.noise_block)
        return blocks * self.noise_block

    def _batch_size(self, batch_size):
        return self.default_batch_size if batch_size is None else stats.check_count(batch_size, "batch_size")

    def _check_n(self, n, alpha, minimum, what):
        n = stats.check_count(n, "n")
        if n < minimum:
            raise ValueError(
                f"n={n} is too small to ever {what} at alpha={alpha}: every input would abstain; "
                f"use n >= {minimum}")
        return self._check_draws(n, "n")

    def _check_draws(self, num, name):
        """num draws fit in the noise blocks of one stream (`noise.MAX_BLOCK` blocks); more would repeat draws."""
        if num > noise.MAX_BLOCK * self.noise_block:
            raise ValueError(f"{name}={num} draws exceed the {noise.MAX_BLOCK} noise blocks of "
                             f"{self.noise_block} draws a stream has: later draws would repeat earlier ones")
        return num

    def _check_images(self, images, name):
        if isinstance(images, tf.data.Dataset):
            images = np.stack([image for _, image in _keyed_examples(images)]) if images.cardinality() != 0 else \
                np.zeros((0, *(self.input_shape or ())), np.float32)
        arr = np.asarray(images)
        if arr.ndim != 4:
            raise ValueError(f"{name} must have shape [batch, height, width, channels], got shape {arr.shape}")
        if not (np.issubdtype(arr.dtype, np.floating) or np.issubdtype(arr.dtype, np.integer)):
            raise ValueError(f"{name} must be numeric float32 pixels in [0, 1], got dtype {arr.dtype}")
        arr = arr.astype(np.float32, copy=False)
        if self.input_shape is not None and any(
                want is not None and want != got for want, got in zip(self.input_shape, arr.shape[1:])):
            raise ValueError(f"{name} has image shape {arr.shape[1:]}, the base model expects {self.input_shape}")
        if not np.all(np.isfinite(arr)):
            raise ValueError(f"{name} contains NaN or infinite values")
        if arr.size and (arr.min() < 0.0 or arr.max() > 1.0):
            raise ValueError(f"{name} must be pixels in [0, 1], got values in [{arr.min()}, {arr.max()}]")
        return arr


def _collect(answers, total, progress):
    """The answers of an `iter_*` stream as a list, calling `progress(done, total)` after each."""
    out = []
    for _, answer in answers:
        out.append(answer)
        if progress is not None:
            progress(len(out), total)
    return out


def _keyed_examples(examples):
    """(key, image) pairs: `examples` itself, or for a `tf.data.Dataset` of images / (image, label)
    pairs / batches of either, (position, image) pairs."""
    if not isinstance(examples, tf.data.Dataset):
        return examples
    spec = examples.element_spec
    if isinstance(spec, tuple):
        if len(spec) != 2 or not isinstance(spec[0], tf.TensorSpec):
            raise ValueError("a tf.data.Dataset of examples must hold images or (image, label) pairs, got elements "
                             f"{spec}")
        examples, spec = examples.map(lambda image, label: image), spec[0]
    if not isinstance(spec, tf.TensorSpec) or spec.shape.rank not in (3, 4):
        raise ValueError("a tf.data.Dataset of examples must hold images [H, W, C] (or batches [B, H, W, C]) or "
                         f"(image, label) pairs, got elements {spec}")
    if spec.shape.rank == 4:
        examples = examples.unbatch()
    return enumerate(examples.as_numpy_iterator())


class _XlaForward:
    """The base classifier's inference pass compiled by XLA, callable as `model(x, training=False)`."""

    def __init__(self, model):
        self.model = model
        self._forward = tf.function(lambda x: model(x, training=False), jit_compile=True, reduce_retracing=True)

    def __call__(self, x, training=False):
        if training:
            raise ValueError("the XLA forward pass is for inference only")
        return self._forward(x)


def _default_parallel_passes():
    if (os.cpu_count() or 1) >= 2 and not tf.config.list_logical_devices("GPU"):
        return 2
    return 1


def _short(value, limit=60):
    """repr(value) cut to `limit` characters, for error messages (never a whole image)."""
    text = repr(value)
    return text if len(text) <= limit else text[: limit - 3] + "..."


def _as_batch(x, name):
    arr = np.asarray(x)
    if arr.ndim != 3:
        raise ValueError(f"{name} must have shape [height, width, channels], got shape {arr.shape}")
    return arr[None]


def _check_keys(keys, count):
    if keys is None:
        return list(range(count))
    arr = np.asarray(keys)
    if arr.shape != (count,) or not np.issubdtype(arr.dtype, np.integer):
        raise ValueError(f"keys must be {count} integers, got {_short(keys)} (shape {arr.shape}, dtype {arr.dtype})")
    if np.any(arr < 0) or np.any(arr >= noise.MAX_KEY):
        raise ValueError(f"keys must be in [0, {noise.MAX_KEY}), got {_short(keys)}")
    return [int(k) for k in arr]


def _resolve_seed(seed):
    if seed is None:
        return int(np.random.default_rng().integers(0, 2**62))
    return checks.check_seed(seed, "seed (or None)")


def _static_output_shape(model):
    try:
        return tuple(model.output_shape)
    except (AttributeError, ValueError, RuntimeError, TypeError):
        return None


def _static_input_shape(model):
    try:
        shape = model.input_shape
    except (AttributeError, ValueError, RuntimeError, TypeError):
        return None
    if isinstance(shape, list) or shape is None or len(shape) != 4:
        return None
    return tuple(shape[1:])
