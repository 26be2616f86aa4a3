"""CERTIFY and PREDICT over a data set (Cohen et al. 2019, Sec. 3.2), written as the field's TSV.

`certify_dataset` / `predict_dataset` take a frozen, validated `CertifyConfig`, store its run record
beside the TSV (`tfsmooth.jobs.records`), write one durable row per example and resume from what the
file already holds. `evaluate` is the row loop they share with `tfsmooth.jobs.attack`.
"""

from __future__ import annotations

import dataclasses
import functools
import time
from typing import Callable, Optional

from tfsmooth import checks, data, registry, results, stats
from tfsmooth.jobs import records
from tfsmooth.smoothing import SmoothedClassifier

def check_evaluation_fields(config):
    """Checks the fields shared by the evaluation configurations (certify, predict, attack)."""
    checks.check_sigma(config.sigma)
    checks.check_alpha(config.alpha)
    for name in ("n", "batch", "skip"):
        checks.check_count(getattr(config, name), name)
    checks.check_seed(config.seed)
    if isinstance(config.max, bool) or not isinstance(config.max, int) or config.max < -1 or config.max == 0:
        raise ValueError(f"max must be -1 (no limit) or an index >= 1 (0 selects no example), got {config.max!r}")
    checks.check_choice(config.split, "split", registry.SPLITS)


@dataclasses.dataclass(frozen=True)
class CertifyConfig:
    """Configuration of `certify_dataset` / `predict_dataset` (Cohen et al. 2019, Sec. 3.2).

    Attributes:
        model: path of the base classifier (`.keras`); the run record holds its absolute path and
            the SHA-256 of its bytes, so a file changed since (e.g. by `train`) is never resumed.
        dataset, split, data_dir: where the images come from (`tfsmooth.data.load_dataset`).
        sigma: noise level the base classifier was trained for (l2, [0, 1] pixel scale).
        n0: selection draws (certify only; ignored by predict).
        n: estimation draws (certify) or draws (predict).
        alpha: failure probability in (0, 1).
        batch: noisy copies per forward pass (`SmoothedClassifier`'s batch_size). The counts do not
            depend on it, so it is not part of the run record: a run may resume with another batch.
        skip: certify every `skip`-th example of the split.
        max: stop before this index, >= 1 (-1: the whole split).
        seed: seed of the noise; together with the example index it fixes each example's counts.
        compute_dtype: "float32" or "bfloat16", the arithmetic of the noisy forward passes
            (`SmoothedClassifier`); part of the run record only when not float32.
    """

    model: str
    dataset: str = "cifar10"
    split: str = "test"
    sigma: float = 0.25
    n0: int = 100
    n: int = 100_000
    alpha: float = 0.001
    batch: int = 1000
    skip: int = 1
    max: int = -1
    seed: int = 0
    data_dir: Optional[str] = None
    compute_dtype: str = "float32"

    def __post_init__(self):
        check_evaluation_fields(self)
        checks.check_count(self.n0, "n0")
        checks.check_choice(self.compute_dtype, "compute_dtype", registry.COMPUTE_DTYPES)

    def run_record(self, kind: str) -> dict:
        """What identifies the run's results (stored beside the TSV; a resume must match it)."""
        omit = ["batch", "n0"] if kind == "predict" else ["batch"]  # the counts do not depend on batch
        if self.compute_dtype == "float32":  # files written before the option existed stay resumable
            omit.append("compute_dtype")
        return records.run_record(self, kind, omit)


def certify_dataset(config: CertifyConfig, out: str, *, on_row: Optional[Callable[[dict], None]] = None,
                    restart: bool = False) -> int:
    """Runs CERTIFY on every `skip`-th example below `max`, writing the reference TSV as it goes.

    One flushed row per example: `idx label predict radius correct time` (time: the example's own
    seconds, its share of the noisy forward passes it used plus its statistics, `Certificate.seconds`;
    rows of examples that shared passes split those passes' time by blocks). An existing `out` from the same configuration is resumed:
    finished indices are skipped, so an interrupted and resumed run has the same rows as an
    uninterrupted one (each example's noise depends only on the seed and its index).

    Args:
        config: the run's configuration.
        out: path of the TSV; its configuration is kept beside it in `out + ".json"`.
        on_row: optional callback receiving each row (dict) after it is written (progress).
        restart: start over: delete `out` and its record (once the configuration and the model are
            accepted) instead of resuming them.

    Returns:
        The number of rows written by this call.

    Raises:
        ValueError / FileNotFoundError: for an invalid configuration (e.g. an n too small to ever
            certify at this alpha), a missing model or data directory, or an `out` file from
            another configuration; then `out` is not touched.
    """
    return _run(config, out, on_row, "certify", restart)


def predict_dataset(config: CertifyConfig, out: str, *, on_row: Optional[Callable[[dict], None]] = None,
                    restart: bool = False) -> int:
    """Runs PREDICT on the selected examples; TSV `idx label predict correct time`, resumable.

    Same contract as `certify_dataset`; `config.n0` is not used.
    """
    return _run(config, out, on_row, "predict", restart)


def _run(config, out, on_row, kind, restart):
    minimum = stats.min_n_to_certify(config.alpha) if kind == "certify" else stats.min_n_to_predict(config.alpha)
    if config.n < minimum:
        raise ValueError(f"n={config.n} is too small to ever {kind} at alpha={config.alpha}: use n >= {minimum}")
    info = data.dataset_info(config.dataset, config.data_dir)
    base, record = records.load_recorded_model(config, functools.partial(config.run_record, kind))
    num_classes = records.check_model_fits_data(base, info, f"model {config.model}")
    smoothed = SmoothedClassifier(base, num_classes, config.sigma, compute_dtype=config.compute_dtype)
    if kind == "certify":
        columns, run = results.CERTIFY_COLUMNS, functools.partial(smoothed.iter_certify, n0=config.n0)
    else:
        columns, run = results.PREDICT_COLUMNS, smoothed.iter_predict
    answers = functools.partial(run, n=config.n, alpha=config.alpha, batch_size=config.batch, seed=config.seed)
    return evaluate(config, columns, record, answers, out, on_row, restart=restart)


def evaluate(config, columns, record, answers, out, on_row, prepare=None, prepare_group=1, restart=False):
    """The row loop shared by certify, predict and attack: resumable, one durable row per example.

    Args:
        config: a configuration with dataset, split, data_dir, skip and max.
        columns: the TSV's columns (`tfsmooth.results`).
        record: the run's parameters, stored beside the TSV and checked on resume.
        answers: callable mapping an iterator of (idx, image) to (idx, Certificate | Prediction)
            in the same order (`SmoothedClassifier.iter_certify` / `iter_predict`).
        out, on_row: as in `certify_dataset`.
        prepare: optional callable (images, labels, idxs) -> (images to evaluate, extra row fields
            per image), on lists of up to `prepare_group` examples, e.g. the attack of
            `attack_dataset`; default: the images unchanged.
        restart: delete `out` and its record first (after the configuration and model were accepted)
            and start over, instead of resuming.
        prepare_group: examples per `prepare` call. Groups are consecutive selected examples in
            fixed positions (0..g-1, g..2g-1, ...), so a resumed run prepares the same groups as an
            uninterrupted one (a group with some rows done is prepared whole; only its missing rows
            are written).
    """
    examples = data.select_examples(data.load_dataset(config.dataset, config.split, config.data_dir),
                                    config.skip, config.max)
    pending = {}  # idx -> (row fields known before the smoothed classifier answers, seconds spent preparing)

    prepare = prepare or _unchanged

    def todo(done):
        for group in _groups(examples, prepare_group):
            if all(idx in done for idx, _, _ in group):
                continue
            idxs = [idx for idx, _, _ in group]
            labels = [int(label) for _, _, label in group]
            start = time.perf_counter()
            images, extras = prepare([image for _, image, _ in group], labels, idxs)
            share = (time.perf_counter() - start) / len(group)  # the attack of a group, split evenly
            for idx, label, image, extra in zip(idxs, labels, images, extras):
                if idx not in done:
                    pending[idx] = ({"label": label, **extra}, share)
                    yield idx, image

    if restart:
        records.remove_results(out)
    records.check_resumable(out, record)
    try:
        writer = results.ResultsWriter(out, columns, record, informational=records.INFORMATIONAL)
    except ValueError as err:
        raise ValueError(f"{err}\n{records.RESTART_HINT}") from None
    written = 0
    with writer:
        for idx, answer in answers(todo(writer.done)):
            fields, prepared = pending.pop(idx)
            row = dict(idx=idx, predict=answer.label, time=prepared + answer.seconds, **fields)
            row["correct"] = int(answer.label == row["label"])
            if "radius" in columns:
                row["radius"] = answer.radius
            writer.write(row)
            written += 1
            if on_row:
                on_row(row)
    return written


def _unchanged(images, labels, idxs):
    """The default `prepare` of `evaluate`: the images as they are, no extra row fields."""
    return images, [{}] * len(images)


def _groups(iterable, size):
    group = []
    for item in iterable:
        group.append(item)
        if len(group) == size:
            yield group
            group = []
    if group:
        yield group


def selected_count(config: CertifyConfig) -> int:
    """How many examples `certify_dataset` / `predict_dataset` evaluate in total (for progress)."""
    ds = data.load_dataset(config.dataset, config.split, config.data_dir)
    size = int(ds.cardinality())
    stop = size if config.max < 0 else min(size, config.max)
    return len(range(0, stop, config.skip))
