"""Training a base classifier for randomized smoothing: one train step, one loss per method.

Every method trains the base classifier f on noisy copies of its batch. One skeleton,
`SmoothingTrainer.train_step`, runs a step of every method; it reads as Pseudocode 1 of Salman et
al. (NeurIPS 2019), of which Gaussian data augmentation (Cohen et al., ICML 2019, Sec. 3.3 and
App. B) is the case without attack:

    for a minibatch (x, y, w) of B examples [B, H, W, C], labels [B], sample weights [B]:
        copies = noisy_copies(x, y)        # [B, k, H, W, C]: the method's k noisy copies per image
        logits = f(copies)                 # [B, k, K]: ONE forward pass of B * k inputs, training mode
        loss = copies_loss(y, logits, w)   # the method's loss over the copies
        one optimizer step on the gradient of the loss

A method is a loss over `[batch, copies, classes]` logits (`copies_loss`), the way it makes its
copies (`noisy_copies`, Gaussian by default) and a frozen config dataclass, registered in
`METHODS` (name -> config class and builder):

* "gaussian": `GaussianAugmentedModel`, `GaussianConfig` -- k = 1 copy x + delta,
  delta ~ N(0, sigma^2 I) in pixel space (no clipping); the compiled loss.
* "smoothadv": `SmoothAdvModel`, `SmoothAdvConfig` -- m = `num_noise_vec` draws delta_i, the
  attack of `attacks.SMOOTHADV_ATTACKS` on the smoothed soft classifier with them, then the
  k = m copies x_adv + delta_i (or k = 1 without `multi_noise`); the compiled loss, the mean over
  all B * k copies with each sample weight repeated over its copies.
* "macer", "adre", "consistency": `MACERModel`, `ADREModel`, `ConsistencyModel` (`RegularizedTrainer`), with
  `MACERConfig`, `ADREConfig`, `ConsistencyConfig` -- k = `num_noise_vec` Gaussian copies and the per-example
  losses of `tfsmooth.losses` (Zhai et al. 2020; Feng et al. 2020; Jeong & Shin 2020), not the compiled loss.

The models override only `train_step`/`test_step` (keras-io, "Customizing what happens in fit"),
through public Keras API: `compute_loss`, `optimizer.scale_loss` (loss scaling for mixed
precision), `optimizer.apply`, `compute_metrics` and a `keras.metrics.Mean` loss tracker of their
own. So `compile`, `fit`, callbacks, `tf.distribute` strategies and `.keras` saving work as usual;
the base classifier stays available as `.base_model` and is what `SmoothedClassifier` smooths.

Distribution: under a `tf.distribute` strategy every replica runs the step on its share of the
global batch. As in Keras' own `Model.train_step` (Keras 3, TensorFlow backend), the loss a
method returns is the replica's share of the global loss -- its mean divided by
`num_replicas_in_sync`, which is what `Model.compute_loss` returns for a compiled loss and the
regularization losses -- and the optimizer sums the replicas' gradients, so a step follows the
gradient of the mean over the global batch; the loss tracker sees the replica's mean.

Noise and attack randomness are stateless draws seeded by (the user's seed, a domain tag of
`tfsmooth.noise`, the global replica id, a step counter saved with the model), so each replica
and each step draws its own noise, a run is reproducible from its seed, a reloaded model continues
the sequence, and no draw coincides with one of certification (`noise` module docstring).

Weight decay: the architectures of `tfsmooth.models` decay the convolution and dense kernels only
(coupled L2, `kernel_regularizer=L2(weight_decay / 2)`, which adds weight_decay * w to their
gradients as PyTorch's `SGD(weight_decay=...)` does, momentum included), whereas the PyTorch recipe
of Cohen et al. and Salman et al. decays every parameter: biases and batch-norm scales and offsets
too. Kernels only is the Keras convention (a regularizer belongs to a layer's weight) and the
common "no bias decay" practice; those parameters are a small fraction of a ResNet's, but the
difference is not measured here, so results are not bit-for-bit the papers' recipe. An exact
replication would add `bias_regularizer`, `gamma_regularizer` and `beta_regularizer` with the same
L2(weight_decay / 2) in `tfsmooth.models` (not Keras' `weight_decay=` optimizer argument, which is
decoupled decay).
"""

from __future__ import annotations

import dataclasses
import inspect
import json
import random
from typing import Callable, NamedTuple

import keras
import tensorflow as tf

from tfsmooth import attacks, checks, losses, noise, registry
from tfsmooth.models.folding import fold_batch_norm

SMOOTHADV_ATTACKS = tuple(attacks.SMOOTHADV_ATTACKS)
"""Names of the attacks `SmoothAdvModel` can train with: the keys of `attacks.SMOOTHADV_ATTACKS`."""


# ------------------------------------------------------------------------------ method configs
class _JsonConfig:
    """JSON round trip of a frozen config dataclass (saved beside checkpoints and exports)."""

    def to_json(self) -> str:
        """The fields as a JSON object, keys sorted."""
        return json.dumps(dataclasses.asdict(self), sort_keys=True)

    @classmethod
    def from_json(cls, text: str):
        """The config of a `to_json` text; validated as by the constructor.

        Raises:
            ValueError: if the text is not a JSON object of this class's fields, or a field is invalid.
        """
        values = json.loads(text)
        if not isinstance(values, dict):
            raise ValueError(f"{cls.__name__} JSON must be an object, got {text!r}")
        unknown = sorted(set(values) - {field.name for field in dataclasses.fields(cls)})
        if unknown:
            raise ValueError(f"unknown {cls.__name__} field(s): {', '.join(unknown)}")
        return cls(**values)


@dataclasses.dataclass(frozen=True)
class GaussianConfig(_JsonConfig):
    """Gaussian data augmentation (Cohen et al. 2019, Sec. 3.3): no fields of its own.

    The noise level sigma and the seed are arguments of every method's builder (`METHODS`).
    """


@dataclasses.dataclass(frozen=True)
class SmoothAdvConfig(_JsonConfig):
    """SmoothAdv adversarial training (Salman et al. 2019, Pseudocode 1; METHODS.md §2).

    The defaults are the paper's typical from-scratch CIFAR-10 run.

    Attributes:
        attack: one of `SMOOTHADV_ATTACKS` ("pgd": SmoothAdv-PGD, "ddn": SmoothAdv-DDN).
        epsilon: l2 radius of the attack on the [0, 1] pixel scale, >= 0 (after the warm-up).
        num_steps: attack steps T, >= 1.
        num_noise_vec: noise draws m per example, >= 1 (m_train: 1, 2, 4 or 8 in the paper).
        warmup_epochs: epochs of the linear epsilon warm-up, >= 1 (1: none).
        multi_noise: train on all m noisy copies (True) or on the first one (False).
        regularizer: one of `registry.SMOOTHADV_REGULARIZERS`: "none" (the cross-entropy of Pseudocode 1),
            "adre" (ADRE-ADV, Feng et al. 2020: `ADREModel`'s loss at the adversarial copies) or "consistency"
            (Jeong & Shin 2020: `ConsistencyModel`'s loss at the adversarial copies); either reuses the attack's
            m draws, so needs `multi_noise`.
        lbd: the regularizer's weight lambda, >= 0 (None: its default, `registry.SMOOTHADV_REGULARIZER_DEFAULTS`:
            0.1 for adre, 1.0 for consistency); only with a regularizer.
        eta: consistency's entropy weight, >= 0 (None: 0.5); only with regularizer="consistency".
        floor: ADRE's floor of p_B inside the log, in (0, 1) (None: 1e-4); only with regularizer="adre".

    Raises:
        ValueError: naming the field, if one is out of the ranges above, or lbd / eta / floor given for a
            regularizer that has no such option.
    """

    attack: str = registry.SMOOTHADV_DEFAULTS["attack"]
    epsilon: float = registry.SMOOTHADV_DEFAULTS["epsilon"]
    num_steps: int = registry.SMOOTHADV_DEFAULTS["num_steps"]
    num_noise_vec: int = registry.SMOOTHADV_DEFAULTS["num_noise_vec"]
    warmup_epochs: int = registry.SMOOTHADV_DEFAULTS["warmup_epochs"]
    multi_noise: bool = registry.SMOOTHADV_DEFAULTS["multi_noise"]
    regularizer: str = registry.SMOOTHADV_DEFAULTS["regularizer"]
    lbd: float | None = None
    eta: float | None = None
    floor: float | None = None

    def __post_init__(self):
        checks.check_choice(self.attack, "attack", SMOOTHADV_ATTACKS)
        object.__setattr__(self, "epsilon", checks.check_epsilon(self.epsilon))
        for name in ("num_steps", "num_noise_vec", "warmup_epochs"):
            object.__setattr__(self, name, checks.check_count(getattr(self, name), name))
        if not isinstance(self.multi_noise, bool):
            raise ValueError(f"multi_noise must be True or False, got {self.multi_noise!r}")
        checks.check_choice(self.regularizer, "regularizer", registry.SMOOTHADV_REGULARIZERS)
        own = registry.SMOOTHADV_REGULARIZER_DEFAULTS.get(self.regularizer, {})
        for name in ("lbd", "eta", "floor"):
            value = getattr(self, name)
            if name not in own:
                if value is not None:
                    owners = [r for r, options in registry.SMOOTHADV_REGULARIZER_DEFAULTS.items() if name in options]
                    raise ValueError(f"{name}: only with regularizer={'/'.join(map(repr, owners))}, got "
                                     f"regularizer={self.regularizer!r}")
                continue
            value = own[name] if value is None else value
            if name == "floor":
                value = checks.check_real(value, name, 0.0, inclusive=False, maximum=1.0)
            else:
                value = checks.check_real(value, name, 0.0)
            object.__setattr__(self, name, value)
        if self.regularizer != "none" and not self.multi_noise:
            raise ValueError(f"regularizer={self.regularizer!r} is a loss over the m noisy copies of each attacked "
                             "image: it needs multi_noise=True")
        if self.regularizer == "consistency" and self.num_noise_vec < 2:
            raise ValueError("regularizer='consistency' compares the m noisy copies of each image: it needs "
                             f"num_noise_vec >= 2, got {self.num_noise_vec}")


@dataclasses.dataclass(frozen=True)
class MACERConfig(_JsonConfig):
    """MACER (Zhai et al., ICLR 2020, Algorithm 1; METHODS.md §3): the paper's CIFAR-10 defaults at sigma = 0.25.

    Attributes:
        num_noise_vec: noisy copies k per example, >= 1 (paper: 16).
        lbd: weight lambda of the robustness term, >= 0 (paper: 12 at sigma = 0.25, 4 in reruns at 0.5).
        gamma: hinge threshold, > 0 (paper: 8).
        beta: inverse temperature of the robustness term's soft smoothed classifier, > 0 (paper: 16).
    """

    num_noise_vec: int = registry.MACER_DEFAULTS["num_noise_vec"]
    lbd: float = registry.MACER_DEFAULTS["lbd"]
    gamma: float = registry.MACER_DEFAULTS["gamma"]
    beta: float = registry.MACER_DEFAULTS["beta"]

    def __post_init__(self):
        _check_fields(self, non_negative=("lbd",), positive=("gamma", "beta"))


@dataclasses.dataclass(frozen=True)
class ADREConfig(_JsonConfig):
    """ADRE (Feng et al., AAAI 2020; METHODS.md §4, the public reimplementation's form and defaults).

    Attributes:
        num_noise_vec: noisy copies k per example, >= 1 (reimplementation: 8).
        lbd: weight lambda of the log p_B term, >= 0 (reimplementation: 0.1).
        floor: floor of G_c_hat inside the log, in (0, 1) (`losses.adre_terms`; default 1e-4).
    """

    num_noise_vec: int = registry.ADRE_DEFAULTS["num_noise_vec"]
    lbd: float = registry.ADRE_DEFAULTS["lbd"]
    floor: float = registry.ADRE_DEFAULTS["floor"]

    def __post_init__(self):
        _check_fields(self, non_negative=("lbd",))
        object.__setattr__(self, "floor", checks.check_real(self.floor, "floor", 0.0, inclusive=False, maximum=1.0))


@dataclasses.dataclass(frozen=True)
class ConsistencyConfig(_JsonConfig):
    """Consistency regularization (Jeong & Shin, NeurIPS 2020; METHODS.md §4b): the defaults at sigma = 0.25.

    Attributes:
        num_noise_vec: noisy copies m per example, >= 1 (paper: 2).
        lbd: weight lambda of the KL term, >= 0 (paper: 20 at sigma = 0.25, 10 at sigma >= 0.5).
        eta: weight eta of the entropy term, >= 0 (paper: 0.5).
    """

    num_noise_vec: int = registry.CONSISTENCY_DEFAULTS["num_noise_vec"]
    lbd: float = registry.CONSISTENCY_DEFAULTS["lbd"]
    eta: float = registry.CONSISTENCY_DEFAULTS["eta"]

    def __post_init__(self):
        _check_fields(self, non_negative=("lbd", "eta"))


def _check_fields(config, non_negative=(), positive=()):
    """Validates (and normalizes to int / float) a regularized method's config: num_noise_vec >= 1, the
    `non_negative` fields finite and >= 0, the `positive` ones finite and > 0; raises ValueError naming the field."""
    object.__setattr__(config, "num_noise_vec", checks.check_count(config.num_noise_vec, "num_noise_vec"))
    for name in non_negative:
        object.__setattr__(config, name, checks.check_real(getattr(config, name), name, 0.0))
    for name in positive:
        object.__setattr__(config, name, checks.check_real(getattr(config, name), name, 0.0, inclusive=False))


# ------------------------------------------------------------------------------------ skeleton
class SmoothingTrainer(keras.Model):
    """The train step of every method: noisy copies, one forward pass, a loss over the copies.

    Subclasses (methods) provide `noisy_copies` (default: `num_copies` Gaussian copies) and
    `copies_loss` (default: `compiled_loss_of_copies`), not a train step. `train_step` and
    `test_step` use only public Keras API (module docstring), so they hold under `tf.distribute`
    and mixed-precision loss scaling.

    Calling the model runs the base classifier without noise; `evaluate` reports the compiled loss
    and metrics of the base classifier on one Gaussian copy of each input (an estimate of its
    accuracy under noise, not of the smoothed classifier's), for every method.

    Args:
        base_model: Keras model, float32 pixels [batch, H, W, C] in [0, 1] -> scores [batch, K].
        sigma: noise standard deviation per pixel (l2 on the [0, 1] pixel scale), > 0.
        seed: int in [0, 2**63) seeding all noise and attack randomness (`noise.step_seeds`), or None
            for a random one, drawn once and then saved with the model like a given seed.
        **kwargs: passed to `keras.Model` (e.g. `name`).

    Raises:
        ValueError: if sigma is not a finite number > 0 or seed not None or an integer in [0, 2**63).
    """

    num_copies = 1
    """k, the Gaussian copies per image of the default `noisy_copies`."""

    def __init__(self, base_model, sigma: float, seed=None, **kwargs):
        super().__init__(**kwargs)
        self.base_model = base_model
        self.sigma = checks.warn_sigma_scale(checks.check_sigma(sigma))
        self.seed = random.SystemRandom().randrange(2**31) if seed is None else checks.check_seed(seed)
        # The step counters of the noise domains, advanced once per step (not once per replica).
        self.train_noise_step = keras.Variable(0, dtype="int64", trainable=False, aggregation="only_first_replica",
                                               name="train_noise_step")
        self.test_noise_step = keras.Variable(0, dtype="int64", trainable=False, aggregation="only_first_replica",
                                              name="test_noise_step")
        self.loss_tracker = keras.metrics.Mean(name="loss")

    def call(self, inputs, training=False):
        if isinstance(inputs, dict):  # {"images", "sigma"} batches of sample-wise training: the images
            inputs = inputs[IMAGES_KEY]
        return self.base_model(inputs, training=training)

    def train_step(self, data):
        x, y, sample_weight = keras.utils.unpack_x_y_sample_weight(data)
        x, sigma = split_sigma(x)  # sigma: per-example noise levels [B] (sample-wise training), or None
        x = checked_pixels(x)
        copies, logs = self.noisy_copies(x, y, _advance(self.train_noise_step), sigma=sigma)  # [B, k, H, W, C]
        with tf.GradientTape() as tape:
            logits = self.copies_logits(copies, training=True)  # [B, k, K]: one forward pass
            loss = self.copies_loss(y, logits, sample_weight, sigma=sigma)  # this replica's share of the loss
            scaled_loss = self.optimizer.scale_loss(loss)
        gradients = tape.gradient(scaled_loss, self.trainable_variables)
        self.optimizer.apply(gradients, self.trainable_variables)
        return {**self.report(copies, y, logits, sample_weight, loss), **logs}

    def test_step(self, data):
        x, y, sample_weight = keras.utils.unpack_x_y_sample_weight(data)
        x = checked_pixels(x)
        step = _advance(self.test_noise_step)
        copies = x[:, None] + self.gaussian_noise(x, 1, noise.EVAL_NOISE, step)
        logits = self.copies_logits(copies, training=False)
        loss = compiled_loss_of_copies(self, y, logits, sample_weight, training=False)
        return self.report(copies, y, logits, sample_weight, loss)

    # ---------------------------------------------------------------------- method interface
    def noisy_copies(self, x, y, step, replica_id=None, sigma=None):
        """The method's noisy copies of a batch (default: `num_copies` Gaussian copies).

        Args:
            x: float32 [B, H, W, C] pixels in [0, 1].
            y: labels [B] (or the targets of the compiled loss).
            step: int64 scalar, the training step whose randomness to draw.
            replica_id: the replica whose randomness to draw; None: the calling one.
            sigma: float32 [B], each example's own noise level (sample-wise training), or None: `self.sigma`.

        Returns:
            float32 [B, k, H, W, C] copies x + delta_i (not clipped), and a dict of extra logs.
        """
        del y
        return x[:, None] + self.gaussian_noise(x, self.num_copies, noise.TRAIN_NOISE, step, replica_id, sigma), {}

    def copies_loss(self, y, logits, sample_weight, sigma=None):
        """The method's loss over the copies (default: `compiled_loss_of_copies`).

        Args:
            y: labels [B] (or the targets of the compiled loss).
            logits: [B, k, K], the base classifier's outputs on the copies, training mode.
            sample_weight: float [B] or None.
            sigma: float32 [B] per-example noise levels, or None (only MACER's loss depends on sigma).

        Returns:
            float32 scalar: this replica's share of the global loss (its mean over the replica's
            batch divided by `num_replicas_in_sync`, as `keras.Model.compute_loss` returns it),
            including the regularization losses.
        """
        return compiled_loss_of_copies(self, y, logits, sample_weight)

    # ------------------------------------------------------------------------ building blocks
    def gaussian_noise(self, x, copies: int, domain: int, step, replica_id=None, sigma=None):
        """delta ~ N(0, sigma^2 I) for `copies` copies of each image: float32 [B, copies, H, W, C].

        One stateless draw seeded by `noise.step_seeds(seed, domain, replica, step)`: a function
        of (seed, domain, replica, step, batch shape) only, times sigma; not clipped. `sigma`:
        float32 [B], example b's copies have standard deviation sigma[b] (sample-wise training,
        checked > 0 and finite in the graph), or None: `self.sigma` for all.
        """
        x = tf.convert_to_tensor(x, tf.float32)
        replica = noise.replica_id() if replica_id is None else replica_id
        shape = tf.concat([tf.shape(x)[:1], [copies], tf.shape(x)[1:]], axis=0)
        draw = tf.random.stateless_normal(shape, seed=noise.step_seeds(self.seed, domain, replica, step))
        if sigma is None:
            scale = self.sigma
        else:
            sigma = checked_sigma(sigma)
            same = tf.debugging.assert_equal(tf.shape(sigma)[0], tf.shape(x)[0],
                                             message="per-example sigma must have one level per image")
            with tf.control_dependencies([same]):
                scale = tf.reshape(sigma, tf.concat([[-1], tf.ones([len(x.shape)], tf.int32)], axis=0))
        return tf.ensure_shape(draw * scale, [x.shape[0], copies, *x.shape[1:]])

    def add_noise(self, images, step=None, replica_id=None):
        """images + delta, the Gaussian noise of Gaussian augmentation's training step `step`.

        Args:
            images: float32 [B, H, W, C] in [0, 1].
            step: the training step (default: the next one, `train_noise_step`).
            replica_id: the replica (default: the calling one; 0 outside a strategy).

        Returns:
            float32 [B, H, W, C], delta ~ N(0, sigma^2 I) of the same shape, not clipped; what
            `train_step` of `GaussianAugmentedModel` trains on at that step on that replica.
        """
        step = self.train_noise_step.value if step is None else step
        images = tf.convert_to_tensor(images, tf.float32)
        return images + self.gaussian_noise(images, 1, noise.TRAIN_NOISE, step, replica_id)[:, 0]

    def copies_logits(self, copies, training: bool):
        """The model on all B * k copies as one forward pass: [B, k, K]."""
        copies_axis = copies.shape[1] if copies.shape[1] is not None else tf.shape(copies)[1]
        logits = self(tf.reshape(copies, [-1, *_dims(copies)[2:]]), training=training)
        return tf.reshape(logits, [-1, copies_axis, *_dims(logits)[1:]])

    def report(self, copies, y, logits, sample_weight, loss):
        """Updates the loss tracker and the compiled metrics on the copies; returns the logs."""
        replicas = tf.distribute.get_strategy().num_replicas_in_sync
        inputs = tf.shape(logits)[0] * tf.shape(logits)[1]
        self.loss_tracker.update_state(loss * replicas, sample_weight=inputs)  # the replica's mean
        y, logits, sample_weight = flatten_copies(y, logits, sample_weight)
        return self.compute_metrics(tf.reshape(copies, [-1, *_dims(copies)[2:]]), y, logits, sample_weight)

    @property
    def metrics(self):
        # Our loss tracker first; Keras' own (also named "loss", never updated by these steps) left out.
        return [self.loss_tracker, *(m for m in super().metrics if m.name != "loss")]

    def get_config(self):
        config = super().get_config()
        config.update(base_model=keras.saving.serialize_keras_object(self.base_model), sigma=self.sigma,
                      seed=self.seed)
        return config

    @classmethod
    def from_config(cls, config):
        config = dict(config)
        base_model = keras.saving.deserialize_keras_object(config.pop("base_model"))
        return cls(base_model, **config)


IMAGES_KEY, SIGMA_KEY = "images", "sigma"
"""Sample-wise training feeds batches ({IMAGES_KEY: float32 [B, H, W, C], SIGMA_KEY: float32 [B]}, labels): each
example with its own noise level (`tfsmooth.jobs.samplewise.assign_sigma`, `tfsmooth train --sigma-file`)."""


def split_sigma(x):
    """(images, per-example sigma [B] or None) of a batch's inputs: a {"images", "sigma"} dict, or images."""
    if isinstance(x, dict):
        if set(x) != {IMAGES_KEY, SIGMA_KEY}:
            raise ValueError(f"dict inputs must have exactly the keys {IMAGES_KEY!r} and {SIGMA_KEY!r} (sample-wise "
                             f"training), got {sorted(x)}")
        return x[IMAGES_KEY], tf.reshape(tf.cast(x[SIGMA_KEY], tf.float32), [-1])
    return x, None


def checked_sigma(sigma):
    """sigma [B] after an in-graph check that every level is a finite number > 0 (InvalidArgumentError if not)."""
    sigma = tf.convert_to_tensor(sigma, tf.float32)
    check = tf.debugging.Assert(tf.reduce_all(tf.math.is_finite(sigma) & (sigma > 0.0)),
                                ["per-example sigma must be finite and > 0; got min", tf.reduce_min(sigma)])
    with tf.control_dependencies([check]):
        return tf.identity(sigma)


def checked_pixels(x):
    """x, after an in-graph check that it holds pixels in [0, 1] (float32 [B, H, W, C]).

    Training on [0, 255] pixels would add noise of sigma / 255 relative to the image, i.e. train with
    almost none, and fail only at certification. The check (one min and one max over the batch) runs
    on every step, so a data pipeline that changes scale later is caught too.

    Raises:
        tf.errors.InvalidArgumentError: (at run time) naming the range found, e.g. "training images
            must be pixels in [0, 1] (tfsmooth adds the noise there); got values in [min, max] = 0 255".
    """
    x = tf.convert_to_tensor(x)
    low, high = tf.reduce_min(x), tf.reduce_max(x)
    check = tf.debugging.Assert(
        (low >= 0.0) & (high <= 1.0),
        ["training images must be pixels in [0, 1] (tfsmooth adds the noise there; divide [0, 255] images by "
         "255); got values in [min, max] =", low, high])
    with tf.control_dependencies([check]):
        return tf.identity(x)


def flatten_copies(y, logits, sample_weight=None):
    """[B, k, K] logits to [B * k, K] (example-major), labels and sample weights repeated k times."""
    copies = logits.shape[1] if logits.shape[1] is not None else tf.shape(logits)[1]
    flat = tf.reshape(logits, [-1, *_dims(logits)[2:]])
    y = tf.repeat(y, copies, axis=0)
    if sample_weight is not None:
        sample_weight = tf.repeat(sample_weight, copies, axis=0)
    return y, flat, sample_weight


def compiled_loss_of_copies(model, y, logits, sample_weight=None, training=True):
    """The compiled loss of `model` on every copy: the loss of Gaussian augmentation and SmoothAdv.

    With `SparseCategoricalCrossentropy(from_logits=True)` this is the cross-entropy of Pseudocode 1,
    (1 / (B k)) sum_b sum_i w_b * CE(f(x_b + delta_bi), y_b), each sample weight applying to all the
    copies of its example; plus the regularization losses (weight decay).

    Args:
        model: a compiled `keras.Model`.
        y: labels [B] (or the targets of the compiled loss, [B, ...]).
        logits: [B, k, K].
        sample_weight: float [B] or None.
        training: passed to `model.compute_loss`.

    Returns:
        float32 scalar, `model.compute_loss` of the B * k copies: this replica's share of the loss.
    """
    y, flat, sample_weight = flatten_copies(y, logits, sample_weight)
    return model.compute_loss(y=y, y_pred=flat, sample_weight=sample_weight, training=training)


def _dims(t):
    """Dimensions of t: the static ones as ints, the others as scalar tensors."""
    return [d if d is not None else tf.shape(t)[i] for i, d in enumerate(t.shape.as_list())]


def _advance(counter):
    """The counter's value (int64 scalar), then adds one to it (once per step under tf.distribute)."""
    step = tf.identity(counter.value)
    counter.assign_add(1)
    return step


# ------------------------------------------------------------------------------------- methods
@keras.saving.register_keras_serializable(package="tfsmooth")
class GaussianAugmentedModel(SmoothingTrainer):
    """Trains `base_model` under Gaussian data augmentation (Cohen et al. 2019, Sec. 3.3).

    Each training step perturbs every image of the batch with one fresh delta ~ N(0, sigma^2 I) in
    pixel space (no clipping) and takes a gradient step on the compiled loss of the base
    classifier at the noisy images (`SmoothingTrainer` with k = 1). Calling the model runs the base
    classifier without noise; `evaluate` reports loss and metrics under noise (an estimate of the
    accuracy of the base classifier under noise, not of the smoothed classifier).

    Weight decay is the base model's: `tfsmooth.models` decays conv/dense kernels only, unlike the
    PyTorch recipe of the papers, which decays every parameter (module docstring).

    Args:
        base_model: Keras model, float32 pixels [batch, H, W, C] in [0, 1] -> scores [batch, K].
        sigma: noise standard deviation per pixel (l2 on the [0, 1] pixel scale), > 0.
        seed: optional int >= 0 seeding the noise: step t on replica r draws
            `noise.step_seeds(seed, noise.TRAIN_NOISE, r, t)`, so the same seed, data order and
            replica layout give the same training (1 and 2 replicas draw different noise: each
            replica draws its own), and
            certification draws (`noise.block_seeds`) never repeat training noise.
        **kwargs: passed to `keras.Model` (e.g. `name`).

    Raises:
        ValueError: if sigma is not a finite number > 0, or seed not None or an integer in [0, 2**63).

    Example:
        >>> base = tfsmooth.models.cifar_resnet(20)
        >>> model = GaussianAugmentedModel(base, sigma=0.25)
        >>> model.compile(optimizer="sgd", metrics=["accuracy"],
        ...               loss=keras.losses.SparseCategoricalCrossentropy(from_logits=True))
        >>> model.fit(train_ds, epochs=90)
        >>> smoothed = tfsmooth.SmoothedClassifier(model.base_model, 10, 0.25)
    """

    @property
    def method_config(self) -> GaussianConfig:
        """The method's configuration (`METHODS["gaussian"]`)."""
        return GaussianConfig()


@keras.saving.register_keras_serializable(package="tfsmooth")
class SmoothAdvModel(GaussianAugmentedModel):
    """Trains `base_model` by SmoothAdv adversarial training (Salman et al. 2019, Pseudocode 1).

    Each training step, for a minibatch (x, y) of B examples (`noisy_copies`, then the skeleton):

    1. draws m = `num_noise_vec` noise vectors delta_i ~ N(0, sigma^2 I) per example;
    2. attacks the smoothed soft classifier with them (`attacks.SMOOTHADV_ATTACKS[attack]`:
       T = `num_steps` steps, l2 radius epsilon_t, estimator (6)), with the base classifier in
       inference mode and no gradient to the weights;
    3. takes one optimizer step on the compiled loss of f at x_adv + delta_i for all m copies
       (`multi_noise=True`) or at x_adv + delta_1 only (`multi_noise=False`), reusing the same
       draws as the attack; sample weights (e.g. self-training) apply to every copy of an example.
       With `regularizer="adre"` (ADRE-ADV, Feng et al. 2020; METHODS.md §4) or `"consistency"` (Jeong & Shin
       2020; METHODS.md §4b) the step's loss is instead that method's per-example loss over the m copies
       x_adv + delta_i -- the attack's own draws, as Pseudocode 1 reuses them -- (`adre_example_terms`,
       `consistency_example_terms`, weight `lbd`), and the logs get its terms (`ce`, `log_p_b` / `kl`,
       `entropy`) as ADREModel and ConsistencyModel log them.

    Batch composition: every one of the B examples gets m copies, so a step trains on B * m noisy
    inputs (as Pseudocode 1 reads). The paper's reference code instead splits each batch of B into m
    minibatches of B / m examples with m copies each (B noisy inputs per optimizer step, m times as
    many steps per epoch); feed batches of B / m to match it (e.g. `--batch 128` for their 256 at
    m = 2).

    epsilon is warmed up linearly: in epoch e (from 0), epsilon_t = min(epsilon,
    epsilon * (e + 1) / warmup_epochs) (METHODS.md §2; the paper's CIFAR-10 runs warm up over 10
    epochs); `warmup_epochs=1` means no warm-up. The epoch is held in the non-trainable variable
    `epoch`, set at the start of every epoch of `fit` (which adds an `EpochTracker` callback
    itself) from Keras' epoch index, so `fit(initial_epoch=k)` after loading a checkpoint resumes
    the schedule; it is saved with the model. The logs of `fit` report `epsilon` (epsilon_t) and
    loss / metrics of f on the noisy adversarial copies; `evaluate` reports them on Gaussian copies
    of the clean inputs (`SmoothingTrainer.test_step`), without attack.

    Args:
        base_model: Keras model, float32 pixels [batch, H, W, C] in [0, 1] -> logits [batch, K].
        sigma: noise level (l2 per pixel, [0, 1] scale), > 0.
        attack: "pgd" or "ddn" (`SMOOTHADV_ATTACKS`).
        epsilon: l2 radius of the attack on the [0, 1] pixel scale, >= 0.
        num_steps: attack steps T, >= 1.
        num_noise_vec: noise draws m per example, >= 1 (m_train of the paper: 1, 2, 4 or 8).
        warmup_epochs: epochs of the linear epsilon warm-up, >= 1.
        multi_noise: train on all m noisy copies (True) or on one (False).
        regularizer, lbd, eta, floor: the loss at the adversarial copies (`SmoothAdvConfig`; default "none",
            the compiled cross-entropy).
        seed: optional int >= 0 seeding the draws (domain `noise.TRAIN_NOISE`) and the attack's
            randomness (domain `noise.TRAIN_ATTACK`, one seed per example), per replica and step.
        **kwargs: passed to `keras.Model`.

    Raises:
        ValueError: if an argument is out of the ranges above or attack is unknown
            (`SmoothAdvConfig`).

    Example:
        >>> base = tfsmooth.models.cifar_resnet(20)
        >>> model = SmoothAdvModel(base, sigma=0.25, attack="pgd", epsilon=0.5, num_steps=2,
        ...                        num_noise_vec=2, warmup_epochs=10)
        >>> model.compile(optimizer=keras.optimizers.SGD(0.1, momentum=0.9), metrics=["accuracy"],
        ...               loss=keras.losses.SparseCategoricalCrossentropy(from_logits=True))
        >>> model.fit(train_ds, epochs=150)
        >>> smoothed = tfsmooth.SmoothedClassifier(model.base_model, 10, 0.25)
    """

    def __init__(self, base_model, sigma: float, *, attack: str = "pgd", epsilon: float, num_steps: int,
                 num_noise_vec: int, warmup_epochs: int = 1, multi_noise: bool = True, regularizer: str = "none",
                 lbd=None, eta=None, floor=None, seed=None, **kwargs):
        config = SmoothAdvConfig(attack=attack, epsilon=epsilon, num_steps=num_steps, num_noise_vec=num_noise_vec,
                                 warmup_epochs=warmup_epochs, multi_noise=multi_noise, regularizer=regularizer,
                                 lbd=lbd, eta=eta, floor=floor)
        super().__init__(base_model, sigma, seed=seed, **kwargs)
        self._method_config = config
        self.TERMS = SMOOTHADV_REGULARIZERS[regularizer][0] if regularizer != "none" else ()
        self.term_trackers = [keras.metrics.Mean(name=name) for name in self.TERMS]
        self.epoch = keras.Variable(0, dtype="int64", trainable=False, name="epoch")
        # The attack calls the base classifier in inference mode only, so it runs on a view with
        # each conv + batch-norm pair folded into one convolution (models.folding): same variables,
        # same outputs up to float rounding, no separate normalization passes forward and backward.
        # Set past Keras' attribute tracking: the view is neither saved nor its variables counted.
        object.__setattr__(self, "attack_model", fold_batch_norm(base_model))

    @property
    def method_config(self) -> SmoothAdvConfig:
        """The method's configuration (`METHODS["smoothadv"]`)."""
        return self._method_config

    attack = property(lambda self: self._method_config.attack, doc="Attack name, one of `SMOOTHADV_ATTACKS`.")
    epsilon = property(lambda self: self._method_config.epsilon, doc="l2 radius after the warm-up, [0, 1] scale.")
    num_steps = property(lambda self: self._method_config.num_steps, doc="Attack steps T.")
    num_noise_vec = property(lambda self: self._method_config.num_noise_vec, doc="Noise draws m per example.")
    warmup_epochs = property(lambda self: self._method_config.warmup_epochs, doc="Epochs of the warm-up.")
    multi_noise = property(lambda self: self._method_config.multi_noise, doc="Train on all m copies.")
    regularizer = property(lambda self: self._method_config.regularizer,
                           doc="The loss at the adversarial copies: one of `registry.SMOOTHADV_REGULARIZERS`.")

    def example_terms(self, y, logits):
        """(loss [B], {term: [B]}) of the regularizer on the copies' logits [B, m, K] (`adre_example_terms`,
        `consistency_example_terms`).

        Raises:
            ValueError: with regularizer="none" (its loss is the compiled one, not per-example terms).
        """
        if self.regularizer == "none":
            raise ValueError("regularizer='none' trains on the compiled loss: it has no per-example terms")
        return SMOOTHADV_REGULARIZERS[self.regularizer][1](self._method_config, y, logits)

    def copies_loss(self, y, logits, sample_weight, sigma=None):
        """The compiled loss over the copies (Pseudocode 1), or with a regularizer its weighted per-example loss
        (`example_terms`) plus the regularization losses, as `RegularizedTrainer`."""
        if self.regularizer == "none":
            return super().copies_loss(y, logits, sample_weight)
        return _terms_loss(self, *self.example_terms(y, logits), sample_weight)

    def test_step(self, data):
        """As every method's (no attack); with a regularizer, its terms tracked on m Gaussian copies."""
        if self.regularizer == "none":
            return super().test_step(data)
        return _test_step_with_terms(self, data, self.num_noise_vec, self.example_terms)

    @property
    def metrics(self):
        return [*super().metrics, *self.term_trackers]

    def epsilon_at(self, epoch: int) -> float:
        """epsilon_t = min(epsilon, epsilon * (epoch + 1) / warmup_epochs) for epoch >= 0 (from 0)."""
        epoch = checks.check_count(epoch, "epoch", minimum=0)
        return min(self.epsilon, self.epsilon * (epoch + 1) / self.warmup_epochs)

    def current_epsilon(self):
        """float32 scalar tensor: epsilon_t of the epoch held in `self.epoch`."""
        fraction = tf.cast(self.epoch + 1, tf.float32) / float(self.warmup_epochs)
        return self.epsilon * tf.minimum(1.0, fraction)

    def noisy_copies(self, x, y, step, replica_id=None, sigma=None):
        """Steps 1-2 of Pseudocode 1: m draws, the attack with them, the copies x_adv + delta_i.

        With per-example `sigma` [B] (sample-wise training) example b's draws have standard deviation sigma[b],
        and the attack targets its smoothed classifier at that level (it only sees the draws).

        Returns:
            float32 [B, k, H, W, C] (k = m, or 1 without `multi_noise`) and the log {"epsilon": epsilon_t}.
        """
        epsilon = self.current_epsilon()
        draws = self.draw_noise(x, step, replica_id, sigma)  # delta_i^(b), [B, m, H, W, C]
        x_adv = self.attack_batch(x, y, draws, epsilon, self.attack_seeds(x, step, replica_id))
        if not self.multi_noise:
            draws = draws[:, :1]
        return x_adv[:, None] + draws, {"epsilon": epsilon}  # the list L of Pseudocode 1

    def draw_noise(self, x, step=None, replica_id=None, sigma=None):
        """m draws per example of training step `step` (default: the next): float32 [B, m, H, W, C].

        delta ~ N(0, sigma^2 I) (sigma: `self.sigma`, or per example [B]), not clipped; domain
        `noise.TRAIN_NOISE`, as Gaussian augmentation.
        """
        step = self.train_noise_step.value if step is None else step
        return self.gaussian_noise(x, self.num_noise_vec, noise.TRAIN_NOISE, step, replica_id, sigma)

    def attack_seeds(self, x, step=None, replica_id=None):
        """Per-example attack seeds of training step `step` (default: the next): int64 [B, 2].

        Seed b is `noise.step_seeds(seed, noise.TRAIN_ATTACK, replica, step, b)`.
        """
        step = self.train_noise_step.value if step is None else step
        replica = noise.replica_id() if replica_id is None else replica_id
        return noise.step_seeds(self.seed, noise.TRAIN_ATTACK, replica, step, tf.range(tf.shape(x)[0]))

    def attack_batch(self, x, y, noise_draws, epsilon, seeds=None):
        """The configured SmoothAdv attack of `x` with these draws; float32 [B, H, W, C] in [0, 1].

        Args:
            x: float32 [B, H, W, C] in [0, 1].
            y: int labels [B] (or [B, 1]).
            noise_draws: float32 [B, m, H, W, C].
            epsilon: l2 radius (float or float32 scalar tensor).
            seeds: int64 [B, 2] per-example attack seeds (default: `attack_seeds(x)`).

        The attack runs on `attack_model`: the base classifier with batch norm folded into its
        convolutions (`models.folding.fold_batch_norm`, sharing its variables), whose outputs equal
        the base classifier's in inference mode up to float32 rounding.
        """
        if y.shape.rank == 2 and y.shape[-1] == 1:  # sparse labels given as a column
            y = y[:, 0]
        seeds = self.attack_seeds(x) if seeds is None else seeds
        attack = attacks.SMOOTHADV_ATTACKS[self.attack]
        return attack(self.attack_model, x, y, noise_draws, epsilon=epsilon, num_steps=self.num_steps, seed=seeds)

    def fit(self, *args, **kwargs):
        """`keras.Model.fit`, with an `EpochTracker` added to the callbacks (epsilon warm-up)."""
        bound = inspect.signature(keras.Model.fit).bind(self, *args, **kwargs)
        callbacks = bound.arguments.get("callbacks") or []
        if isinstance(callbacks, keras.callbacks.CallbackList):
            callbacks.append(EpochTracker())
        elif not any(isinstance(c, EpochTracker) for c in callbacks):
            callbacks = [*callbacks, EpochTracker()]
        bound.arguments["callbacks"] = callbacks
        return super().fit(*bound.args[1:], **bound.kwargs)

    def get_config(self):
        config = super().get_config()
        config.update(dataclasses.asdict(self._method_config))
        return config


class RegularizedTrainer(SmoothingTrainer):
    """A method whose loss is a weighted sum of per-example terms over k Gaussian copies (MACER, ADRE, consistency).

    Subclasses give `config_class`, `TERMS` (the names of the terms, logged as metrics of `fit`: `log.csv` gets
    one column per term, the epoch mean over examples) and `example_terms(y, logits) -> (loss [B], {name: [B]})`.
    The loss a step follows is sum_b w_b loss_b / B (w_b the sample weights, 1 without) plus the regularization
    losses (weight decay), as this replica's share: divided by `num_replicas_in_sync` (`SmoothingTrainer`).
    The copies are x + delta_bi, [B, k, H, W, C], delta_bi ~ N(0, sigma^2 I) from `noise.TRAIN_NOISE` (the
    default `noisy_copies`); `num_copies` is the config's `num_noise_vec`. The compiled loss is not used in
    training (each method defines its own cross-entropy); compile with one anyway for `evaluate`, which reports
    the compiled loss of the base classifier under noise as for every method.

    Args:
        base_model, sigma, seed: as `SmoothingTrainer`.
        **kwargs: the config's fields, then `keras.Model`'s (e.g. `name`).

    Raises:
        ValueError: a bad sigma or seed, or a config field out of range (naming it).
    """

    config_class = GaussianConfig
    TERMS = ()

    def __init__(self, base_model, sigma: float, seed=None, **kwargs):
        fields = {field.name for field in dataclasses.fields(self.config_class)}
        config = self.config_class(**{k: kwargs.pop(k) for k in list(kwargs) if k in fields})
        super().__init__(base_model, sigma, seed=seed, **kwargs)
        self._method_config = config
        self.num_copies = config.num_noise_vec
        self.term_trackers = [keras.metrics.Mean(name=name) for name in self.TERMS]

    @property
    def method_config(self):
        """The method's configuration (an instance of `config_class`)."""
        return self._method_config

    def example_terms(self, y, logits, sigma=None):
        """(loss [B], {term name: [B]}) of the copies' logits [B, k, K]; `sigma`: per-example levels [B] or None."""
        raise NotImplementedError

    def copies_loss(self, y, logits, sample_weight, sigma=None):
        return _terms_loss(self, *self.example_terms(y, logits, sigma=sigma), sample_weight)

    def test_step(self, data):
        """The compiled loss and metrics on one Gaussian copy of each input (as every method), and the terms on
        k copies (so `val_` columns of the terms are the validation data's, not zeros)."""
        return _test_step_with_terms(self, data, self.num_copies, self.example_terms)

    @property
    def metrics(self):
        return [*super().metrics, *self.term_trackers]

    def get_config(self):
        config = super().get_config()
        config.update(dataclasses.asdict(self._method_config))
        return config


def _terms_loss(model, loss, terms, sample_weight):
    """This replica's share of sum_b w_b loss_b / B plus the regularization losses; tracks each term [B] in
    `model.term_trackers` (in `model.TERMS` order), weighted by the sample weights."""
    batch = tf.cast(tf.shape(loss)[0], tf.float32)
    weights = _track_terms(model, terms, sample_weight)
    total = tf.reduce_sum(weights * loss) / batch
    if model.losses:
        total += tf.add_n([tf.cast(term, tf.float32) for term in model.losses])
    return total / tf.distribute.get_strategy().num_replicas_in_sync


def _track_terms(model, terms, sample_weight):
    """Adds each term [B] to its tracker, weighted by the sample weights; returns the weights [B]."""
    first = terms[model.TERMS[0]]
    weights = tf.ones_like(first) if sample_weight is None else tf.reshape(tf.cast(sample_weight, tf.float32), [-1])
    for tracker, name in zip(model.term_trackers, model.TERMS):
        tracker.update_state(terms[name], sample_weight=weights)
    return weights


def _test_step_with_terms(model, data, copies_per_image, example_terms):
    """`SmoothingTrainer.test_step` (compiled loss and metrics on one Gaussian copy), tracking the terms of
    `example_terms` on `copies_per_image` Gaussian copies of each input (their first is the one evaluated)."""
    x, y, sample_weight = keras.utils.unpack_x_y_sample_weight(data)
    x = checked_pixels(x)
    step = _advance(model.test_noise_step)
    copies = x[:, None] + model.gaussian_noise(x, copies_per_image, noise.EVAL_NOISE, step)
    logits = model.copies_logits(copies, training=False)
    _track_terms(model, example_terms(y, logits)[1], sample_weight)
    loss = compiled_loss_of_copies(model, y, logits[:, :1], sample_weight, training=False)
    return model.report(copies[:, :1], y, logits[:, :1], sample_weight, loss)


def adre_example_terms(config, y, logits):
    """ADRE's loss_b = ce_b + lbd * log_p_b_b and its terms (`losses.adre_terms`; `config.lbd`, `config.floor`).

    Args:
        config: an `ADREConfig`, or a `SmoothAdvConfig` with regularizer="adre" (ADRE-ADV).
        y: int labels [B]; logits: float [B, k, K] of the k copies.

    Returns:
        (loss [B], {"ce": [B], "log_p_b": [B]}), float32.
    """
    ce, log_p_b = losses.adre_terms(logits, y, floor=config.floor)
    return ce + config.lbd * log_p_b, {"ce": ce, "log_p_b": log_p_b}


def consistency_example_terms(config, y, logits):
    """Consistency regularization's loss_b = ce_b + lbd * kl_b + eta * entropy_b and its terms
    (`losses.consistency_terms`; `config.lbd`, `config.eta`).

    Args:
        config: a `ConsistencyConfig`, or a `SmoothAdvConfig` with regularizer="consistency".
        y: int labels [B]; logits: float [B, m, K] of the m copies.

    Returns:
        (loss [B], {"ce": [B], "kl": [B], "entropy": [B]}), float32.
    """
    ce, kl, entropy = losses.consistency_terms(logits, y)
    return ce + config.lbd * kl + config.eta * entropy, {"ce": ce, "kl": kl, "entropy": entropy}


SMOOTHADV_REGULARIZERS = {"adre": (("ce", "log_p_b"), adre_example_terms),
                          "consistency": (("ce", "kl", "entropy"), consistency_example_terms)}
"""SmoothAdv's regularizers: name -> (the logged term names, `example_terms(config, y, logits)`)."""
registry.check_covers([*SMOOTHADV_REGULARIZERS, "none"], registry.SMOOTHADV_REGULARIZERS,
                      "tfsmooth.training.SMOOTHADV_REGULARIZERS")


@keras.saving.register_keras_serializable(package="tfsmooth")
class MACERModel(RegularizedTrainer):
    """Trains `base_model` by MACER (Zhai et al., ICLR 2020, Algorithm 1; METHODS.md §3): attack-free.

    loss_b = -log(G_y(x_b) + 1e-10) + lbd * sigma / 2 * (gamma - xi_b) [b kept], G the mean softmax over the
    k = `num_noise_vec` copies, xi_b = Phi^-1(G^beta_y) - Phi^-1(max_{c != y} G^beta_c) (`losses.macer_terms`:
    kept are the examples whose beta-smoothed prediction is y with a finite xi_b <= gamma). Logged terms: `ce`
    (the classification term), `hinge` (gamma - xi over all examples, 0 where dropped) and `kept` (the fraction kept).
    The paper's CIFAR-10 result at sigma = 0.25 (ResNet-110, 440 epochs): ACR 0.556 (METHODS.md §3).

    Args:
        base_model, sigma, seed: as `GaussianAugmentedModel`.
        num_noise_vec, lbd, gamma, beta: `MACERConfig` (defaults k = 16, lbd = 12, gamma = 8, beta = 16).
    """

    config_class = MACERConfig
    TERMS = ("ce", "hinge", "kept")

    def example_terms(self, y, logits, sigma=None):
        config = self._method_config
        ce, hinge, kept = losses.macer_terms(logits, y, beta=config.beta, gamma=config.gamma)
        scale = self.sigma if sigma is None else sigma  # sigma_b / 2 * (gamma - xi_b): the radius margin's unit
        return ce + config.lbd * scale / 2 * hinge, {"ce": ce, "hinge": hinge, "kept": kept}


@keras.saving.register_keras_serializable(package="tfsmooth")
class ADREModel(RegularizedTrainer):
    """Trains `base_model` with ADRE (Feng et al., AAAI 2020; METHODS.md §4): attack-free.

    loss_b = mean_i CE(f(x_b + delta_bi), y_b) + lbd * log max(G_c_hat(x_b), floor), c_hat the strongest wrong
    class of the mean softmax G over the k = `num_noise_vec` copies (`losses.adre_terms`). The paper's own text is
    not at hand: this is the public reimplementation's form (k = 8, lbd = 0.1), with the floor this library's
    choice (`losses.adre_terms` says why). Logged terms: `ce` and `log_p_b`.

    Args:
        base_model, sigma, seed: as `GaussianAugmentedModel`.
        num_noise_vec, lbd, floor: `ADREConfig`.
    """

    config_class = ADREConfig
    TERMS = ("ce", "log_p_b")

    def example_terms(self, y, logits, sigma=None):
        return adre_example_terms(self._method_config, y, logits)


@keras.saving.register_keras_serializable(package="tfsmooth")
class ConsistencyModel(RegularizedTrainer):
    """Trains `base_model` with consistency regularization (Jeong & Shin, NeurIPS 2020; METHODS.md §4b).

    loss_b = mean_i CE(f(x_b + delta_bi), y_b) + lbd * mean_i KL(G || F_i) + eta * H(G) over m = `num_noise_vec`
    Gaussian copies (`losses.consistency_terms`). Logged terms: `ce`, `kl`, `entropy`. The paper's CIFAR-10 result
    at sigma = 0.25 (ResNet-110, Gaussian + consistency): ACR 0.552 (METHODS.md §4b).

    Args:
        base_model, sigma, seed: as `GaussianAugmentedModel`.
        num_noise_vec, lbd, eta: `ConsistencyConfig` (defaults m = 2, lbd = 20, eta = 0.5).
    """

    config_class = ConsistencyConfig
    TERMS = ("ce", "kl", "entropy")

    def example_terms(self, y, logits, sigma=None):
        return consistency_example_terms(self._method_config, y, logits)


class EpochTracker(keras.callbacks.Callback):
    """Sets `model.epoch` to Keras' epoch index at the start of each epoch (SmoothAdv warm-up)."""

    def on_epoch_begin(self, epoch, logs=None):
        self.model.epoch.assign(epoch)


# ------------------------------------------------------------------------------------ registry
class Method(NamedTuple):
    """A training method: its config dataclass and `build(base_model, sigma, config, seed) -> keras.Model`."""

    config_class: type
    build: Callable


def _build_gaussian(base_model, sigma, config, seed=None):
    _check_config(config, GaussianConfig)
    return GaussianAugmentedModel(base_model, sigma, seed=seed)


def _build_smoothadv(base_model, sigma, config, seed=None):
    _check_config(config, SmoothAdvConfig)
    return SmoothAdvModel(base_model, sigma, **dataclasses.asdict(config), seed=seed)


def _check_config(config, config_class):
    if not isinstance(config, config_class):
        raise ValueError(f"config must be a {config_class.__name__}, got {config!r}")


def _builder(model_class):
    def build(base_model, sigma, config, seed=None):
        _check_config(config, model_class.config_class)
        return model_class(base_model, sigma, seed=seed, **dataclasses.asdict(config))
    return build


METHODS = {"gaussian": Method(GaussianConfig, _build_gaussian), "smoothadv": Method(SmoothAdvConfig, _build_smoothadv),
           "macer": Method(MACERConfig, _builder(MACERModel)), "adre": Method(ADREConfig, _builder(ADREModel)),
           "consistency": Method(ConsistencyConfig, _builder(ConsistencyModel))}
"""Training methods by name: `METHODS[name].build(base_model, sigma, METHODS[name].config_class(...), seed)`
returns the compiled-ready training model (its `.base_model` is what gets smoothed)."""
registry.check_covers(METHODS, registry.TRAINING_METHODS, "tfsmooth.training.METHODS")

