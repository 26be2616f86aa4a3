"""`tfsmooth assign-sigma`: each training example's own noise level, from a pretrained model (sample-wise smoothing)."""

from __future__ import annotations

import collections

import click

from tfsmooth.cli._common import COUNT, NON_NEGATIVE, library_errors, quiet_tensorflow
from tfsmooth.cli.certify import _parse_sigma_grid


@click.command("assign-sigma")
@click.argument("model", type=click.Path(dir_okay=False))
@click.option("--dataset", default="cifar10", show_default=True,
              help="The training set: cifar10, cifar10_sample (embedded), mnist, tfds:NAME or a .npz path.")
@click.option("--data-dir", type=click.Path(file_okay=False), default=None,
              help="cifar10: CIFAR-10 binary directory (default $TFSMOOTH_DATA_DIR, else tfds); mnist: idx "
              "files directory (default $TFSMOOTH_MNIST_DIR, else tfds); tfds:NAME: tfds's data directory.")
@click.option("--sigma-grid", default="0.12,0.25,0.5,1.0", show_default=True, callback=_parse_sigma_grid,
              metavar="S1,S2,...", help="The noise levels to choose from.")
@click.option("--num-noise-vec", type=COUNT, default=16, show_default=True,
              help="Noisy copies k per example and level that estimate p_A (>= 2).")
@click.option("--train-examples", type=NON_NEGATIVE, default=0, show_default=True,
              help="Only the first this many training images (0: all), as `train --train-examples`.")
@click.option("--batch", type=COUNT, default=1000, show_default=True, help="Noisy copies per forward pass.")
@click.option("--seed", type=NON_NEGATIVE, default=0, show_default=True)
@click.option("--out", type=click.Path(dir_okay=False), required=True, help="Output .npz file.")
def assign_sigma(model, dataset, data_dir, sigma_grid, num_noise_vec, train_examples, batch, seed, out):
    """Choose each training image's noise level from MODEL's outputs (pretrain -> finetune, sample-wise smoothing).

    Per image and level: k noisy copies; sigma_i maximizes sigma * Phi^-1(p_hat) among the levels where MODEL's
    vote is the true label (fallback: the smallest level). Then fine-tune with `tfsmooth train --init-from MODEL
    --sigma-file OUT`. Writes an .npz (sigma [N] in data set order, sigma_grid, dataset, split, data_source).
    """
    quiet_tensorflow()
    from tfsmooth import jobs

    with library_errors():
        config = jobs.AssignSigmaConfig(model=model, dataset=dataset, data_dir=data_dir, sigma_grid=sigma_grid,
                                        num_noise_vec=num_noise_vec, train_examples=train_examples, batch=batch,
                                        seed=seed)
        sigma = jobs.assign_sigma(config, out)
    chosen = ", ".join(f"{level:g}: {count}" for level, count in sorted(collections.Counter(sigma.tolist()).items()))
    click.echo(f"{len(sigma)} noise levels of {dataset}:train written to {out} ({{{chosen}}})")
