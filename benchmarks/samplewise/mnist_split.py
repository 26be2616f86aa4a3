"""Issue 13's offline MNIST data set: only the official *test* idx files are at hand (`../shared/data/mnist`), so the
experiment trains on t10k's first 5,000 images and certifies on the other 5,000. This writes that split as a data set
`.npz` (x_train, y_train, x_test, y_test; uint8 images [N, 28, 28, 1]) that every command takes as --dataset.

    .venv/bin/python benchmarks/samplewise/mnist_split.py --mnist-dir ../shared/data/mnist --out runs/mnist_t10k_split.npz

Numbers computed on it are *not* comparable with results on MNIST's official split: say so wherever they appear.
"""

import argparse
import os
import sys

import numpy as np

from tfsmooth import data, files

TRAIN = 5_000


def main():
    parser = argparse.ArgumentParser()
    parser.add_argument("--mnist-dir", default=os.path.join("..", "shared", "data", "mnist"))
    parser.add_argument("--out", required=True)
    args = parser.parse_args()
    if not args.out.endswith(".npz"):
        raise SystemExit(f"--out must end in .npz, got {args.out!r}")
    images, labels = data.read_mnist_arrays(args.mnist_dir, "test")
    os.makedirs(os.path.dirname(os.path.abspath(args.out)), exist_ok=True)
    files.atomic_write(args.out, lambda path: np.savez(
        path, x_train=images[:TRAIN], y_train=labels[:TRAIN].astype(np.int64), x_test=images[TRAIN:],
        y_test=labels[TRAIN:].astype(np.int64)))
    print(f"{args.out}: {TRAIN} training and {len(images) - TRAIN} test images from MNIST t10k")


if __name__ == "__main__":
    sys.exit(main())
