"""Model files: loading a saved base classifier, replacing its classification head.

The one place that reads `.keras` files of base classifiers (jobs, export, the CLI all call it).
Loading registers tfsmooth's Keras classes first (`FusedBatchNormalization`, the training wrappers of
`tfsmooth.training`), so a file saved from any of them loads in a fresh process.
"""

from __future__ import annotations

import importlib
import os
import warnings
import zipfile
from typing import Optional

import keras
import numpy as np

from tfsmooth import checks


def register_keras_classes() -> None:
    """Imports the modules that register tfsmooth's serializable Keras classes (idempotent).

    `FusedBatchNormalization` (`tfsmooth.models.batch_norm`) and the training wrappers
    `GaussianAugmentedModel` / `SmoothAdvModel` (`tfsmooth.training`) register themselves with
    `keras.saving.register_keras_serializable(package="tfsmooth")` at import; after this call plain
    `keras.models.load_model` loads files that contain them.
    """
    importlib.import_module("tfsmooth.models.batch_norm")
    importlib.import_module("tfsmooth.training")


def load_base_model(path) -> keras.Model:
    """Loads a base classifier saved as `.keras` (uncompiled).

    A saved training wrapper (`GaussianAugmentedModel`, `SmoothAdvModel`: anything with a
    `base_model` attribute) is unwrapped to its base classifier.

    Args:
        path: the `.keras` file.

    Returns:
        The base classifier: float32 pixels [batch, H, W, C] in [0, 1] -> scores [batch, K].

    Raises:
        FileNotFoundError: if `path` does not exist.
        ValueError: if it is not a loadable Keras model file (e.g. a `.keras` name on a file that is
            not a zip archive).
    """
    model = load_model(path, compile=False)
    base = getattr(model, "base_model", None)
    return base if isinstance(base, keras.Model) else model


def replace_head(base: keras.Model, num_classes: int, *, weight_decay: float = 0.0,
                 source: Optional[str] = None) -> keras.Model:
    """`base` with its last Dense layer replaced by a fresh one of `num_classes` outputs (fine-tuning).

    The new head is a `keras.layers.Dense(num_classes, name="logits")` on the input of the old last
    layer, with coupled L2 weight decay `weight_decay` as in `tfsmooth.models` (L2(wd / 2), whose
    gradient is wd * w); every other layer keeps its weights. A model that already has
    `num_classes` outputs is returned unchanged.

    Args:
        base: a functional Keras model whose last layer is a Dense layer.
        num_classes: K of the new head, >= 2.
        weight_decay: coupled L2 weight decay of the new head's kernel, >= 0.
        source: where `base` came from, for error messages.

    Raises:
        ValueError: if the class count differs and the last layer is not a Dense layer.
    """
    if base.output_shape[-1] == num_classes:
        return base
    last = base.layers[-1] if getattr(base, "layers", None) else None
    if not isinstance(last, keras.layers.Dense):
        raise ValueError(f"{source or 'the model'} outputs {base.output_shape[-1]} classes, not {num_classes}, "
                         "and its last layer is not a Dense layer that could be replaced by a new head")
    regularizer = keras.regularizers.L2(weight_decay / 2.0) if weight_decay > 0 else None
    outputs = keras.layers.Dense(num_classes, kernel_regularizer=regularizer, name="logits")(last.input)
    return keras.Model(base.inputs, outputs, name=base.name)


def load_model(path, *, compile: bool = True) -> keras.Model:  # noqa: A002  (Keras' own argument name)
    """`keras.models.load_model` with tfsmooth's Keras classes registered first.

    Loads any `.keras` file tfsmooth writes, as saved (a `GaussianAugmentedModel` checkpoint stays a
    wrapper, with its optimizer state when `compile`), also in a fresh process that has not imported
    `tfsmooth.training`. For the base classifier alone use `load_base_model`.

    Raises:
        FileNotFoundError: if `path` does not exist.
        ValueError: if it is not a loadable Keras model file.
    """
    path = os.fspath(path)
    if not os.path.isfile(path):
        raise FileNotFoundError(f"model file not found: {path}")
    if path.endswith(".keras") and not zipfile.is_zipfile(path):  # Keras would say "File not found"
        raise ValueError(f"cannot load a Keras model from {path}: it is not a .keras model archive (a zip file, "
                         "as written by model.save); the file is damaged or of another kind")
    register_keras_classes()
    try:
        return keras.models.load_model(path, compile=compile)
    except Exception as err:  # Keras raises many types for a bad archive
        raise ValueError(f"cannot load a Keras model from {path}: {err}") from None


def warn_if_rescaled_to_unit_range(model) -> None:
    """Warns (`checks.ScaleWarning`) when a base classifier starts with `Rescaling(1/255)`.

    tfsmooth feeds base classifiers pixels in [0, 1] and adds noise there; a model that rescales its
    input by 1/255 expects [0, 255] pixels, so it would see images 255 times too dark and noise 255
    times too weak than the sigma says.
    """
    layers = [layer for layer in getattr(model, "layers", []) if not isinstance(layer, keras.layers.InputLayer)]
    first = layers[0] if layers else None
    if isinstance(first, keras.layers.Rescaling) and np.all(np.isclose(np.asarray(first.scale, np.float64), 1 / 255)):
        warnings.warn(f"the base model {model.name!r} starts with Rescaling(1/255), so it expects pixels in [0, 255]; "
                      "tfsmooth passes pixels in [0, 1] (noise and radii live there): remove the layer or "
                      "replace it with the [0, 1] normalization", checks.ScaleWarning, stacklevel=3)

