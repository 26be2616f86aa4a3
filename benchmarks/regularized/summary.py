"""Issue 12's table and plot: every training method at the shipped models' CPU budget, CERTIFY and T-CERTIFY.

Reads the 500-image n = 10,000 files of the two shipped models (`benchmarks/results/t_certify/`, issue 11) and of
the regularized models (`benchmarks/results/regularized/`, written by `run.py`), and each model's `config.json` and
`log.csv` for its training cost; prints a markdown table (certified accuracy % at r = 0 ... 1.0, ACR, abstention %,
rows, epochs, training minutes and training images/s) and writes the plot of the CERTIFY curves. Models whose files
are missing are left out; a file with fewer than 500 rows is marked partial.

    .venv/bin/python benchmarks/regularized/summary.py [--plot benchmarks/results/regularized/methods.png]
"""

import argparse
import csv
import json
import os
import sys

from tfsmooth import analysis

HERE = os.path.dirname(os.path.abspath(__file__))
RESULTS = os.path.normpath(os.path.join(HERE, "..", "results"))
RADII = (0.0, 0.25, 0.5, 0.75, 1.0)
# label -> (model folder, the TSV path without "_cohen.tsv" / "_tcertify.tsv")
MODELS = {
    "Gaussian": ("full_gaussian_sigma0.25", "t_certify/gaussian_n10000"),
    "SmoothAdv-PGD": ("full_smoothadv_pgd_sigma0.25", "t_certify/smoothadv_n10000"),
    "Consistency": ("full_consistency_sigma0.25", "regularized/consistency_n10000"),
    "MACER": ("full_macer_sigma0.25", "regularized/macer_n10000"),
    "ADRE": ("full_adre_sigma0.25", "regularized/adre_n10000"),
    "ADRE-ADV": ("full_adre_adv_sigma0.25", "regularized/adre_adv_n10000"),
}
METHODS = (("CERTIFY", "cohen"), ("T-CERTIFY", "tcertify"))
FULL = 500


def training_cost(folder):
    """(epochs, minutes of epochs, training images/s) from the run's log.csv and config.json."""
    with open(os.path.join(folder, "config.json")) as f:
        config = json.load(f)
    with open(os.path.join(folder, "log.csv")) as f:
        rows = list(csv.DictReader(f))
    seconds = sum(float(row["epoch_seconds"]) for row in rows)
    examples = config.get("train_examples") or 50_000
    return len(rows), seconds / 60, len(rows) * examples / seconds if seconds else float("nan")


def main():
    parser = argparse.ArgumentParser()
    parser.add_argument("--plot", default=os.path.join(RESULTS, "regularized", "methods.png"))
    args = parser.parse_args()
    header = ["model, rule", *(f"r={r}" for r in RADII), "ACR", "abstain", "rows", "epochs", "train min", "img/s"]
    print("| " + " | ".join(header) + " |")
    print("| --- |" + " ---: |" * (len(header) - 1))
    curves, labels = [], []
    for label, (folder, stem) in MODELS.items():
        folder = os.path.join(RESULTS, folder)
        if not os.path.exists(os.path.join(folder, "log.csv")):
            continue
        epochs, minutes, rate = training_cost(folder)
        certified = False
        for rule, tag in METHODS:
            path = os.path.join(RESULTS, f"{stem}_{tag}.tsv")
            if not os.path.exists(path):
                continue
            try:
                entry = analysis.summarize([path], RADII)[path]
            except ValueError:  # a file with its header only
                continue
            certified = True
            accuracy = [100 * entry["certified_accuracy"][analysis.radius_key(r)] for r in RADII]
            rows = entry["count"] if entry["count"] == FULL else f"{entry['count']} (partial)"
            print(f"| {label}, {rule} | " + " | ".join(f"{a:.1f}" for a in accuracy) +
                  f" | {entry['acr']:.3f} | {100 * entry['abstain_rate']:.1f} | {rows} | {epochs} | {minutes:.1f} |"
                  f" {rate:.0f} |")
            if tag == "cohen":
                curves.append(path)
                labels.append(label if entry["count"] == FULL else f"{label} ({entry['count']} images)")
        if not certified:
            print(f"| {label}, not certified yet |" + " - |" * (len(RADII) + 3) +
                  f" {epochs} | {minutes:.1f} | {rate:.0f} |")
    if curves:
        analysis.plot_certified_accuracy(curves, args.plot, labels=labels)
        print(f"\nplot (CERTIFY): {os.path.relpath(args.plot)}")


if __name__ == "__main__":
    sys.exit(main())
