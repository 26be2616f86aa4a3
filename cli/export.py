"""`tfsmooth export`: a base classifier's smoothed classifier as a TF Serving SavedModel."""

from __future__ import annotations

import os

import click

from tfsmooth.cli._common import ALPHA, COMPUTE_DTYPE, COUNT, POSITIVE, library_errors, quiet_tensorflow


def _split_names(ctx, param, value):
    """click callback: "cat,dog" -> ("cat", "dog"); the library checks count and emptiness."""
    del ctx, param
    return None if value is None else tuple(name.strip() for name in value.split(","))


@click.command("export")
@click.argument("model", type=click.Path(dir_okay=False))
@click.option("--sigma", type=POSITIVE, required=True,
              help="Noise level the base classifier was trained for (l2, pixels in [0, 1]).")
@click.option("--n0", type=COUNT, default=100, show_default=True, help="CERTIFY's selection draws.")
@click.option("--n", type=COUNT, default=10_000, show_default=True,
              help="CERTIFY's estimation draws and PREDICT's draws (latency grows linearly with N).")
@click.option("--alpha", type=ALPHA, default=0.001, show_default=True, help="Failure probability.")
@click.option("--batch", type=COUNT, default=1000, show_default=True,
              help="Noisy copies per forward pass, rounded down to a multiple of the noise block "
                   "(NOISE_BLOCK draws), at least one block.")
@click.option("--noise-block", type=COUNT, default=100, show_default=True,
              help="Draws per noise block; keep 100 to match `tfsmooth certify/predict` for the same seed.")
@click.option("--out", type=click.Path(file_okay=False), required=True,
              help="Model base path for TF Serving; the export goes to OUT/VERSION.")
@click.option("--version", "version", type=COUNT, default=1, show_default=True, help="Version directory (>= 1).")
@click.option("--class-names", callback=_split_names, default=None,
              help="Comma-separated class names in label order (default: 0..K-1).")
@click.option("--dataset", default=None,
              help="Take the class names from this data set (cifar10, cifar10_sample, mnist, tfds:NAME, a .npz).")
@click.option("--compute-dtype", type=COMPUTE_DTYPE, default="float32", show_default=True,
              help="Arithmetic of the noisy forward passes (as `tfsmooth certify --compute-dtype`).")
@click.option("--alpha-split", type=click.FloatRange(0.0, 1.0, min_open=True, max_open=True), default=0.5,
              show_default=True, help="The t_certify signature's fraction of ALPHA spent on p_a_lower.")
def export(model, sigma, n0, n, alpha, batch, noise_block, out, version, class_names, dataset, compute_dtype,
           alpha_split):
    """Export the smoothed classifier of MODEL (a base classifier .keras file) for TF Serving.

    Writes OUT/VERSION/ with the signatures `serving_default` (PREDICT: label, -1 = abstain),
    `certify` (CERTIFY: label, certified l2 radius), `t_certify` (T-CERTIFY: the runner-up bounded too),
    `base_logits` and `metadata`; the noise and the statistics (binomial test, Clopper-Pearson bounds,
    radii) run in the graph.
    """
    if class_names is not None and dataset is not None:
        raise click.UsageError("give --class-names or --dataset, not both")
    quiet_tensorflow()
    from tfsmooth import data
    from tfsmooth import export as export_lib

    with library_errors():
        if dataset is not None:
            class_names = data.dataset_info(dataset).class_names
        version_dir = export_lib.export_model_file(
            model, out, sigma=sigma, n0=n0, n=n, alpha=alpha, batch_size=batch, version=version,
            noise_block=noise_block, class_names=class_names, compute_dtype=compute_dtype, alpha_split=alpha_split)
        record = export_lib.read_metadata(version_dir)
    click.echo(f"exported {version_dir}")
    click.echo(f"  sigma={record['sigma']} n0={record['n0']} n={record['n']} alpha={record['alpha']} "
               f"classes={','.join(record['class_names'])} compute_dtype={record['compute_dtype']} "
               f"alpha_split={record['alpha_split']}")
    click.echo(f"  signatures: {', '.join(record['signatures'])}")
    click.echo(f"serve: tensorflow_model_server --rest_api_port=8501 --model_name=tfsmooth "
               f"--model_base_path={os.path.abspath(out)}")
