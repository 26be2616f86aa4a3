"""Tests of tfsmooth.models.folding: batch norm folded into the preceding convolution, inference only."""

import random
import warnings

import keras
import numpy as np
import pytest
import tensorflow as tf

from fixtures import randomize_batch_norms as _randomize_batch_norms
from tfsmooth import models
from tfsmooth.models import folding


def _conv_bn(use_bias=False, activation=None, bn_kwargs=None):
    inputs = keras.Input((6, 6, 2))
    z = keras.layers.Conv2D(3, 3, padding="same", use_bias=use_bias, activation=activation, name="conv")(inputs)
    y = keras.layers.BatchNormalization(name="bn", **(bn_kwargs or {}))(z)
    return keras.Model(inputs, keras.layers.Flatten()(y))


def _shared_conv():
    # One Conv2D called twice, each call followed by its own norm: a fold with either norm is wrong for the
    # other call (the old test of "used once", an exception from layer.output, never fired in Keras 3).
    inputs = keras.Input((6, 6, 2))
    conv = keras.layers.Conv2D(2, 3, padding="same", name="conv")
    y = keras.layers.ReLU()(keras.layers.BatchNormalization(name="bn1")(conv(inputs)))
    y = keras.layers.BatchNormalization(name="bn2")(conv(y))
    return keras.Model(inputs, keras.layers.Flatten()(y))


def _conv_feeding_shared_add():
    # z feeds the norm and, through the second call of a shared Add, the output: the norm is not its only user.
    inputs = keras.Input((6, 6, 2))
    z = keras.layers.Conv2D(2, 3, padding="same", name="conv")(inputs)
    add = keras.layers.Add(name="add")
    y = add([add([keras.layers.BatchNormalization(name="bn")(z), inputs]), z])
    return keras.Model(inputs, keras.layers.Flatten()(y))


def _fold_without_warning(model):
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # the pair choice must be right by itself, not rescued by the safety net
        return folding.fold_batch_norm(model)


def _folded_pairs(folded):
    return {layer.conv.name: layer.batch_norm.name for layer in folded.layers
            if isinstance(layer, folding._FoldedConvBatchNorm)}


def _probe(shape=(6, 6, 2), seed=1):
    return np.random.default_rng(seed).random((2, *shape), dtype=np.float32)


@pytest.mark.parametrize("make_model", [_shared_conv, _conv_feeding_shared_add])
def test_fold_batch_norm_keeps_logits_of_models_with_shared_layers(make_model):
    keras.utils.set_random_seed(0)
    model = make_model()
    _randomize_batch_norms(model)
    folded = _fold_without_warning(model)
    x = _probe()
    # Before the fix the folded logits were off by 6.1 and 2.8 here.
    np.testing.assert_allclose(folded(x, training=False), model(x, training=False), rtol=1e-5, atol=1e-5)


def test_fold_batch_norm_still_folds_the_unshared_pair_next_to_a_shared_conv():
    # A stem conv + norm called once, then a Conv2D called twice (once into a norm): only the stem pair folds.
    keras.utils.set_random_seed(0)
    inputs = keras.Input((6, 6, 2))
    y = keras.layers.BatchNormalization(name="stem_bn")(keras.layers.Conv2D(2, 3, padding="same", name="stem")(inputs))
    conv = keras.layers.Conv2D(2, 1, name="twice")
    model = keras.Model(inputs, keras.layers.Add()([keras.layers.BatchNormalization(name="bn")(conv(y)), conv(inputs)]))
    _randomize_batch_norms(model)
    folded = _fold_without_warning(model)
    assert _folded_pairs(folded) == {"stem": "stem_bn"}
    np.testing.assert_allclose(folded(_probe(), training=False), model(_probe(), training=False), rtol=1e-5, atol=1e-5)


def test_layers_shared_with_another_model_fold_in_each_model():
    # A conv + norm called once in each of two models (and every layer a folded view shares gains a call in
    # that view's graph): what counts is the calls in the model's own graph.
    keras.utils.set_random_seed(0)
    conv, bn = keras.layers.Conv2D(2, 3, padding="same", name="conv"), keras.layers.BatchNormalization(name="bn")
    relu = keras.layers.ReLU(name="relu")
    first_in, second_in = keras.Input((6, 6, 2)), keras.Input((6, 6, 2))
    first = keras.Model(first_in, relu(bn(conv(first_in))))
    second = keras.Model(second_in, keras.layers.Flatten()(relu(bn(conv(keras.layers.ReLU()(second_in))))))
    _randomize_batch_norms(first)
    x = _probe()
    for model in (first, second, first):  # first again: after its layers gained calls in other graphs
        folded = _fold_without_warning(model)
        assert _folded_pairs(folded) == {"conv": "bn"}
        np.testing.assert_allclose(folded(x, training=False), model(x, training=False), rtol=1e-5, atol=1e-5)


def test_fold_batch_norm_leaves_norm_called_in_training_mode_alone():
    inputs = keras.Input((6, 6, 2))
    z = keras.layers.Conv2D(3, 3, padding="same", name="conv")(inputs)
    model = keras.Model(inputs, keras.layers.BatchNormalization(name="bn")(z, training=True))  # batch statistics
    assert folding.fold_batch_norm(model) is model


def _wrong_pairs(model):
    return {"conv": model.get_layer("bn1")}  # the old answer for _shared_conv: bn1 for both calls of the conv


def _folded_call_without_norm(self, x, training=None):
    return self.conv(x)  # forgets the norm


@pytest.mark.parametrize("target, name, broken", [
    (folding, "_foldable_pairs", _wrong_pairs),
    (folding._FoldedConvBatchNorm, "call", _folded_call_without_norm),
])
def test_fold_batch_norm_falls_back_to_the_model_with_a_warning_on_a_wrong_fold(monkeypatch, target, name, broken):
    keras.utils.set_random_seed(0)
    model = _shared_conv() if name == "_foldable_pairs" else _conv_bn()
    _randomize_batch_norms(model)
    x = _probe()
    want = model(x, training=False).numpy()
    monkeypatch.setattr(target, name, broken)
    with pytest.warns(RuntimeWarning, match=r"differs from the model by up to \d.*using the unfolded model"):
        folded = folding.fold_batch_norm(model)
    assert folded is model
    np.testing.assert_array_equal(folded(x, training=False), want)


def test_fold_batch_norm_draws_from_no_global_random_state():
    def draws():
        return (random.random(), np.random.random(), float(tf.random.uniform([])), float(keras.random.uniform([])))

    model = _conv_bn()
    keras.utils.set_random_seed(7)
    want = draws()
    keras.utils.set_random_seed(7)
    folded = folding.fold_batch_norm(model)
    assert folded is not model  # the probe ran
    assert draws() == want


def test_fold_batch_norm_probes_in_inference_mode():
    # Dropout after the norm: a probe in training mode would drop units at random and never match.
    keras.utils.set_random_seed(0)
    inputs = keras.Input((6, 6, 2))
    y = keras.layers.BatchNormalization()(keras.layers.Conv2D(3, 3, padding="same")(inputs))
    model = keras.Model(inputs, keras.layers.Flatten()(keras.layers.Dropout(0.5)(y)))
    _randomize_batch_norms(model)
    assert len(_folded_pairs(_fold_without_warning(model))) == 1


def test_fold_batch_norm_leaves_model_with_unknown_input_size_alone():
    # The probe needs a concrete input shape: without one nothing is folded rather than folded unchecked.
    inputs = keras.Input((None, None, 2))
    y = keras.layers.BatchNormalization()(keras.layers.Conv2D(3, 3, padding="same")(inputs))
    model = keras.Model(inputs, keras.layers.GlobalAveragePooling2D()(y))
    assert folding.fold_batch_norm(model) is model


def test_fold_batch_norm_folds_every_conv_of_resnet20_and_keeps_logits():
    model = models.cifar_resnet(20)
    _randomize_batch_norms(model)
    folded = folding.fold_batch_norm(model)
    # 21 convolutions (stem, 2 x 9 in the blocks, 2 projections), each followed only by its norm.
    assert sum(isinstance(layer, folding._FoldedConvBatchNorm) for layer in folded.layers) == 21
    x = np.random.default_rng(1).random((4, 32, 32, 3), dtype=np.float32)
    np.testing.assert_allclose(folded(x, training=False), model(x, training=False), rtol=1e-4, atol=1e-4)


def test_folded_conv_computes_the_affine_map_by_hand():
    # One 1x1 conv on one channel, W = 2, b = 1; norm gamma = 3, beta = 0.5, mean = 1, var = 4 - eps:
    # s = 3 / sqrt(4) = 1.5, so f(x) = 1.5 * (2x + 1 - 1) + 0.5 = 3x + 0.5; x = 2 gives 6.5.
    inputs = keras.Input((1, 1, 1))
    z = keras.layers.Conv2D(1, 1, use_bias=True, name="conv")(inputs)
    bn = keras.layers.BatchNormalization(name="bn")
    model = keras.Model(inputs, keras.layers.Flatten()(bn(z)))
    model.get_layer("conv").set_weights([np.full((1, 1, 1, 1), 2.0), np.array([1.0])])
    bn.set_weights([np.array([3.0]), np.array([0.5]), np.array([1.0]), np.array([4.0 - bn.epsilon])])
    out = folding.fold_batch_norm(model)(np.full((1, 1, 1, 1), 2.0, np.float32), training=False)
    np.testing.assert_allclose(out, [[6.5]], rtol=1e-6)


def test_folded_model_shares_variables_and_follows_later_changes():
    model = _conv_bn(use_bias=True)
    folded = folding.fold_batch_norm(model)
    assert {id(v) for v in folded.weights} == {id(v) for v in model.weights}
    _randomize_batch_norms(model, seed=3)  # after folding: the folded view must see it
    model.get_layer("conv").set_weights([w + 0.25 for w in model.get_layer("conv").get_weights()])
    x = np.random.default_rng(2).random((2, 6, 6, 2), dtype=np.float32)
    np.testing.assert_allclose(folded(x, training=False), model(x, training=False), rtol=1e-5, atol=1e-5)


def test_fold_batch_norm_handles_norms_without_scale_or_center():
    model = _conv_bn(bn_kwargs={"scale": False, "center": False})
    _randomize_batch_norms(model)  # only moving mean and variance exist
    x = np.random.default_rng(4).random((2, 6, 6, 2), dtype=np.float32)
    folded = folding.fold_batch_norm(model)
    assert any(isinstance(layer, folding._FoldedConvBatchNorm) for layer in folded.layers)
    np.testing.assert_allclose(folded(x, training=False), model(x, training=False), rtol=1e-5, atol=1e-5)


def test_fold_batch_norm_leaves_conv_with_activation_or_second_consumer_alone():
    with_relu = _conv_bn(activation="relu")  # relu between conv and norm: not an affine pair
    assert folding.fold_batch_norm(with_relu) is with_relu
    inputs = keras.Input((6, 6, 2))
    z = keras.layers.Conv2D(3, 3, padding="same", name="conv")(inputs)
    y = keras.layers.Add()([keras.layers.BatchNormalization()(z), z])  # z also used unnormalized
    two_users = keras.Model(inputs, y)
    assert folding.fold_batch_norm(two_users) is two_users


def test_fold_batch_norm_returns_subclassed_model_unchanged():
    class Net(keras.Model):
        def __init__(self):
            super().__init__()
            self.conv = keras.layers.Conv2D(2, 3)
            self.norm = keras.layers.BatchNormalization()

        def call(self, x):
            return self.norm(self.conv(x))

    net = Net()
    net(np.zeros((1, 6, 6, 2), np.float32))
    assert folding.fold_batch_norm(net) is net


def test_folded_model_refuses_training_mode():
    folded = folding.fold_batch_norm(_conv_bn())
    with pytest.raises(ValueError, match="training=False"):
        folded(tf.zeros([1, 6, 6, 2]), training=True)


def test_the_safety_net_catches_a_wrong_fold_of_a_freshly_built_model(monkeypatch):
    # Fresh batch norms are the identity up to 1/sqrt(1 + eps): without randomized statistics in the probe
    # a fold that pairs the wrong layers would differ by ~eps and pass. Here the pair is deliberately wrong.
    inputs = keras.Input((6, 6, 2))
    a = keras.layers.Conv2D(3, 3, padding="same", use_bias=False, name="a")(inputs)
    b = keras.layers.Conv2D(3, 3, padding="same", use_bias=False, name="b")(inputs)
    bn_a = keras.layers.BatchNormalization(name="bn_a")(a)
    bn_b = keras.layers.BatchNormalization(name="bn_b")(b)
    model = keras.Model(inputs, keras.layers.Flatten()(keras.layers.Add()([bn_a, bn_b])))
    monkeypatch.setattr(folding, "_foldable_pairs",
                        lambda m: {"a": m.get_layer("bn_b"), "b": m.get_layer("bn_a")})  # swapped
    before = [w.copy() for w in model.get_weights()]
    with pytest.warns(RuntimeWarning, match="using the unfolded model"):
        assert folding.fold_batch_norm(model) is model
    for old, new in zip(before, model.get_weights()):
        np.testing.assert_array_equal(old, new)  # the probe's random statistics were put back exactly
