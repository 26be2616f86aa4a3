"""Batch normalization whose training-mode step is TensorFlow's fused kernel.

Keras 3 computes a training-mode BatchNormalization as separate operations: the batch moments
(`tf.nn.moments`: a mean, a squared difference, another mean), then `x * scale + offset`, and the
gradient of each. On a CPU every one of them is a pass over the activations, which on a CIFAR ResNet
(16 to 64 channels at 32x32 to 8x8) costs about as much as a small convolution. `FusedBatchNormV3`
normalizes in one oneDNN kernel and has one gradient kernel (`FusedBatchNormGradV3`). On the
SmoothAdv training step of a ResNet-20 this made TensorFlow's share of non-convolution work drop
from ~22 % to ~8 % of the step (benchmarks/RESULTS.md, issue 3 throughput).

`FusedBatchNormalization` is a drop-in `keras.layers.BatchNormalization`: same arguments,
variables, config and inference path; only the training-mode call of a 4-D channels-last input
goes through the fused kernel, and it computes what the Keras layer computes (the batch's biased
variance to normalize and in the moving-variance update), up to float rounding.
"""

from __future__ import annotations

import keras
import tensorflow as tf


@keras.saving.register_keras_serializable(package="tfsmooth")
class FusedBatchNormalization(keras.layers.BatchNormalization):
    """`keras.layers.BatchNormalization` with a fused training step (TensorFlow's `FusedBatchNormV3`).

    In training mode (`training=True` on a trainable layer), a rank-4 input normalized over its
    last axis, without mask, renorm or synchronized statistics, with epsilon >= 1.001e-5, is normalized by
    `tf.compat.v1.nn.fused_batch_norm`: y = gamma * (x - mean_B) / sqrt(var_B + epsilon) + beta
    with the batch mean and biased variance over the N * H * W positions (Ioffe & Szegedy 2015,
    Alg. 1), and the moving statistics are updated exactly as the Keras layer does it:
    moving = moving * momentum + batch statistic * (1 - momentum). Every other call (inference,
    other ranks or axes, masks, renorm, synchronized) is the Keras layer's own.

    Input: float32, bfloat16 or float16 [N, H, W, C]; output: the layer's compute dtype, same shape.
    Arguments, variables (gamma, beta, moving_mean, moving_variance; float32) and config are those
    of `keras.layers.BatchNormalization`; saved models need `import tfsmooth` to load the class.
    """

    def _fused_training(self, inputs, mask) -> bool:
        # fused_batch_norm raises epsilon to at least 1.001e-5; smaller ones stay with Keras.
        return (mask is None and not self.renorm and self.epsilon >= 1.001e-5 and not self.synchronized and len(inputs.shape) == 4
                and self.axis in (-1, 3) and inputs.shape[-1] is not None
                and keras.backend.standardize_dtype(inputs.dtype) in ("float32", "bfloat16", "float16"))

    def call(self, inputs, training=None, mask=None):
        if not (training and self.trainable) or not self._fused_training(inputs, mask):
            return super().call(inputs, training=training, mask=mask)
        channels = inputs.shape[-1]
        scale = tf.cast(self.gamma, tf.float32) if self.scale else tf.ones([channels], tf.float32)
        offset = tf.cast(self.beta, tf.float32) if self.center else tf.zeros([channels], tf.float32)
        # exponential_avg_factor=1: the op returns this batch's mean and its variance with Bessel's
        # correction; the Keras layer uses (and averages) the biased variance.
        outputs, mean, variance = tf.compat.v1.nn.fused_batch_norm(
            inputs, scale, offset, epsilon=self.epsilon, data_format="NHWC", is_training=True,
            exponential_avg_factor=1.0)
        count = tf.cast(tf.reduce_prod(tf.shape(inputs)[:-1]), tf.float32)
        variance = variance * tf.maximum(count - 1.0, 0.0) / count
        self.moving_mean.assign(self.moving_mean * self.momentum + mean * (1.0 - self.momentum))
        self.moving_variance.assign(self.moving_variance * self.momentum + variance * (1.0 - self.momentum))
        return tf.cast(outputs, self.compute_dtype)
