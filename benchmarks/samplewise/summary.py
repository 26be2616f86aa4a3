"""Issue 13's tables and plots: sample-wise noise levels against fixed sigma = 0.25 and 0.5 (files of `run.sh`).

For each data set (CIFAR-10: the 500 test images of the shipped models, `--skip 20`; MNIST: the offline split, every
10th of t10k's last 5,000 images) prints a markdown table of certified accuracy (%) at r = 0 ... 1.5, ACR, abstention
and rows; for the sample-wise file also the distribution of the chosen sigma_j, how many radii the allocation cut
(radius < radius_unallocated) and by how much, and the training images' sigma_i distribution (assign-sigma's file).
Sample-wise rows are transductive (certified for that test set only, README "Sample-wise noise levels"). Files
that do not exist yet are left out; a file with fewer rows than the others is marked partial.

    .venv/bin/python benchmarks/samplewise/summary.py [--plot-dir benchmarks/results/samplewise]
"""

import argparse
import os
import sys

import numpy as np

from tfsmooth import analysis, results

HERE = os.path.dirname(os.path.abspath(__file__))
RESULTS = os.path.normpath(os.path.join(HERE, "..", "results"))
OUT = os.path.join(RESULTS, "samplewise")
RADII = (0.0, 0.25, 0.5, 0.75, 1.0, 1.25, 1.5)
SETS = {
    "cifar10": {"fixed sigma = 0.25": os.path.join(RESULTS, "full_gaussian_sigma0.25", "full_certify_sigma0.25.tsv"),
                "fixed sigma = 0.5": os.path.join(OUT, "cifar_sigma0.5_n10000.tsv"),
                "sample-wise [transductive]": os.path.join(OUT, "cifar_samplewise_n10000.tsv")},
    "mnist (t10k split)": {"fixed sigma = 0.25": os.path.join(OUT, "mnist_sigma0.25_n10000.tsv"),
                           "fixed sigma = 0.5": os.path.join(OUT, "mnist_sigma0.5_n10000.tsv"),
                           "sample-wise [transductive]": os.path.join(OUT, "mnist_samplewise_n10000.tsv"),
                           "sample-wise, rule radius [transductive]": os.path.join(
                               OUT, "mnist_samplewise_radius_n10000.tsv")},
}
TRAIN_SIGMA = {"cifar10": os.path.join(OUT, "cifar_sigma.npz"), "mnist (t10k split)": os.path.join(OUT, "mnist_sigma.npz")}


def _row(label, path, count_max):
    found = results.read_results(path)
    summary = analysis.summarize_results(found, RADII)
    accuracy = [100 * summary["certified_accuracy"][analysis.radius_key(r)] for r in RADII]
    rows = len(found)
    mark = "" if rows == count_max else " (partial)"
    return (f"| {label} | " + " | ".join(f"{a:.1f}" for a in accuracy)
            + f" | {summary['acr']:.3f} | {100 * summary['abstain_rate']:.1f} | {rows}{mark} |")


def _samplewise_lines(path, grid_file):
    found = results.read_results(path)
    levels, counts = np.unique(found.sigma, return_counts=True)
    lines = ["chosen sigma_j (test images): " + ", ".join(f"{l:g}: {c}" for l, c in zip(levels, counts))]
    certified = found.radius_unallocated > 0
    cut = found.radius < found.radius_unallocated
    lines.append(f"allocation: {int(cut.sum())} of {int(certified.sum())} positive radii cut"
                 + (f" (largest cut {float((found.radius_unallocated - found.radius)[cut].max()):.4f})"
                    if cut.any() else ""))
    if os.path.exists(grid_file):
        with np.load(grid_file) as f:
            train_levels, train_counts = np.unique(f["sigma"], return_counts=True)
        lines.append("assign-sigma sigma_i (training images): "
                     + ", ".join(f"{l:g}: {c}" for l, c in zip(train_levels, train_counts)))
    return lines


def main():
    parser = argparse.ArgumentParser()
    parser.add_argument("--plot-dir", default=OUT)
    args = parser.parse_args()
    for name, files in SETS.items():
        present = {label: path for label, path in files.items() if os.path.exists(path)}
        if not present:
            continue
        counts = {label: len(results.read_results(path)) for label, path in present.items()}
        print(f"\n### {name}\n")
        print("| model | " + " | ".join(f"r={r}" for r in RADII) + " | ACR | abstain | rows |")
        print("| --- | " + " | ".join("---:" for _ in RADII) + " | ---: | ---: | ---: |")
        for label, path in present.items():
            print(_row(label, path, max(counts.values())))
        for label, path in present.items():
            if "sample-wise" in label:
                print(f"\n{label}:")
                for line in _samplewise_lines(path, TRAIN_SIGMA[name]):
                    print(f"- {line}")
        plot = os.path.join(args.plot_dir, f"{name.split()[0]}_samplewise.png")
        # analysis marks transductive files itself: the labels go without the table's mark
        analysis.plot_certified_accuracy(list(present.values()), plot,
                                         labels=[label.replace(" [transductive]", "") for label in present])
        print(f"\nplot: {os.path.relpath(plot)}")


if __name__ == "__main__":
    sys.exit(main())
