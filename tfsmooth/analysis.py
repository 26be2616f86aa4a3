"""Certified-accuracy curves, summaries, tables and plots of result files.

Certified accuracy at radius r is the papers' "approximate certified accuracy" (Cohen et al. 2019,
Sec. 4; METHODS.md §1): the fraction of test images whose row has ``correct == 1`` and
``radius >= r``. Abstentions (predict == ABSTAIN, radius 0) are never correct. Radii are ℓ2 norms
on the [0, 1] pixel scale. The "envelope" is the best certified accuracy over several certify files
at each radius: the "best model per radius" rows of Cohen et al. (Table 1) and Salman et al.
(Tables 1 and 2: ImageNet and CIFAR-10).

Radius keys: summaries are keyed by ``radius_key(r) = repr(float(r))``, Python's shortest text
that reads back to the same float: 0 -> "0.0", 0.25 -> "0.25", 1 -> "1.0", 1e-5 -> "1e-05".
Hence ``float(key) == r`` exactly.

Units: the text tables ("table", "markdown") and the plot show accuracies and abstention rates in
percent (0 to 100, the papers' convention); the functions here (``certified_accuracy``,
``accuracy``, ``abstain_rate``), the summaries and the "json" format keep fractions in [0, 1].

Nothing heavy at import: matplotlib is imported inside ``plot_certified_accuracy``.
"""

import json
import os
from typing import TYPE_CHECKING, Dict, Mapping, Optional, Sequence, Union

import numpy as np

from tfsmooth import results as results_lib

if TYPE_CHECKING:
    from matplotlib.figure import Figure

PathOrResults = Union[str, os.PathLike, results_lib.Results]
FORMATS = ("table", "markdown", "json")
PLOT_FORMATS = ("png", "pdf", "svg")  # matplotlib's savefig formats, chosen by the extension
ENVELOPE_LABEL = "envelope (best per radius)"
CERTIFIED_NOTE = "certified accuracy (%) at l2 radius r (pixels in [0, 1])"
EMPIRICAL_NOTE = "empirical = accuracy (%) of predict/attack files (abstentions wrong)"
ACR_NOTE = "ACR = average certified radius (mean of radius x correct, l2)"
ABSTAIN_NOTE = "abstain = abstention rate (%)"
TRANSDUCTIVE_MARK = " [transductive]"
TRANSDUCTIVE_NOTE = ("[transductive] = sample-wise noise levels with allocated radii: certified for this test set "
                     "only (tfsmooth.samplewise)")
DRAWS_NOTE = "draws = estimation draws per image (sequential certification; fixed-n files: -)"
MIXED_ENVELOPE_LABEL = "envelope (best per radius; mixes transductive and inductive files)"


def _radii_array(radii) -> np.ndarray:
    try:
        array = np.asarray(radii, dtype=np.float64)
    except (TypeError, ValueError):
        raise ValueError(f"radii must be numbers, got {radii!r}") from None
    if array.ndim != 1:
        raise ValueError(f"radii must be a 1-D sequence of radii, got shape {array.shape}")
    if not np.all(np.isfinite(array) & (array >= 0)):
        raise ValueError(f"radii must be finite l2 radii >= 0 (pixels in [0, 1]), got "
                         f"{array.tolist()}")
    return array


def validate_radii(radii) -> np.ndarray:
    """Checks radii for summaries and tables.

    Args:
        radii: non-empty 1-D sequence of distinct finite ℓ2 radii >= 0 (pixels in [0, 1]).

    Returns:
        float64 array of shape [len(radii)], in the given order.

    Raises:
        ValueError: empty, not 1-D, non-numeric, negative, NaN/inf, or repeated radii.
    """
    array = _radii_array(radii)
    if array.size == 0:
        raise ValueError("radii must not be empty")
    if len(np.unique(array)) != array.size:
        raise ValueError(f"radii must be distinct, got {array.tolist()}")
    return array


def radius_key(radius: float) -> str:
    """The canonical text of a radius used as summary / JSON key: ``repr(float(radius))``."""
    return repr(float(radius))


def _check_nonempty(results: results_lib.Results) -> None:
    if not isinstance(results, results_lib.Results):
        raise ValueError(f"results must be a tfsmooth.results.Results, got {type(results)}")
    if len(results) == 0:
        raise ValueError(f"{results.path or 'results'}: no rows, nothing to measure")


def certified_accuracy(results: results_lib.Results, radii) -> np.ndarray:
    """Approximate certified accuracy at each radius (Cohen et al. 2019, Sec. 4).

    Args:
        results: Results of a certify file (kind "certify"), at least one row.
        radii: 1-D sequence of finite ℓ2 radii >= 0 (pixels in [0, 1]), any order.

    Returns:
        float64 array of shape [len(radii)], values in [0, 1]: the fraction of rows with
        ``correct == 1`` and ``radius >= r`` (abstentions never count).

    Raises:
        ValueError: results without a radius column (use ``accuracy``), no rows, or bad radii.
    """
    _check_nonempty(results)
    if results.radius is None:
        raise ValueError(f"{results.path or 'results'}: a {results.kind} file has no radius "
                         f"column; use accuracy() for its empirical accuracy")
    radii = _radii_array(radii)
    certified = (results.correct == 1) & (results.predict != results_lib.ABSTAIN)
    sorted_radii = np.sort(results.radius[certified])
    count = sorted_radii.size - np.searchsorted(sorted_radii, radii, side="left")
    return count / len(results)


def accuracy(results: results_lib.Results) -> float:
    """Empirical accuracy: fraction of rows with correct == 1, abstentions counted wrong.

    For a predict file this is the accuracy of PREDICT; for an attack file the "empirical robust
    accuracy" of Salman et al. (2019, Sec. 4); for a certify file it equals certified accuracy at 0.

    Raises:
        ValueError: no rows.
    """
    _check_nonempty(results)
    return float(np.mean((results.correct == 1) & (results.predict != results_lib.ABSTAIN)))


def average_certified_radius(results: results_lib.Results) -> float:
    """ACR, the average certified radius: mean over rows of radius * correct (Zhai et al. 2020, MACER, Sec. 4).

    Abstentions and wrong answers count 0. The summary number MACER, consistency regularization and later papers
    report beside certified accuracy; it equals the area under the certified-accuracy curve.

    Args:
        results: Results of a certify file, at least one row.

    Returns:
        float >= 0, an l2 radius on the [0, 1] pixel scale.

    Raises:
        ValueError: results without a radius column, or no rows.
    """
    _check_nonempty(results)
    if results.radius is None:
        raise ValueError(f"{results.path or 'results'}: a {results.kind} file has no radius column, so no ACR")
    certified = (results.correct == 1) & (results.predict != results_lib.ABSTAIN)
    return float(np.mean(np.where(certified, results.radius, 0.0)))


def abstain_rate(results: results_lib.Results) -> float:
    """Fraction of rows where the smoothed classifier abstained (predict == ABSTAIN), in [0, 1].

    Raises:
        ValueError: no rows.
    """
    _check_nonempty(results)
    return float(np.mean(results.predict == results_lib.ABSTAIN))


def summarize_results(results: results_lib.Results, radii) -> dict:
    """The summary entry of one result set (see ``summarize``)."""
    radii = validate_radii(radii)
    if results.kind == "unallocated":
        raise ValueError(f"{results.path or 'results'} holds the per-image rows of a sample-wise certification "
                         "before the transductive allocation (radius_unallocated, no certified radius): rerun the "
                         "same `tfsmooth certify --sigma-grid ...` command to finish it, then analyze its --out file")
    entry = {}
    if results.kind == "certify":
        values = certified_accuracy(results, radii)
        entry["certified_accuracy"] = {radius_key(r): float(v) for r, v in zip(radii, values)}
        entry["acr"] = average_certified_radius(results)
    else:
        entry["empirical_accuracy"] = accuracy(results)
    entry["abstain_rate"] = abstain_rate(results)
    entry["count"] = len(results)
    if results.n_used is not None:
        entry["draws_mean"] = float(np.mean(results.n_used)) if len(results) else 0.0
        entry["draws_total"] = int(np.sum(results.n_used))
    if results.transductive:
        levels, counts = np.unique(results.sigma, return_counts=True)
        entry["transductive"] = True
        entry["sigma_counts"] = {repr(float(level)): int(count) for level, count in zip(levels, counts)}
        entry["radii_cut"] = int(np.sum(results.radius < results.radius_unallocated))
    return entry


def summarize(paths: Sequence[Union[str, os.PathLike]], radii) -> Dict[str, dict]:
    """Reads result files and summarizes each one.

    Args:
        paths: non-empty sequence of distinct TSV paths (certify, predict or attack files).
        radii: non-empty 1-D sequence of distinct ℓ2 radii >= 0 (pixels in [0, 1]).

    Returns:
        dict keyed by ``str(path)``, in the given order. Certify files map to
        ``{"certified_accuracy": {radius_key(r): fraction, ...}, "acr": average certified radius (l2),
        "abstain_rate": fraction, "count": rows}``; predict and attack files to ``{"empirical_accuracy": fraction,
        "abstain_rate": fraction, "count": rows}``. Fractions are floats in [0, 1].

    Raises:
        FileNotFoundError: a file does not exist.
        ValueError: no or repeated paths, bad radii, a malformed or empty file (see
            ``results.read_results``).
    """
    radii = validate_radii(radii)
    if isinstance(paths, (str, os.PathLike)):
        raise ValueError(f"paths must be a sequence of result files, not one path: {paths!r}")
    keys = [os.fspath(path) for path in paths]
    if not keys:
        raise ValueError("paths must be a non-empty sequence of result files, got none")
    if len(set(keys)) != len(keys):
        raise ValueError(f"paths must be distinct, got {keys}")
    return {key: summarize_results(results_lib.read_results(key), radii) for key in keys}


def envelope(summary: Mapping[str, Mapping]) -> Dict[str, float]:
    """Best certified accuracy over the certify entries of a summary, at each radius key.

    Args:
        summary: as returned by ``summarize``; entries without "certified_accuracy" (predict and
            attack files) are ignored.

    Returns:
        dict radius key -> max certified accuracy (fraction), for the radius keys every certify
        entry has.

    Raises:
        ValueError: no certify entry.
    """
    curves = [entry["certified_accuracy"] for entry in summary.values()
              if "certified_accuracy" in entry]
    if not curves:
        raise ValueError("the summary has no certify entry, so no envelope")
    keys = [key for key in curves[0] if all(key in curve for curve in curves)]
    return {key: max(curve[key] for curve in curves) for key in keys}


def _table_rows(summary: Mapping[str, Mapping], keys: Sequence[str]):
    """Header and rows of text cells (percentages with one decimal) for the text formats."""
    empirical = any("certified_accuracy" not in entry for entry in summary.values())
    certified = any("certified_accuracy" in entry for entry in summary.values())
    header = ["file"] + [f"r={key}" for key in keys] + (["ACR"] if certified else [])
    header += (["empirical"] if empirical else []) + ["abstain", "count"]
    draws = any("draws_total" in entry for entry in summary.values())
    header += ["draws (mean)", "draws (total)"] if draws else []

    def percent(value):
        return f"{100.0 * value:.1f}"

    rows = []
    for path, entry in summary.items():
        curve = entry.get("certified_accuracy")
        if curve is not None and any(key not in curve for key in keys):
            raise ValueError(f"summary entry {path} lacks some of the radii {list(keys)}")
        if curve is None and "empirical_accuracy" not in entry:
            raise ValueError(f"summary entry {path} has neither certified_accuracy nor "
                             f"empirical_accuracy")
        cells = [path + (TRANSDUCTIVE_MARK if entry.get("transductive") else "")]
        cells += [percent(curve[key]) if curve else "-" for key in keys]
        if certified:
            cells.append(f"{entry['acr']:.3f}" if curve and "acr" in entry else "-")
        if empirical:
            cells.append("-" if curve else percent(entry["empirical_accuracy"]))
        cells += [percent(entry["abstain_rate"]), str(entry["count"])]
        if draws:
            cells += ([f"{entry['draws_mean']:.0f}", str(entry["draws_total"])] if "draws_total" in entry
                      else ["-", "-"])
        rows.append(cells)
    if sum("certified_accuracy" in entry for entry in summary.values()) > 1:
        best = envelope(summary)
        kinds = {bool(entry.get("transductive")) for entry in summary.values() if "certified_accuracy" in entry}
        rows.append([MIXED_ENVELOPE_LABEL if len(kinds) > 1 else ENVELOPE_LABEL] + [percent(best[key]) for key in keys]
                    + ["-"] * (3 + empirical + 2 * draws))
    return header, rows


def format_table(summary: Mapping[str, Mapping], radii, fmt: str = "table") -> str:
    """Formats a summary as text.

    Args:
        summary: as returned by ``summarize`` for radii including ``radii``.
        radii: the radii to show, as columns, in this order.
        fmt: "table" (aligned plain text), "markdown" (a pipe table like METHODS.md's) or "json".
            Text formats show percentages with one decimal and, when the summary has more than
            one certify file, an extra "envelope (best per radius)" row; a note on the units of
            the columns shown follows the table (the "empirical" part only when that column is
            there). "json" is the summary itself restricted to ``radii`` (fractions in [0, 1]),
            with no envelope, so no key can collide with a path.

    Returns:
        The text, without a trailing newline.

    Raises:
        ValueError: unknown fmt, bad radii, an empty summary or entries lacking a radius.
    """
    if fmt not in FORMATS:
        raise ValueError(f"fmt must be one of {FORMATS}, got {fmt!r}")
    keys = [radius_key(r) for r in validate_radii(radii)]
    if not summary:
        raise ValueError("summary is empty")
    header, rows = _table_rows(summary, keys)
    note = "; ".join([CERTIFIED_NOTE] + ([ACR_NOTE] if "ACR" in header else [])
                     + ([EMPIRICAL_NOTE] if "empirical" in header else []) + [ABSTAIN_NOTE]
                     + ([TRANSDUCTIVE_NOTE] if any(e.get("transductive") for e in summary.values()) else [])
                     + ([DRAWS_NOTE] if "draws (total)" in header else []))
    if fmt == "json":
        selected = {}
        for path, entry in summary.items():
            selected[path] = dict(entry)
            if "certified_accuracy" in entry:
                selected[path]["certified_accuracy"] = {
                    key: entry["certified_accuracy"][key] for key in keys}
        return json.dumps(selected, indent=2)
    if fmt == "markdown":
        def line(cells):
            return "| " + " | ".join(cell.replace("|", "\\|") for cell in cells) + " |"
        rule = "| --- |" + " ---: |" * (len(header) - 1)
        return "\n".join([line(header), rule] + [line(row) for row in rows]
                         + ["", f"Unit: {note}."])
    widths = [max(len(row[i]) for row in [header] + rows) for i in range(len(header))]

    def aligned(cells):
        return "  ".join([cells[0].ljust(widths[0])]
                         + [cell.rjust(width) for cell, width in zip(cells[1:], widths[1:])])
    return "\n".join([aligned(header), "  ".join("-" * width for width in widths)]
                     + [aligned(row) for row in rows] + [f"({note})"])


def _as_results(item: PathOrResults) -> results_lib.Results:
    if isinstance(item, results_lib.Results):
        return item
    if isinstance(item, (str, os.PathLike)):
        return results_lib.read_results(item)
    raise ValueError(f"expected a result file path or Results, got {item!r}")


def plot_format(path) -> str:
    """The file format of a plot path, from its extension (any case): "png", "pdf" or "svg".

    Raises:
        ValueError: path is not str / os.PathLike or has another extension.
    """
    if not isinstance(path, (str, os.PathLike)):
        raise ValueError(f"the plot path must be a str or os.PathLike, got {path!r}")
    extension = os.path.splitext(os.fspath(path))[1].lower().lstrip(".")
    if extension not in PLOT_FORMATS:
        raise ValueError(f"the plot path must end in one of "
                         f"{', '.join('.' + fmt for fmt in PLOT_FORMATS)} (the format is taken from "
                         f"the extension), got {os.fspath(path)!r}")
    return extension


def plot_certified_accuracy(paths_or_results: Sequence[PathOrResults], out_path,
                            labels: Optional[Sequence[str]] = None,
                            max_radius: Optional[float] = None) -> "Figure":
    """Plots certified accuracy (%) against ℓ2 radius as step curves and writes a PNG, PDF or SVG.

    Each certify file is an exact step curve: at radius r its height is the percentage of rows
    with correct == 1 and radius >= r. With more than one certify file, their envelope (best per
    radius) is drawn dashed. Predict / attack files have no radii: each appears as one hollow
    marker at the height of its empirical accuracy (%): a predict file at radius 0, an attack file
    at its attack's epsilon when the run record written beside it (`<file>.json`, by
    `tfsmooth attack`) gives one, else at 0. The legend's title explains the kinds of files
    plotted, and only those: the certified curves, the empirical markers ("not certified").

    Args:
        paths_or_results: non-empty sequence of TSV paths or Results.
        out_path: str or os.PathLike ending in ".png", ".pdf" or ".svg" (any case), which sets the
            format; missing parent directories are created.
        labels: legend labels, one per item; default the file names (with their directory when two
            files share a name; "results i" for in-memory results).
        max_radius: right end of the radius axis (ℓ2, pixels in [0, 1]), > 0; default 1.1 times
            the largest radius in the certify files (so the last drop to 0 shows), or 1.0 when
            there is none or it is 0.

    Returns:
        matplotlib.figure.Figure: the figure written to `out_path` (not registered with pyplot).
        Its one axes holds, in order, a step line per certify file (x: the radius grid, every
        curve's breakpoints in [0, max_radius]; y: certified accuracy there in %, drawn
        "steps-pre"), the envelope line when there are several, and one marker line per predict /
        attack file (y: its empirical accuracy in %). The y axis runs from 0 to 102 % (headroom
        so that a curve at 100 % shows), ticks every 10 % from 0 to 100, as the text tables.

    Raises:
        FileNotFoundError: a path does not exist.
        ValueError: empty input, a malformed or empty file, labels of the wrong length,
            max_radius not finite and > 0, out_path not ending in .png, .pdf or .svg.
    """
    fmt = plot_format(out_path)
    items = [_as_results(item) for item in paths_or_results]
    if not items:
        raise ValueError("paths_or_results must not be empty")
    if labels is None:
        labels = default_labels(items)
    if len(labels) != len(items):
        raise ValueError(f"labels must have one entry per file ({len(items)}), got {len(labels)}")
    for r in items:
        _check_nonempty(r)
        if r.kind == "unallocated":
            summarize_results(r, [0.0])  # raises: rows before the allocation have no certified radius
    labels = [label + (TRANSDUCTIVE_MARK if r.transductive else "") for label, r in zip(labels, items)]
    certify = [(label, r) for label, r in zip(labels, items) if r.kind == "certify"]
    if max_radius is None:
        largest = max([float(np.max(r.radius)) for _, r in certify] + [marker_radius(r) for r in items], default=0.0)
        max_radius = 1.1 * largest if largest > 0 else 1.0
    elif not (np.isfinite(max_radius) and max_radius > 0):
        raise ValueError(f"max_radius must be a finite l2 radius > 0, got {max_radius!r}")
    return _draw(items, labels, certify, float(max_radius), os.fspath(out_path), fmt)


def default_labels(items) -> list:
    """Legend labels for Results: file names, or the last two path parts where file names repeat."""
    names = [os.path.basename(r.path) if r.path else f"results {i}" for i, r in enumerate(items)]
    return [os.path.join(os.path.basename(os.path.dirname(r.path)), name) if r.path and names.count(name) > 1
            else name for name, r in zip(names, items)]


def marker_radius(r) -> float:
    """Where an empirical (predict / attack) result goes on the radius axis: an attack file's epsilon
    (l2, [0, 1] pixels) from its run record `<path>.json`, else 0.0. Certify results: 0.0."""
    if r.kind != "attack" or not r.path or not os.path.isfile(r.path + ".json"):
        return 0.0
    try:
        with open(r.path + ".json") as f:
            epsilon = json.load(f).get("epsilon")
    except (OSError, ValueError, AttributeError):
        return 0.0
    if isinstance(epsilon, (int, float)) and not isinstance(epsilon, bool) and np.isfinite(epsilon) and epsilon >= 0:
        return float(epsilon)
    return 0.0


def legend_notes(kinds) -> list:
    """The plot legend's explanation lines for the kinds of files plotted, and only those.

    Args:
        kinds: the ``Results.kind`` of each plotted item ("certify", "predict", "attack").

    Returns:
        list of str: a line on the certified curves when a certify file is there, a line on the
        hollow markers when a predict or attack file is there.
    """
    notes = []
    if "certify" in kinds:
        notes.append("curves: certified accuracy (%), rows correct with certified radius >= r")
    empirical = [kind for kind in ("predict", "attack") if kind in kinds]
    if empirical:
        notes.append(f"hollow markers: empirical accuracy (%) of {'/'.join(empirical)} files, "
                     f"not certified")
    return notes


def _draw(items, labels, certify, max_radius, out_path, fmt) -> "Figure":
    from matplotlib.figure import Figure  # pylint: disable=import-outside-toplevel

    # All breakpoints of all curves, so that "steps-pre" on this grid is exact: on
    # (grid[k-1], grid[k]] no radius lies strictly inside, so accuracy equals its value at grid[k].
    radii = [r.radius[r.radius <= max_radius] for _, r in certify]
    grid = np.unique(np.concatenate([[0.0, max_radius]] + radii))
    figure = Figure(figsize=(6.4, 4.4))
    axes = figure.add_subplot()
    curves = []  # in percent, the unit of the text tables
    for label, r in certify:
        curves.append(100.0 * certified_accuracy(r, grid))
        axes.step(grid, curves[-1], where="pre", label=label)
    if len(curves) > 1:
        mixed = len({r.transductive for _, r in certify}) > 1
        axes.step(grid, np.max(curves, axis=0), where="pre", linestyle="--", color="black",
                  label=MIXED_ENVELOPE_LABEL if mixed else ENVELOPE_LABEL)
    for label, r in zip(labels, items):
        if r.kind != "certify":
            at = marker_radius(r)
            where = f" at epsilon={at:g}" if at > 0 else ""
            axes.plot([at], [100.0 * accuracy(r)], marker="D", markersize=8, fillstyle="none",
                      linestyle="none", clip_on=False, label=f"{label}: {r.kind}{where}")
    axes.set_xlim(0.0, max_radius)
    axes.set_ylim(0.0, 102.0)  # a little headroom so that a curve at 100 % is not clipped
    axes.set_yticks(np.arange(0.0, 101.0, 10.0))
    axes.set_xlabel("radius (l2 norm, pixels in [0, 1])")
    axes.set_ylabel("certified accuracy (%)")
    axes.set_title("Certified accuracy of the smoothed classifier")
    axes.grid(alpha=0.3)
    # Below the axes: long file names would otherwise cover the curves (bbox_inches="tight" keeps it).
    axes.legend(loc="upper left", bbox_to_anchor=(0.0, -0.14), fontsize="small", frameon=False,
                title="\n".join(legend_notes([r.kind for r in items])), title_fontsize="small",
                alignment="left")
    os.makedirs(os.path.dirname(os.path.abspath(out_path)), exist_ok=True)
    figure.savefig(out_path, format=fmt, dpi=100, bbox_inches="tight")
    return figure
