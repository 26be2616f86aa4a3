"""oneDNN time of one SmoothAdv training step, tfsmooth against PyTorch, per primitive kind (issue 3, Sec. 5).

Both frameworks run their convolutions, and most of a ResNet-20 training step, in the same oneDNN
kernels. This script runs each side in its own process with ONEDNN_VERBOSE=1 (oneDNN then prints
one line per executed primitive with its execution time in ms), on the workload of
`smoothadv_train_throughput.py` (same runners: `SmoothAdvModel.fit` and the PyTorch reference step),
and sums those times per (primitive kind, propagation kind) over `--steps` training steps after a
warm-up. It prints ms per training step for each side, the total, and the wall time per step of the
verbose run (printing slows it).

The total answers a bounding question: if everything outside oneDNN cost nothing, tfsmooth could
not train faster than batch / (its oneDNN seconds per step) images per second; compare that with
PyTorch's measured rate (`smoothadv_train_throughput.py`, without verbose output).

TensorFlow runs independent ops concurrently (two inter-op threads by default), and primitives that
overlap share the cores, so their times overstate the work; `--tf-inter-op 1` (the default here)
runs one op at a time, so the sum is the work. PyTorch runs one op at a time anyway.

Usage (from the repository root):
    .venv/bin/python benchmarks/onednn_breakdown.py --batch 64 --steps 6
"""

from __future__ import annotations

import argparse
import collections
import os
import subprocess
import sys
import time

from smoothadv_train_throughput import (add_workload_arguments, check_workload_arguments, random_data,
                                        tfsmooth_runner, torch_runners)

MARK = "=====timed steps====="


def parse_args(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    add_workload_arguments(parser, 6, "timed training steps per side")
    parser.add_argument("--threads", type=int, default=2, help="torch.set_num_threads (default 2)")
    parser.add_argument("--tf-inter-op", type=int, default=1,
                        help="TensorFlow inter-op threads; 1 sums non-overlapping primitives (default 1)")
    parser.add_argument("--side", choices=("tfsmooth", "torch"), default=None, help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    check_workload_arguments(parser, args, "threads", "tf_inter_op")
    return args


def run_side(args):
    """Child process: warm up, print MARK, time `args.steps` steps, print the wall seconds per step."""
    images, labels = random_data(args)
    if args.side == "tfsmooth":
        import tensorflow as tf

        tf.config.threading.set_inter_op_parallelism_threads(args.tf_inter_op)
        run, _ = tfsmooth_runner(images, labels, args)
        steps_run = args.steps + 1  # tfsmooth_runner's run(k) runs k + 1 fit steps, times the last k
    else:
        args.variants, args.threads = ["compile"], [args.threads]
        (run,) = torch_runners(images, labels, args).values()
        steps_run = args.steps
    run(3)
    print(MARK, flush=True)
    start = time.perf_counter()
    run(args.steps)
    print(f"{MARK} {steps_run} {(time.perf_counter() - start) / steps_run}", flush=True)


def primitive_times(lines):
    """({(kind, propagation): ms}, steps, wall s per step) from the verbose output after the first MARK.

    A oneDNN 3 verbose line reads onednn_verbose[,timestamp],v1,primitive,exec,cpu,<kind>,<impl>,
    <propagation>,<memory descriptors>,<attributes>,<aux>,<problem>,<ms>."""
    totals, started = collections.Counter(), False
    for line in lines:
        if line.startswith(MARK):
            if started:
                _, steps, wall = line.split()[-3:]
                return totals, int(steps), float(wall)
            started = True
        elif started and line.startswith("onednn_verbose") and ",exec," in line:
            fields = line.rstrip("\n").split(",")
            i = fields.index("exec")
            totals[(fields[i + 2], fields[i + 4])] += float(fields[-1])
    raise RuntimeError("the child process did not finish its timed steps (see its output above)")


def main(argv=None):
    args = parse_args(argv)
    if args.side:
        return run_side(args)
    env = dict(os.environ, ONEDNN_VERBOSE="1", TF_CPP_MIN_LOG_LEVEL="2")
    results = {}
    for side in ("tfsmooth", "torch"):
        cmd = [sys.executable, __file__, *(argv if argv is not None else sys.argv[1:]), "--side", side]
        proc = subprocess.run(cmd, env=env, capture_output=True, text=True)
        if proc.returncode:
            sys.stderr.write(proc.stdout[-4000:] + proc.stderr[-4000:])
            raise SystemExit(f"{side} side failed with exit code {proc.returncode}")
        results[side] = primitive_times(proc.stdout.splitlines())
    names = {"tfsmooth": f"tfsmooth ({args.tf_inter_op} inter-op)", "torch": f"PyTorch compile ({args.threads} threads)"}
    keys = sorted({k for totals, _, _ in results.values() for k in totals},
                  key=lambda k: -max(results[s][0][k] / results[s][1] for s in results))
    print(f"batch {args.batch}, m={args.num_noise_vec}, T={args.num_steps}: oneDNN ms per training step")
    print(f"| primitive | {' | '.join(names.values())} |\n| --- | ---: | ---: |")
    for kind, prop in keys:
        row = [f"{results[s][0][(kind, prop)] / results[s][1]:.1f}" for s in results]
        print(f"| {kind} {prop} | {' | '.join(row)} |")
    total = {s: sum(results[s][0].values()) / results[s][1] for s in results}
    print(f"| **oneDNN total** | {' | '.join(f'{total[s]:.1f}' for s in results)} |")
    print(f"| wall per step, verbose run | {' | '.join(f'{1e3 * results[s][2]:.1f}' for s in results)} |")
    print(f"tfsmooth bound if only oneDNN took time: {1e3 * args.batch / total['tfsmooth']:.1f} clean images/s")


if __name__ == "__main__":
    main()
