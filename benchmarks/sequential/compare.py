"""Issue 15's comparison: sequential certification vs fixed-n CERTIFY at n = 100,000 on the same 200 test images.

Joins, per model, the fixed-n rows of `run.py` (idx 50, 150, ...) with issue 11's (idx 0, 100, ...; their run
records must agree in everything that decides a row) and compares them with the sequential file: certified accuracy
(%) at r = 0.25, 0.5, 0.75, total estimation draws, wall-clock (sum of the `time` column) and the distribution of
n_used. Images present in both are compared; partial files are marked.

    .venv/bin/python benchmarks/sequential/compare.py
"""

import json
import os
import sys

import numpy as np

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))

from run import FILES, ISSUE_11, MODELS, RESULTS  # noqa: E402

from tfsmooth import results  # noqa: E402

RADII = (0.25, 0.5, 0.75)
DECIDING = ("model_sha256", "dataset", "split", "sigma", "n0", "n", "alpha", "seed", "data_source", "noise_scheme",
            "kind")


def _record(path):
    with open(path + ".json") as f:
        return json.load(f)


def _fixed(name):
    """{idx: (correct, radius, time)} of the 200-image fixed-n set available so far."""
    paths = [ISSUE_11.format(name=name), os.path.join(RESULTS, "sequential", FILES["fixed"].format(name=name))]
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


def main():
    for name in MODELS:
        sequential_path = os.path.join(RESULTS, "sequential", FILES["sequential"].format(name=name))
        if not os.path.exists(sequential_path):
            continue
        seq = results.read_results(sequential_path)
        fixed = _fixed(name)
        common = sorted(set(fixed) & set(int(i) for i in seq.idx))
        if not common:
            continue
        position = {int(idx): i for i, idx in enumerate(seq.idx)}
        pick = np.array([position[i] for i in common])
        s_correct, s_radius, s_time = seq.correct[pick], seq.radius[pick], seq.time[pick]
        s_used = seq.n_used[pick]
        f_correct = np.array([fixed[i][0] for i in common])
        f_radius = np.array([fixed[i][1] for i in common])
        f_time = np.array([fixed[i][2] for i in common])
        note = "" if len(common) == 200 else f" (partial: {len(common)} of 200 images)"
        print(f"\n### {name}{note}\n")
        print("| run | " + " | ".join(f"r={r}" for r in RADII) + " | estimation draws | wall-clock s |")
        print("| --- | " + " | ".join("---:" for _ in RADII) + " | ---: | ---: |")
        for label, correct, radius, draws, seconds in (
                ("fixed-n CERTIFY, n = 100,000", f_correct, f_radius, 100_000 * len(common), f_time.sum()),
                ("sequential, n_max = 100,000", s_correct, s_radius, int(s_used.sum()), s_time.sum())):
            accuracy = [100 * np.mean((correct == 1) & (radius >= r)) for r in RADII]
            print(f"| {label} | " + " | ".join(f"{a:.1f}" for a in accuracy) + f" | {draws:,} | {seconds:,.0f} |")
        print(f"\ndraws: {100_000 * len(common) / max(1, s_used.sum()):.1f}x fewer; n_used per image: "
              + ", ".join(f"{n}: {c}" for n, c in zip(*np.unique(s_used, return_counts=True))))


if __name__ == "__main__":
    sys.exit(main())
