"""Keras models that train a base classifier for randomized smoothing.

`GaussianAugmentedModel` is the training of Cohen et al. (ICML 2019, Sec. 3.3 and App. B): each
training step perturbs every image of the batch with fresh delta ~ N(0, sigma^2 I) in pixel space
(no clipping) and takes a gradient step on the base classifier's loss at the noisy images.

The wrappers override only `train_step`/`test_step` (keras-io, "Customizing what happens in fit"),
so `compile`, `fit`, callbacks, `tf.distribute` strategies and `.keras` saving work as usual; the
base classifier stays available as `.base_model` and is what `SmoothedClassifier` smooths.

`SmoothAdvModel` is SmoothAdv adversarial training (Salman et al., NeurIPS 2019, Sec. 2.3, 3.2 and
Pseudocode 1): each step attacks the smoothed soft classifier with `tfsmooth.attacks` and trains on
Gaussian copies of the adversarial examples.
"""

from __future__ import annotations

import inspect
import math

import keras
import tensorflow as tf

from tfsmooth import attacks, stats
from tfsmooth.models.folding import fold_batch_norm


@keras.saving.register_keras_serializable(package="tfsmooth")
class GaussianAugmentedModel(keras.Model):
    """Trains `base_model` under Gaussian data augmentation (Cohen et al. 2019, Sec. 3.3).

    Calling the model runs the base classifier without noise; `fit` adds noise in `train_step`,
    and `evaluate` reports loss and metrics under noise (an estimate of the accuracy of the base
    classifier under noise, not of the smoothed classifier).

    Args:
        base_model: Keras model, float32 pixels [batch, H, W, C] in [0, 1] -> scores [batch, K].
        sigma: noise standard deviation per pixel (l2 on the [0, 1] pixel scale), > 0.
        seed: optional int seeding the noise (`keras.random.SeedGenerator`); the same seed and
            data order give the same noise.
        **kwargs: passed to `keras.Model` (e.g. `name`).

    Raises:
        ValueError: if sigma is not a finite number > 0.

    Example:
        >>> base = tfsmooth.models.cifar_resnet(20)
        >>> model = GaussianAugmentedModel(base, sigma=0.25)
        >>> model.compile(optimizer="sgd", metrics=["accuracy"],
        ...               loss=keras.losses.SparseCategoricalCrossentropy(from_logits=True))
        >>> model.fit(train_ds, epochs=90)
        >>> smoothed = tfsmooth.SmoothedClassifier(model.base_model, 10, 0.25)
    """

    def __init__(self, base_model, sigma: float, seed=None, **kwargs):
        super().__init__(**kwargs)
        self.base_model = base_model
        self.sigma = stats.check_sigma(sigma)
        self.seed = seed
        self.noise_generator = keras.random.SeedGenerator(seed)

    def call(self, inputs, training=False):
        return self.base_model(inputs, training=training)

    def add_noise(self, images):
        """Returns images + delta, delta ~ N(0, sigma^2 I) of the same shape, float32, not clipped."""
        return images + keras.random.normal(tf.shape(images), stddev=self.sigma, seed=self.noise_generator)

    def train_step(self, data):
        # Keras' own step (loss tracking, loss scaling, distribution) on the noisy batch.
        x, y, sample_weight = keras.utils.unpack_x_y_sample_weight(data)
        return super().train_step(keras.utils.pack_x_y_sample_weight(self.add_noise(x), y, sample_weight))

    def test_step(self, data):
        x, y, sample_weight = keras.utils.unpack_x_y_sample_weight(data)
        return super().test_step(keras.utils.pack_x_y_sample_weight(self.add_noise(x), y, sample_weight))

    def get_config(self):
        config = super().get_config()
        config.update(
            base_model=keras.saving.serialize_keras_object(self.base_model),
            sigma=self.sigma,
            seed=self.seed,
        )
        return config

    @classmethod
    def from_config(cls, config):
        config = dict(config)
        base_model = keras.saving.deserialize_keras_object(config.pop("base_model"))
        return cls(base_model, **config)


SMOOTHADV_ATTACKS = ("pgd", "ddn")
"""Attacks `SmoothAdvModel` can train with: `attacks.smooth_adv_pgd` and `attacks.smooth_adv_ddn`."""


@keras.saving.register_keras_serializable(package="tfsmooth")
class SmoothAdvModel(GaussianAugmentedModel):
    """Trains `base_model` by SmoothAdv adversarial training (Salman et al. 2019, Pseudocode 1).

    Each training step, for a minibatch (x, y) of B examples:

    1. draws m = `num_noise_vec` noise vectors delta_i ~ N(0, sigma^2 I) per example;
    2. attacks the smoothed soft classifier with them (`attacks.smooth_adv_pgd` or
       `attacks.smooth_adv_ddn`: T = `num_steps` steps, l2 radius epsilon_t, estimator (6)), with
       the base classifier in inference mode and no gradient to the weights;
    3. takes one optimizer step on the compiled loss of f at x_adv + delta_i for all m copies
       (`multi_noise=True`) or at x_adv + delta_1 only (`multi_noise=False`), reusing the same
       draws as the attack; sample weights (e.g. self-training) apply to every copy of an example.

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
    of the clean inputs (`GaussianAugmentedModel.test_step`), without attack.

    Args:
        base_model: Keras model, float32 pixels [batch, H, W, C] in [0, 1] -> logits [batch, K].
        sigma: noise level (l2 per pixel, [0, 1] scale), > 0.
        attack: "pgd" or "ddn".
        epsilon: l2 radius of the attack on the [0, 1] pixel scale, >= 0.
        num_steps: attack steps T, >= 1.
        num_noise_vec: noise draws m per example, >= 1 (m_train of the paper: 1, 2, 4 or 8).
        warmup_epochs: epochs of the linear epsilon warm-up, >= 1.
        multi_noise: train on all m noisy copies (True) or on one (False).
        seed: optional int seeding noise and attack randomness (`keras.random.SeedGenerator`).
        **kwargs: passed to `keras.Model`.

    Raises:
        ValueError: if an argument is out of the ranges above or attack is unknown.

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
                 num_noise_vec: int, warmup_epochs: int = 1, multi_noise: bool = True, seed=None, **kwargs):
        super().__init__(base_model, sigma, seed=seed, **kwargs)
        if attack not in SMOOTHADV_ATTACKS:
            raise ValueError(f"attack must be one of {SMOOTHADV_ATTACKS}, got {attack!r}")
        if isinstance(epsilon, bool) or not isinstance(epsilon, (int, float)) \
                or not (math.isfinite(epsilon) and epsilon >= 0):
            raise ValueError(f"epsilon must be a finite number >= 0 (l2, pixels in [0, 1]), got {epsilon!r}")
        if not isinstance(multi_noise, bool):
            raise ValueError(f"multi_noise must be True or False, got {multi_noise!r}")
        self.attack = attack
        self.epsilon = float(epsilon)
        self.num_steps = stats.check_count(num_steps, "num_steps")
        self.num_noise_vec = stats.check_count(num_noise_vec, "num_noise_vec")
        self.warmup_epochs = stats.check_count(warmup_epochs, "warmup_epochs")
        self.multi_noise = multi_noise
        self.epoch = keras.Variable(0, dtype="int64", trainable=False, name="epoch")
        # The attack calls the base classifier in inference mode only, so it runs on a view with
        # each conv + batch-norm pair folded into one convolution (models.folding): same variables,
        # same outputs up to float rounding, no separate normalization passes forward and backward.
        # Set past Keras' attribute tracking: the view is neither saved nor its variables counted.
        object.__setattr__(self, "attack_model", fold_batch_norm(base_model))

    def epsilon_at(self, epoch: int) -> float:
        """epsilon_t = min(epsilon, epsilon * (epoch + 1) / warmup_epochs) for epoch >= 0 (from 0)."""
        epoch = stats.check_count(epoch, "epoch", minimum=0)
        return min(self.epsilon, self.epsilon * (epoch + 1) / self.warmup_epochs)

    def current_epsilon(self):
        """float32 scalar tensor: epsilon_t of the epoch held in `self.epoch`."""
        fraction = tf.cast(self.epoch + 1, tf.float32) / float(self.warmup_epochs)
        return self.epsilon * tf.minimum(1.0, fraction)

    def train_step(self, data):
        x, y, sample_weight = keras.utils.unpack_x_y_sample_weight(data)
        epsilon = self.current_epsilon()
        noise = self.draw_noise(x)  # delta_i^(j), [B, m, H, W, C]
        x_adv = self.attack_batch(x, y, noise, epsilon)  # inference mode, no weight gradients
        if not self.multi_noise:
            noise = noise[:, :1]
        copies = tf.shape(noise)[1]
        x_noisy = tf.reshape(x_adv[:, None] + noise, [-1, *x.shape[1:]])  # the list L of Pseudocode 1
        y = tf.repeat(y, copies, axis=0)
        if sample_weight is not None:
            sample_weight = tf.repeat(sample_weight, copies, axis=0)
        with tf.GradientTape() as tape:
            y_pred = self(x_noisy, training=True)
            loss = self.compute_loss(x=x_noisy, y=y, y_pred=y_pred, sample_weight=sample_weight, training=True)
            # As Keras' own train_step: the tracker sees the loss unscaled for distribution.
            replicas = tf.distribute.get_strategy().num_replicas_in_sync
            self._loss_tracker.update_state(loss * replicas, sample_weight=tf.shape(x_noisy)[0])
            loss = self.optimizer.scale_loss(loss)
        gradients = tape.gradient(loss, self.trainable_variables)
        self.optimizer.apply(gradients, self.trainable_variables)
        logs = self.compute_metrics(x_noisy, y, y_pred, sample_weight=sample_weight)
        return {**logs, "epsilon": epsilon}

    def draw_noise(self, x):
        """m fresh draws per example: float32 [B, m, H, W, C], N(0, sigma^2 I), not clipped."""
        shape = tf.concat([tf.shape(x)[:1], [self.num_noise_vec], tf.shape(x)[1:]], axis=0)
        noise = keras.random.normal(shape, stddev=self.sigma, seed=self.noise_generator)
        return tf.ensure_shape(noise, [None, self.num_noise_vec, *x.shape[1:]])

    def attack_batch(self, x, y, noise, epsilon):
        """The configured SmoothAdv attack of `x` with these draws; float32 [B, H, W, C] in [0, 1].

        The attack runs on `attack_model`: the base classifier with batch norm folded into its
        convolutions (`models.folding.fold_batch_norm`, sharing its variables), whose outputs equal
        the base classifier's in inference mode up to float32 rounding.
        """
        if y.shape.rank == 2 and y.shape[-1] == 1:  # sparse labels given as a column
            y = y[:, 0]
        seed = tf.cast(self.noise_generator.next(), tf.int64)
        attack = attacks.smooth_adv_pgd if self.attack == "pgd" else attacks.smooth_adv_ddn
        return attack(self.attack_model, x, y, noise, epsilon=epsilon, num_steps=self.num_steps, seed=seed)

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
        config.update(attack=self.attack, epsilon=self.epsilon, num_steps=self.num_steps,
                      num_noise_vec=self.num_noise_vec, warmup_epochs=self.warmup_epochs,
                      multi_noise=self.multi_noise)
        return config


class EpochTracker(keras.callbacks.Callback):
    """Sets `model.epoch` to Keras' epoch index at the start of each epoch (SmoothAdv warm-up)."""

    def on_epoch_begin(self, epoch, logs=None):
        self.model.epoch.assign(epoch)
