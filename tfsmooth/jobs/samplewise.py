"""Sample-wise smoothing jobs (METHODS.md §5): per-example noise levels for fine-tuning, and the transductive
certification of a test set.

Training (pretrain -> finetune): `assign_sigma(config, out)` picks sigma_i for every training example from the
pretrained model's outputs and writes them to an `.npz` (`load_sigma_file` reads and checks it); `tfsmooth train
--sigma-file` then fine-tunes with each example's own sigma_i (`tfsmooth.training.split_sigma`).

Certification:

`certify_samplewise_dataset(config, out)` runs `tfsmooth.samplewise.SampleWiseSmoothedClassifier` over the
selected examples (a `CertifyConfig` with `sigma_grid` set). The allocation of the radii needs every image, so
the run has two stages:

1. one durable row per image in `unallocated_path(out)` (`results.UNALLOCATED_COLUMNS`: the chosen sigma_j and
   R_j as `radius_unallocated`, no `radius` column), resumable like `certify_dataset` -- a crash resumes from it;
2. after the last image, `samplewise.allocate_radii` on all rows, and `out` written whole (to a temporary file,
   then renamed; `results.SAMPLEWISE_COLUMNS`: `radius` = the allocated r_j, plus `sigma` and
   `radius_unallocated`), with a run record marked `"transductive": true`; an image that coincides exactly with
   one of another sigma is written as an abstention (`samplewise.coincident_conflicts`).

The guarantee (the `tfsmooth.samplewise` module docstring): the classifier h that smooths with sigma_j on
B(x_j, r_j) and with sigma_0 = `config.sigma` elsewhere is constant on each B(x_j, r_j), equal to the row's
`predict`, with probability >= 1 - alpha per image -- for this test set only.
"""

from __future__ import annotations

import dataclasses
import functools
import os
from typing import Callable, Optional, Tuple

import numpy as np
from scipy import stats as scipy_stats

from tfsmooth import checks, data, files, noise, results, samplewise
from tfsmooth.jobs import records
from tfsmooth.jobs.evaluate import CertifyConfig, evaluate
from tfsmooth.models.io import load_base_model
from tfsmooth.smoothing import SmoothedClassifier

UNALLOCATED_SUFFIX = ".unallocated.tsv"


def unallocated_path(out: str) -> str:
    """Where the per-image rows before the allocation are kept: `out` + ".unallocated.tsv"."""
    return os.fspath(out) + UNALLOCATED_SUFFIX


def certify_samplewise_dataset(config: CertifyConfig, out: str, *, on_row: Optional[Callable[[dict], None]] = None,
                               restart: bool = False) -> int:
    """Sample-wise certification of the selected examples (module docstring); resumable.

    Args:
        config: a `CertifyConfig` with `sigma_grid` set (n0, n, alpha, method, alpha_split apply at each image's
            sigma_j; n_select draws per grid level choose it; `allocation` names the allocation).
        out: the final TSV (written after the last image); the per-image rows go to `unallocated_path(out)`.
        on_row: optional callback receiving each per-image row as it is written (progress).
        restart: delete both files (and their records) first.

    Returns:
        The number of images counted by this call.

    Raises:
        ValueError / FileNotFoundError: as `certify_dataset` (a bad configuration, an n too small, a missing
            model or data, files from another configuration), or `sigma_grid` not set.
    """
    if config.sigma_grid is None:
        raise ValueError("config.sigma_grid must be set for sample-wise certification (e.g. (0.12, 0.25, 0.5, 1.0))")
    if config.shard[1] != 1:
        raise ValueError(f"shard={config.shard}: the allocation of sample-wise certification needs every image in "
                         "one run; sharding it is not supported")
    minimum = config.min_n("certify")
    if config.n < minimum:
        raise ValueError(f"n={config.n} is too small to ever certify at alpha={config.alpha}: use n >= {minimum}")
    rows_path = unallocated_path(out)
    info = data.dataset_info(config.dataset, config.data_dir)
    base, record = records.load_recorded_model(config, functools.partial(config.run_record, "certify"))
    num_classes = records.check_model_fits_data(base, info, f"model {config.model}")
    classifier = samplewise.SampleWiseSmoothedClassifier(base, num_classes, config.sigma_grid,
                                                         compute_dtype=config.compute_dtype, devices=config.devices)
    answers = functools.partial(classifier.iter_certify, n0=config.n0, n=config.n, alpha=config.alpha,
                                batch_size=config.batch, seed=config.seed, n_select=config.n_select,
                                method=config.method, alpha_split=config.alpha_split,
                                sigma_select=config.sigma_select)
    final_record = {**record, "transductive": True}
    if restart:
        records.remove_results(out)
    _check_final(out, final_record)
    # The rows do not depend on the allocation (stage 2 only): another --allocation reuses them.
    rows_record = {**{k: v for k, v in record.items() if k != "allocation"}, "stage": "unallocated"}
    written = evaluate(config, results.UNALLOCATED_COLUMNS, rows_record, answers, rows_path, on_row, restart=restart)
    _allocate(config, rows_path, out, final_record)
    return written


def _same(found: dict, record: dict) -> bool:
    ignore = set(records.INFORMATIONAL)
    return {k: v for k, v in found.items() if k not in ignore} == {k: v for k, v in record.items() if k not in ignore}


def _check_final(out: str, record: dict) -> None:
    """Refuses (before anything is counted or written) an existing `out` that is not this run's allocated file."""
    if not os.path.exists(out):
        return
    sidecar = out + ".json"
    try:
        found = files.read_json(sidecar) if os.path.isfile(sidecar) else None
    except ValueError:
        found = None
    if not isinstance(found, dict) or not _same(found, record):
        raise ValueError(f"{out} exists and is not the allocated file of this sample-wise run (its run record "
                         f"{sidecar} is missing or has other parameters); nothing was changed\n{records.RESTART_HINT}")


def _allocate(config: CertifyConfig, rows_path: str, out: str, record: dict) -> None:
    """Stage 2: the allocation over every row of `rows_path`, written whole to `out` (rewritten unless it already
    holds every row under `record`)."""
    rows = results.read_results(rows_path)
    examples = {idx: image for idx, image, _ in data.select_examples(
        data.load_dataset(config.dataset, config.split, config.data_dir), config.skip, config.max)}
    if set(rows.idx.tolist()) != set(examples):
        missing = sorted(set(examples) - set(rows.idx.tolist()))[:5]
        raise RuntimeError(f"{rows_path} lacks rows of the selection (e.g. idx {missing}): rerun to finish it")
    if os.path.exists(out):  # written whole by a rename, so complete
        _check_final(out, record)
        if set(results.read_results(out).idx.tolist()) == set(examples):
            return
    records.remove_results(out)
    order = np.argsort(rows.idx)
    points = np.stack([np.asarray(examples[int(idx)], np.float32) for idx in rows.idx[order]])
    # R_j as read back is the float nearest the file's decimal text (R_j rounded down), possibly just below that
    # text, and the writer rounds down again: one ulp up makes an uncut radius print the same text. What is
    # printed is never above the text, and the allocation's slack (1e-9 relative) dwarfs the ulp.
    unallocated_text = np.nextafter(rows.radius_unallocated, np.inf)
    allocated = samplewise.allocate_radii(points, unallocated_text[order], rows.sigma[order], config.allocation)
    clash = samplewise.coincident_conflicts(points, rows.sigma[order])  # not certified: written as abstentions
    temporary = out + ".allocating.tsv"
    records.remove_results(temporary)
    with results.ResultsWriter(temporary, results.SAMPLEWISE_COLUMNS, record,
                               informational=records.INFORMATIONAL) as writer:
        for k, position in enumerate(order):
            predict = results.ABSTAIN if clash[k] else int(rows.predict[position])
            writer.write(dict(idx=int(rows.idx[position]), label=int(rows.label[position]), predict=predict,
                              radius=0.0 if clash[k] else float(allocated[k]),
                              correct=int(predict == rows.label[position]), time=float(rows.time[position]),
                              sigma=float(rows.sigma[position]),
                              radius_unallocated=float(unallocated_text[position])))
    # The record first, then the TSV: a crash in between leaves no OUT, so the next run writes it again.
    os.replace(temporary + ".json", out + ".json")
    os.replace(temporary, out)


# ----------------------------------------------------------------------------------- sigma per training example
@dataclasses.dataclass(frozen=True)
class AssignSigmaConfig:
    """Configuration of `assign_sigma` (the "adjust the noise levels from the model's outputs" step, METHODS.md §5).

    Attributes:
        model: the pretrained base classifier (`.keras`).
        dataset, data_dir: the training images (split "train", in data set order).
        sigma_grid: the levels to choose from (default `samplewise.DEFAULT_SIGMA_GRID`).
        num_noise_vec: noisy copies k per example and level that estimate p_A, >= 2 (default 16).
        train_examples: only the first this many training examples (0: all), as `TrainConfig.train_examples`.
        batch: noisy copies per forward pass.
        seed: seed of the draws (`noise.STREAM_SIGMA_SELECTION`, key = the example's index).
    """

    model: str
    dataset: str = "cifar10"
    data_dir: Optional[str] = None
    sigma_grid: Tuple[float, ...] = samplewise.DEFAULT_SIGMA_GRID
    num_noise_vec: int = 16
    train_examples: int = 0
    batch: int = 1000
    seed: int = 0

    def __post_init__(self):
        data.check_dataset_name(self.dataset)
        object.__setattr__(self, "sigma_grid", samplewise.check_sigma_grid(self.sigma_grid))
        checks.check_count(self.num_noise_vec, "num_noise_vec", minimum=2)
        checks.check_count(self.train_examples, "train_examples", minimum=0)
        checks.check_count(self.batch, "batch")
        checks.check_seed(self.seed)


SIGMA_FILE_KEYS = ("sigma", "sigma_grid", "dataset", "split", "data_source")
"""The arrays `load_sigma_file` reads from a sigma file (`assign_sigma` also stores the model and k)."""


def choose_training_sigma(counts, labels, sigma_grid) -> np.ndarray:
    """sigma_i per example: the level maximizing the estimated radius sigma * Phi^-1(p_hat) among the levels at which
    the model classifies the example correctly (its top class over the k copies is the label).

    p_hat is the label's share of the k copies, capped at (k - 1/2) / k so that a unanimous vote gives a finite
    radius (the estimate of a k-copy vote cannot tell 1 from 1 - 1/(2k)); at equal estimates the larger sigma wins
    (its radius is larger). Fallback where no level classifies it correctly: the smallest sigma -- the least noise,
    where the model is likeliest to learn the example. These are this library's choices (the paper's text is not
    at hand).

    Args:
        counts: int [N, G, K] counts of the k copies per example and level.
        labels: int [N] true labels.
        sigma_grid: the G levels, sorted.

    Returns:
        float64 [N].
    """
    counts = np.asarray(counts, np.int64)
    labels = np.asarray(labels, np.int64)
    k = counts[0, 0].sum()
    grid = np.asarray(sigma_grid, np.float64)
    correct = np.argmax(counts, axis=2) == labels[:, None]
    p_hat = np.minimum(counts[np.arange(len(labels)), :, labels] / k, (k - 0.5) / k)
    estimated = np.where(correct, grid[None, :] * scipy_stats.norm.ppf(p_hat), -np.inf)
    best = len(grid) - 1 - np.argmax(estimated[:, ::-1], axis=1)  # last maximum: the larger sigma on ties
    return np.where(correct.any(axis=1), grid[best], grid[0])


def assign_sigma(config: AssignSigmaConfig, out: str) -> np.ndarray:
    """Writes each training example's sigma_i (`choose_training_sigma`) to the `.npz` `out`; returns them.

    The file holds `sigma` (float64 [N], data set order), `sigma_grid`, `dataset`, `split` ("train"),
    `data_source` (`tfsmooth.data.data_source`: the files the images were read from), `model`, `num_noise_vec`,
    `seed` and `noise_block` (= num_noise_vec: each image's k draws at a level are one noise block); read it with
    `load_sigma_file` (no pickle).

    Raises:
        ValueError / FileNotFoundError: `out` not ending in ".npz", a missing model, a bad data set; then `out`
            is not written.
    """
    if not str(out).endswith(".npz"):
        raise ValueError(f"out must be a .npz file, got {out!r}")
    base = load_base_model(config.model)
    info = data.dataset_info(config.dataset, config.data_dir)
    num_classes = records.check_model_fits_data(base, info, f"model {config.model}")
    images = data.load_dataset(config.dataset, "train", config.data_dir)
    if config.train_examples:
        images = images.take(config.train_examples)
    # One noise block of exactly k draws per image and level: N * G * k forward passes. (With the default block of
    # 100 draws, 100 - k of every block would be drawn, classified and thrown away: 12.5x the work at k = 8.)
    per_level = {level: SmoothedClassifier(base, num_classes, level, noise_block=config.num_noise_vec)
                 for level in config.sigma_grid}
    counts, labels = [], []
    first = 0
    for x, y in images.batch(max(1, config.batch // config.num_noise_vec)):
        keys = np.arange(first, first + len(y), dtype=np.int64)  # key = the example's index in the split
        first += len(y)
        counts.append(np.stack([per_level[level].sample_counts(x.numpy(), config.num_noise_vec, config.batch,
                                                               config.seed, stream=noise.STREAM_SIGMA_SELECTION,
                                                               keys=keys) for level in config.sigma_grid], axis=1))
        labels.append(y.numpy())
    sigma = choose_training_sigma(np.concatenate(counts), np.concatenate(labels), config.sigma_grid)
    files.atomic_write(os.fspath(out), lambda p: np.savez(
        p, sigma=sigma, sigma_grid=np.asarray(config.sigma_grid, np.float64), dataset=np.array(config.dataset),
        split=np.array("train"), data_source=np.array(data.data_source(config.dataset, config.data_dir)),
        model=np.array(os.path.abspath(config.model)), num_noise_vec=np.array(config.num_noise_vec),
        seed=np.array(config.seed), noise_block=np.array(config.num_noise_vec)))
    return sigma


def load_sigma_file(path: str, dataset: str, count: int, data_source: str) -> np.ndarray:
    """Reads a sigma file written by `assign_sigma` and checks it belongs to these training images.

    Args:
        path: the `.npz`.
        dataset: the training run's data set name.
        count: the number of training examples (one sigma each, in data set order), or None: any (the caller
            checks; a run with `train_examples` uses the first ones).
        data_source: `tfsmooth.data.data_source` of the training images now; sigma i belongs to image i only if the
            file was computed on the same files.

    Returns:
        float32 [count], each > 0 and a level of the file's grid.

    Raises:
        FileNotFoundError: the file does not exist.
        ValueError: not such an `.npz`, or one of another data set, data source, split or count, or bad values.
    """
    if not os.path.isfile(path):
        raise FileNotFoundError(f"sigma file not found: {path}")
    found = files.read_npz(path, SIGMA_FILE_KEYS, "a sigma file written by `tfsmooth assign-sigma` (a zip of sigma "
                           "float [N], sigma_grid and str dataset, split, data_source)", "tfsmooth assign-sigma")
    if str(found["dataset"]) != dataset or str(found["split"]) != "train":
        raise ValueError(f"{path} holds sigmas for {found['dataset']}:{found['split']}, but the run trains on "
                         f"{dataset}:train")
    if str(found["data_source"]) != data_source:
        raise ValueError(f"{path} was computed on the images of {str(found['data_source'])!r}, but they are read from "
                         f"{data_source!r} now: sigma i must belong to image i of the same files; rerun "
                         "`tfsmooth assign-sigma` on them")
    sigma, grid = found["sigma"], found["sigma_grid"]
    if sigma.ndim != 1 or (count is not None and sigma.shape != (count,)) or not np.issubdtype(sigma.dtype,
                                                                                             np.floating):
        raise ValueError(f"{path} must hold {count} noise levels (one per training example), got {sigma.dtype} "
                         f"{sigma.shape}")
    if not (np.all(np.isfinite(sigma)) and np.all(sigma > 0) and np.all(np.isin(sigma, grid))):
        raise ValueError(f"{path}: every sigma must be a finite level > 0 of its grid {grid.tolist()}")
    return sigma.astype(np.float32)


__all__ = ["AssignSigmaConfig", "assign_sigma", "certify_samplewise_dataset", "choose_training_sigma",
           "load_sigma_file", "SIGMA_FILE_KEYS", "unallocated_path", "UNALLOCATED_SUFFIX"]
