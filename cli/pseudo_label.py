"""`tfsmooth pseudo-label`: a teacher's labels for unlabeled images (self-training)."""

from __future__ import annotations

import click

from tfsmooth import registry
from tfsmooth.cli._common import COUNT, library_errors, quiet_tensorflow


@click.command("pseudo-label")
@click.argument("teacher", type=click.Path(dir_okay=False))
@click.option("--dataset", default="cifar10", show_default=True,
              help="cifar10, cifar10_sample (embedded), mnist, tfds:NAME (a tensorflow-datasets "
              "image classification set) or a path to a .npz of x_train, y_train, x_test, y_test.")
@click.option("--split", type=click.Choice(registry.SPLITS), default="train", show_default=True,
              help="Which split to label (`train --unlabeled` accepts train splits only).")
@click.option("--data-dir", type=click.Path(file_okay=False), default=None,
              help="cifar10: CIFAR-10 binary directory (default $TFSMOOTH_DATA_DIR, else tfds); mnist: idx "
              "files directory (default $TFSMOOTH_MNIST_DIR, else tfds); tfds:NAME: tfds's data directory.")
@click.option("--batch", type=COUNT, default=1000, show_default=True, help="Images per forward pass.")
@click.option("--out", type=click.Path(dir_okay=False), required=True, help="Output .npz file.")
def pseudo_label(teacher, dataset, split, data_dir, batch, out):
    """Label every image of a split with TEACHER's top-1 class (a base classifier .keras file).

    Self-training (Salman et al. 2019, Sec. 4.2, after Carmon et al. 2019): the labels then train a
    student with `tfsmooth train --unlabeled DATASET:SPLIT --pseudo-labels OUT`. Writes an .npz
    (label int64 [N] in data set order, dataset, split, data_source, teacher), readable without pickle.
    """
    quiet_tensorflow()
    from tfsmooth import jobs

    with library_errors():
        config = jobs.PseudoLabelConfig(teacher=teacher, dataset=dataset, split=split, batch=batch, data_dir=data_dir)
        count = jobs.pseudo_label(config, out)
    click.echo(f"{count} pseudo-labels of {dataset}:{split} written to {out}")
