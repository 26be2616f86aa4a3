"""Tests of tfsmooth.models.folding: batch norm folded into the preceding convolution, inference only."""

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
