"""CERTIFY, T-CERTIFY and PREDICT over a data set (Cohen et al. 2019, Sec. 3.2; Feng et al. 2020), as the field's TSV.

`certify_dataset` / `predict_dataset` take a frozen, validated `CertifyConfig`, store its run record
beside the TSV (`tfsmooth.jobs.records`), write one durable row per example and resume from what the
file already holds. `certify_dataset(..., also=...)` writes the decisions of other certification
methods from the same counts (one counting pass, one TSV per method). `evaluate` is the row loop they
share with `tfsmooth.jobs.attack`.
"""

from __future__ import annotations

import dataclasses
import functools
import os
import time
from typing import Callable, Optional, Sequence, Tuple, Union

import numpy as np

from tfsmooth import checks, counting, data, noise, registry, results, samplewise, sequential, stats
from tfsmooth.jobs import records
from tfsmooth.smoothing import SmoothedClassifier, recertify


def check_evaluation_fields(config):
    """Checks the fields shared by the evaluation configurations (certify, predict, attack)."""
    checks.check_sigma(config.sigma)
    checks.check_alpha(config.alpha)
    for name in ("n", "batch", "skip"):
        checks.check_count(getattr(config, name), name)
    checks.check_seed(config.seed)
    object.__setattr__(config, "shard", checks.check_shard(config.shard))
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
        method: certify only: "cohen" (CERTIFY, default) or "t-certify" (Feng et al. 2020,
            `tfsmooth.stats.decide_certificate`); part of the run record unless "cohen", so a resume never
            mixes methods (and files written before the option existed resume as "cohen").
        alpha_split: "t-certify" only: alpha_A / alpha in (0, 1], or "auto" (chosen on the selection
            draws); default 0.5. In the run record with a "t-certify" method.
        sigma_grid: sample-wise certification (`tfsmooth.jobs.samplewise`, `tfsmooth.samplewise`): the noise
            levels each image's sigma_j is chosen from (sorted, distinct, > 0), or None (default: one sigma).
            With a grid, `sigma` is sigma_0, the level the transductive classifier uses outside the certified
            balls. In the run record only when set, with n_select and allocation.
        n_select: sample-wise only: sigma-selection draws per grid level (default 100).
        allocation: sample-wise only: "linprog" (default) or "greedy" (`tfsmooth.samplewise.allocate_radii`).
        sigma_select: sample-wise only: the rule choosing sigma_j, "agree" (default) or "radius"
            (`tfsmooth.samplewise.choose_sigma`). In the run record with the grid.
        radii: sequential certification (`tfsmooth.sequential`, `SmoothedClassifier.iter_certify_sequential`):
            the target radii, strictly increasing, > 0; then `n` is the budget n_max and each row gets the largest
            decided target as its radius and `n_used`. None (default): fixed-n CERTIFY. In the run record only
            when set, with n_first.
        n_first: sequential only: the first look (default 100; looks grow by the design's factor up to n).
        sequential_design: sequential only: the stopping design, 2 (default: looks x1.5, alpha spent in proportion
            to n_l, conditional-power futility) or 1 (session 11's: doubling looks, alpha / L each;
            `tfsmooth.sequential` "Designs"). In the run record when 2, so files of design 1 (written before the
            option, without the key) resume only with sequential_design=1.
        noise_scheme: how the noise blocks are drawn (`tfsmooth.noise.NOISE_SCHEMES`): 2 (default, every file so
            far) or 3 (counter-based, one RNG op per run of blocks: for accelerators). The record's `noise_scheme`;
            a file resumes only under its own scheme. Sample-wise certification draws scheme 2 only.
        devices: where the noisy forward passes run (`SmoothedClassifier`'s devices: None, "all" or names such as
            "GPU:0,GPU:1"), checked when the job starts. The counts do not depend on it (devices of one kind), so it
            is not part of the run record: a run may resume on other devices.
        shard: (I, K): only the selected examples whose position in the selection is I modulo K (default (0, 1):
            all). Noise depends only on (seed, idx), so the K shards' rows are the unsharded run's, split;
            `tfsmooth.jobs.merge_results` joins them. In the run record (as [I, K]) only when K > 1.
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
    method: str = "cohen"
    alpha_split: Union[float, str] = 0.5
    sigma_grid: Optional[Tuple[float, ...]] = None
    n_select: int = 100
    sigma_select: str = "agree"
    allocation: str = "linprog"
    shard: Tuple[int, int] = (0, 1)
    radii: Optional[Tuple[float, ...]] = None
    n_first: int = 100
    sequential_design: int = 2
    noise_scheme: int = 2
    devices: Union[None, str, Tuple[str, ...]] = None

    def __post_init__(self):
        check_evaluation_fields(self)
        checks.check_count(self.n0, "n0")
        object.__setattr__(self, "devices", counting.resolve_devices(self.devices))
        object.__setattr__(self, "noise_scheme", noise.check_noise_scheme(self.noise_scheme))
        object.__setattr__(self, "sequential_design", sequential.check_design(self.sequential_design))
        if self.noise_scheme != 2 and self.sigma_grid is not None:
            raise ValueError("sample-wise certification (sigma_grid) draws noise scheme 2 only: use --noise-scheme 2 "
                             "(noise_scheme=2)")
        checks.check_choice(self.compute_dtype, "compute_dtype", registry.COMPUTE_DTYPES)
        checks.check_choice(self.method, "method", registry.CERTIFY_METHODS)
        object.__setattr__(self, "alpha_split", stats.check_alpha_split(self.alpha_split))
        if self.sigma_grid is not None:
            object.__setattr__(self, "sigma_grid", samplewise.check_sigma_grid(self.sigma_grid))
        checks.check_count(self.n_select, "n_select")
        checks.check_choice(self.sigma_select, "sigma_select", samplewise.SIGMA_SELECTIONS)
        checks.check_choice(self.allocation, "allocation", samplewise.ALLOCATIONS)
        if self.radii is not None:
            object.__setattr__(self, "radii", sequential.check_radii(self.radii))
            if self.sigma_grid is not None:
                raise ValueError("sequential certification (radii) decides its targets at one sigma: it does not "
                                 "combine with a sigma_grid")
            if self.method == "t-certify" and (self.alpha_split == registry.ALPHA_SPLIT_AUTO or self.alpha_split >= 1):
                raise ValueError(f"sequential T-CERTIFY takes a fixed alpha_split in (0, 1), not "
                                 f"{self.alpha_split!r} (1.0 is method 'cohen'; 'auto' chooses on fixed-n counts)")
            sequential.look_schedule(self.n_first, self.n)  # n_first a multiple of the noise block, <= n

    def run_record(self, kind: str) -> dict:
        """What identifies the run's results (stored beside the TSV; a resume must match it)."""
        omit = ["batch", "devices"] + (["n0"] if kind == "predict" else [])  # counts depend on neither
        if self.compute_dtype == "float32":  # files written before the option existed stay resumable
            omit.append("compute_dtype")
        if kind != "certify" or self.method == "cohen":  # likewise for CERTIFY files written before T-CERTIFY
            omit += ["method", "alpha_split"]
        if kind != "certify" or self.sigma_grid is None:  # and for files written before sample-wise smoothing
            omit += ["sigma_grid", "n_select", "allocation", "sigma_select"]
        if self.shard[1] == 1:  # and for unsharded files
            omit.append("shard")
        if kind != "certify" or self.radii is None:  # and for fixed-n files
            omit += ["radii", "n_first"]
        if kind != "certify" or self.radii is None or self.sequential_design == 1:  # and design-1 files (session 11)
            omit.append("sequential_design")
        record = records.run_record(self, kind, omit)
        for key in ("shard", "sigma_grid", "radii"):
            if key in record:
                record[key] = list(record[key])
        return record

    def min_n(self, kind: str) -> int:
        """The smallest n with which this configuration can ever answer (`stats.min_n_to_*`)."""
        if kind == "predict":
            return stats.min_n_to_predict(self.alpha)
        if self.radii is not None:
            return sequential.min_n_max(self.alpha, self.radii, float(np.float32(self.sigma)), self.n_first,
                                        method=self.method, alpha_split=self.alpha_split,
                                        design=self.sequential_design)
        if self.method == "cohen":
            return stats.min_n_to_certify(self.alpha)
        return stats.min_n_to_t_certify(self.alpha, self.alpha_split)


def certify_dataset(config: CertifyConfig, out: str, *, on_row: Optional[Callable[[dict], None]] = None,
                    restart: bool = False, also: Sequence[Tuple[CertifyConfig, str]] = ()) -> int:
    """Runs CERTIFY (or T-CERTIFY) on every `skip`-th example below `max`, writing the reference TSV as it goes.

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
        also: (config, out) pairs whose configs differ from `config` only in `method` / `alpha_split`: their
            decisions are made from the same counts (`tfsmooth.smoothing.recertify`) and written to their own
            TSVs, each with its own run record, resumed (or restarted) like `out`. An example is counted
            again only if some file lacks its row. Each file's `time` column is the counting time.

    Returns:
        The number of examples counted by this call (rows written to `out` and to each file of `also`
        that lacked them).

    Raises:
        ValueError / FileNotFoundError: for an invalid configuration (e.g. an n too small to ever
            certify at this alpha, or an `also` config differing in another field, or repeated outs), a
            missing model or data directory, or an `out` file from another configuration; then no file is
            touched.
    """
    return _run(config, out, on_row, "certify", restart, also)


def predict_dataset(config: CertifyConfig, out: str, *, on_row: Optional[Callable[[dict], None]] = None,
                    restart: bool = False) -> int:
    """Runs PREDICT on the selected examples; TSV `idx label predict correct time`, resumable.

    Same contract as `certify_dataset`; `config.n0` is not used.
    """
    return _run(config, out, on_row, "predict", restart)


def _run(config, out, on_row, kind, restart, also=()):
    if config.sigma_grid is not None:
        raise ValueError("config.sigma_grid is set: sample-wise certification is "
                         "tfsmooth.jobs.certify_samplewise_dataset (the allocation needs every row)")
    also = _check_also(config, out, also)
    for each in (config, *(other for other, _ in also)):
        minimum = each.min_n(kind)
        if each.n < minimum:
            what = kind if kind == "predict" or each.method == "cohen" else "certify with t-certify"
            raise ValueError(f"n={each.n} is too small to ever {what} at alpha={each.alpha}"
                             f"{'' if each.method == 'cohen' else f' (alpha_split={each.alpha_split})'}: "
                             f"use n >= {minimum}")
    info = data.dataset_info(config.dataset, config.data_dir)
    base, record = records.load_recorded_model(config, functools.partial(config.run_record, kind))
    num_classes = records.check_model_fits_data(base, info, f"model {config.model}")
    smoothed = SmoothedClassifier(base, num_classes, config.sigma, compute_dtype=config.compute_dtype,
                                  devices=config.devices, noise_scheme=config.noise_scheme)
    if kind == "certify" and config.radii is not None:
        if also:
            raise ValueError("sequential certification writes one file: `also` does not apply")
        columns = results.SEQUENTIAL_COLUMNS
        run = functools.partial(_sequential_answers, smoothed, n0=config.n0, radii=config.radii,
                                n_first=config.n_first, method=config.method, alpha_split=config.alpha_split,
                                design=config.sequential_design)
    elif kind == "certify":
        columns = results.CERTIFY_COLUMNS
        run = functools.partial(smoothed.iter_certify, n0=config.n0, method=config.method,
                                alpha_split=config.alpha_split)
    else:
        columns, run = results.PREDICT_COLUMNS, smoothed.iter_predict
    answers = functools.partial(run, n=config.n, alpha=config.alpha, batch_size=config.batch, seed=config.seed)
    extra = [(other_out, _record_for(record, other), functools.partial(
        recertify, sigma=other.sigma, alpha=other.alpha, method=other.method, alpha_split=other.alpha_split))
        for other, other_out in also]
    return evaluate(config, columns, record, answers, out, on_row, restart=restart, also=extra)


def _sequential_answers(smoothed, examples, *, n0, n, alpha, batch_size, seed, radii, n_first, method, alpha_split,
                        design):
    """`iter_certify_sequential` with `n` as the budget n_max (the signature `evaluate` calls)."""
    return smoothed.iter_certify_sequential(examples, n0=n0, n_max=n, alpha=alpha, batch_size=batch_size,
                                            radii=radii, seed=seed, n_first=n_first, method=method, design=design,
                                            alpha_split=alpha_split)


def _record_for(record, config):
    """`record` (the main config's) with `config`'s method fields, by the rule of `CertifyConfig.run_record`."""
    other = {key: value for key, value in record.items() if key not in ("method", "alpha_split")}
    if config.method != "cohen":
        other.update(method=config.method, alpha_split=config.alpha_split)
    return other


def _check_also(config, out, also):
    """Validates `certify_dataset`'s `also`: configs equal to `config` but for the method, distinct outs."""
    also = [tuple(pair) for pair in also]
    outs = [out]
    for pair in also:
        if len(pair) != 2 or not isinstance(pair[0], CertifyConfig):
            raise ValueError(f"also must hold (CertifyConfig, out) pairs, got {pair!r}")
        other, other_out = pair
        if dataclasses.replace(other, method=config.method, alpha_split=config.alpha_split) != config:
            differ = [f.name for f in dataclasses.fields(config) if f.name not in ("method", "alpha_split")
                      and getattr(config, f.name) != getattr(other, f.name)]
            raise ValueError(f"an `also` config may differ from the main one only in method and alpha_split, "
                             f"this one differs in {', '.join(differ)}")
        outs.append(other_out)
    absolute = [os.path.abspath(path) for path in outs]
    if len(set(absolute)) != len(absolute):
        raise ValueError(f"each method needs its own output file, got {outs}")
    return also


def evaluate(config, columns, record, answers, out, on_row, prepare=None, prepare_group=1, restart=False, also=()):
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
        also: (out, record, transform) triples: more TSVs with the same columns, each row from
            `transform(answer)` (e.g. another certification rule on the same counts). An example is
            evaluated when any file lacks its row, and written to the files that lack it.

    Returns:
        The number of examples evaluated.
    """
    examples = data.select_examples(data.load_dataset(config.dataset, config.split, config.data_dir),
                                    config.skip, config.max, config.shard)
    pending = {}  # idx -> (row fields known before the smoothed classifier answers, seconds spent preparing)
    outputs = [(out, record, None), *also]

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
        for path, _, _ in outputs:
            records.remove_results(path)
    writers = []
    try:
        for path, path_record, transform in outputs:
            records.check_resumable(path, path_record)
            try:
                writers.append((results.ResultsWriter(path, columns, path_record,
                                                      informational=records.INFORMATIONAL), transform))
            except ValueError as err:
                raise ValueError(f"{err}\n{records.RESTART_HINT}") from None
        done = set.intersection(*(set(writer.done) for writer, _ in writers))
        written = 0
        for idx, answer in answers(todo(done)):
            fields, prepared = pending.pop(idx)
            first = None
            for writer, transform in writers:
                if idx in writer.done:
                    continue
                decided = answer if transform is None else transform(answer)
                row = dict(idx=idx, predict=decided.label, time=prepared + decided.seconds, **fields)
                row["correct"] = int(decided.label == row["label"])
                if "radius" in columns:
                    row["radius"] = decided.radius
                if "radius_unallocated" in columns:  # sample-wise rows before the allocation
                    row.update(radius_unallocated=decided.radius, sigma=decided.sigma)
                if "n_used" in columns:  # sequential certification
                    row["n_used"] = decided.n_used
                writer.write(row)
                first = first or row
            written += 1
            if on_row:
                on_row(first)
    finally:
        for writer, _ in writers:
            writer.close()
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
    index, count = config.shard
    return len(range(0, stop, config.skip)[index::count])
