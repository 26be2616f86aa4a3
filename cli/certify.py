"""`tfsmooth certify` and `tfsmooth predict`: CERTIFY / PREDICT over a data set, written as TSV."""

from __future__ import annotations

import click

from tfsmooth.cli._common import (ALPHA, ALPHA_SPLIT, CERTIFY_METHOD, COMPUTE_DTYPE, COUNT, MAX_INDEX, NON_NEGATIVE,
                                  POSITIVE, Progress, data_options, library_errors, quiet_tensorflow, resumable,
                                  rows_done, shard_option)

SUMMARY_RADII = (0.0, 0.25, 0.5, 0.75, 1.0)


def _common_options(function):
    for option in reversed([
        click.argument("model", type=click.Path(dir_okay=False)),
        click.option("--sigma", type=POSITIVE, required=True, help="Noise level (l2, pixels in [0, 1])."),
        click.option("--alpha", type=ALPHA, default=0.001, show_default=True, help="Failure probability."),
        click.option("--batch", type=COUNT, default=1000, show_default=True,
                     help="Noisy copies per forward pass, rounded down to a multiple of the noise block "
                          "(100 draws), at least one block. On a CPU rows do not depend on it: a rerun may change it (on a GPU it is part of the run record)."),
        click.option("--skip", type=COUNT, default=1, show_default=True, help="Use every SKIP-th example."),
        click.option("--max", "max_index", type=MAX_INDEX, default=-1, show_default=True,
                     help="Stop before this example index, >= 1 (-1: whole split)."),
        click.option("--seed", type=NON_NEGATIVE, default=0, show_default=True),
        click.option("--restart", is_flag=True, default=False,
                     help="Delete OUT and its record and start over instead of resuming."),
        click.option("--devices", default=None, metavar="all|NAMES",
                     help="Spread the noisy forward passes over devices of one kind: 'all' (every local GPU; the "
                          "CPU devices where there is none) or names such as GPU:0,GPU:1; pass p runs on device p "
                          "mod D. Default: TensorFlow's placement (one device). Rows do not depend on it: a rerun "
                          "may change it."),
        click.option("--compute-dtype", type=COMPUTE_DTYPE, default="float32",
                     show_default=True,
                     help="Arithmetic of the noisy forward passes; bfloat16 is ~2x faster on CPUs with "
                          "AVX512_BF16/AMX and certifies the bfloat16 base classifier."),
        click.option("--noise-scheme", type=click.Choice(["2", "3"]), default="2", show_default=True,
                     help="How noise blocks are drawn: 2 = one RNG op per block (every file so far); 3 = "
                          "counter-based Philox, one RNG op per run of an image's blocks (for GPUs). Other "
                          "numbers, same distribution; a file resumes only under its own scheme."),
    ]):
        function = option(function)
    return shard_option(data_options(function))


def _parse_sigma_grid(ctx, param, value):
    """click callback: "0.12,0.25,0.5,1.0" -> (0.12, 0.25, 0.5, 1.0) (validated again by the job's config)."""
    del ctx, param
    if value is None:
        return None
    levels = []
    for text in value.split(","):
        try:
            level = float(text.strip())
        except ValueError:
            raise click.BadParameter(f"{text.strip()!r} is not a number; expected comma-separated noise levels > 0, "
                                     "e.g. 0.12,0.25,0.5,1.0") from None
        if not (level > 0 and level != float("inf")):
            raise click.BadParameter(f"noise levels must be finite numbers > 0, got {text.strip()!r}")
        levels.append(level)
    if len(set(levels)) != len(levels):
        raise click.BadParameter(f"noise levels must be distinct, got {value!r}")
    return tuple(levels)


def _parse_radii(ctx, param, value):
    """click callback: "0.25,0.5,0.75" -> (0.25, 0.5, 0.75) (checked again by the job's config)."""
    del ctx, param
    if value is None:
        return None
    try:
        return tuple(float(text.strip()) for text in value.split(","))
    except ValueError:
        raise click.BadParameter(f"expected comma-separated l2 radii > 0, e.g. 0.25,0.5,0.75,1.0; got {value!r}") from None


def _run(kind, model, sigma, n0, n, alpha, batch, skip, max_index, outs, seed, restart, compute_dtype, dataset, split,
         data_dir, shard, methods=("cohen",), alpha_split=0.5, sigma_grid=None, n_select=100, allocation="linprog",
         radii=None, sigma_select="agree", devices=None, sequential_design=2, noise_scheme="2"):
    quiet_tensorflow()
    from tfsmooth import analysis, jobs

    if len(methods) != len(outs):
        raise click.UsageError(f"give one --out per --method (in the same order): got {len(methods)} --method and "
                               f"{len(outs)} --out")
    if sigma_grid is not None and len(outs) != 1:
        raise click.UsageError("--sigma-grid certifies with one --method into one --out (the allocation is per file)")
    with library_errors():
        configs = [jobs.CertifyConfig(model=model, dataset=dataset, split=split, sigma=sigma, n0=n0, n=n,
                                      alpha=alpha, batch=batch, skip=skip, max=max_index, seed=seed,
                                      data_dir=data_dir, compute_dtype=compute_dtype, method=method,
                                      alpha_split=alpha_split, sigma_grid=sigma_grid, n_select=n_select,
                                      sigma_select=sigma_select,
                                      allocation=allocation, shard=shard, radii=radii, devices=devices,
                                      sequential_design=sequential_design, noise_scheme=int(noise_scheme))
                   for method in methods]
        out = outs[0]
        if radii is not None:
            _note_unreachable(configs[0])
        rows_file = jobs.unallocated_path(out) if sigma_grid is not None else out
        progress = Progress(jobs.selected_count(configs[0]),
                            done=0 if restart else min(rows_done(o) for o in (rows_file, *outs[1:])))
        with resumable(rows_file, progress):
            if sigma_grid is not None:
                written = jobs.certify_samplewise_dataset(configs[0], out, on_row=progress, restart=restart)
            elif kind == "certify":
                written = jobs.certify_dataset(configs[0], out, on_row=progress, restart=restart,
                                               also=list(zip(configs[1:], outs[1:])))
            else:
                written = jobs.predict_dataset(configs[0], out, on_row=progress, restart=restart)
        summary = analysis.summarize(list(outs), SUMMARY_RADII)
    for method, path in zip(methods, outs):
        label = f" ({method})" if kind == "certify" else ""
        click.echo(f"\n{written} new rows; {path}{label} holds {summary[path]['count']} rows")
    click.echo(analysis.format_table(summary, SUMMARY_RADII, "table"))
    if sigma_grid is not None:
        entry = summary[outs[0]]
        chosen = ", ".join(f"{level}: {count}" for level, count in entry["sigma_counts"].items())
        click.echo(f"sample-wise (transductive, valid for this test set only): sigma chosen per image {{{chosen}}}; "
                   f"{entry['radii_cut']} of {entry['count']} radii cut by the allocation")


def _note_unreachable(config):
    """Says which --radii no image can reach with this --n-max (a unanimous vote's bound): never decided."""
    from tfsmooth import sequential

    reach = sequential.reachable_radius(config.alpha, config.sigma, config.n_first, config.n, method=config.method,
                                        design=config.sequential_design,
                                        alpha_split=config.alpha_split)
    beyond = [r for r in config.radii if r > reach]
    if beyond:
        click.echo(f"note: with --n-max {config.n} at alpha {config.alpha} no image can be certified beyond radius "
                   f"{reach:.3f} (a unanimous vote): {', '.join(f'{r:g}' for r in beyond)} will not be decided (raise "
                   "--n-max, or drop them)", err=True)


@click.command()
@_common_options
@click.option("--n0", type=COUNT, default=100, show_default=True, help="Selection draws.")
@click.option("--n", type=COUNT, default=100_000, show_default=True, help="Estimation draws.")
@click.option("--method", "methods", type=CERTIFY_METHOD, multiple=True, default=("cohen",), show_default=True,
              help="cohen: CERTIFY (p_B = 1 - p_A). t-certify: bound the runner-up too (Feng et al. 2020). Repeat "
                   "it, with one --out each, to decide several methods from one counting pass.")
@click.option("--alpha-split", type=ALPHA_SPLIT, default=0.5, show_default=True,
              help="t-certify: the fraction of ALPHA spent on p_a_lower, in (0, 1] (1 = CERTIFY), or 'auto' to "
                   "choose it on the N0 selection draws (which keeps the level ALPHA).")
@click.option("--out", "outs", type=click.Path(dir_okay=False), multiple=True, required=True,
              help="Output TSV, one per --method in the same order; rerunning on it resumes.")
@click.option("--sigma-grid", default=None, callback=_parse_sigma_grid, metavar="S1,S2,...",
              help="Sample-wise smoothing (transductive): choose each image's sigma from these levels on separate "
                   "draws, certify at it, then cut the radii so that balls of different sigma never overlap. "
                   "--sigma is then the level used outside the certified balls. Writes OUT (after the last image) "
                   "with columns sigma and radius_unallocated; per-image rows go to OUT.unallocated.tsv.")
@click.option("--n-select", type=COUNT, default=100, show_default=True,
              help="[--sigma-grid] selection draws per noise level that choose each image's sigma.")
@click.option("--sigma-select", type=click.Choice(["agree", "radius"]), default="agree", show_default=True,
              help="[--sigma-grid] how each image's sigma is chosen on its selection draws: the largest radius they "
                   "promise among the levels whose vote agrees with the smallest level's (agree), or among all "
                   "(radius).")
@click.option("--allocation", type=click.Choice(["linprog", "greedy"]), default="linprog", show_default=True,
              help="[--sigma-grid] linprog: the radii maximizing their sum (scipy's HiGHS); greedy: a fast pass.")
@click.option("--sequential", is_flag=True, default=False,
              help="Sequential certification: decide only whether R >= each of --radii, drawing in looks "
                   "(100, 200, 300, 500, ... up to --n-max) and stopping each image as soon as it is decided or "
                   "unlikely to be; sound at any stopping time (alpha split over the looks). Adds the column n_used. With --method "
                   "t-certify (one --out) it decides T-CERTIFY's radius, the runner-up bounded at each look too.")
@click.option("--radii", default="0.25,0.5,0.75,1.0", show_default=True, callback=_parse_radii, metavar="R1,R2,...",
              help="[--sequential] target l2 radii, increasing; the row's radius is the largest decided one.")
@click.option("--n-max", type=COUNT, default=None, help="[--sequential] budget of estimation draws (default: --n).")
@click.option("--sequential-design", type=click.Choice(["1", "2"]), default="2", show_default=True,
              help="[--sequential] stopping design: 2 = looks x1.5, alpha spent in proportion to the look's draws, "
                   "conditional-power futility; 1 = doubling looks, alpha / L each (files written before this option; "
                   "resume them with 1).")
def certify(model, sigma, n0, n, alpha, batch, skip, max_index, outs, seed, restart, compute_dtype, dataset, split,
            data_dir, shard, methods, alpha_split, sigma_grid, n_select, sigma_select, allocation, sequential, radii,
            n_max, sequential_design, devices, noise_scheme):
    """Certify the smoothed classifier of MODEL (a base classifier .keras file) on a data set.

    CERTIFY of Cohen et al. (2019): per example, pick the top class on N0 noisy draws, lower-bound
    its probability on N fresh draws (Clopper-Pearson, 1 - ALPHA), radius = sigma * Phi^-1(p_a_lower)
    or abstain (-1). With --method t-certify the strongest other class is upper-bounded on the same
    draws (ALPHA split between the two bounds) and radius = sigma/2 * (Phi^-1(p_a_lower) - Phi^-1(p_b_upper)).
    Writes `idx label predict radius correct time`, one flushed row per example. With --sigma-grid:
    sample-wise smoothing, radii certified for this test set only (transductive; see the README).
    """
    if not sequential and sequential_design != "2":
        raise click.UsageError("--sequential-design is a setting of --sequential certification")
    if n_max is not None and not sequential:
        raise click.UsageError("--n-max is the budget of --sequential certification; without it use --n")
    _run("certify", model, sigma, n0, n_max if n_max is not None else n, alpha, batch, skip, max_index, outs, seed,
         restart, compute_dtype, dataset, split, data_dir, shard, methods, alpha_split, sigma_grid, n_select,
         allocation, radii if sequential else None, sigma_select, devices, int(sequential_design), noise_scheme)


@click.command()
@_common_options
@click.option("--n", type=COUNT, default=1000, show_default=True, help="Noisy draws.")
@click.option("--out", type=click.Path(dir_okay=False), required=True, help="Output TSV; rerunning on it resumes.")
def predict(model, sigma, n, alpha, batch, skip, max_index, out, seed, restart, compute_dtype, dataset, split, data_dir,
            shard, devices, noise_scheme):
    """Predict with the smoothed classifier of MODEL on a data set (PREDICT, Cohen et al. 2019).

    Abstains (-1) unless a two-sided binomial test separates the top two classes at level ALPHA.
    Writes `idx label predict correct time`.
    """
    _run("predict", model, sigma, 1, n, alpha, batch, skip, max_index, (out,), seed, restart, compute_dtype, dataset,
         split, data_dir, shard, devices=devices, noise_scheme=noise_scheme)
