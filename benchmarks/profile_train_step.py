"""Where the time of a SmoothAdv training step goes: TensorFlow profiler, op time summed per op type.

Runs `SmoothAdvModel.fit` on a CIFAR ResNet-20 (random images, as `smoothadv_train_throughput.py`)
under `tf.profiler.experimental`, reads the trace (XSpace protobuf) and prints the time of every op
type, summed over the profiled steps, next to the time of the traced train function. Ops that run
concurrently are summed, so the column can exceed the function's wall time.

`--ablation` profiles the step as tfsmooth ran it before the fused batch norm and the folded attack
view (Keras' BatchNormalization; attack on the unfolded base classifier).

Usage (from the repository root):
    .venv/bin/python benchmarks/profile_train_step.py --batch 64 --steps 6 [--ablation]
"""

from __future__ import annotations

import argparse
import collections
import glob
import tempfile
import time

from smoothadv_train_throughput import (add_workload_arguments, check_workload_arguments, random_data,
                                        tfsmooth_runner)


def parse_args(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    add_workload_arguments(parser, 6, "profiled training steps")
    parser.add_argument("--top", type=int, default=25, help="op types listed (default 25)")
    parser.add_argument("--ablation", action="store_true",
                        help="Keras BatchNormalization and the attack on the unfolded base classifier")
    args = parser.parse_args(argv)
    check_workload_arguments(parser, args, "top")
    return args


def op_times(logdir):
    """{op type: milliseconds} summed over the trace's events named "name:Type" (TensorFlow ops)."""
    from tensorflow.tsl.profiler.protobuf import xplane_pb2

    totals = collections.Counter()
    for path in glob.glob(f"{logdir}/**/*.xplane.pb", recursive=True):
        space = xplane_pb2.XSpace()
        with open(path, "rb") as f:
            space.ParseFromString(f.read())
        for plane in space.planes:
            for line in plane.lines:
                for event in line.events:
                    name = plane.event_metadata[event.metadata_id].name
                    if ":" in name and not name.startswith("$"):
                        totals[name.rsplit(":", 1)[1].strip()] += event.duration_ps / 1e9
    return totals


def main(argv=None):
    args = parse_args(argv)
    import tensorflow as tf

    images, labels = random_data(args)
    run, name = tfsmooth_runner(images, labels, args, ablation=args.ablation)
    run(2)  # trace and warm up
    with tempfile.TemporaryDirectory() as logdir:
        tf.profiler.experimental.start(logdir)
        start = time.perf_counter()
        run(args.steps)
        wall = time.perf_counter() - start
        tf.profiler.experimental.stop()
        totals = op_times(logdir)
    print(f"{name}: batch {args.batch}, m={args.num_noise_vec}, T={args.num_steps}; {args.steps + 1} profiled "
          f"fit steps in {wall:.2f} s (profiling slows the run)")
    print("| op type | ms | share |\n| --- | ---: | ---: |")
    ops = {k: v for k, v in totals.items() if not k.startswith(("__inference", "Process", "Run"))}
    functions = {k: v for k, v in totals.items() if k.startswith("__inference")}
    for op, ms in collections.Counter(ops).most_common(args.top):
        print(f"| {op} | {ms:.1f} | {100 * ms / sum(ops.values()):.1f} % |")
    for function, ms in functions.items():
        print(f"traced function {function}: {ms:.1f} ms")


if __name__ == "__main__":
    main()
