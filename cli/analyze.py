"""``tfsmooth analyze``: certified-accuracy tables and plots of certify / predict / attack TSVs.

A thin shell over ``tfsmooth.analysis``: parses options, calls the library, prints, writes the plot.
Units: the text tables and the plot are in percent; ``--format json`` keeps fractions in [0, 1].
The library is imported inside the functions (after quieting TensorFlow's start-up logs), so that
``--help`` stays fast.
"""

import click

from tfsmooth.cli._common import quiet_tensorflow

FILES_HINT = "FILE.tsv..."
FORMATS = ("table", "markdown", "json")  # analysis.FORMATS, which validates it again


def _analysis():
    quiet_tensorflow()
    from tfsmooth import analysis  # pylint: disable=import-outside-toplevel
    return analysis


def _parse_radii(ctx, param, value):
    """click callback: "0,0.25,0.5" -> [0.0, 0.25, 0.5], checked by analysis.validate_radii."""
    del ctx, param
    radii = []
    for text in value.split(","):
        try:
            radii.append(float(text.strip()))
        except ValueError:
            raise click.BadParameter(
                f"{text.strip()!r} is not a number; expected comma-separated l2 radii >= 0 "
                f"(pixels in [0, 1]), e.g. 0,0.25,0.5") from None
    try:
        _analysis().validate_radii(radii)
    except ValueError as error:
        raise click.BadParameter(str(error)) from None
    return radii


def _check_plot_path(ctx, param, value):
    """click callback: refuses a --plot path whose extension is not .png, .pdf or .svg, before any
    file is read."""
    del ctx, param
    if value is not None:
        try:
            _analysis().plot_format(value)
        except ValueError as error:
            raise click.BadParameter(str(error)) from None
    return value


@click.command("analyze")
@click.argument("files", nargs=-1, required=True, metavar=FILES_HINT,
                type=click.Path(exists=True, dir_okay=False))
@click.option("--radii", default="0,0.25,0.5,0.75,1.0", show_default=True,
              callback=_parse_radii,
              help="Comma-separated l2 radii (pixels in [0, 1]) at which to report certified "
                   "accuracy.")
@click.option("--format", "fmt", type=click.Choice(FORMATS), default="table",
              show_default=True,
              help="table: aligned text; markdown: pipe table (both in %, with an envelope row "
                   "over several certify files); json: {file: summary}, fractions in [0, 1].")
@click.option("--plot", "plot_path", type=click.Path(dir_okay=False), default=None,
              callback=_check_plot_path,
              help="Also plot certified accuracy (%, as the tables) against radius to this file; "
                   "the format is taken from the extension: .png, .pdf or .svg.")
def analyze(files, radii, fmt, plot_path):
    """Certified accuracy of certify TSVs (and empirical accuracy of predict/attack TSVs).

    Certified accuracy at r = share of rows with correct == 1 and radius >= r (Cohen et al.
    2019); with several certify files an envelope row gives the best per radius. Tables and plot
    are in %, --format json in fractions in [0, 1]. Reads the tab-separated files written by
    tfsmooth and by the reference implementation of Cohen et al.; trailing blank lines are fine.
    """
    analysis = _analysis()
    try:
        summary = analysis.summarize(files, radii)
    except (ValueError, OSError) as error:
        raise click.BadParameter(str(error), param_hint=repr(FILES_HINT)) from None
    click.echo(analysis.format_table(summary, radii, fmt))
    if plot_path is not None:
        try:
            analysis.plot_certified_accuracy(files, plot_path)
        except ValueError as error:
            raise click.BadParameter(str(error), param_hint="'--plot'") from None
        except OSError as error:
            raise click.ClickException(f"cannot write --plot {plot_path}: {error}") from None
        click.echo(f"plot written to {plot_path}", err=True)
