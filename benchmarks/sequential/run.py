"""Issue 15 results: sequential vs fixed-n CERTIFY on the five shipped ResNet-20s, the same 200 test images (--skip 50).

For each model: sequential certification at radii 0.25, 0.5, 0.75, 1.0 with n_max = 100,000 on all 200 images --
design 2 (the default: `{name}_sequential_design2.tsv`; design 1, session 11's `{name}_sequential.tsv`, for the
Gaussian and SmoothAdv models only) -- and
fixed-n CERTIFY at n = 100,000 (n0 = 100, alpha = 0.001, seed 0, sigma 0.25).

Gaussian and SmoothAdv (issue 11's models): fixed-n runs on the half of the 200 images that issue 11 did not
already certify, `--skip 50 --shard 1/2` (idx 50, 150, ..., 9950; `{name}_fixed_shard1of2.tsv`). The other half
(idx 0, 100, ..., 9900) is exactly issue 11's `benchmarks/results/t_certify/{model}_n100000_cohen.tsv` (--skip 100,
same settings; counts depend only on (seed, idx), not on the selection or the batch), which `compare.py` joins to
it -- half the CPU-time of certifying all 200 again (~50 min instead of ~1.7 h per model on idle cores).

The regularized models (consistency, MACER, ADRE; issue 12): design 2 on all 200 images and fixed-n on all 200
(`{name}_fixed.tsv`, ~2.4 h per model on idle cores).

Files in `benchmarks/results/sequential/`. Resumable: rerun the same command (each row is written as it finishes);
commit partial files so the next session resumes them.

    TFSMOOTH_DATA_DIR=../shared/data/cifar-10-batches-bin .venv/bin/python benchmarks/sequential/run.py \
        [--only gaussian|smoothadv|consistency|macer|adre] [--kind sequential2|sequential|fixed]

Then `.venv/bin/python benchmarks/sequential/compare.py`: certified accuracy, total draws, wall-clock, n_used.
"""

import argparse
import os
import sys
import time

from tfsmooth import jobs

HERE = os.path.dirname(os.path.abspath(__file__))
RESULTS = os.path.normpath(os.path.join(HERE, "..", "results"))
MODELS = {"gaussian": "full_gaussian_sigma0.25", "smoothadv": "full_smoothadv_pgd_sigma0.25",
          "consistency": "full_consistency_sigma0.25", "macer": "full_macer_sigma0.25", "adre": "full_adre_sigma0.25"}
HALF_IN_ISSUE_11 = ("gaussian", "smoothadv")  # models whose idx 0, 100, ... fixed-n rows issue 11 already has
RADII = (0.25, 0.5, 0.75, 1.0)
KINDS = {"sequential2": RADII, "sequential": RADII, "fixed": None}  # kind -> target radii (None: fixed-n)
DESIGN = {"sequential2": 2, "sequential": 1}  # the stopping design (`tfsmooth.sequential`, "Designs")
FILES = {"sequential2": "{name}_sequential_design2.tsv", "sequential": "{name}_sequential.tsv",
         "fixed": "{name}_fixed_shard1of2.tsv"}
FIXED_ALL = "{name}_fixed.tsv"  # fixed-n on all 200 images, for the models issue 11 did not certify
ISSUE_11 = os.path.join(RESULTS, "t_certify", "{name}_n100000_cohen.tsv")  # the fixed-n rows of idx 0, 100, ...


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
            if kind == "sequential" and name not in HALF_IN_ISSUE_11:
                continue  # design 1 is session 11's, kept for its files only
            half = radii is None and name in HALF_IN_ISSUE_11
            shard = (1, 2) if half else (0, 1)
            config = jobs.CertifyConfig(model=os.path.join(RESULTS, folder, "base_model.keras"), dataset="cifar10",
                                        split="test", sigma=0.25, n0=100, n=100_000, alpha=0.001, batch=1000,
                                        skip=50, seed=0, radii=radii, shard=shard,
                                        sequential_design=DESIGN.get(kind, 2))
            pattern = FIXED_ALL if radii is None and not half else FILES[kind]
            out = os.path.join(RESULTS, "sequential", pattern.format(name=name))
            start = time.time()
            rows = jobs.certify_dataset(config, out, on_row=lambda row: print(
                f"{name} {kind} idx {row['idx']} {time.time() - start:.0f} s", flush=True))
            print(f"{name} {kind}: {rows} new rows in {time.time() - start:.0f} s", flush=True)


if __name__ == "__main__":
    sys.exit(main())
