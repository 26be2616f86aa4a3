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
precision. A pair is folded only when the graph shows the conv and the norm each called once and the
norm as the conv output's only consumer; `fold_batch_norm` also checks the folded view against the
model on a probe batch and keeps the unfolded model, with a warning, if they differ.
"""

from __future__ import annotations

import contextlib
import warnings

import keras
import numpy as np
import tensorflow as tf

from tfsmooth import registry
from tfsmooth.models.batch_norm import FusedBatchNormalization


class _FoldedConvBatchNorm(keras.layers.Layer):
    """conv(x, W * s) + (beta + (b - mean) * s): a Conv2D and its BatchNormalization, inference only.

    Computes in the conv's compute dtype (float32, or bfloat16 in a bfloat16 view), casting its input
    to it as the conv would, and returns the norm's compute dtype, as the unfolded pair does.
    """

    def __init__(self, conv, batch_norm, **kwargs):
        super().__init__(name=f"{conv.name}_folded", dtype="float32", **kwargs)
        self._convert_input_args = False  # the cast to the conv's compute dtype is done in call()
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
        x = tf.cast(x, conv.compute_dtype)
        y = tf.nn.conv2d(x, tf.cast(kernel, x.dtype), strides=conv.strides, padding=conv.padding.upper(),
                         dilations=conv.dilation_rate)
        return tf.cast(tf.nn.bias_add(y, tf.cast(bias, x.dtype)), bn.compute_dtype)


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


def _graph_nodes(model):
    """The call nodes (`keras.src.ops.node.Node`) of a functional or Sequential model's own graph.

    Keras 3 has no public API for the graph: a functional model keeps its nodes in `_nodes_by_depth`
    (depth 0 produces the outputs), a built Sequential model in its `_functional` model. Only nodes of
    this graph count: a layer's `_inbound_nodes` also lists its calls in other graphs (every layer that
    `fold_batch_norm` shares with a folded view gains one there), and `layer.input` / `layer.output`
    silently give the first call's tensors of a layer called several times.

    Returns:
        list of nodes, inputs first (descending depth), or None if `model` has no such graph.
    """
    graph = getattr(model, "_functional", None) if isinstance(model, keras.Sequential) else model
    by_depth = getattr(graph, "_nodes_by_depth", None)
    if not by_depth:
        return None
    return [node for depth in sorted(by_depth, reverse=True) for node in by_depth[depth]]


def _inference_call(node):
    """Whether a call does not force training mode (`training` not passed, None or False)."""
    training = node.arguments.kwargs.get("training")
    return training is None or training is False


def _foldable_pairs(model):
    """{conv layer name: batch-norm layer} for the Conv2D + BatchNormalization pairs safe to fold.

    A pair is folded when, in `model`'s own graph: the Conv2D (channels-last, groups 1, no activation)
    is called once; its output is not a model output and is consumed by exactly one call of any layer
    (every call of every layer counts, a shared layer called twice on it counts twice); that call is
    the BatchNormalization's only call, on the channel axis, with the conv output as its only tensor
    argument and no `training=True`.
    """
    nodes = _graph_nodes(model)
    if nodes is None:
        return {}
    calls, consumers = {}, {}
    for node in nodes:
        if node.operation is not None and not node.is_input:
            calls.setdefault(id(node.operation), []).append(node)
        for tensor in node.input_tensors:
            consumers.setdefault(id(tensor), []).append(node)
    model_outputs = {id(tensor) for tensor in tf.nest.flatten(model.outputs)}
    pairs = {}
    for node in nodes:
        conv = node.operation
        if type(conv) is not keras.layers.Conv2D or conv.data_format != "channels_last" or conv.groups != 1 \
                or conv.activation is not keras.activations.linear or len(calls[id(conv)]) != 1 \
                or len(node.outputs) != 1 or id(node.outputs[0]) in model_outputs:
            continue
        users = consumers.get(id(node.outputs[0]), [])
        if len(users) != 1:
            continue
        bn_node = users[0]
        bn = bn_node.operation
        if type(bn) in _FOLDABLE_NORMS and bn.axis in (-1, 3) and len(calls[id(bn)]) == 1 \
                and len(bn_node.input_tensors) == 1 and _inference_call(bn_node):
            pairs[conv.name] = bn
    return pairs


def _fold(model, pairs):
    """A clone of `model` sharing its layers, with each conv named in `pairs` and its norm folded."""
    folded_norms = {bn.name for bn in pairs.values()}

    def clone(layer):
        if layer.name in pairs:
            return _FoldedConvBatchNorm(layer, pairs[layer.name])
        if layer.name in folded_norms:
            return _Passthrough(name=f"{layer.name}_folded")
        return layer  # the layer itself: weights shared

    return keras.models.clone_model(model, clone_function=clone)


def _folded_pairs(folded):
    """{conv layer name: batch-norm layer name} folded in a view made by `_fold`."""
    return {layer.conv.name: layer.batch_norm.name for layer in folded.layers
            if isinstance(layer, _FoldedConvBatchNorm)}


PROBE_SEED = 0
"""Seed of the probe batch on which `fold_batch_norm` compares the folded view with the model."""


def _probe_difference(model, folded):
    """(max |folded - model|, max |model|) over all outputs on a probe batch (NaN if any output is NaN).

    The probe batch: 2 inputs per model input, uniform in [0, 1) (cast to the input's dtype), drawn
    from a NumPy generator seeded with `PROBE_SEED`, so no global NumPy, TF or Keras random state is
    drawn from. Both models are called with training=False.
    """
    rng = np.random.default_rng(PROBE_SEED)
    shapes = [(2,) + tuple(spec.shape[1:]) for spec in model.inputs]  # fully known: see fold_batch_norm
    with tf.init_scope():  # eager, also when called while a tf.function is traced
        probes = [tf.cast(rng.random(shape, dtype=np.float32), spec.dtype)
                  for shape, spec in zip(shapes, model.inputs)]
        struct = getattr(model, "_inputs_struct", None)
        probes = keras.tree.pack_sequence_as(struct, probes) if struct is not None else (
            probes[0] if len(probes) == 1 else probes)
        want = keras.tree.flatten(model(probes, training=False))
        got = keras.tree.flatten(folded(probes, training=False))
    want = np.concatenate([np.asarray(a, np.float64).ravel() for a in want] + [np.zeros(1)])
    got = np.concatenate([np.asarray(b, np.float64).ravel() for b in got] + [np.zeros(1)])
    return float(np.max(np.abs(got - want))), float(np.max(np.abs(want)))  # np.max keeps a NaN


@contextlib.contextmanager
def _random_statistics(norms):
    """Sets the folded batch norms' gamma, beta and moving statistics to seeded random values, then restores them.

    A freshly built model's batch norms are the identity up to 1/sqrt(1 + epsilon), so a fold that
    pairs the wrong layers would change its outputs by only ~epsilon and pass the probe; with
    statistics far from the identity (scales in [0.5, 2], shifts of O(1)) a wrong fold moves the
    outputs by O(their scale). The values come from a NumPy generator seeded with `PROBE_SEED` + 1
    (no global random state is drawn from) and are written back exactly afterwards.
    """
    rng = np.random.default_rng(PROBE_SEED + 1)
    saved = []
    try:
        for bn in norms:
            draws = {"gamma": lambda n: rng.uniform(0.5, 2.0, n), "beta": lambda n: rng.normal(0.0, 0.5, n),
                     "moving_mean": lambda n: rng.normal(0.0, 0.5, n),
                     "moving_variance": lambda n: rng.uniform(0.5, 2.0, n)}
            for name, draw in draws.items():
                variable = getattr(bn, name, None)
                if variable is None:
                    continue
                saved.append((variable, np.array(variable.numpy())))
                variable.assign(draw(variable.shape).astype(saved[-1][1].dtype))
        yield
    finally:
        for variable, value in reversed(saved):
            variable.assign(value)


def fold_batch_norm(model):
    """An inference-only view of `model` with each Conv2D + BatchNormalization pair folded into one conv.

    Only top-level layers of a functional or Sequential Keras model are considered: a channels-last
    `keras.layers.Conv2D` without activation, called once in the model, whose output goes only to a
    `keras.layers.BatchNormalization` (or `FusedBatchNormalization`) on the channel axis that is
    itself called once (see `_foldable_pairs`). Shared layers are never folded.

    Safety net: the folded view is compared with `model` on a probe batch (2 inputs drawn uniform in
    [0, 1) from a generator seeded with `PROBE_SEED`, without touching any global random state; both
    called with training=False), with the folded batch norms' statistics temporarily set to random
    values far from the identity (`_random_statistics`; restored exactly afterwards), so that a wrong
    fold shows also on a freshly built model. If any output differs by more than 1e-3 * (1 + max |output|), a
    RuntimeWarning names the difference and `model` itself is returned.

    Any other model (subclassed, with an input shape not fully known, or with nothing to fold) is
    returned unchanged.

    Args:
        model: Keras model, float32 [batch, H, W, C] -> outputs; its batch norms are used with their
            moving statistics (inference mode).

    Returns:
        A `keras.Model` sharing `model`'s variables (no copy; later training of `model` is seen),
        with the same outputs up to float32 rounding when called with `training=False`. Calling
        it with `training=True` raises ValueError. Not meant to be saved: save `model`. Or `model`
        itself where nothing is folded (see above).
    """
    if not isinstance(model, keras.Model) or not getattr(model, "inputs", None):  # subclassed: no graph
        return model
    pairs = _foldable_pairs(model)
    if not pairs or any(dim is None for spec in model.inputs for dim in spec.shape[1:]):
        return model
    folded = _fold(model, pairs)
    with tf.init_scope(), _random_statistics(pairs.values()):
        diff, scale = _probe_difference(model, folded)
    # Folding only reassociates float32 products and sums, (x * W) * s vs x * (W * s) and
    # (z - mean) * s + beta vs z * s + ((b - mean) * s + beta): a few roundings of relative 2**-24
    # per layer, which add up to at most 3e-7 of the logits' scale on the probe (measured: ResNet-20
    # and -110 with random statistics, the shipped CIFAR-10 ResNet-20). 1e-3 of the scale leaves a
    # margin of over 1000 for deeper or less well-conditioned models, while a wrong fold replaces
    # one per-channel affine map by another and moves outputs by O(their scale) (2.3 and 2.9 on the
    # shared-layer models of issue 10). The 1 + keeps a model whose outputs are near 0 from being
    # held to less than the rounding of its O(1) normalized activations.
    tolerance = 1e-3 * (1.0 + scale)
    if not diff <= tolerance:  # also catches NaN
        warnings.warn(
            f"fold_batch_norm: the folded view of model {model.name!r} differs from the model by up to "
            f"{diff:.3g} (max abs difference; tolerance {tolerance:.3g}) on a probe batch; using the unfolded "
            "model", RuntimeWarning, stacklevel=2)
        return model
    return folded


COMPUTE_DTYPES = registry.COMPUTE_DTYPES
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
    float32 variables cast to bfloat16 at use, bfloat16 activations), except two groups that compute
    in float32:

    * the preprocessing: the input layer and every layer that, on every path from the inputs, comes
      before any layer with trainable variables (`keras.layers.Normalization`, `Rescaling`, padding
      or reshapes before the first conv or dense layer; a layer with trainable variables, even a
      BatchNormalization, ends it), so that the noisy pixels x + delta are not rounded to bfloat16
      before they are normalized: the first conv or dense layer casts the normalized float32 tensor
      to bfloat16 itself;
    * the layer that produces the output, so that the class scores are not rounded to bfloat16's 8
      significant bits (which would make ties between the top two classes common).

    The clone is then folded, with the pairs that `fold_batch_norm` chooses and checks on the float32
    `model` (none if its check falls back). The clone has its own copies of the weights: `sync()` copies
    `model`'s current values into it, and `SmoothedClassifier` calls it before every counting run,
    so the view follows later training.

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
        # Which pairs to fold is decided and checked in float32, where a wrong fold stands out from
        # rounding; the clone has the same graph and layer names.
        checked = fold_batch_norm(model)
        names = _folded_pairs(checked) if checked is not model else {}
        pairs = {conv: bn for conv, bn in _foldable_pairs(clone).items() if names.get(conv) == bn.name}
        self.model = _fold(clone, pairs) if pairs else clone

    @property
    def copied_variables(self) -> list:
        """The view's own variables (the bfloat16 clone's copies); empty for float32, which shares."""
        return [target for target, _ in self._pairs]

    def sync(self) -> None:
        """Copies the source model's weights into a bfloat16 view (nothing to do for float32)."""
        for target, source in self._pairs:
            target.assign(source)


def _preprocessing_layers(model):
    """ids of the layers of `model` whose every call comes before any layer with trainable variables.

    "Before": on every path from the model's inputs to the call; the bfloat16 view keeps them in float32.
    """
    downstream = set()  # ids of tensors computed after a layer with trainable variables
    before, after = set(), set()
    for node in _graph_nodes(model) or ():
        layer = node.operation
        if layer is None or node.is_input:
            continue
        if any(id(t) in downstream for t in node.input_tensors) or any(v.trainable for v in layer.weights):
            downstream.update(id(t) for t in node.outputs)
            after.add(id(layer))
        else:
            before.add(id(layer))
    return before - after


def _bfloat16_clone(model):
    if not isinstance(model, keras.Model) or not getattr(model, "inputs", None) or len(model.outputs) != 1:
        raise ValueError(
            "compute_dtype='bfloat16' needs a functional or Sequential Keras model with one output "
            f"(its layers are cloned with a bfloat16 policy), got {type(model).__name__}")
    float32_layers = _preprocessing_layers(model) | {id(model.layers[-1])}

    def clone(layer):
        config = layer.get_config()
        config["dtype"] = "float32" if id(layer) in float32_layers else "mixed_bfloat16"
        return layer.__class__.from_config(config)

    copy = keras.models.clone_model(model, clone_function=clone)
    if copy.outputs[0].dtype != "float32":  # the last listed layer was not the one producing the output
        raise ValueError("compute_dtype='bfloat16': cannot keep the model's output layer in float32 "
                         f"(its output is {copy.outputs[0].dtype}); make the output layer the model's last layer")
    if [tuple(w.shape) for w in copy.weights] != [tuple(w.shape) for w in model.weights]:
        raise ValueError("compute_dtype='bfloat16': the cloned model's weights do not match the base model's")
    return copy
