"""FusedBatchNormalization: Keras' BatchNormalization with TensorFlow's fused training kernel."""

import keras
import numpy as np
import pytest
import tensorflow as tf

from fixtures import randomize_batch_norms
from tfsmooth import models
from tfsmooth.models import FusedBatchNormalization, folding


def _pair(shape, **kwargs):
    """A Keras and a fused layer with the same random gamma / beta / moving statistics."""
    keras_bn = keras.layers.BatchNormalization(**kwargs)
    fused_bn = FusedBatchNormalization(**kwargs)
    keras_bn.build(shape)
    fused_bn.build(shape)
    rng = np.random.default_rng(1)
    keras_bn.set_weights([rng.uniform(0.5, 2.0, w.shape).astype(np.float32) for w in keras_bn.get_weights()])
    fused_bn.set_weights(keras_bn.get_weights())
    return keras_bn, fused_bn


def _ops(layer, x, training):
    """The op types of `layer(x, training)` traced as a graph."""
    graph = tf.function(lambda t: layer(t, training=training)).get_concrete_function(
        tf.TensorSpec(x.shape, x.dtype)).graph
    return {op.type for op in graph.get_operations()}


@pytest.mark.parametrize("kwargs", [{}, {"momentum": 0.9}, {"center": False}, {"scale": False, "epsilon": 1e-2}])
def test_training_step_matches_keras_outputs_gradients_and_moving_statistics(kwargs):
    rng = np.random.default_rng(0)
    shape = (8, 5, 5, 4)
    keras_bn, fused_bn = _pair(shape, **kwargs)
    weights = tf.constant(rng.normal(size=shape).astype(np.float32))
    for step in range(3):  # moving statistics accumulate over steps
        x = tf.constant(rng.normal(2.0, 3.0, shape).astype(np.float32))
        results = []
        for layer in (keras_bn, fused_bn):
            with tf.GradientTape() as tape:
                tape.watch(x)
                y = layer(x, training=True)
                loss = tf.reduce_sum(y * weights)
            results.append((y, tape.gradient(loss, [x, *layer.trainable_variables])))
        (y_keras, grads_keras), (y_fused, grads_fused) = results
        np.testing.assert_allclose(y_fused, y_keras, rtol=1e-5, atol=1e-5)
        for g_fused, g_keras in zip(grads_fused, grads_keras):
            np.testing.assert_allclose(g_fused, g_keras, rtol=1e-4, atol=1e-4)
        for w_fused, w_keras in zip(fused_bn.get_weights(), keras_bn.get_weights()):
            np.testing.assert_allclose(w_fused, w_keras, rtol=1e-6, atol=1e-6)
    # The moving statistics did move (so the comparison above was not of untouched variables).
    assert not np.allclose(fused_bn.moving_mean.numpy(), 0.0)


def test_fused_kernel_is_used_in_training_only():
    x = tf.zeros((2, 4, 4, 3))
    layer = FusedBatchNormalization()
    layer.build(x.shape)
    assert "FusedBatchNormV3" in _ops(layer, x, training=True)
    assert "FusedBatchNormV3" not in _ops(layer, x, training=False)
    frozen = FusedBatchNormalization(trainable=False)
    frozen.build(x.shape)
    assert "FusedBatchNormV3" not in _ops(frozen, x, training=True)  # frozen layers use moving statistics


@pytest.mark.parametrize("kwargs, shape", [({"axis": 1}, (6, 3, 4, 4)), ({}, (6, 3)), ({"epsilon": 1e-6}, (6, 4, 4, 3))])
def test_fallback_cases_take_the_keras_path_and_equal_the_keras_layer(kwargs, shape):
    # Channels first, rank 2, epsilon below the fused kernel's minimum.
    keras_bn, fused_bn = _pair(shape, **kwargs)
    x = tf.constant(np.random.default_rng(2).normal(size=shape).astype(np.float32))
    assert "FusedBatchNormV3" not in _ops(fused_bn, x, training=True)
    np.testing.assert_array_equal(fused_bn(x, training=True), keras_bn(x, training=True))
    for w_fused, w_keras in zip(fused_bn.get_weights(), keras_bn.get_weights()):
        np.testing.assert_array_equal(w_fused, w_keras)


def test_inference_is_the_keras_layer_exactly():
    keras_bn, fused_bn = _pair((4, 3, 3, 2))
    x = tf.constant(np.random.default_rng(3).normal(size=(4, 3, 3, 2)).astype(np.float32))
    np.testing.assert_array_equal(fused_bn(x, training=False), keras_bn(x, training=False))


def test_bfloat16_inputs_under_mixed_precision_stay_close_to_keras():
    shape = (16, 6, 6, 8)
    x = np.random.default_rng(4).normal(1.0, 2.0, shape).astype(np.float32)
    keras_bn, fused_bn = _pair(shape, dtype="mixed_bfloat16")
    y_keras = keras_bn(tf.constant(x, tf.bfloat16), training=True)
    y_fused = fused_bn(tf.constant(x, tf.bfloat16), training=True)
    assert y_fused.dtype == tf.bfloat16 and fused_bn.moving_mean.dtype == "float32"
    # bfloat16 keeps 8 significant bits: outputs of order 1 agree to a few 1e-2.
    np.testing.assert_allclose(tf.cast(y_fused, tf.float32), tf.cast(y_keras, tf.float32), atol=5e-2)
    np.testing.assert_allclose(fused_bn.moving_mean, keras_bn.moving_mean, rtol=1e-2, atol=1e-2)


def test_resnet_uses_the_fused_layer_and_saves_and_loads_it(tmp_path):
    model = models.cifar_resnet(20)
    norms = [layer for layer in model.layers if isinstance(layer, keras.layers.BatchNormalization)]
    assert len(norms) == 21 and all(type(layer) is FusedBatchNormalization for layer in norms)
    randomize_batch_norms(model)
    path = str(tmp_path / "resnet.keras")
    model.save(path)
    loaded = keras.models.load_model(path)
    assert type(loaded.get_layer("stem_bn")) is FusedBatchNormalization
    x = np.random.default_rng(5).random((2, 32, 32, 3), dtype=np.float32)
    np.testing.assert_array_equal(loaded(x, training=False), model(x, training=False))
    # Folding treats it as the Keras layer (same inference path).
    folded = folding.fold_batch_norm(loaded)
    assert sum(isinstance(layer, folding._FoldedConvBatchNorm) for layer in folded.layers) == 21
