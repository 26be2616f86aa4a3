"""Entry point of the `tfsmooth` console script: a click group of the subcommands."""

from __future__ import annotations

import click

from tfsmooth.cli.analyze import analyze
from tfsmooth.cli.assign_sigma import assign_sigma
from tfsmooth.cli.attack import attack
from tfsmooth.cli.certify import certify, predict
from tfsmooth.cli.export import export
from tfsmooth.cli.merge import merge
from tfsmooth.cli.pseudo_label import pseudo_label
from tfsmooth.cli.train import train


@click.group(context_settings={"help_option_names": ["-h", "--help"]})
@click.version_option(package_name="tfsmooth")
@click.option("--verbose", is_flag=True, default=False,
              help="Show TensorFlow's own start-up and C++ logs (hidden by default unless TF_CPP_MIN_LOG_LEVEL is set).")
def cli(verbose):
    """Certified robustness by randomized smoothing (Cohen et al. 2019) with TensorFlow/Keras.

    Pixels are in [0, 1]; sigma, epsilon and radii are l2 norms on that scale.
    """
    del verbose  # read by the commands (cli._common.quiet_tensorflow)


cli.add_command(train)
cli.add_command(certify)
cli.add_command(predict)
cli.add_command(analyze)
cli.add_command(export)
cli.add_command(attack)
cli.add_command(pseudo_label)
cli.add_command(assign_sigma)
cli.add_command(merge)


if __name__ == "__main__":
    cli()
