"""Issue 15's comparison: sequential certification vs fixed-n CERTIFY at n = 100,000 on the same 200 test images.

Joins, per model, the fixed-n rows of `run.py` (idx 50, 150, ...) with issue 11's (idx 0, 100, ...; their run
records must agree in everything that decides a row; the regularized models have all 200 in one file of `run.py`)
and compares them with the sequential files of design 2 (the default) and design 1 (session 11's): certified
accuracy (%) at r = 0 (the smoothed prediction), 0.25, 0.5, 0.75, total estimation draws, wall-clock (sum of the
`time` column) and the distribution of n_used. Images present in all files are compared, aggregated and image by
image ("images decided differently": certified correct at some r of the table by one run and not by the other);
partial comparisons are marked.

    .venv/bin/python benchmarks/sequential/compare.py
"""

import json
import os
import sys

import numpy as np

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))

from run import FILES, FIXED_ALL, HALF_IN_ISSUE_11, ISSUE_11, MODELS, RESULTS  # noqa: E402

from tfsmooth import results  # noqa: E402

RADII = (0.0, 0.25, 0.5, 0.75)
DECIDING = ("model_sha256", "dataset", "split", "sigma", "n0", "n", "alpha", "seed", "data_source", "noise_scheme",
            "kind")


def _record(path):
    with open(path + ".json") as f:
        return json.load(f)


def _fixed(name):
    """{idx: (correct, radius, time)} of the 200-image fixed-n set available so far."""
    if name in HALF_IN_ISSUE_11:
        paths = [ISSUE_11.format(name=name), os.path.join(RESULTS, "sequential", FILES["fixed"].format(name=name))]
    else:
        paths = [os.path.join(RESULTS, "sequential", FIXED_ALL.format(name=name))]
    paths = [p for p in paths if os.path.exists(p)]
    records = [_record(p) for p in paths]
    for key in DECIDING:
        if len({json.dumps(r.get(key)) for r in records}) > 1:
            raise SystemExit(f"{paths}: run records differ in {key}; the rows cannot be joined")
    rows = {}
    for path in paths:
        found = results.read_results(path)
        for i, idx in enumerate(found.idx):
            if int(idx) % 50 == 0:
                rows[int(idx)] = (int(found.correct[i]), float(found.radius[i]), float(found.time[i]))
    return rows


SEQUENTIAL = (("sequential2", "sequential, design 2 (default)"), ("sequential", "sequential, design 1"))


def _certified(correct, radius, radii=RADII):
    """bool [len(radii), images]: certified correct at each radius."""
    return np.stack([(correct == 1) & (radius >= r) for r in radii])


def _accuracy(correct, radius, radii=RADII):
    return 100 * _certified(correct, radius, radii).mean(axis=1)


def _differing(correct_a, radius_a, correct_b, radius_b):
    """Images certified correct at some r of the table by one run and not by the other."""
    return int(np.any(_certified(correct_a, radius_a) != _certified(correct_b, radius_b), axis=0).sum())


def main():
    for name in MODELS:
        runs = {kind: results.read_results(path) for kind, path in (
            (kind, os.path.join(RESULTS, "sequential", FILES[kind].format(name=name))) for kind, _ in SEQUENTIAL)
            if os.path.exists(path)}
        runs = {kind: run for kind, run in runs.items() if len(run.idx)}
        if not runs:
            continue
        fixed = _fixed(name)
        common = sorted(set(fixed).intersection(*[set(int(i) for i in run.idx) for run in runs.values()]))
        note = "" if len(common) == 200 else f" (partial: the {len(common)} of 200 images with fixed-n rows so far)"
        print(f"\n### {name}{note}\n")
        if not common:
            print("No fixed-n rows yet for these images.")
        else:
            print("| run | " + " | ".join(f"r={r}" for r in RADII)
                  + " | images decided differently | estimation draws | wall-clock s |")
            print("| --- | " + " | ".join("---:" for _ in RADII) + " | ---: | ---: | ---: |")
            f_correct = np.array([fixed[i][0] for i in common])
            f_radius = np.array([fixed[i][1] for i in common])
            f_time = np.array([fixed[i][2] for i in common])
            print("| fixed-n CERTIFY, n = 100,000 | " + " | ".join(f"{a:.1f}" for a in _accuracy(f_correct, f_radius))
                  + f" | - | {100_000 * len(common):,} | {f_time.sum():,.0f} |")
            for kind, label in SEQUENTIAL:
                if kind not in runs:
                    continue
                run = runs[kind]
                position = {int(idx): i for i, idx in enumerate(run.idx)}
                pick = np.array([position[i] for i in common], np.int64)
                used = int(run.n_used[pick].sum())
                print(f"| {label} | " + " | ".join(f"{a:.1f}" for a in _accuracy(run.correct[pick], run.radius[pick]))
                      + f" | {_differing(f_correct, f_radius, run.correct[pick], run.radius[pick])}"
                      + f" | {used:,} ({100_000 * len(common) / max(1, used):.1f}x fewer) | {run.time[pick].sum():,.0f} |")
        print("\nAll images of each sequential file (fixed-n at n = 100,000 would spend 100,000 estimation draws on each):\n")
        print("| run | images | " + " | ".join(f"r={r}" for r in (*RADII, 1.0))
              + " | draws (total) | mean / median n_used | vs n = 100,000 | wall-clock s |")
        print("| --- | ---: | " + " | ".join("---:" for _ in range(len(RADII) + 1)) + " | ---: | ---: | ---: | ---: |")
        for kind, label in SEQUENTIAL:
            if kind not in runs:
                continue
            run = runs[kind]
            used = run.n_used.astype(np.int64)
            print(f"| {label} | {len(used)} | "
                  + " | ".join(f"{a:.1f}" for a in _accuracy(run.correct, run.radius, (*RADII, 1.0)))
                  + f" | {int(used.sum()):,} | {used.mean():,.0f} / {np.median(used):,.0f} | "
                  f"{100_000 * len(used) / max(1, used.sum()):.1f}x fewer | {run.time.sum():,.0f} |")
        for kind, label in SEQUENTIAL:
            if kind in runs:
                values, counts = np.unique(runs[kind].n_used, return_counts=True)
                print(f"\nn_used ({label}): " + ", ".join(f"{v:,}: {c}" for v, c in zip(values, counts)))


if __name__ == "__main__":
    sys.exit(main())
