"""Run records: what identifies a job's results, stored beside them and checked on resume.

A certify / predict / attack TSV keeps its record in `<out>.json` (`tfsmooth.results.ResultsWriter`);
a resumed run must have the same record, so rows of different runs never mix in one file.
"""

from __future__ import annotations

import dataclasses
import os
import warnings
from typing import Callable

import tensorflow as tf

from tfsmooth import checks, data, files, noise
from tfsmooth.models.io import load_base_model

NOISE_SCHEME = 2
"""Version of the noise layout of `tfsmooth.noise` (2: a domain tag per use, issue 10). Rows written
under another scheme drew other noise for the same (seed, idx), so they cannot be continued."""


INFORMATIONAL = ("model",)
"""Record fields kept for provenance but not compared on resume: the model is identified by its
SHA-256 (`model_sha256`), so a moved or copied model file resumes."""

RESTART_HINT = "(to start over instead: rerun with --restart, or restart=True in Python, or write to another --out)"
"""Appended to every "cannot resume" error of the evaluation jobs."""


def remove_results(out: str) -> None:
    """Deletes a result file and its record (`<out>.json`), if present (the jobs' `restart`)."""
    for path in (out, out + ".json"):
        if os.path.isfile(path):
            os.remove(path)


def device_kind(devices=None) -> str:
    """"gpu" when TensorFlow sees a GPU (the counting path then runs there), else "cpu"; with `devices` (canonical
    names, `tfsmooth.counting.resolve_devices`) the kinds of those devices ("cpu", "gpu", or e.g. "cpu+gpu").

    Counts are bitwise independent of the batch size on CPU; on a GPU, kernel choice may depend on
    the batch shape, so the device is part of the record (a resume on another kind is refused) and
    on a GPU the batch size is too (`run_record`). Every row stays a valid certificate either way:
    this is about rows equal to an uninterrupted run's, not about soundness.
    """
    if devices:
        return "+".join(sorted({tf.DeviceSpec.from_string(name).device_type.lower() for name in devices}))
    return "gpu" if tf.config.list_logical_devices("GPU") else "cpu"


def run_record(config, kind: str, omit) -> dict:
    """The fields of an evaluation config that identify its results.

    Adds the model's absolute path and the SHA-256 of its bytes (`model_sha256`: a file overwritten in
    place, e.g. `train`'s base_model.keras after each epoch, is another model), `data_source` (the
    files the images are read from, `tfsmooth.data.data_source`, after $TFSMOOTH_DATA_DIR, so a resume
    refuses rows whose idx referred to images of another source), `noise_scheme` and `device`; leaves
    out data_dir (where the same images come from) and the fields in `omit` (except `batch` on a
    GPU, `device_kind`).
    """
    record = dataclasses.asdict(config)
    device = device_kind(getattr(config, "devices", None))
    if device != "cpu":  # GPU kernels may round differently at another batch shape: rows may depend on it
        omit = [name for name in omit if name != "batch"]
    record["model"] = os.path.abspath(config.model)
    record["model_sha256"] = files.file_sha256(config.model)
    record["data_source"] = data.data_source(config.dataset, config.data_dir)
    for name in ["data_dir", *omit]:
        record.pop(name)
    record["kind"] = kind
    record["noise_scheme"] = getattr(config, "noise_scheme", NOISE_SCHEME)  # certify/predict may draw scheme 3
    record["device"] = device
    return record


def load_recorded_model(config, make_record: Callable[[], dict]):
    """(`load_base_model(config.model)`, `make_record()`), the record's model_sha256 being the loaded file's.

    The file is hashed before and after the load: one replaced in between (e.g. by `train` after an
    epoch, when a run still training is certified) is refused rather than recorded under the wrong hash.

    Raises:
        FileNotFoundError / ValueError: a missing or unloadable model, or one replaced during the load.
    """
    before = files.file_sha256(config.model) if os.path.isfile(config.model) else None
    base = load_base_model(config.model)
    warn_sigma_mismatch(config.model, config.sigma)
    record = make_record()
    if record["model_sha256"] != before:
        raise ValueError(f"model file {config.model} was replaced while it was being loaded (e.g. by `train` "
                         "after an epoch); run again")
    return base, record


def warn_sigma_mismatch(model_path: str, sigma: float) -> None:
    """Warns (`checks.ScaleWarning`) when `sigma` differs from the sigma of the `train` run that wrote the model.

    `tfsmooth train` leaves config.json beside base_model.keras; a smoothed classifier certified at
    another sigma is sound but is not the one the base classifier was trained for (certified accuracy
    usually drops sharply), and is most often a typo.
    """
    path = os.path.join(os.path.dirname(os.path.abspath(model_path)), "config.json")
    try:
        trained = files.read_json(path).get("sigma") if os.path.isfile(path) else None
    except (ValueError, AttributeError):
        return
    if checks.is_real(trained, 0.0, inclusive=False) and abs(trained - sigma) > 1e-12 * max(1.0, trained):
        warnings.warn(f"sigma={sigma:g}, but the base classifier was trained with sigma={trained:g} ({path}); the "
                      "certificate is sound but for another smoothed classifier than the one trained",
                      checks.ScaleWarning, stacklevel=2)


def check_model_fits_data(model, info, what: str = "the model", *, classes: bool = True) -> int:
    """The model's number of classes K, after checking that it takes the data set's images.

    Args:
        model: a Keras base classifier.
        info: `tfsmooth.data.DatasetInfo` of the data set it is run on.
        what: how to name the model in errors (e.g. its file).
        classes: also check the number of classes (not for a model whose head is about to be replaced).

    Returns:
        K from the model's output shape (the data set's number of classes if the model's is unknown).

    Raises:
        ValueError: if the model's input shape is known and is not the data set's image shape, or its
            output has fewer classes than the data set's labels need.
    """
    try:
        input_shape, output_shape = tuple(model.input_shape), tuple(model.output_shape)
    except (AttributeError, ValueError, RuntimeError, TypeError):
        return info.num_classes
    if len(input_shape) == 4 and None not in input_shape[1:] and tuple(input_shape[1:]) != tuple(info.image_shape):
        raise ValueError(f"{what} takes images of shape {tuple(input_shape[1:])}, but {info.name} has "
                         f"{tuple(info.image_shape)}")
    check_classes = classes
    outputs = output_shape[-1] if output_shape and output_shape[-1] is not None else info.num_classes
    if check_classes and outputs < info.num_classes:
        raise ValueError(f"{what} outputs {outputs} class scores, but {info.name} has {info.num_classes} classes")
    return int(outputs)


def check_resumable(out: str, record: dict) -> None:
    """Refuses, in one line, a result file written under another noise scheme (older tfsmooth).

    Other differences are reported by `tfsmooth.results.ResultsWriter`, field by field.

    Raises:
        ValueError: if `out` exists with a record whose `noise_scheme` is not `record`'s.
    """
    sidecar = out + ".json"
    if not (os.path.exists(out) and os.path.isfile(sidecar)):
        return
    try:
        found = files.read_json(sidecar)
    except ValueError:
        return  # ResultsWriter reports a damaged sidecar
    if isinstance(found, dict) and found.get("noise_scheme") != record["noise_scheme"]:
        scheme = found.get("noise_scheme", 1)
        if scheme in noise.NOISE_SCHEMES:
            raise ValueError(f"{out} was written under noise scheme {scheme}, this run draws scheme "
                             f"{record['noise_scheme']}: continue it with --noise-scheme {scheme} (noise_scheme="
                             f"{scheme}), write to a new --out, or rerun with --restart to start over")
        raise ValueError(f"{out} was written by an older tfsmooth (noise scheme {scheme}, "
                         f"this version draws scheme {record['noise_scheme']}): its rows cannot be continued; "
                         "write to a new --out, or rerun with --restart to start over")
