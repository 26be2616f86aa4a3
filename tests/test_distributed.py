"""Training under tf.distribute: every replica draws its own noise, and a step on two replicas is the step on one --
in Keras' `fit` and in tfsmooth's own loop (`tfsmooth.distribute.fit`, `train --strategy mirrored|multi-worker`),
for every training method.

A 2-replica `MirroredStrategy` needs two logical CPU devices, which TensorFlow accepts only before it initializes:
the replicated part runs in a fresh Python process (this file run as a script; TensorFlow's own distribute tests
set up virtual CPUs the same way, in a test binary of their own), which saves its results. The tests compare them
with the single-device computation on the same inputs, with the noise that replica r draws, done in this process.
"""

import os
import subprocess
import sys

import numpy as np
import pytest

pytestmark = pytest.mark.slow  # one TensorFlow start in a subprocess, ~10 s

SEED = 7
SIGMA = 0.25
LR = 0.5
SHAPE = (4, 4, 1)
GLOBAL_BATCH = 4  # 2 examples per replica: replica r trains on examples [2r, 2r + 2)


def _data():
    rng = np.random.default_rng(5)
    return rng.uniform(0.25, 0.75, (GLOBAL_BATCH, *SHAPE)).astype(np.float32), np.array([0, 1, 1, 0])


def _initial_weights():
    rng = np.random.default_rng(6)
    return [rng.normal(0, 1, (16, 2)).astype(np.float32), rng.normal(0, 0.1, 2).astype(np.float32)]


def _base():
    import keras

    inputs = keras.Input(SHAPE)
    # A kernel regularizer: its loss, too, must be divided among the replicas exactly once.
    dense = keras.layers.Dense(2, kernel_regularizer=keras.regularizers.L2(0.05))
    base = keras.Model(inputs, dense(keras.layers.Flatten()(inputs)))
    base.set_weights(_initial_weights())
    return base


def _models():
    """(Gaussian augmentation, SmoothAdv) training models, compiled, with the same weights and seed."""
    import keras

    from tfsmooth.training import GaussianAugmentedModel, SmoothAdvModel

    made = [GaussianAugmentedModel(_base(), SIGMA, seed=SEED),
            SmoothAdvModel(_base(), SIGMA, attack="pgd", epsilon=0.5, num_steps=2, num_noise_vec=2, seed=SEED)]
    for model in made:
        model.compile(optimizer=keras.optimizers.SGD(LR),
                      loss=keras.losses.SparseCategoricalCrossentropy(from_logits=True))
    return made


REGULARIZED = ("macer", "adre", "consistency")


def _regularized(method):
    """The regularized method's training model (k = 2 copies), compiled, with the same weights and seed."""
    import keras

    from tfsmooth import training

    spec = training.METHODS[method]
    model = spec.build(_base(), SIGMA, spec.config_class(num_noise_vec=2), seed=SEED)
    model.compile(optimizer=keras.optimizers.SGD(LR), loss=keras.losses.SparseCategoricalCrossentropy(from_logits=True))
    return model


def _fit_loop(model, strategy, x, y):
    """One step of `tfsmooth.distribute.fit` (the loop of `train --strategy mirrored|multi-worker`) on the batch."""
    import tensorflow as tf

    from tfsmooth import distribute

    history = distribute.fit(model, strategy, tf.data.Dataset.from_tensor_slices((x, y)).batch(GLOBAL_BATCH),
                             epochs=1, verbose=0)
    return history.history["loss"][0]


def _replicated(path):
    """Runs in a fresh process: draws and one fit step of every method on 2 replicas (Keras' `fit` and tfsmooth's
    loop); saves them to `path`."""
    import keras
    import tensorflow as tf

    cpu = tf.config.list_physical_devices("CPU")[0]
    tf.config.set_logical_device_configuration(cpu, [tf.config.LogicalDeviceConfiguration()] * 2)
    strategy = tf.distribute.MirroredStrategy(["/cpu:0", "/cpu:1"])
    x, y = _data()
    with strategy.scope():
        gaussian, smoothadv = _models()
    half = GLOBAL_BATCH // 2
    shards = strategy.experimental_distribute_values_from_function(
        lambda context: tf.constant(x[context.replica_id_in_sync_group * half:][:half]))

    def per_replica(function):
        results = strategy.run(function, args=(shards,))
        return np.stack([t.numpy() for t in strategy.experimental_local_results(results)])

    out = dict(replicas=strategy.num_replicas_in_sync, gaussian_noisy=per_replica(gaussian.add_noise),
               smoothadv_draws=per_replica(smoothadv.draw_noise), smoothadv_seeds=per_replica(smoothadv.attack_seeds))
    for name, model in (("gaussian", gaussian), ("smoothadv", smoothadv)):
        history = model.fit(x, y, batch_size=GLOBAL_BATCH, epochs=1, shuffle=False, verbose=0)
        out[f"{name}_loss"] = history.history["loss"][0]
        out[f"{name}_step"] = int(model.train_noise_step.numpy())
        for i, weight in enumerate(model.base_model.get_weights()):
            out[f"{name}_weight_{i}"] = weight
    with strategy.scope():
        looped = dict(zip(("gaussian", "smoothadv"), _models()))
        for method in REGULARIZED:
            looped[method] = _regularized(method)
    for name, model in looped.items():
        out[f"{name}_loop_loss"] = _fit_loop(model, strategy, x, y)
        out[f"{name}_loop_step"] = int(model.train_noise_step.numpy())
        for i, weight in enumerate(model.base_model.get_weights()):
            out[f"{name}_loop_weight_{i}"] = weight
    # replica_batches: 7 examples in batches of 3 -> slices [0:1] [1:3], [3:4] [4:6]; the last batch (1 < 2 replicas)
    # is left out.
    from tfsmooth import distribute, training

    numbers = tf.data.Dataset.range(7).batch(3)
    out["slices"] = np.array([[list(t.numpy()) + [-1] * (2 - len(t)) for t in strategy.experimental_local_results(b)]
                              for b in distribute.replica_batches(strategy, numbers)])
    # SmoothAdv's epsilon warm-up under the own loop: epsilon / 2 in epoch 0, epsilon in epoch 1.
    with strategy.scope():
        warm = training.SmoothAdvModel(_base(), SIGMA, attack="pgd", epsilon=0.5, num_steps=1, num_noise_vec=1,
                                       warmup_epochs=2, seed=SEED)
        warm.compile(optimizer=keras.optimizers.SGD(LR),
                     loss=keras.losses.SparseCategoricalCrossentropy(from_logits=True))
    history = distribute.fit(warm, strategy, tf.data.Dataset.from_tensor_slices((x, y)).batch(GLOBAL_BATCH),
                             epochs=2, verbose=0)
    out["warmup_epsilon"] = np.array(history.history["epsilon"])
    for method in REGULARIZED:  # Keras' fit on the same two replicas
        with strategy.scope():
            model = _regularized(method)
        history = model.fit(x, y, batch_size=GLOBAL_BATCH, epochs=1, shuffle=False, verbose=0)
        out[f"{method}_loss"] = history.history["loss"][0]
        out[f"{method}_step"] = int(model.train_noise_step.numpy())
        for i, weight in enumerate(model.base_model.get_weights()):
            out[f"{method}_weight_{i}"] = weight
    np.savez(path, **out)


@pytest.fixture(scope="module")
def replicated(tmp_path_factory):
    path = tmp_path_factory.mktemp("distributed") / "replicated.npz"
    root = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))  # tfsmooth, if it is not installed
    env = dict(os.environ, TF_CPP_MIN_LOG_LEVEL="2",
               PYTHONPATH=os.pathsep.join(p for p in (os.environ.get("PYTHONPATH"), root) if p))
    done = subprocess.run([sys.executable, __file__, str(path)], env=env, capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stderr[-4000:]
    return dict(np.load(path))


@pytest.fixture(autouse=True)
def _on_the_cpu():
    """The single-device computations run on the CPU too, so the same kernels draw the noise."""
    import tensorflow as tf

    with tf.device("/cpu:0"):
        yield


def _shard(array, replica):
    half = GLOBAL_BATCH // 2
    return array[replica * half:(replica + 1) * half]


def test_two_logical_devices_give_two_replicas(replicated):
    assert int(replicated["replicas"]) == 2


def test_each_replica_draws_the_gaussian_noise_a_single_device_draws_for_its_replica_id(replicated):
    gaussian, _ = _models()
    x, _ = _data()
    for replica in (0, 1):
        expected = gaussian.add_noise(_shard(x, replica), step=0, replica_id=replica).numpy()
        np.testing.assert_array_equal(replicated["gaussian_noisy"][replica], expected)
    delta = replicated["gaussian_noisy"] - np.stack([_shard(x, 0), _shard(x, 1)])
    # Two replicas of one step: independent N(0, 0.25^2) draws (the replicated SeedGenerator gave equal ones).
    assert np.abs(delta[0] - delta[1]).max() > 0.3
    assert abs(delta.std() - SIGMA) < 0.1  # 64 draws


def test_each_replica_draws_its_own_smoothadv_noise_and_attack_seeds(replicated):
    _, smoothadv = _models()
    x, _ = _data()
    for replica in (0, 1):
        np.testing.assert_array_equal(replicated["smoothadv_draws"][replica],
                                      smoothadv.draw_noise(_shard(x, replica), step=0, replica_id=replica).numpy())
        np.testing.assert_array_equal(replicated["smoothadv_seeds"][replica],
                                      smoothadv.attack_seeds(_shard(x, replica), step=0, replica_id=replica).numpy())
    assert np.abs(replicated["smoothadv_draws"][0] - replicated["smoothadv_draws"][1]).max() > 0.3
    assert len({tuple(s) for s in replicated["smoothadv_seeds"].reshape(-1, 2)}) == 4  # 2 replicas x 2 examples


@pytest.mark.parametrize("method", ["gaussian", "smoothadv"])
def test_a_two_replica_step_is_the_single_device_step_on_the_global_batch(replicated, method):
    import tensorflow as tf

    model = dict(zip(("gaussian", "smoothadv"), _models()))[method]
    x, y = _data()
    # The single-device computation: the global batch with the copies replica r makes of its shard, one forward
    # pass, the mean cross-entropy over all copies plus the kernel's L2 penalty, one SGD step.
    copies = np.concatenate([model.noisy_copies(tf.constant(_shard(x, r)), tf.constant(_shard(y, r)), 0,
                                                replica_id=r)[0].numpy() for r in (0, 1)])
    k = copies.shape[1]
    assert k == (1 if method == "gaussian" else 2)
    base = model.base_model
    with tf.GradientTape() as tape:
        logits = base(copies.reshape(-1, *SHAPE), training=True)
        loss = tf.reduce_mean(tf.nn.sparse_softmax_cross_entropy_with_logits(np.repeat(y, k), logits))
        loss = loss + tf.add_n(base.losses)  # the L2 penalty, once for the whole step
    gradients = tape.gradient(loss, base.trainable_variables)
    assert replicated[f"{method}_loss"] == pytest.approx(float(loss), rel=1e-6)
    for i, (weight, gradient) in enumerate(zip(_initial_weights(), gradients)):
        np.testing.assert_allclose(replicated[f"{method}_weight_{i}"], weight - LR * gradient.numpy(), atol=1e-6)
    assert np.abs(gradients[0].numpy()).max() > 1e-2  # a real step, so wrong noise or a wrong reduction shows
    assert int(replicated[f"{method}_step"]) == 1  # the step counter advanced once, not once per replica
    # tfsmooth's own loop (`train --strategy mirrored|multi-worker`) takes the same step.
    assert replicated[f"{method}_loop_loss"] == pytest.approx(float(loss), rel=1e-6)
    for i, (weight, gradient) in enumerate(zip(_initial_weights(), gradients)):
        np.testing.assert_allclose(replicated[f"{method}_loop_weight_{i}"], weight - LR * gradient.numpy(), atol=1e-6)
    assert int(replicated[f"{method}_loop_step"]) == 1


def test_replica_batches_slice_each_global_batch_in_order_and_leave_out_a_batch_smaller_than_the_replicas(replicated):
    np.testing.assert_array_equal(replicated["slices"], [[[0, -1], [1, 2]], [[3, -1], [4, 5]]])


def test_the_own_loop_warms_smoothadvs_epsilon_up_epoch_by_epoch(replicated):
    np.testing.assert_allclose(replicated["warmup_epsilon"], [0.25, 0.5])


@pytest.mark.parametrize("method", REGULARIZED)
def test_the_regularized_methods_take_the_same_two_replica_step_in_keras_fit_and_tfsmooths_loop(replicated, method):
    assert np.isfinite(replicated[f"{method}_loss"])
    assert replicated[f"{method}_loop_loss"] == pytest.approx(float(replicated[f"{method}_loss"]), rel=1e-6)
    moved = 0.0
    for i, initial in enumerate(_initial_weights()):
        np.testing.assert_allclose(replicated[f"{method}_loop_weight_{i}"], replicated[f"{method}_weight_{i}"],
                                   atol=1e-6)
        moved = max(moved, float(np.abs(replicated[f"{method}_weight_{i}"] - initial).max()))
    assert moved > 1e-3  # a real step
    assert int(replicated[f"{method}_step"]) == int(replicated[f"{method}_loop_step"]) == 1


if __name__ == "__main__":
    _replicated(sys.argv[1])
