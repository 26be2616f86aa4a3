"""Issue 12 results: CERTIFY and T-CERTIFY of the regularized ResNet-20s on the shipped models' 500 test images.

For each model folder of `MODELS` that holds a trained `base_model.keras`: one counting pass (n0 = 100, n = 10,000,
alpha = 0.001, `--skip 20`: test images 0, 20, ..., 9980, as the shipped models' files in
`benchmarks/results/t_certify/`) writes two TSVs, CERTIFY ("cohen") and T-CERTIFY at the split alpha/2 + alpha/2
("tcertify"), into `benchmarks/results/regularized/`. Resumable: rerun the same command; each row is written as it
finishes.

    TFSMOOTH_DATA_DIR=../shared/data/cifar-10-batches-bin .venv/bin/python benchmarks/regularized/run.py [--only macer]

Then `benchmarks/regularized/summary.py` prints the table of all five models and draws the plot.
"""

import argparse
import os
import sys
import time

from tfsmooth import jobs

HERE = os.path.dirname(os.path.abspath(__file__))
RESULTS = os.path.normpath(os.path.join(HERE, "..", "results"))
MODELS = {"consistency": "full_consistency_sigma0.25", "macer": "full_macer_sigma0.25",
          "adre": "full_adre_sigma0.25", "adre_adv": "full_adre_adv_sigma0.25"}
METHODS = (("cohen", "cohen"), ("tcertify", "t-certify"))


def main():
    parser = argparse.ArgumentParser()
    parser.add_argument("--only", choices=sorted(MODELS), action="append", default=None)
    args = parser.parse_args()
    out_dir = os.path.join(RESULTS, "regularized")
    for name, folder in MODELS.items():
        model = os.path.join(RESULTS, folder, "base_model.keras")
        if (args.only and name not in args.only) or not os.path.exists(model):
            continue
        configs = [(jobs.CertifyConfig(model=model, dataset="cifar10", split="test", sigma=0.25, n0=100, n=10_000,
                                       alpha=0.001, batch=1000, skip=20, seed=0, method=method),
                    os.path.join(out_dir, f"{name}_n10000_{tag}.tsv")) for tag, method in METHODS]
        start = time.time()
        rows = jobs.certify_dataset(*configs[0], also=configs[1:],
                                    on_row=lambda row: print(f"{name} idx {row['idx']} {time.time() - start:.0f} s",
                                                             flush=True))
        print(f"{name}: {rows} new rows in {time.time() - start:.0f} s", flush=True)


if __name__ == "__main__":
    sys.exit(main())
