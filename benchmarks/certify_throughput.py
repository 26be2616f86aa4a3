"""Noisy samples per second of the certification path: tfsmooth against plain PyTorch (issue 2, Sec. 9).

Measures, in one process on the same machine, the rate at which the counting loop of CERTIFY
(Cohen, Rosenfeld & Kolter 2019, Sec. 3.2: draw delta ~ N(0, sigma^2 I), classify x + delta with the
base classifier, count top-1 labels) gets through noisy copies of one CIFAR-10 image with a
CIFAR ResNet-20 (widths 16/32/64, basic blocks, projection shortcuts, normalization first):

* tfsmooth: `SmoothedClassifier(models.cifar_resnet(20), 10, sigma, compute_dtype=...).sample_counts(image, num,
  batch_size, seed)`, the library's own path (seeded block noise, compiled counting, host loop).
* PyTorch: the same architecture (checked weight for weight against the Keras model before timing)
  in eval mode under `torch.inference_mode()`, driven by the sampling loop of Cohen et al.'s
  reference `Smooth._sample_noise` (repeat the image, add randn * sigma, argmax, bincount), in
  several honestly tuned variants: NCHW or channels_last memory format, eager or `torch.compile`
  (Inductor, optionally with `freezing`, which folds batch norm into the convolutions); with
  `--torch-workers 2`, also as two concurrent single-process loops (Python threads) sharing the draws,
  PyTorch's counterpart of tfsmooth's `parallel_passes`.

`--precision bfloat16` runs both sides in bfloat16: tfsmooth with `compute_dtype="bfloat16"`, PyTorch
with `torch.autocast` and with model and inputs cast to bfloat16 (both timed unless `--torch-bf16`).

Each variant is warmed up (tracing / compilation excluded from the timings), then the variants are
timed in interleaved rounds, so a change in the machine's load hits all of them alike; the report is
the median over `--repeats` rounds. The ratio is tfsmooth / the fastest PyTorch variant.

Benchmark-only dependency (not installed with tfsmooth): `pip install torch==2.13.0` (CPU wheel).

Usage (from the repository root):
    .venv/bin/python benchmarks/certify_throughput.py --batch 400 --num 10000 --repeats 3
    .venv/bin/python benchmarks/certify_throughput.py --variants eager,channels_last --markdown out.md

The machine's load average is printed before and after: on a shared machine, run it when the load
is low and record the load with the numbers.
"""

from __future__ import annotations

import argparse
import datetime
import os
import platform
import statistics
import sys
import time

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

TORCH_VARIANTS = ("eager", "channels_last", "compile", "compile_freezing")
"""eager: NCHW eager; channels_last: NHWC memory format, eager; compile: torch.compile (Inductor,
default mode) of the model; compile_freezing: the same with inductor `freezing` (constant-folds
weights, folds batch norm into convolutions, prepacks oneDNN weights)."""


def parse_args(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--batch", type=int, default=400, help="noisy copies per forward pass (default 400)")
    parser.add_argument("--num", type=int, default=10000, help="noisy draws per timed run (default 10000)")
    parser.add_argument("--repeats", type=int, default=3, help="timed runs per variant; median reported (default 3)")
    parser.add_argument("--sigma", type=float, default=0.25, help="noise level, l2 on the [0, 1] pixel scale")
    parser.add_argument("--threads", type=thread_counts, default=[2],
                        help="torch.set_num_threads; a comma-separated list times every variant at each (default 2)")
    parser.add_argument("--torch-workers", type=thread_counts, default=[1],
                        help="PyTorch Python threads sharing each run's draws (each with --threads intra-op "
                             "threads); e.g. '1,2' with --threads 1 also times 2 concurrent single-threaded "
                             "loops, PyTorch's counterpart of tfsmooth's parallel_passes (default 1)")
    parser.add_argument("--tf-threads", type=int, default=0,
                        help="TensorFlow intra- and inter-op threads; 0 keeps TensorFlow's default (one per core)")
    parser.add_argument("--variants", default=",".join(TORCH_VARIANTS),
                        help=f"comma-separated PyTorch variants among {', '.join(TORCH_VARIANTS)}")
    parser.add_argument("--precision", choices=("float32", "bfloat16"), default="float32",
                        help="arithmetic on both sides: float32 (default), or bfloat16 (tfsmooth compute_dtype="
                             "'bfloat16'; PyTorch by autocast and/or by casting model and inputs)")
    parser.add_argument("--torch-bf16", choices=("autocast", "cast", "both"), default="both",
                        help="with --precision bfloat16: how PyTorch runs in bfloat16 (default: time both)")
    parser.add_argument("--markdown", default=None, help="also write the results as a markdown section here")
    args = parser.parse_args(argv)
    for name in ("batch", "num", "repeats"):
        if getattr(args, name) < 1:
            parser.error(f"--{name} must be an integer >= 1, got {getattr(args, name)}")
    if not args.sigma > 0:
        parser.error(f"--sigma must be > 0, got {args.sigma}")
    args.variants = [v.strip() for v in args.variants.split(",") if v.strip()]
    unknown = sorted(set(args.variants) - set(TORCH_VARIANTS))
    if args.tf_threads < 0:
        parser.error(f"--tf-threads must be >= 0, got {args.tf_threads}")
    if unknown or not args.variants:
        parser.error(f"--variants must be among {', '.join(TORCH_VARIANTS)}, got {unknown or 'none'}")
    return args


def thread_counts(text):
    """Parses "2" or "1,2" into [2] or [1, 2] (argparse type)."""
    try:
        counts = [int(part) for part in text.split(",")]
    except ValueError:
        counts = []
    if not counts or min(counts) < 1:
        raise argparse.ArgumentTypeError(f"expected integers >= 1 separated by commas, got {text!r}")
    return counts


def torch_variant_names(args):
    """[(name, variant, threads, bf16 mode or None)] for every requested variant at every thread count
    (and, in bfloat16, for each way of running PyTorch in bfloat16)."""
    modes = [None]
    if getattr(args, "precision", "float32") == "bfloat16":
        modes = ["autocast", "cast"] if args.torch_bf16 == "both" else [args.torch_bf16]
    names = []
    for threads in args.threads:
        for variant in args.variants:
            for mode in modes:
                name = variant if mode is None else f"{variant} bf16-{mode}"
                names.append((name if len(args.threads) == 1 else f"{name}, {threads} threads", variant, threads, mode))
    return names


def machine_info():
    """Date, CPU model, core count and Python version (strings for the report)."""
    model = platform.processor() or "unknown"
    try:
        with open("/proc/cpuinfo") as f:
            model = next(line.split(":", 1)[1].strip() for line in f if line.startswith("model name"))
    except (OSError, StopIteration):
        pass
    return {"date": datetime.datetime.now().astimezone().isoformat(timespec="minutes"), "cpu": model,
            "cores": os.cpu_count(), "python": platform.python_version()}


def configure_tensorflow(tf_threads):
    """Sets TensorFlow's thread pools (before any op runs); returns a description for the report."""
    import tensorflow as tf

    if tf_threads:
        tf.config.threading.set_intra_op_parallelism_threads(tf_threads)
        tf.config.threading.set_inter_op_parallelism_threads(tf_threads)
        return f"TensorFlow {tf_threads} intra-/inter-op threads"
    return "TensorFlow default threads"


def load_average():
    return "{:.2f} {:.2f} {:.2f}".format(*os.getloadavg())


def tfsmooth_runner(image, args):
    """Returns run(num), which counts `num` draws through the library path, and a label."""
    import tensorflow as tf
    from tfsmooth import models, smoothing

    smoothed = smoothing.SmoothedClassifier(models.cifar_resnet(20), 10, args.sigma, compute_dtype=args.precision)
    batch = image[None]

    def run(num):
        _checked(smoothed.sample_counts(batch, num, batch_size=args.batch, seed=0)[0], num)

    return run, (f"tfsmooth (TF {tf.__version__}, sample_counts, noise_block={smoothed.noise_block}, "
                 f"compute_dtype={smoothed.compute_dtype}, parallel_passes={smoothed.parallel_passes})")


def torch_runners(image, args):
    """Returns {variant: run(num)} for the requested PyTorch variants (and thread counts)."""
    import torch

    import _torch_reference as ref

    x = torch.from_numpy(image.transpose(2, 0, 1).copy())
    runners = {}
    for name, variant, threads, mode in torch_variant_names(args):
        for workers in args.torch_workers:
            model = ref.CifarResNet(20).eval()
            if mode == "cast":
                model = model.to(torch.bfloat16)
            channels_last = variant == "channels_last"
            if channels_last:
                model = model.to(memory_format=torch.channels_last)
            if variant.startswith("compile"):  # compiled lazily, at the warm-up call
                model = torch.compile(model, options={"freezing": variant == "compile_freezing"})
            label = name if workers == 1 else f"{name}, {workers} workers x {threads} thread(s)"
            runners[label] = _torch_run(ref, model, x, args, channels_last, threads, mode, workers)
    return runners


def _torch_run(ref, model, x, args, channels_last, threads, mode=None, workers=1):
    """run(num) for one PyTorch variant; mode: None (float32), "autocast" (torch.autocast to bfloat16,
    which keeps precision-sensitive ops in float32) or "cast" (model and noisy inputs in bfloat16).
    workers > 1: that many Python threads each run the sampling loop on their share of the draws at
    once (PyTorch releases the GIL inside its kernels), each with `threads` intra-op threads."""
    import concurrent.futures

    import torch

    dtype = torch.bfloat16 if mode == "cast" else None

    def loop(num):
        with torch.autocast("cpu", dtype=torch.bfloat16, enabled=mode == "autocast"):
            return ref.sample_noise_counts(model, x, num, args.batch, args.sigma, 10, channels_last, dtype)

    def run(num):
        torch.set_num_threads(threads)
        if workers == 1:
            _checked(loop(num), num)
            return
        shares = [num // workers + (i < num % workers) for i in range(workers)]
        with concurrent.futures.ThreadPoolExecutor(workers) as pool:
            _checked(sum(pool.map(loop, shares)), num)

    return run


def _checked(counts, num):
    if int(counts.sum()) != num:
        raise RuntimeError(f"counts sum to {int(counts.sum())}, expected {num} draws")


def check_same_architecture():
    """Copies the Keras ResNet-20's weights into the torch one and compares logits (raises if unequal)."""
    import keras
    import numpy as np
    import torch

    import _torch_reference as ref
    from tfsmooth import models

    keras_model = models.cifar_resnet(20)
    rng = np.random.default_rng(1)
    for layer in keras_model.layers:  # non-trivial batch-norm statistics, so a mix-up shows
        if isinstance(layer, keras.layers.BatchNormalization):
            shape = layer.get_weights()[0].shape
            layer.set_weights([rng.uniform(0.5, 1.5, shape), rng.normal(0, 0.1, shape),
                               rng.normal(0, 0.1, shape), rng.uniform(0.5, 2.0, shape)])
    # Keras defaults: batch-norm epsilon 1e-3, "same" padding 0/1 on stride-2 convolutions.
    torch_model = ref.CifarResNet(20, bn_eps=1e-3, tf_padding=True).eval()
    ref.load_keras_weights(torch_model, keras_model)
    x = rng.random((4, 32, 32, 3), dtype=np.float32)
    expected = keras_model(x, training=False).numpy()
    with torch.inference_mode():
        got = torch_model(torch.from_numpy(x.transpose(0, 3, 1, 2).copy())).numpy()
    err = float(np.abs(expected - got).max())
    if err > 1e-3 * max(1.0, float(np.abs(expected).max())):
        raise RuntimeError(f"the PyTorch ResNet-20 does not reproduce the Keras one: max |logit diff| {err}")
    return err


def time_interleaved(runners, warm, work, repeats, items_per_unit=1):
    """Times `runners` ({name: run(units)}) fairly on a shared machine.

    Each runner is first called once with `warm` units (tracing, compilation, caches: not timed);
    then `repeats` rounds call every runner in turn with `work` units, so that a change in the
    machine's load during the run affects all runners alike. A runner returns None (the whole call
    is timed) or its own (wall seconds, CPU seconds) for the `units` of work, when the call
    includes set-up that is not part of the rate.

    Returns:
        ({name: [items per wall-clock second]}, {name: [items per CPU-second of this process]}),
        one entry per round; items = work * items_per_unit. CPU time counts all threads, spinning
        included; it is steadier than wall-clock time when other jobs share the cores.
    """
    for name, run in runners.items():
        start = time.perf_counter()
        run(warm)
        print(f"  warm-up {name}: {time.perf_counter() - start:.1f} s", flush=True)
    wall = {name: [] for name in runners}
    cpu = {name: [] for name in runners}
    for round_index in range(repeats):
        for name, run in runners.items():
            start, start_cpu = time.perf_counter(), time.process_time()
            measured = run(work)
            seconds, cpu_seconds = time.perf_counter() - start, time.process_time() - start_cpu
            if measured is not None:  # the runner timed its own steady state
                seconds, cpu_seconds = measured
            wall[name].append(work * items_per_unit / seconds)
            cpu[name].append(work * items_per_unit / cpu_seconds)
        print(f"  round {round_index + 1}: " + ", ".join(f"{n} {r[-1]:.1f}/s" for n, r in wall.items()), flush=True)
    return wall, cpu


def result_table(wall, cpu, unit):
    """Markdown table rows: name, median wall rate, its runs, median rate per CPU-second."""
    lines = [f"| implementation | {unit}/s (median) | runs | {unit} per CPU-second |", "| --- | ---: | --- | ---: |"]
    for name in wall:
        runs = ", ".join(f"{r:.1f}" for r in wall[name])
        lines.append(f"| {name} | {statistics.median(wall[name]):.1f} | {runs} | {statistics.median(cpu[name]):.1f} |")
    return lines


def report(header, wall, cpu, unit, target):
    """The markdown section: `header` lines, the table, and the ratio of the first runner (tfsmooth)
    to the fastest PyTorch variant (runners named "PyTorch ...") by median wall-clock rate.
    Returns (text, ratio)."""
    medians = {name: statistics.median(rates) for name, rates in wall.items()}
    first = next(iter(wall))
    others = [name for name in wall if name.startswith("PyTorch")]
    best = max(others, key=medians.get)
    ratio = medians[first] / medians[best]
    lines = [*header, "", *result_table(wall, cpu, unit), "",
             f"**ratio tfsmooth / fastest PyTorch ({best}) = {ratio:.2f}** (target >= {target})"]
    return "\n".join(lines), ratio


def emit(text, markdown):
    """Prints the report and, if `markdown` is a path, writes it there too."""
    print(text)
    if markdown:
        with open(markdown, "w", encoding="utf-8") as f:
            f.write(text + "\n")


def common_header(info, args, script, load_before, load_after, arch_err, torch_version, tf_threads):
    command = f"python benchmarks/{script} " + " ".join(sys.argv[1:])
    return [
        f"- date: {info['date']}",
        f"- machine: {info['cpu']}, {info['cores']} cores; Python {info['python']}; torch {torch_version} "
        f"with torch.set_num_threads({', '.join(map(str, args.threads))}) and "
        f"{', '.join(map(str, getattr(args, 'torch_workers', [1])))} worker thread(s); {tf_threads}",
        f"- command: `{command.strip()}`",
        f"- load average (1/5/15 min) before: {load_before}; after: {load_after}",
        f"- architecture check: the torch ResNet-20 given the Keras weights reproduces the Keras logits "
        f"(max |diff| {arch_err:.1e})",
    ]


def main(argv=None):
    args = parse_args(argv)
    import numpy as np
    import torch

    info = machine_info()
    tf_threads = configure_tensorflow(args.tf_threads)
    load_before = load_average()
    print(f"{info['cpu']}, {info['cores']} cores; load average {load_before}", flush=True)
    arch_err = check_same_architecture()
    image = np.random.default_rng(0).random((32, 32, 3), dtype=np.float32)
    tf_run, tf_name = tfsmooth_runner(image, args)
    runners = {tf_name: tf_run, **{f"PyTorch {n}": r for n, r in torch_runners(image, args).items()}}
    warm = args.batch + args.num % args.batch  # covers the full and the last partial batch shape
    wall, cpu = time_interleaved(runners, warm, args.num, args.repeats)
    header = common_header(info, args, "certify_throughput.py", load_before, load_average(), arch_err,
                           torch.__version__, tf_threads)
    header.append(f"- workload: CIFAR ResNet-20 (random weights), one 32x32x3 image, sigma={args.sigma}, "
                  f"batch {args.batch}, {args.num} noisy draws per run, median of {args.repeats} interleaved runs, "
                  f"{args.precision} on both sides")
    emit(report(header, wall, cpu, "noisy samples", 1.3)[0], args.markdown)


if __name__ == "__main__":
    main()
