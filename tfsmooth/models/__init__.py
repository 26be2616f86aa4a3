"""Base classifiers for randomized smoothing.

Every model takes float32 pixels [batch, height, width, channels] in [0, 1]: its first layer
normalizes with the data set's mean and std and is saved with the model, so Gaussian noise and
certified radii live in pixel units (Cohen et al. 2019; METHODS.md §1). Outputs are logits.
"""

from __future__ import annotations

from typing import Sequence

import keras
from keras import layers

from tfsmooth import checks
from tfsmooth.data import CIFAR10_MEAN, CIFAR10_STD
from tfsmooth.models.batch_norm import FusedBatchNormalization
from tfsmooth.registry import ARCHITECTURES  # the names, spelled once

__all__ = ["ARCHITECTURES", "FusedBatchNormalization", "cifar_resnet", "get_model", "small_cnn"]



def _normalization(mean: Sequence[float], std: Sequence[float]):
    return layers.Normalization(mean=list(mean), variance=[s * s for s in std], name="normalize")


def _regularizer(weight_decay: float):
    # PyTorch-style coupled weight decay wd adds wd * w to the gradient: the gradient of (wd / 2) * ||w||^2.
    return keras.regularizers.L2(weight_decay / 2.0) if weight_decay > 0 else None


def _basic_block(x, filters: int, stride: int, reg, name: str):
    shortcut = x
    y = layers.Conv2D(filters, 3, stride, padding="same", use_bias=False, kernel_initializer="he_normal",
                      kernel_regularizer=reg, name=f"{name}_conv1")(x)
    y = FusedBatchNormalization(name=f"{name}_bn1")(y)
    y = layers.ReLU(name=f"{name}_relu1")(y)
    y = layers.Conv2D(filters, 3, 1, padding="same", use_bias=False, kernel_initializer="he_normal",
                      kernel_regularizer=reg, name=f"{name}_conv2")(y)
    y = FusedBatchNormalization(name=f"{name}_bn2")(y)
    if stride != 1 or x.shape[-1] != filters:
        shortcut = layers.Conv2D(filters, 1, stride, use_bias=False, kernel_initializer="he_normal",
                                 kernel_regularizer=reg, name=f"{name}_down_conv")(x)
        shortcut = FusedBatchNormalization(name=f"{name}_down_bn")(shortcut)
    y = layers.Add(name=f"{name}_add")([y, shortcut])
    return layers.ReLU(name=f"{name}_out")(y)


def cifar_resnet(depth: int, num_classes: int = 10, *, weight_decay: float = 0.0,
                 mean: Sequence[float] = CIFAR10_MEAN, std: Sequence[float] = CIFAR10_STD,
                 input_shape=(32, 32, 3)) -> keras.Model:
    """The CIFAR ResNet of He et al. (2016, Sec. 4.2) with basic blocks, widths 16/32/64.

    As in the reference code of Cohen et al. (archs/cifar_resnet.py): a 3x3 stem conv, three stages
    of (depth - 2) / 6 basic blocks, projection shortcuts (1x1 conv + batch norm) where the shape
    changes, global average pooling and a dense layer.

    Args:
        depth: 20, 56 or 110 (any 6k + 2 works).
        num_classes: output logits.
        weight_decay: coupled L2 weight decay on conv/dense kernels (1e-4 in the paper's recipe).
        mean, std: per-channel normalization of the first layer (pixel scale [0, 1]).
        input_shape: (height, width, channels).

    Returns:
        A functional `keras.Model`: float32 [batch, H, W, C] in [0, 1] -> float32 logits [batch, K].

    Raises:
        ValueError: if depth is not of the form 6k + 2 with k >= 1, or num_classes < 2.
    """
    if not isinstance(depth, int) or depth < 8 or (depth - 2) % 6:
        raise ValueError(f"depth must be 6k + 2 (20, 56, 110, ...), got {depth!r}")
    checks.check_count(num_classes, "num_classes", minimum=2)
    reg = _regularizer(weight_decay)
    blocks = (depth - 2) // 6
    inputs = keras.Input(input_shape, name="images")
    x = _normalization(mean, std)(inputs)
    x = layers.Conv2D(16, 3, padding="same", use_bias=False, kernel_initializer="he_normal",
                      kernel_regularizer=reg, name="stem_conv")(x)
    x = FusedBatchNormalization(name="stem_bn")(x)
    x = layers.ReLU(name="stem_relu")(x)
    for stage, filters in enumerate((16, 32, 64)):
        for block in range(blocks):
            stride = 2 if stage > 0 and block == 0 else 1
            x = _basic_block(x, filters, stride, reg, name=f"stage{stage + 1}_block{block + 1}")
    x = layers.GlobalAveragePooling2D(name="pool")(x)
    outputs = layers.Dense(num_classes, kernel_regularizer=reg, name="logits")(x)
    return keras.Model(inputs, outputs, name=f"cifar_resnet{depth}")


def small_cnn(num_classes: int = 10, *, input_shape=(32, 32, 3), weight_decay: float = 0.0,
              mean: Sequence[float] = CIFAR10_MEAN, std: Sequence[float] = CIFAR10_STD) -> keras.Model:
    """A small CNN for fast tests and smoke runs (two conv layers and a dense head).

    Same contract as `cifar_resnet`: pixels in [0, 1] in, logits out, normalization inside (the
    first layer, so noise and radii live in pixel units; Cohen et al. 2019, METHODS.md §1).
    Layers: two 3x3 stride-2 ReLU convolutions (16 and 32 filters), global average pooling and a
    dense layer.

    Args:
        num_classes: output logits K, >= 2.
        input_shape: (height, width, channels); channels at most len(mean).
        weight_decay: coupled L2 weight decay on the conv/dense kernels, >= 0.
        mean, std: per-channel normalization of the first layer (pixel scale [0, 1]); the first
            `channels` entries are used.

    Returns:
        A functional `keras.Model`: float32 [batch, H, W, C] in [0, 1] -> float32 logits [batch, K].

    Raises:
        ValueError: if num_classes is not an integer >= 2.
    """
    checks.check_count(num_classes, "num_classes", minimum=2)
    reg = _regularizer(weight_decay)
    inputs = keras.Input(input_shape, name="images")
    x = _normalization(mean[: input_shape[-1]], std[: input_shape[-1]])(inputs)
    x = layers.Conv2D(16, 3, strides=2, padding="same", activation="relu", kernel_regularizer=reg)(x)
    x = layers.Conv2D(32, 3, strides=2, padding="same", activation="relu", kernel_regularizer=reg)(x)
    x = layers.GlobalAveragePooling2D()(x)
    outputs = layers.Dense(num_classes, kernel_regularizer=reg, name="logits")(x)
    return keras.Model(inputs, outputs, name="small_cnn")


def get_model(arch: str, num_classes: int = 10, *, weight_decay: float = 0.0, **kwargs) -> keras.Model:
    """Builds a base classifier by name: one of `ARCHITECTURES`.

    Raises:
        ValueError: for an unknown `arch` (the message lists the known ones).
    """
    if arch.startswith("cifar_resnet") and arch in ARCHITECTURES:
        return cifar_resnet(int(arch[len("cifar_resnet"):]), num_classes, weight_decay=weight_decay, **kwargs)
    if arch == "small_cnn":
        return small_cnn(num_classes, weight_decay=weight_decay, **kwargs)
    raise ValueError(f"arch must be one of {', '.join(ARCHITECTURES)}; got {arch!r}")
