"""Sample-wise (transductive) certification of a test set: sigma_j per image, CERTIFY at it, then the allocation.

`certify_samplewise_dataset(config, out)` runs `tfsmooth.samplewise.SampleWiseSmoothedClassifier` over the
selected examples (a `CertifyConfig` with `sigma_grid` set). The allocation of the radii needs every image, so
the run has two stages:

1. one durable row per image in `unallocated_path(out)` (`results.UNALLOCATED_COLUMNS`: the chosen sigma_j and
   R_j as `radius_unallocated`, no `radius` column), resumable like `certify_dataset` -- a crash resumes from it;
2. after the last image, `samplewise.allocate_radii` on all rows, and `out` written whole
   (`results.SAMPLEWISE_COLUMNS`: `radius` = the allocated r_j, plus `sigma` and `radius_unallocated`), with a run
   record marked `"transductive": true`.

The guarantee (the `tfsmooth.samplewise` module docstring): the classifier h that smooths with sigma_j on
B(x_j, r_j) and with sigma_0 = `config.sigma` elsewhere is constant on each B(x_j, r_j), equal to the row's
`predict`, with probability >= 1 - alpha per image -- for this test set only.
"""

from __future__ import annotations

import functools
import os
from typing import Callable, Optional

import numpy as np

from tfsmooth import data, files, results, samplewise
from tfsmooth.jobs import records
from tfsmooth.jobs.evaluate import CertifyConfig, evaluate

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
    minimum = config.min_n("certify")
    if config.n < minimum:
        raise ValueError(f"n={config.n} is too small to ever certify at alpha={config.alpha}: use n >= {minimum}")
    rows_path = unallocated_path(out)
    info = data.dataset_info(config.dataset, config.data_dir)
    base, record = records.load_recorded_model(config, functools.partial(config.run_record, "certify"))
    num_classes = records.check_model_fits_data(base, info, f"model {config.model}")
    classifier = samplewise.SampleWiseSmoothedClassifier(base, num_classes, config.sigma_grid,
                                                         compute_dtype=config.compute_dtype)
    answers = functools.partial(classifier.iter_certify, n0=config.n0, n=config.n, alpha=config.alpha,
                                batch_size=config.batch, seed=config.seed, n_select=config.n_select,
                                method=config.method, alpha_split=config.alpha_split)
    final_record = {**record, "transductive": True}
    if restart:
        records.remove_results(out)
    _check_final(out, final_record)
    written = evaluate(config, results.UNALLOCATED_COLUMNS, {**record, "stage": "unallocated"}, answers, rows_path,
                       on_row, restart=restart)
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
    if os.path.exists(out):
        _check_final(out, record)
        try:
            if set(results.read_results(out).idx.tolist()) == set(examples):
                return  # allocated and written whole before
        except ValueError:
            pass  # cut short while being written: write it again
    records.remove_results(out)
    order = np.argsort(rows.idx)
    points = np.stack([np.asarray(examples[int(idx)], np.float32) for idx in rows.idx[order]])
    # R_j as read back is the float nearest the file's decimal text (R_j rounded down), possibly just below that
    # text, and the writer rounds down again: one ulp up makes an uncut radius print the same text. What is
    # printed is never above the text, and the allocation's slack (1e-9 relative) dwarfs the ulp.
    unallocated_text = np.nextafter(rows.radius_unallocated, np.inf)
    allocated = samplewise.allocate_radii(points, unallocated_text[order], rows.sigma[order], config.allocation)
    with results.ResultsWriter(out, results.SAMPLEWISE_COLUMNS, record,
                               informational=records.INFORMATIONAL) as writer:
        for k, position in enumerate(order):
            writer.write(dict(idx=int(rows.idx[position]), label=int(rows.label[position]),
                              predict=int(rows.predict[position]), radius=float(allocated[k]),
                              correct=int(rows.correct[position]), time=float(rows.time[position]),
                              sigma=float(rows.sigma[position]),
                              radius_unallocated=float(unallocated_text[position])))


__all__ = ["certify_samplewise_dataset", "unallocated_path", "UNALLOCATED_SUFFIX"]
