"""`tfsmooth attack`: SmoothAdv attack of each selected image, then PREDICT at the attacked point."""

from __future__ import annotations

import click

from tfsmooth.cli._common import (ALPHA, COUNT, ESTIMATOR, EVALUATION_ATTACK, MAX_INDEX, NON_NEGATIVE,
                                  NON_NEGATIVE_REAL, POSITIVE, Progress, data_options, library_errors,
                                  quiet_tensorflow, resumable, rows_done, shard_option)


@click.command()
@click.argument("model", type=click.Path(dir_okay=False))
@click.option("--sigma", type=POSITIVE, required=True,
              help="Noise level of the smoothed classifier (l2, pixels in [0, 1]).")
@click.option("--attack", type=EVALUATION_ATTACK, default="pgd", show_default=True,
              help="SmoothAdv-PGD, SmoothAdv-DDN, or vanilla PGD on the base classifier (base-pgd: no noise, "
                   "--num-noise-vec unused; the baseline of Salman et al. Sec. 4.3).")
@click.option("--epsilon", type=NON_NEGATIVE_REAL, default=0.5, show_default=True, help="l2 attack radius (pixels in [0, 1]).")
@click.option("--num-steps", type=COUNT, default=20, show_default=True, help="Attack steps T.")
@click.option("--num-noise-vec", type=COUNT, default=32, show_default=True,
              help="Noise draws m of the attack's gradient estimate (m_test).")
@click.option("--estimator", type=ESTIMATOR, default="plug_in", show_default=True,
              help="plug_in: gradient of eq. (6); stein: gradient-free eq. (7) (pgd only).")
@click.option("--gamma", type=click.FloatRange(0.0, 1.0, min_open=True, max_open=True), default=0.05, show_default=True,
              help="DDN only: the norm grows or shrinks by this factor per step, in (0, 1).")
@click.option("--init-norm", type=POSITIVE, default=None,
              help="DDN only: initial l2 norm of the perturbation (default: EPSILON).")
@click.option("--n", type=COUNT, default=1000, show_default=True, help="PREDICT's noisy draws at the attacked point.")
@click.option("--alpha", type=ALPHA, default=0.001, show_default=True, help="PREDICT's failure probability.")
@click.option("--batch", type=COUNT, default=1000, show_default=True,
              help="PREDICT's noisy copies per forward pass, rounded down to a multiple of the noise block "
                   "(100 draws), at least one block. On a CPU rows do not depend on it: a rerun may change it (on a GPU it is part of the run record).")
@click.option("--attack-batch", type=COUNT, default=8, show_default=True,
              help="Images attacked together (each attack step runs ATTACK_BATCH x NUM_NOISE_VEC noisy copies).")
@click.option("--skip", type=COUNT, default=1, show_default=True, help="Use every SKIP-th example.")
@click.option("--max", "max_index", type=MAX_INDEX, default=-1, show_default=True,
              help="Stop before this example index, >= 1 (-1: whole split).")
@click.option("--out", type=click.Path(dir_okay=False), required=True, help="Output TSV; rerunning on it resumes.")
@click.option("--seed", type=NON_NEGATIVE, default=0, show_default=True,
              help="Fixes the attack's and PREDICT's noise of every example (with its index).")
@click.option("--restart", is_flag=True, default=False, help="Delete OUT and its record and start over instead of resuming.")
@data_options
@shard_option
def attack(model, sigma, attack, epsilon, num_steps, num_noise_vec, estimator, gamma, init_norm, n, alpha, batch,
           attack_batch, skip, max_index, out, seed, restart, dataset, split, data_dir, shard):
    """Empirical robust accuracy of the smoothed classifier of MODEL (a base classifier .keras file).

    Per selected image: SmoothAdv attack of radius EPSILON on the smoothed soft classifier
    (Salman et al. 2019, Sec. 3 and 4.3), then PREDICT (Cohen et al.) at the attacked point.
    Writes `idx label predict basePredict correct time`, one flushed row per image; `analyze`
    reports the fraction correct (abstentions count as wrong).
    """
    quiet_tensorflow()
    from tfsmooth import analysis, jobs

    with library_errors():
        config = jobs.AttackConfig(model=model, dataset=dataset, split=split, sigma=sigma, attack=attack,
                                   epsilon=epsilon, num_steps=num_steps, num_noise_vec=num_noise_vec,
                                   estimator=estimator, gamma=gamma, init_norm=init_norm, n=n, alpha=alpha,
                                   batch=batch, attack_batch=attack_batch, skip=skip, max=max_index, seed=seed,
                                   data_dir=data_dir, shard=shard)
        progress = Progress(jobs.selected_count(config), done=0 if restart else rows_done(out))
        with resumable(out, progress):
            written = jobs.attack_dataset(config, out, on_row=progress, restart=restart)
        summary = analysis.summarize([out], [0.0])
    click.echo(f"\n{written} new rows; {out} holds {summary[out]['count']} rows")
    click.echo(analysis.format_table(summary, [0.0], "table"))
