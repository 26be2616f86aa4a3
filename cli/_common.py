"""Shared pieces of the click commands: error translation, progress, numeric option types."""

from __future__ import annotations

import contextlib
import math
import os
import sys
import tempfile
import time
import warnings

import click

from tfsmooth import registry

COUNT = click.IntRange(min=1)
"""A count such as n, n0, a batch size or a number of steps: an integer >= 1."""
NON_NEGATIVE = click.IntRange(min=0)
"""An integer >= 0 (a seed, a number of examples where 0 means none/all)."""
ALPHA = click.FloatRange(0.0, 1.0, min_open=True, max_open=True)
"""A failure probability in (0, 1)."""
POSITIVE = click.FloatRange(min=0.0, min_open=True)
"""A real number > 0 (sigma, a learning rate); NaN and inf are refused by the library's checks."""
NON_NEGATIVE_REAL = click.FloatRange(min=0.0)
"""A real number >= 0 (epsilon, weight decay)."""
MAX_INDEX = click.IntRange(min=-1)
"""--max: -1 (no limit) or an index >= 1 (0 is refused by the library: it would select nothing)."""
COMPUTE_DTYPE = click.Choice(registry.COMPUTE_DTYPES)
EVALUATION_ATTACK = click.Choice(registry.EVALUATION_ATTACKS)
SMOOTHADV_ATTACK = click.Choice(registry.SMOOTHADV_ATTACKS)
ESTIMATOR = click.Choice(registry.ESTIMATORS)
TRAINING_METHOD = click.Choice(registry.TRAINING_METHODS)
ARCHITECTURE = click.Choice((*registry.ARCHITECTURES, registry.CUSTOM_ARCH))
CERTIFY_METHOD = click.Choice(registry.CERTIFY_METHODS)


class AlphaSplit(click.ParamType):
    """T-CERTIFY's --alpha-split: a number in (0, 1] (the fraction of alpha spent on p_a_lower) or "auto"."""

    name = "SPLIT"

    def convert(self, value, param, ctx):
        if value == registry.ALPHA_SPLIT_AUTO or isinstance(value, float):
            return value
        try:
            number = float(value)
        except (TypeError, ValueError):
            number = math.nan
        if not 0.0 < number <= 1.0:  # False for NaN
            self.fail(f"{value!r} is not a number in (0, 1] or {registry.ALPHA_SPLIT_AUTO!r}", param, ctx)
        return number


ALPHA_SPLIT = AlphaSplit()


@contextlib.contextmanager
def library_errors():
    """Turns the library's argument and file errors into click errors (message, exit 1, no traceback),
    and prints tfsmooth's warnings (e.g. a sigma in the wrong units) as one "Warning: ..." line on stderr."""
    from tfsmooth import checks  # light (no TensorFlow)

    def show(message, category, filename, lineno, file=None, line=None):
        if issubclass(category, checks.ScaleWarning):
            click.echo(f"Warning: {message}", err=True)
        else:
            default_show(message, category, filename, lineno, file, line)

    default_show = warnings.showwarning
    warnings.showwarning = show
    try:
        yield
    except (ValueError, FileNotFoundError, NotADirectoryError, IsADirectoryError, PermissionError,
            ConnectionError) as err:
        raise click.ClickException(str(err)) from None
    except ImportError as err:
        if "tensorflow-datasets" not in str(err):  # only the data loader's worded errors; others keep their traceback
            raise
        raise click.ClickException(str(err)) from None
    finally:
        warnings.showwarning = default_show


def quiet_tensorflow():
    """Keeps TensorFlow's C++ logs off the terminal unless the user asks for them.

    TensorFlow prints start-up lines on every import (oneDNN, "Could not find cuda drivers", and on a
    CPU-only machine an `E0000 ... failed call to cuInit` error), some of them before its log level is
    read. Unless the user set TF_CPP_MIN_LOG_LEVEL (theirs wins) or passed `tfsmooth --verbose`, this
    sets the level to 3 (fatal only) and imports TensorFlow with the process's stderr (file
    descriptor 2) sent to a temporary file, which is replayed if the import fails.
    """
    context = click.get_current_context(silent=True)
    verbose = bool(context and context.find_root().params.get("verbose"))
    if verbose or "TF_CPP_MIN_LOG_LEVEL" in os.environ:
        return
    os.environ["TF_CPP_MIN_LOG_LEVEL"] = "3"
    if "tensorflow" in sys.modules:
        return
    sys.stderr.flush()
    saved = os.dup(2)
    with tempfile.TemporaryFile() as captured:
        os.dup2(captured.fileno(), 2)
        try:
            import tensorflow  # noqa: F401  (start-up logs go to `captured`)
        except BaseException:
            os.dup2(saved, 2)
            captured.seek(0)
            sys.stderr.write(captured.read().decode(errors="replace"))
            raise
        finally:
            os.dup2(saved, 2)
            os.close(saved)


class Progress:
    """Progress of a long job on stderr, fed by the library's `on_row` callback.

    On a terminal: Keras' `Progbar`. Elsewhere (logs, CI, notebooks' captured output): plain lines,
    no ANSI codes or backspaces, at most one every `interval` seconds plus the last. Rows that a
    resumed run found already done are counted from the start ("resuming: 2 of 10 done"). The rate
    and ETA are measured from the second new row on, so the first row's graph tracing is not in them.

    Args:
        total: rows the whole run has (`tfsmooth.jobs.selected_count`).
        done: rows already in the output file (a resumed run).
        label: unit of a row, e.g. "images".
        stream: where to write (default: click's stderr); `isatty()` picks the format.
        interval: seconds between two plain lines.
    """

    def __init__(self, total, done=0, label="images", stream=None, interval=10.0):
        self.total, self.done, self.label = total, done, label
        self.stream = stream or click.get_text_stream("stderr")
        self.count = self.correct = 0
        self.interval = interval
        self._times = []
        self._last_line = -math.inf
        self.bar = None
        if self.stream.isatty():
            from keras.utils import Progbar  # imported here: keep `--help` fast

            self.bar = Progbar(total, unit_name=label, stateful_metrics=["correct"])
        if done:
            self._write(f"resuming: {done} of {total} {label} done")
        if self.bar is not None and done:
            self._bar_update(done, [])

    def __call__(self, row):
        self.count += 1
        self.correct += int(row["correct"])
        self._times.append(time.monotonic())
        position = self.done + self.count
        if self.bar is not None:
            self._bar_update(position, [("correct", self.correct / self.count)])
            return
        now = time.monotonic()
        if now - self._last_line >= self.interval or position >= self.total:
            self._last_line = now
            self._write(self.line())

    def line(self) -> str:
        """The plain progress line: position, accuracy of this run's rows, rate and ETA."""
        position = self.done + self.count
        text = f"{position}/{self.total} {self.label}, correct {100.0 * self.correct / max(self.count, 1):.1f} %"
        if len(self._times) >= 2:
            per_row = (self._times[-1] - self._times[0]) / (len(self._times) - 1)
            text += f", {per_row:.2f} s per {self.label.rstrip('s')}, ETA {per_row * max(self.total - position, 0):.0f} s"
        return text

    def _bar_update(self, position, values):
        with contextlib.redirect_stdout(self.stream):  # Progbar writes to sys.stdout
            self.bar.update(position, values=values)

    def _write(self, text):
        self.stream.write(text + "\n")
        self.stream.flush()


@contextlib.contextmanager
def resumable(out, progress):
    """Turns Ctrl-C during a job into a message: how many rows are saved and that the same command resumes."""
    try:
        yield
    except KeyboardInterrupt:
        saved = progress.done + progress.count
        click.echo(f"\ninterrupted: {saved} of {progress.total} rows are saved in {out}; run the same command "
                   "again to resume", err=True)
        raise SystemExit(130) from None


def rows_done(out) -> int:
    """Rows already in a result file `out` (0 if it does not exist or cannot be read)."""
    from tfsmooth import results  # light (no TensorFlow)

    if not os.path.isfile(out):
        return 0
    try:
        return len(results.read_results(out))
    except (ValueError, OSError):
        return 0  # the job reports what is wrong with the file


def data_options(function):
    """--dataset, --split, --data-dir."""
    function = click.option("--data-dir", type=click.Path(file_okay=False), default=None,
                            help="cifar10: CIFAR-10 binary directory (default $TFSMOOTH_DATA_DIR, else tfds); mnist: "
                                 "idx files directory (default $TFSMOOTH_MNIST_DIR, else tfds); tfds:NAME: tfds's "
                                 "data directory.")(function)
    function = click.option("--split", type=click.Choice(registry.SPLITS), default="test", show_default=True,
                            help="Which split to evaluate.")(function)
    function = click.option("--dataset", default="cifar10", show_default=True,
                            help="Data set: cifar10, cifar10_sample (embedded), mnist, tfds:NAME (a "
                                 "tensorflow-datasets image classification set) or a path to a .npz of "
                                 "x_train, y_train, x_test, y_test.")(function)
    return function


def parse_shard(ctx, param, value):
    """click callback: "I/K" -> (I, K) with 0 <= I < K (the run's share of the selection; default 0/1: all)."""
    del ctx, param
    try:
        index, count = (int(part) for part in value.split("/"))
    except ValueError:
        raise click.BadParameter(f"expected I/K with integers 0 <= I < K (e.g. 0/4), got {value!r}") from None
    if count < 1 or not 0 <= index < count:
        raise click.BadParameter(f"expected I/K with 0 <= I < K (e.g. 3/4 is the last of 4 shards), got {value!r}")
    return index, count


def shard_option(function):
    """--shard I/K of certify, predict and attack."""
    return click.option("--shard", default="0/1", show_default=True, callback=parse_shard, metavar="I/K",
                        help="Run only the selected images whose position in the selection is I modulo K (one job "
                             "of an array of K); `tfsmooth merge` joins the K files into the unsharded run's.")(function)
