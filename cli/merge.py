"""`tfsmooth merge`: join the K shard files of a certify / predict / attack run (`--shard I/K`)."""

from __future__ import annotations

import click

from tfsmooth.cli._common import library_errors, quiet_tensorflow


@click.command("merge")
@click.argument("shards", nargs=-1, required=True, type=click.Path(dir_okay=False), metavar="SHARD.tsv...")
@click.option("--out", type=click.Path(dir_okay=False), required=True, help="The merged TSV (must not exist).")
@click.option("--data-dir", type=click.Path(file_okay=False), default=None,
              help="As the shards' runs' --data-dir: the images are counted to check the selection is complete.")
def merge(shards, out, data_dir):
    """Join the shards of one run (written with --shard 0/K ... K-1/K) into the file the unsharded run writes.

    Refuses, naming what is wrong, unless the run records agree except for the shard, all K shards are given once,
    and each holds exactly its share of the selection (a shard still running lacks rows: finish it first).
    """
    quiet_tensorflow()
    from tfsmooth import jobs

    with library_errors():
        rows = jobs.merge_results(list(shards), out, data_dir)
    click.echo(f"{rows} rows of {len(shards)} shards merged into {out}")
