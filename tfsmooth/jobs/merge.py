"""Joining the shards of a certify / predict / attack run (`tfsmooth certify ... --shard I/K`, `tfsmooth merge`).

A run split into K shards writes K TSVs, shard I holding the selected examples whose position in the selection is
I modulo K (`tfsmooth.data.select_examples`). Noise depends only on (seed, idx), so each row is the row the
unsharded run would write (its `time` aside). `merge_results` checks that the shards belong together and are
complete, and writes the union in idx order with the unsharded run's record, so `analyze` (and a resume of the
unsharded command on the merged file) treat it as one run.
"""

from __future__ import annotations

import os
from typing import Optional, Sequence

from tfsmooth import data, files, results
from tfsmooth.jobs import records


def _record(path: str) -> dict:
    sidecar = path + ".json"
    if not os.path.isfile(sidecar):
        raise ValueError(f"{path} has no run record {sidecar}: only files written by tfsmooth can be merged")
    record = files.read_json(sidecar)
    if not isinstance(record, dict):
        raise ValueError(f"{sidecar} is not a run record (a JSON object)")
    return record


def merge_results(paths: Sequence[str], out: str, data_dir: Optional[str] = None) -> int:
    """Checks K shard files and writes their union to `out` (TSV lines copied verbatim, sorted by idx).

    Args:
        paths: the K shard TSVs (any order), each with its run record beside it.
        out: the merged TSV (must not exist); its record is the shards' without `shard`.
        data_dir: where the images are read from, to count the selection (as the runs' --data-dir; the data source
            found must be the one recorded).

    Returns:
        The number of rows written.

    Raises:
        FileNotFoundError: a shard file is missing.
        ValueError: naming what is wrong: `out` exists; a file without a record; records that differ in anything but
            the shard (and the model's path); shards of different K, a shard given twice or missing; a sample-wise
            (transductive) file; headers that differ; a shard lacking rows of its share of the selection, or holding
            rows of another; images read from another data source than recorded.
    """
    paths = [os.fspath(path) for path in paths]
    if not paths:
        raise ValueError("give the shard files to merge, got none")
    if os.path.exists(out):
        raise ValueError(f"{out} exists: merge into a new file (remove it first to merge again)")
    for path in paths:
        if not os.path.isfile(path):
            raise FileNotFoundError(f"shard file not found: {path}")
    absolute = [os.path.abspath(path) for path in paths]
    repeated = sorted({path for path in paths if absolute.count(os.path.abspath(path)) > 1})
    if repeated:
        raise ValueError(f"{repeated[0]} is given twice")
    found = {path: _record(path) for path in paths}
    shards = {}
    for path, record in found.items():
        if record.get("transductive") or record.get("stage") == "unallocated":
            raise ValueError(f"{path} is a sample-wise (transductive) file: its radii are allocated over all images "
                             "of one run and cannot be merged")
        shard = tuple(record.get("shard", (0, 1)))
        if shard in shards:
            raise ValueError(f"shard {shard[0]}/{shard[1]} is given twice: {shards[shard]} and {path}")
        shards[shard] = path
    counts = {count for _, count in shards}
    if len(counts) != 1:
        raise ValueError(f"the files are shards of different splits: {sorted(f'{i}/{k}' for i, k in shards)}")
    count = counts.pop()
    missing = [f"{i}/{count}" for i in range(count) if (i, count) not in shards]
    if missing:
        raise ValueError(f"shards {', '.join(missing)} are missing (given: {len(paths)} of {count})")
    ignore = {"shard", *records.INFORMATIONAL}
    first_path, first = paths[0], found[paths[0]]
    common = {k: v for k, v in first.items() if k not in ignore}
    for path in paths[1:]:
        other = {k: v for k, v in found[path].items() if k not in ignore}
        if other != common:
            keys = sorted(k for k in set(common) | set(other) if common.get(k) != other.get(k))
            raise ValueError(f"{path} and {first_path} are not shards of one run: their records differ in "
                             f"{', '.join(keys)}")
    source = data.data_source(common["dataset"], data_dir)
    if source != common["data_source"]:
        raise ValueError(f"the shards were computed on {common['data_source']!r}, but the images are read from "
                         f"{source!r} now (--data-dir / ${data.DATA_DIR_ENV_VAR}): cannot check the selection")
    size = int(data.load_dataset(common["dataset"], common["split"], data_dir).cardinality())
    stop = size if common["max"] < 0 else min(size, common["max"])
    selection = list(range(0, stop, common["skip"]))
    header, lines = None, {}
    for (index, _), path in sorted(shards.items()):
        text = open(path, encoding="utf-8").read()
        results.read_results(path)  # every row parses and is valid
        first_line, *rows = [line for line in text.split("\n") if line.strip()]
        if header is None:
            header = first_line
        elif first_line != header:
            raise ValueError(f"{path} has the header {first_line!r}, {shards[(0, count)]} has {header!r}")
        expected = set(selection[index::count])
        got = {int(line.split("\t")[first_line.split("\t").index("idx")]): line for line in rows}
        if set(got) != expected:
            lacking, foreign = sorted(expected - set(got)), sorted(set(got) - expected)
            raise ValueError(f"{path} (shard {index}/{count}) is not complete: "
                             + (f"it lacks {len(lacking)} rows (idx {lacking[:5]}{' ...' if len(lacking) > 5 else ''};"
                                " rerun its command to finish it)" if lacking else "")
                             + (f" it holds idx {foreign[:5]} of another shard" if foreign else ""))
        lines.update(got)
    merged = {k: v for k, v in first.items() if k != "shard"}
    files.write_json(out + ".json", merged)  # the record first: a crash before the TSV leaves no `out`
    files.atomic_write_text(out, "\n".join([header, *(lines[idx] for idx in sorted(lines))]) + "\n")
    return len(lines)
