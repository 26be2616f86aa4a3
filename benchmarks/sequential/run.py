"""Issue 15 results: sequential vs fixed-n CERTIFY on the shipped ResNet-20s, the same 200 test images (--skip 50).

For each model: fixed-n CERTIFY at n = 100,000 and sequential certification at radii 0.25, 0.5, 0.75, 1.0 with
n_max = 100,000 (n0 = 100, alpha = 0.001, seed 0), into `benchmarks/results/sequential/`. Resumable: rerun the
same command (each row is written as it finishes); commit partial files so the next session resumes them.

    TFSMOOTH_DATA_DIR=../shared/data/cifar-10-batches-bin .venv/bin/python benchmarks/sequential/run.py \
        [--only gaussian] [--kind sequential]

Then: `.venv/bin/tfsmooth analyze benchmarks/results/sequential/*.tsv --radii 0.25,0.5,0.75` (certified accuracy,
mean and total draws) and the wall-clock sums of the `time` columns.
"""

import argparse
import os
import sys
import time

from tfsmooth import jobs

HERE = os.path.dirname(os.path.abspath(__file__))
RESULTS = os.path.normpath(os.path.join(HERE, "..", "results"))
MODELS = {"gaussian": "full_gaussian_sigma0.25", "smoothadv": "full_smoothadv_pgd_sigma0.25"}
KINDS = {"fixed": None, "sequential": (0.25, 0.5, 0.75, 1.0)}


def main():
    parser = argparse.ArgumentParser()
    parser.add_argument("--only", choices=sorted(MODELS), action="append", default=None)
    parser.add_argument("--kind", choices=sorted(KINDS), action="append", default=None)
    args = parser.parse_args()
    for name, folder in MODELS.items():
        if args.only and name not in args.only:
            continue
        for kind, radii in KINDS.items():
            if args.kind and kind not in args.kind:
                continue
            config = jobs.CertifyConfig(model=os.path.join(RESULTS, folder, "base_model.keras"), dataset="cifar10",
                                        split="test", sigma=0.25, n0=100, n=100_000, alpha=0.001, batch=1000,
                                        skip=50, seed=0, radii=radii)
            out = os.path.join(RESULTS, "sequential", f"{name}_{kind}.tsv")
            start = time.time()
            rows = jobs.certify_dataset(config, out, on_row=lambda row: print(
                f"{name} {kind} idx {row['idx']} {time.time() - start:.0f} s", flush=True))
            print(f"{name} {kind}: {rows} new rows in {time.time() - start:.0f} s", flush=True)


if __name__ == "__main__":
    sys.exit(main())
