"""Inference-only folding of batch normalization into the preceding convolution.

In inference mode a BatchNormalization layer is the affine map y = s * (z - mean) + beta per channel,
s = gamma / sqrt(moving_variance + epsilon). When it directly follows a Conv2D z = conv(x, W) + b,
the pair equals one convolution conv(x, W * s) + (beta + (b - mean) * s). TensorFlow's graph
optimizer then fuses that convolution with its bias and a following ReLU into one oneDNN kernel
(`_FusedConv2D`), instead of a convolution followed by separate passes over the activations for the
normalization's multiply and add. On a CIFAR ResNet-20 at batch 400 on CPU this makes the forward
pass about 20% faster (benchmarks/RESULTS.md).

The folded weights are computed inside the graph from the model's own variables at every call, so
the folded view shares the variables of the original model and follows it when it is trained
further; nothing is copied or frozen. Results equal the original model's up to float32 rounding
(relative ~1e-6 on the logits), so a top-1 label can differ only where two logits tie to that
precision.
"""

from __future__ import annotations

import keras
import tensorflow as tf

from tfsmooth.models.batch_norm import FusedBatchNormalization


class _FoldedConvBatchNorm(keras.layers.Layer):
    """conv(x, W * s) + (beta + (b - mean) * s): a Conv2D and its BatchNormalization, inference only."""

    def __init__(self, conv, batch_norm, **kwargs):
        super().__init__(name=f"{conv.name}_folded", dtype="float32", **kwargs)
        self._convert_input_args = False  # compute in the input's dtype (float32, or bfloat16 in a bf16 view)
        self.conv = conv
        self.batch_norm = batch_norm

    def call(self, x, training=None):
        if training:
            raise ValueError("a batch-norm-folded model is for inference only: call it with training=False")
        conv, bn = self.conv, self.batch_norm
        scale = tf.math.rsqrt(tf.cast(bn.moving_variance, tf.float32) + bn.epsilon)
        if bn.scale:
            scale = scale * tf.cast(bn.gamma, tf.float32)
        bias = -tf.cast(bn.moving_mean, tf.float32) * scale
        if conv.use_bias:
            bias = bias + tf.cast(conv.bias, tf.float32) * scale
        if bn.center:
            bias = bias + tf.cast(bn.beta, tf.float32)
        kernel = tf.cast(conv.kernel, tf.float32) * scale
        y = tf.nn.conv2d(x, tf.cast(kernel, x.dtype), strides=conv.strides, padding=conv.padding.upper(),
                         dilations=conv.dilation_rate)
        return tf.nn.bias_add(y, tf.cast(bias, x.dtype))


class _Passthrough(keras.layers.Layer):
    """Stands in for a BatchNormalization whose work moved into the convolution before it."""

    def __init__(self, **kwargs):
        super().__init__(dtype="float32", **kwargs)
        self._convert_input_args = False  # pass the input through in its own dtype

    def call(self, x, training=None, **kwargs):
        return x


_FOLDABLE_NORMS = (keras.layers.BatchNormalization, FusedBatchNormalization)
"""Batch-norm classes folded: Keras' own and its fused-training subclass (same inference path). Other
subclasses may change the inference math, so they are left alone."""


def _foldable_pairs(model):
    """{conv layer name: batch-norm layer} for each Conv2D whose only consumer is a BatchNormalization."""
    consumers = {}
    for layer in model.layers:
        try:
            inputs = layer.input
        except (AttributeError, ValueError):  # an input layer, or a layer used in several places
            continue
        for tensor in tf.nest.flatten(inputs):
            consumers.setdefault(id(tensor), []).append(layer)
    pairs = {}
    for layer in model.layers:
        if type(layer) is not keras.layers.Conv2D or layer.data_format != "channels_last" or layer.groups != 1 \
                or layer.activation is not keras.activations.linear:
            continue
        try:
            output = layer.output
        except (AttributeError, ValueError):  # used in several places
            continue
        if any(output is model_output for model_output in model.outputs):
            continue
        users = consumers.get(id(output), [])
        if len(users) == 1 and type(users[0]) in _FOLDABLE_NORMS and users[0].axis in (-1, 3):
            pairs[layer.name] = users[0]
    return pairs


def fold_batch_norm(model):
    """An inference-only view of `model` with each Conv2D + BatchNormalization pair folded into one conv.

    Only top-level layers of a functional or Sequential Keras model are considered: a channels-last
    `keras.layers.Conv2D` without activation, used once, whose output goes only to a
    `keras.layers.BatchNormalization` (or `FusedBatchNormalization`) on the channel axis. Any other
    model (subclassed, or with nothing to fold) is returned unchanged.

    Args:
        model: Keras model, float32 [batch, H, W, C] -> outputs; its batch norms are used with their
            moving statistics (inference mode).

    Returns:
        A `keras.Model` sharing `model`'s variables (no copy; later training of `model` is seen),
        with the same outputs up to float32 rounding when called with `training=False`. Calling
        it with `training=True` raises ValueError. Not meant to be saved: save `model`.
    """
    if not isinstance(model, keras.Model) or not getattr(model, "inputs", None):  # subclassed: no graph
        return model
    pairs = _foldable_pairs(model)
    if not pairs:
        return model
    folded_norms = {bn.name for bn in pairs.values()}

    def clone(layer):
        if layer.name in pairs:
            return _FoldedConvBatchNorm(layer, pairs[layer.name])
        if layer.name in folded_norms:
            return _Passthrough(name=f"{layer.name}_folded")
        return layer  # the layer itself: weights shared

    return keras.models.clone_model(model, clone_function=clone)


COMPUTE_DTYPES = ("float32", "bfloat16")
"""Arithmetic of the counting path: float32 (the default), or bfloat16 on CPUs with native bfloat16
dot products (AVX512_BF16, AMX) or on accelerators."""


def check_compute_dtype(compute_dtype) -> str:
    """Returns `compute_dtype` if it is one of `COMPUTE_DTYPES`; raises ValueError naming it otherwise."""
    if compute_dtype not in COMPUTE_DTYPES:
        raise ValueError(f"compute_dtype must be one of {', '.join(COMPUTE_DTYPES)}, got {compute_dtype!r}")
    return compute_dtype


class InferenceView:
    """The model the counting path calls: `model` with batch norm folded, in float32 or bfloat16.

    float32: `fold_batch_norm(model)`, which shares `model`'s variables.

    bfloat16: a clone of `model` whose layers compute in bfloat16 (Keras policy "mixed_bfloat16":
    float32 variables cast to bfloat16 at use, bfloat16 activations), except the layer that produces
    the output, which computes in float32 so that the class scores are not rounded to bfloat16's 8
    significant bits (which would make ties between the top two classes common); then folded. The
    clone has its own copies of the weights: `sync()` copies `model`'s current values into it, and
    `SmoothedClassifier` calls it before every counting run, so the view follows later training.

    The smoothed classifier certified with a bfloat16 view is the smoothing of that bfloat16 base
    classifier f_bf16: CERTIFY's guarantee (Cohen et al. 2019, Thm. 1) holds for it exactly as for
    float32 (f_bf16 is a fixed function of its input), but f_bf16 can differ from the float32 f on
    inputs near a decision boundary, so counts and certificates differ from the float32 ones.

    Args:
        model: Keras model, float32 pixels [batch, H, W, C] -> scores [batch, K]. For bfloat16 it must
            be a functional or Sequential model (cloned layer by layer).
        compute_dtype: "float32" or "bfloat16".

    Raises:
        ValueError: if compute_dtype is not one of `COMPUTE_DTYPES`, or is bfloat16 and `model` is
            not a functional or Sequential Keras model.
    """

    def __init__(self, model, compute_dtype: str = "float32"):
        self.compute_dtype = check_compute_dtype(compute_dtype)
        self._pairs = ()
        if self.compute_dtype == "float32":
            self.model = fold_batch_norm(model)
            return
        clone = _bfloat16_clone(model)
        self._pairs = tuple(zip(clone.weights, model.weights))
        self.sync()
        self.model = fold_batch_norm(clone)

    @property
    def copied_variables(self) -> list:
        """The view's own variables (the bfloat16 clone's copies); empty for float32, which shares."""
        return [target for target, _ in self._pairs]

    def sync(self) -> None:
        """Copies the source model's weights into a bfloat16 view (nothing to do for float32)."""
        for target, source in self._pairs:
            target.assign(source)


def _bfloat16_clone(model):
    if not isinstance(model, keras.Model) or not getattr(model, "inputs", None) or len(model.outputs) != 1:
        raise ValueError(
            "compute_dtype='bfloat16' needs a functional or Sequential Keras model with one output "
            f"(its layers are cloned with a bfloat16 policy), got {type(model).__name__}")
    output_layer = model.layers[-1]

    def clone(layer):
        config = layer.get_config()
        config["dtype"] = "float32" if layer is output_layer else "mixed_bfloat16"
        return layer.__class__.from_config(config)

    copy = keras.models.clone_model(model, clone_function=clone)
    if copy.outputs[0].dtype != "float32":  # the last listed layer was not the one producing the output
        raise ValueError("compute_dtype='bfloat16': cannot keep the model's output layer in float32 "
                         f"(its output is {copy.outputs[0].dtype}); make the output layer the model's last layer")
    if [tuple(w.shape) for w in copy.weights] != [tuple(w.shape) for w in model.weights]:
        raise ValueError("compute_dtype='bfloat16': the cloned model's weights do not match the base model's")
    return copy
