"""tfsmooth.models.io: loading saved models in a fresh process, unwrapping training wrappers, new heads."""

import subprocess
import sys

import keras
import numpy as np
import pytest

from tfsmooth import models
from tfsmooth.models import io as model_io
from tfsmooth.training import GaussianAugmentedModel


@pytest.fixture(scope="module")
def saved(tmp_path_factory):
    directory = tmp_path_factory.mktemp("saved")
    keras.utils.set_random_seed(0)
    base = models.cifar_resnet(20)  # holds FusedBatchNormalization, a tfsmooth class
    x = np.random.default_rng(0).uniform(size=(2, 32, 32, 3)).astype(np.float32)
    np.save(directory / "x.npy", x)
    base.save(directory / "base.keras")
    np.save(directory / "base.keras.npy", base.predict(x, verbose=0))
    wrapper = GaussianAugmentedModel(base, 0.25, seed=0)
    wrapper.compile(optimizer="sgd", loss=keras.losses.SparseCategoricalCrossentropy(from_logits=True))
    wrapper.fit(np.zeros((2, 32, 32, 3), np.float32), np.zeros(2, np.int64), verbose=0, shuffle=False)
    wrapper.save(directory / "wrapper.keras")
    np.save(directory / "wrapper.keras.npy", base.predict(x, verbose=0))  # after the training step
    return directory


@pytest.mark.slow
@pytest.mark.parametrize("name", ["base.keras", "wrapper.keras"])
def test_tfsmooth_load_model_works_in_a_fresh_process(saved, name):
    # `import tfsmooth` alone registers nothing (the package imports lazily); load_model registers what it needs.
    code = (f"import numpy as np, tfsmooth; m = tfsmooth.load_model({str(saved / name)!r}); "
            f"base = getattr(m, 'base_model', m); x = np.load({str(saved / 'x.npy')!r}); "
            f"print(type(m).__name__, float(np.abs(base.predict(x, verbose=0) - np.load({str(saved / (name + '.npy'))!r})).max()))")
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=300,
                          cwd=saved)  # not the source tree: the installed package, as a user has it
    assert done.returncode == 0, done.stderr[-2000:]
    kind, difference = done.stdout.split()[-2:]
    assert kind == ("GaussianAugmentedModel" if name == "wrapper.keras" else "Functional")
    assert float(difference) == 0.0


def test_load_base_model_unwraps_a_training_wrapper_and_refuses_bad_files(saved, tmp_path):
    assert model_io.load_base_model(saved / "wrapper.keras").name == "cifar_resnet20"
    with pytest.raises(FileNotFoundError, match="model file not found"):
        model_io.load_base_model(tmp_path / "missing.keras")
    (tmp_path / "text.keras").write_text("not a zip")
    with pytest.raises(ValueError, match="not a .keras model archive"):
        model_io.load_base_model(tmp_path / "text.keras")


def test_replace_head_keeps_every_other_weight_and_names_the_model_on_refusal():
    keras.utils.set_random_seed(0)
    base = models.small_cnn(10)
    five = model_io.replace_head(base, 5, weight_decay=1e-4)
    assert five.output_shape == (None, 5)
    for old, new in zip(base.get_weights()[:-2], five.get_weights()[:-2]):
        np.testing.assert_array_equal(old, new)
    assert model_io.replace_head(base, 10) is base
    inputs = keras.Input((4,))
    no_dense = keras.Model(inputs, keras.layers.Softmax()(inputs))
    with pytest.raises(ValueError, match="my.keras outputs 4 classes, not 3"):
        model_io.replace_head(no_dense, 3, source="my.keras")
