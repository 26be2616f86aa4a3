"""Issue 14, part 3: the accelerator check of the counting path. Run it through `benchmarks/device_check.sh`.

On a machine with a GPU (TensorFlow sees it), in one short run (a few minutes, no downloads):

1. samples/s of the CERTIFY counting path (`SmoothedClassifier.sample_counts`: seeded block noise, one compiled
   forward pass per batch, host loop) with a shipped ResNet-20 at batch 400 ... 20,000, in float32 and bfloat16,
   float32 also with the forward pass compiled by XLA (`jit_compile=True`), and both with noise scheme 3
   (`noise_scheme=3`: one RNG op per run of blocks instead of one per block; `tfsmooth.noise.NOISE_SCHEMES`);
2. for each noise scheme, the GPU's counts against the CPU's for a fixed seed (`--seed`, n = `--n` estimation draws of each of `--images`
   embedded test images at sigma = `--sigma`): the noise is drawn by the same stateless Philox ops on both devices,
   so the counts must be equal wherever no draw lies near a decision boundary, where float rounding of another
   device's kernels could flip an argmax. The margin (top-1 minus top-2 logit, float32 on the CPU) of every draw is
   computed; the check passes when every image whose smallest margin exceeds `--margin` has equal counts (images
   with a draw closer to the boundary are reported, not judged);
3. with more than one GPU, all of them in one `SmoothedClassifier(devices="all")` (pass p on GPU p mod D, D + 1 passes
   in flight): samples/s at `--multi-batch` against GPU:0 alone, and its counts against GPU:0's on the images judged
   in step 2 (every draw's margin > `--margin`: kernel roundings cannot flip them).

    bash benchmarks/device_check.sh                  # on the GPU machine
    .venv/bin/python benchmarks/device_check.py --allow-cpu --batches 400,1000 --num 4000 --images 2  # smoke test

Exit status: 0 when the counts check passes, 1 when it fails, 2 without a GPU (unless --allow-cpu). The output is
a markdown block for `benchmarks/RESULTS.md`.
"""

import argparse
import datetime
import os
import platform
import sys
import time

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

import numpy as np  # noqa: E402
import tensorflow as tf  # noqa: E402

from tfsmooth import counting, data, noise  # noqa: E402
from tfsmooth.models.io import load_base_model  # noqa: E402
from tfsmooth.smoothing import SmoothedClassifier  # noqa: E402

HERE = os.path.dirname(os.path.abspath(__file__))
MODEL = os.path.join(HERE, "results", "full_gaussian_sigma0.25", "base_model.keras")


def _ints(text):
    return [int(v) for v in text.split(",") if v]


def throughput(base, image, device, batches, num, dtypes):
    """{(dtype, batch): samples/s} of sample_counts on `device` (one warm-up call per setting, then one timed)."""
    rates = {}
    with tf.device(device):
        for dtype in dtypes:
            for batch in batches:
                precision, *flags = dtype.split("+")  # "+xla": the XLA-compiled forward pass; "+s3": noise scheme 3
                smoothed = SmoothedClassifier(base, 10, 0.25, compute_dtype=precision, jit_compile="xla" in flags,
                                              noise_scheme=3 if "s3" in flags else 2)
                smoothed.sample_counts(image[None], batch, batch_size=batch, seed=0)  # trace and warm up
                start = time.perf_counter()
                smoothed.sample_counts(image[None], max(num, batch), batch_size=batch, seed=1)
                rates[(dtype, batch)] = max(num, batch) / (time.perf_counter() - start)
    return rates


def margins(base, image, key, sigma, n, seed, noise_block=100, scheme=2):
    """Top-1 minus top-2 logit (float32, CPU) of each of the n estimation draws CERTIFY makes for `image` under noise
    scheme `scheme`, and the class counts of those draws (which must be the CPU's `sample_counts`: a check that the
    draws are the same)."""
    streams, block_index, _ = counting.block_plan(((noise.STREAM_ESTIMATION, n),), noise_block)
    with tf.device("/CPU:0"):
        seeds = noise.block_seeds(tf.constant(seed, tf.int64), tf.fill([len(streams)], tf.constant(key, tf.int64)),
                                  tf.constant(streams), tf.constant(block_index if scheme == 2 else 0 * block_index))
        sigmas = tf.fill([len(streams)], np.float32(sigma))
        delta = (noise.gaussian_blocks(seeds, noise_block, image.shape, sigmas) if scheme == 2 else
                 noise.gaussian_runs(seeds, tf.constant(block_index), noise_block, image.shape, sigmas))
        noisy = tf.reshape(image[None, None] + delta, [-1, *image.shape])[:n]
        logits = tf.concat([base(noisy[i:i + 1000], training=False) for i in range(0, n, 1000)], axis=0).numpy()
    top2 = np.sort(logits, axis=1)[:, -2:]
    return top2[:, 1] - top2[:, 0], np.bincount(logits.argmax(axis=1), minlength=logits.shape[1])


def all_devices(base, images, judged, batch, num, sigma, n, seed):
    """(samples/s on GPU:0, samples/s on every GPU, whether the counts of the `judged` images on every GPU equal
    GPU:0's): `SmoothedClassifier`'s own scheduling on devices=["GPU:0"] against devices="all"."""
    rates = []
    for devices in (["GPU:0"], "all"):
        smoothed = SmoothedClassifier(base, 10, 0.25, devices=devices)
        smoothed.sample_counts(images[:1], batch * (len(smoothed.devices) + 1), batch_size=batch, seed=0)  # warm up
        start = time.perf_counter()
        smoothed.sample_counts(images[:1], max(num, batch), batch_size=batch, seed=1)
        rates.append(max(num, batch) / (time.perf_counter() - start))
    keys = list(range(len(images)))
    one, every = (SmoothedClassifier(base, 10, sigma, devices=devices).sample_counts(
        images, n, batch_size=1000, seed=seed, keys=keys) for devices in (["GPU:0"], "all"))
    return rates[0], rates[1], bool(np.array_equal(one[judged], every[judged]))


def counts_on(base, images, keys, device, sigma, n, seed, scheme=2):
    with tf.device(device):
        smoothed = SmoothedClassifier(base, 10, sigma, noise_scheme=scheme)
        return smoothed.sample_counts(images, n, batch_size=1000, seed=seed, keys=keys)


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--model", default=MODEL)
    parser.add_argument("--batches", type=_ints, default=[400, 1000, 2000, 5000, 10000, 20000])
    parser.add_argument("--dtypes", default="float32,bfloat16,float32+xla,float32+s3,bfloat16+s3",
                        help="arithmetics to time; +xla: SmoothedClassifier(jit_compile=True); +s3: noise_scheme=3 "
                             "(one RNG op per run of blocks)")
    parser.add_argument("--num", type=int, default=100_000, help="draws per timed measurement")
    parser.add_argument("--images", type=int, default=10)
    parser.add_argument("--n", type=int, default=2000)
    parser.add_argument("--sigma", type=float, default=0.12)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--margin", type=float, default=1e-3)
    parser.add_argument("--multi-batch", type=int, default=5000, help="batch of the all-GPUs measurement")
    parser.add_argument("--allow-cpu", action="store_true", help="run without a GPU (smoke test of this script)")
    args = parser.parse_args()

    gpus = tf.config.list_physical_devices("GPU")
    if not gpus and not args.allow_cpu:
        print("no GPU visible to TensorFlow (tf.config.list_physical_devices('GPU') is empty): nothing to check")
        return 2
    device = "/GPU:0" if gpus else "/CPU:0"
    details = tf.config.experimental.get_device_details(gpus[0]) if gpus else {}
    print(f"## Device check ({datetime.date.today().isoformat()})\n")
    print(f"- machine: {platform.node()}, {os.cpu_count()} CPU cores; device {device} "
          f"{details.get('device_name', '(CPU: smoke test)')}; TensorFlow {tf.__version__}")
    print(f"- command: {' '.join(sys.argv)}\n")

    base = load_base_model(args.model)
    test_images, test_labels = [], []
    for image, label in data.load_dataset("cifar10_sample", "test").take(args.images):
        test_images.append(image.numpy())
        test_labels.append(int(label))
    images = np.stack(test_images)

    rates = throughput(base, images[0], device, args.batches, args.num, args.dtypes.split(","))
    print("| batch | " + " | ".join(f"{d} samples/s" for d in args.dtypes.split(",")) + " |")
    print("| ---: | " + " | ".join("---:" for _ in args.dtypes.split(",")) + " |")
    for batch in args.batches:
        print(f"| {batch} | " + " | ".join(f"{rates[(d, batch)]:,.0f}" for d in args.dtypes.split(",")) + " |")

    keys = list(range(args.images))
    failures, far = [], []
    for scheme in noise.NOISE_SCHEMES:
        on_device = counts_on(base, images, keys, device, args.sigma, args.n, args.seed, scheme)
        on_cpu = counts_on(base, images, keys, "/CPU:0", args.sigma, args.n, args.seed, scheme)
        judged, equal, wrong, judged_images = 0, 0, [], []
        print(f"\nCounts, noise scheme {scheme}, {device} vs CPU (seed {args.seed}, sigma {args.sigma}, n {args.n}):\n")
        print("| image | smallest margin | equal | differing draws |")
        print("| ---: | ---: | :---: | ---: |")
        for k, image in enumerate(images):
            draw_margins, rebuilt = margins(base, image, k, args.sigma, args.n, args.seed, scheme=scheme)
            if not np.array_equal(rebuilt, on_cpu[k]):
                print(f"the draws rebuilt for image {k} do not give the CPU's counts: this script is out of date")
                return 1
            margin = float(draw_margins.min())
            same = bool(np.array_equal(on_device[k], on_cpu[k]))
            differing = int(np.abs(on_device[k] - on_cpu[k]).sum() // 2)
            print(f"| {k} | {margin:.2e} | {'yes' if same else 'no'} | {differing} |")
            if margin > args.margin:
                judged_images.append(k)
                judged += 1
                equal += same
                if not same:
                    wrong.append(k)
        verdict = "PASS" if not wrong else f"FAIL (images {wrong})"
        print(f"\n{verdict} (scheme {scheme}): {equal} of {judged} images with every margin > {args.margin} have "
              f"equal counts ({args.images - judged} near a boundary, not judged).")
        failures += [(scheme, k) for k in wrong]
        if scheme == 2:
            far = judged_images  # the all-GPUs check below draws scheme 2
    if len(gpus) > 1:
        one, every, same = all_devices(base, images, far, args.multi_batch, args.num, args.sigma, args.n, args.seed)
        print(f"\nAll {len(gpus)} GPUs in one SmoothedClassifier(devices='all'), batch {args.multi_batch}: "
              f"{every:,.0f} samples/s against {one:,.0f} on GPU:0 alone ({every / one:.2f}x); counts of the "
              f"{len(far)} judged images equal to GPU:0's: {'yes' if same else 'NO'}.")
        failures += [] if same else ["all GPUs"]
    else:
        print(f"\n{len(gpus)} GPU(s): the all-GPUs check (devices='all') needs two or more; not run.")
    return 1 if failures else 0


if __name__ == "__main__":
    sys.exit(main())
