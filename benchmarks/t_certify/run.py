"""Issue 11 results: CERTIFY and T-CERTIFY on the two shipped ResNet-20s, from one counting pass per model and n.

For each model and each (n, skip): one counting pass writes three TSVs (`tfsmooth.jobs.certify_dataset(...,
also=...)`): CERTIFY ("cohen"), T-CERTIFY at the default split alpha/2 + alpha/2 ("tcertify"), and T-CERTIFY
with the split chosen on the selection draws ("tcertify_auto"). Resumable: rerun the same command.

    TFSMOOTH_DATA_DIR=../shared/data/cifar-10-batches-bin .venv/bin/python benchmarks/t_certify/run.py [--only n10000]

Then: `.venv/bin/tfsmooth analyze benchmarks/results/t_certify/*.tsv --radii 0,0.25,0.5,0.75,1.0`.
"""

import argparse
import os
import sys
import time

from tfsmooth import jobs

HERE = os.path.dirname(os.path.abspath(__file__))
RESULTS = os.path.join(HERE, "..", "results")
MODELS = {"gaussian": "full_gaussian_sigma0.25", "smoothadv": "full_smoothadv_pgd_sigma0.25"}
RUNS = {"n10000": dict(n=10_000, skip=20), "n100000": dict(n=100_000, skip=100)}
METHODS = (("cohen", "cohen", 0.5), ("tcertify", "t-certify", 0.5), ("tcertify_auto", "t-certify", "auto"))


def main():
    parser = argparse.ArgumentParser()
    parser.add_argument("--only", choices=sorted(RUNS), default=None)
    args = parser.parse_args()
    out_dir = os.path.join(RESULTS, "t_certify")
    for run_name, run in RUNS.items():
        if args.only and run_name != args.only:
            continue
        for model_name, folder in MODELS.items():
            model = os.path.join(RESULTS, folder, "base_model.keras")
            configs = [(jobs.CertifyConfig(model=model, dataset="cifar10", split="test", sigma=0.25, n0=100,
                                           alpha=0.001, batch=1000, seed=0, method=method, alpha_split=split, **run),
                        os.path.join(out_dir, f"{model_name}_{run_name}_{tag}.tsv"))
                       for tag, method, split in METHODS]
            start = time.time()
            rows = jobs.certify_dataset(*configs[0], also=configs[1:],
                                        on_row=lambda row: print(f"{model_name} {run_name} idx {row['idx']} "
                                                                 f"{time.time() - start:.0f} s", flush=True))
            print(f"{model_name} {run_name}: {rows} new rows in {time.time() - start:.0f} s", flush=True)


if __name__ == "__main__":
    sys.exit(main())
