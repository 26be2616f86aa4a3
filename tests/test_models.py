"""Base classifiers: architecture, normalization inside the model, argument checks."""

import keras
import numpy as np
import pytest

from tfsmooth import models


def test_cifar_resnet20_has_the_reference_parameter_count():
    # Worked out by hand (basic blocks, widths 16/32/64, 1x1-conv + BN projection shortcuts, BN = 4 weights per
    # channel): stem 432 + 64; stage 1: 3 x (2 x 2304 + 128) = 14,208; stage 2: 4608 + 9216 + 256 + 512 + 128
    # + 2 x (2 x 9216 + 256) = 52,096; stage 3: 18,432 + 36,864 + 512 + 2048 + 256 + 2 x (2 x 36,864 + 512)
    # = 206,592; dense 64 x 10 + 10 = 650. Total 274,042 (the normalization layer holds no trainable weights).
    assert models.cifar_resnet(20).count_params() == 274_042


def test_cifar_resnet_depths_and_names():
    assert models.get_model("cifar_resnet56").count_params() > models.get_model("cifar_resnet20").count_params()
    assert models.cifar_resnet(110).name == "cifar_resnet110"


def test_first_layer_normalizes_with_cifar_mean_and_std():
    model = models.cifar_resnet(20)
    norm = model.get_layer("normalize")
    assert model.layers[1] is norm
    x = np.array(models.CIFAR10_MEAN, np.float32)[None, None, None, :] + np.array(models.CIFAR10_STD, np.float32)
    # (mean + std - mean) / std = 1 in every channel.
    assert np.allclose(norm(x).numpy(), 1.0, atol=1e-5)


def test_models_output_logits_of_num_classes():
    for model in (models.cifar_resnet(20, num_classes=7), models.small_cnn(7)):
        out = model(np.zeros((2, 32, 32, 3), np.float32), training=False)
        assert out.shape == (2, 7)


def test_weight_decay_adds_l2_losses_to_kernels():
    model = models.small_cnn(10, weight_decay=1e-4)
    model(np.zeros((1, 32, 32, 3), np.float32))
    assert len(model.losses) == 3  # two conv kernels and the dense kernel


def test_saved_model_file_reloads_without_tfsmooth_custom_objects(tmp_path):
    model = models.cifar_resnet(20)
    path = tmp_path / "m.keras"
    model.save(path)
    again = keras.models.load_model(path)
    x = np.random.default_rng(0).uniform(size=(2, 32, 32, 3)).astype(np.float32)
    assert np.allclose(again(x, training=False), model(x, training=False), atol=1e-6)


@pytest.mark.parametrize("depth", [0, 21, "20"])
def test_cifar_resnet_rejects_bad_depth(depth):
    with pytest.raises(ValueError, match="depth"):
        models.cifar_resnet(depth)


def test_get_model_rejects_unknown_architecture():
    with pytest.raises(ValueError, match="arch must be one of"):
        models.get_model("resnet50")


@pytest.mark.parametrize("arch", ["small_cnn", "cifar_resnet20"])
@pytest.mark.parametrize("num_classes", [1, 0, 2.0, "10"])
def test_get_model_rejects_fewer_than_two_or_non_integer_classes(arch, num_classes):
    # A 1-class "classifier" would always vote for class 0: every certificate would be vacuous.
    with pytest.raises(ValueError, match=r"num_classes must be an integer >= 2, got " + repr(num_classes)):
        models.get_model(arch, num_classes)


def test_small_cnn_builds_two_classes():
    assert models.small_cnn(2)(np.zeros((1, 32, 32, 3), np.float32)).shape == (1, 2)
