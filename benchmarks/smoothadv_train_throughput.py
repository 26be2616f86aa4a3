"""Images per second of SmoothAdv training: tfsmooth's `SmoothAdvModel` against plain PyTorch (issue 3, Sec. 5).

One SmoothAdv-PGD training step (Salman et al. 2019, Pseudocode 1, multi-noise): draw m noise vectors
per example, attack the smoothed soft classifier for T steps with the base classifier in inference
mode, then one SGD step on the cross-entropy at x_adv + delta_i for all m copies. Both sides train a
CIFAR ResNet-20 (the architecture is checked weight for weight, see `certify_throughput.py`) with SGD
(lr 0.1, momentum 0.9, coupled weight decay 1e-4), cross-entropy, and a per-step accuracy:

* tfsmooth: `SmoothAdvModel(models.cifar_resnet(20, weight_decay=1e-4), sigma, attack="pgd",
  epsilon, num_steps=T, num_noise_vec=m)` compiled as `tfsmooth.jobs.train.train` does it and driven by
  `fit` over an in-memory `tf.data` pipeline of random images; a run is one `fit` call of
  `steps + 1` steps, timed by a callback from the end of its first step to the end of its last,
  so the per-call set-up and tear-down of `fit` (paid once per epoch in real training) is left out;
  with `--tf-ablation`, also the same model with Keras' own BatchNormalization layers and the attack
  on the unfolded base classifier (tfsmooth before its fused batch norm and folded attack view);
* PyTorch: `benchmarks/_torch_reference.smooth_adv_train_step`, the loop of the paper's reference
  `train_pgd.py` (attack in eval mode with frozen parameters, then train mode and one step on all m
  copies), eager NCHW, eager channels_last, or with `torch.compile` of the model.

Both sides process the same work per step: `batch` clean images, m noisy copies each (the reference
code instead splits a batch of B into B/m images with m copies; here every image gets m copies, as
`SmoothAdvModel` does). Rates are clean images per second (noisy copies per second = m times that),
the median of `--repeats` interleaved runs after a warm-up; the ratio is tfsmooth / fastest PyTorch.

Benchmark-only dependency (not installed with tfsmooth): `pip install torch==2.13.0` (CPU wheel).

Usage (from the repository root):
    .venv/bin/python benchmarks/smoothadv_train_throughput.py --batch 64 --num-noise-vec 2 --num-steps 2
"""

from __future__ import annotations

import argparse
import time

from certify_throughput import (check_same_architecture, common_header, configure_tensorflow, emit, load_average,
                                machine_info, report, thread_counts, time_interleaved, torch_variant_names)

TORCH_VARIANTS = ("eager", "channels_last", "compile")


def add_workload_arguments(parser, steps_default: int, steps_help: str):
    """The training-step workload (batch, m, T, epsilon, sigma, steps); shared with profile_train_step.py."""
    parser.add_argument("--batch", type=int, default=64, help="clean images per training step (default 64)")
    parser.add_argument("--num-noise-vec", type=int, default=2, help="noise draws m per image (default 2)")
    parser.add_argument("--num-steps", type=int, default=2, help="attack steps T (default 2)")
    parser.add_argument("--epsilon", type=float, default=0.25, help="attack l2 radius, [0, 1] pixel scale")
    parser.add_argument("--sigma", type=float, default=0.25, help="noise level, l2 on the [0, 1] pixel scale")
    parser.add_argument("--steps", type=int, default=steps_default, help=f"{steps_help} (default {steps_default})")


def check_workload_arguments(parser, args, *counts: str):
    """parser.error unless the workload's counts (and `counts`) are >= 1, sigma > 0 and epsilon >= 0."""
    for name in ("batch", "num_noise_vec", "num_steps", "steps", *counts):
        if getattr(args, name) < 1:
            parser.error(f"--{name.replace('_', '-')} must be an integer >= 1, got {getattr(args, name)}")
    if not args.sigma > 0 or not args.epsilon >= 0:
        parser.error(f"--sigma must be > 0 and --epsilon >= 0, got {args.sigma} and {args.epsilon}")


def parse_args(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    add_workload_arguments(parser, 10, "training steps per timed run")
    parser.add_argument("--repeats", type=int, default=3, help="timed runs per variant; median reported")
    parser.add_argument("--threads", type=thread_counts, default=[2],
                        help="torch.set_num_threads; a comma-separated list times every variant at each (default 2)")
    parser.add_argument("--tf-threads", type=int, default=0,
                        help="TensorFlow intra- and inter-op threads; 0 keeps TensorFlow's default (one per core)")
    parser.add_argument("--variants", default=",".join(TORCH_VARIANTS),
                        help=f"comma-separated PyTorch variants among {', '.join(TORCH_VARIANTS)}")
    parser.add_argument("--tf-ablation", action="store_true",
                        help="also time tfsmooth with Keras' BatchNormalization and an unfolded attack model")
    parser.add_argument("--markdown", default=None, help="also write the results as a markdown section here")
    args = parser.parse_args(argv)
    check_workload_arguments(parser, args, "repeats")
    args.variants = [v.strip() for v in args.variants.split(",") if v.strip()]
    unknown = sorted(set(args.variants) - set(TORCH_VARIANTS))
    if args.tf_threads < 0:
        parser.error(f"--tf-threads must be >= 0, got {args.tf_threads}")
    if unknown or not args.variants:
        parser.error(f"--variants must be among {', '.join(TORCH_VARIANTS)}, got {unknown or 'none'}")
    return args


def random_data(args, pool=4):
    """`pool` batches of random pixels in [0, 1] ([N, 32, 32, 3] float32) and labels in [0, 10)."""
    import numpy as np

    rng = np.random.default_rng(0)
    images = rng.random((pool * args.batch, 32, 32, 3), dtype=np.float32)
    return images, rng.integers(0, 10, pool * args.batch).astype(np.int64)


def _keras_batch_norms(model):
    """`model` rebuilt with keras.layers.BatchNormalization in place of FusedBatchNormalization."""
    import keras

    def clone(layer):
        if isinstance(layer, keras.layers.BatchNormalization):
            return keras.layers.BatchNormalization.from_config(layer.get_config())
        return layer.__class__.from_config(layer.get_config())

    return keras.models.clone_model(model, clone_function=clone)


def tfsmooth_runner(images, labels, args, ablation=False):
    """run(steps) -> (wall s, CPU s) of `steps` SmoothAdv training steps in `SmoothAdvModel.fit`.

    ablation: Keras' BatchNormalization instead of the fused one, and the attack on the base
    classifier itself instead of its batch-norm-folded view (tfsmooth as of session 2)."""
    import keras
    import tensorflow as tf

    from tfsmooth import models
    from tfsmooth.training import SmoothAdvModel

    keras.utils.set_random_seed(0)
    base = models.cifar_resnet(20, weight_decay=1e-4)
    if ablation:
        base = _keras_batch_norms(base)
    model = SmoothAdvModel(base, args.sigma, attack="pgd",
                           epsilon=args.epsilon, num_steps=args.num_steps, num_noise_vec=args.num_noise_vec, seed=0)
    if ablation:
        object.__setattr__(model, "attack_model", base)
    model.compile(optimizer=keras.optimizers.SGD(0.1, momentum=0.9),  # as tfsmooth.jobs.train.train
                  loss=keras.losses.SparseCategoricalCrossentropy(from_logits=True), metrics=["accuracy"])
    ds = tf.data.Dataset.from_tensor_slices((images, labels)).batch(args.batch, drop_remainder=True)
    ds = ds.repeat().prefetch(2)

    class StepClock(keras.callbacks.Callback):
        """Wall and CPU clock at the end of every training step."""

        def on_train_begin(self, logs=None):
            self.ticks = []

        def on_train_batch_end(self, batch, logs=None):
            self.ticks.append((time.perf_counter(), time.process_time()))

    clock = StepClock()

    def run(steps):
        # One step more than timed: the rate counts steps 2..steps+1, end to end, with Keras'
        # per-step work (callbacks, metrics) but not fit's per-call set-up and tear-down, which a
        # real run pays once per epoch (its tear-down alone sometimes took ~2.5 s here).
        model.fit(ds, epochs=1, steps_per_epoch=steps + 1, verbose=0, shuffle=False, callbacks=[clock])
        (wall0, cpu0), (wall1, cpu1) = clock.ticks[0], clock.ticks[-1]
        return wall1 - wall0, cpu1 - cpu0

    if ablation:
        return run, "tfsmooth ablation: Keras BatchNormalization, unfolded attack"
    return run, f"tfsmooth (TF {tf.__version__}, SmoothAdvModel.fit)"


def torch_runners(images, labels, args):
    """{variant: run(steps)} for the PyTorch reference training step."""
    import torch

    import _torch_reference as ref

    torch.manual_seed(0)
    x_all = torch.from_numpy(images.transpose(0, 3, 1, 2).copy())
    y_all = torch.from_numpy(labels)
    batches = len(labels) // args.batch
    runners = {}
    for name, variant, threads, _ in torch_variant_names(args):  # float32 only
        channels_last = variant == "channels_last"
        model = ref.CifarResNet(20)
        if channels_last:
            model = model.to(memory_format=torch.channels_last)
        optimizer = torch.optim.SGD(model.parameters(), lr=0.1, momentum=0.9, weight_decay=1e-4)
        if variant == "compile":
            model = torch.compile(model)
        runners[name] = _torch_run(ref, model, optimizer, x_all, y_all, batches, args, channels_last, threads)
    return runners


def _torch_run(ref, model, optimizer, x_all, y_all, batches, args, channels_last, threads):
    import torch

    def run(steps):
        torch.set_num_threads(threads)
        for step in range(steps):
            i = step % batches
            x = x_all[i * args.batch:(i + 1) * args.batch]
            y = y_all[i * args.batch:(i + 1) * args.batch]
            ref.smooth_adv_train_step(model, optimizer, x, y, sigma=args.sigma, num_noise_vec=args.num_noise_vec,
                                      epsilon=args.epsilon, num_steps=args.num_steps, channels_last=channels_last)

    return run


def main(argv=None):
    args = parse_args(argv)
    import torch

    info = machine_info()
    tf_threads = configure_tensorflow(args.tf_threads)
    load_before = load_average()
    print(f"{info['cpu']}, {info['cores']} cores; load average {load_before}", flush=True)
    arch_err = check_same_architecture()
    images, labels = random_data(args)
    tf_run, tf_name = tfsmooth_runner(images, labels, args)
    runners = {tf_name: tf_run}
    if args.tf_ablation:
        ablation_run, ablation_name = tfsmooth_runner(images, labels, args, ablation=True)
        runners[ablation_name] = ablation_run
    runners.update({f"PyTorch {n}": r for n, r in torch_runners(images, labels, args).items()})
    wall, cpu = time_interleaved(runners, 2, args.steps, args.repeats, items_per_unit=args.batch)
    header = common_header(info, args, "smoothadv_train_throughput.py", load_before, load_average(), arch_err,
                           torch.__version__, tf_threads)
    header.append(
        f"- workload: SmoothAdv-PGD training of a CIFAR ResNet-20 on random 32x32x3 images, batch {args.batch}, "
        f"m={args.num_noise_vec}, T={args.num_steps}, epsilon={args.epsilon}, sigma={args.sigma}; SGD lr 0.1, "
        f"momentum 0.9, weight decay 1e-4; {args.steps} steps per run, median of {args.repeats} interleaved runs")
    emit(report(header, wall, cpu, "clean images", 1.2)[0], args.markdown)


if __name__ == "__main__":
    main()
