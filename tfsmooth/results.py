"""Result files of CERTIFY / PREDICT / attack runs: formats, a reader and a resumable writer.

The files are the tab-separated tables of the reference implementation of Cohen et al. (2019),
``locuslab/smoothing`` (``certify.py``, ``predict.py``), and of Salman et al. (2019)
(``predict.py`` with an attack): a header line, then one line per test image. METHODS.md §1-2.

Three column sets, matched by name when reading:

* CERTIFY: ``idx label predict radius correct time``
* PREDICT: ``idx label predict correct time``
* ATTACK:  ``idx label predict basePredict correct time``

``idx`` is the index of the image in the evaluated split, ``label`` its true class, ``predict`` the
smoothed classifier's answer or ``ABSTAIN`` (-1), ``radius`` the certified ℓ2 radius (pixels in
[0, 1]; 0 on abstention), ``basePredict`` the base classifier's answer at the (attacked) input,
``correct`` is 1 iff ``predict == label`` else 0, ``time`` the wall-clock time spent on the image.

Differences between what this module writes and what the reference wrote (both are read):

* ``time``: we write seconds with 4 decimals (``"1.2346"``); the reference wrote
  ``str(datetime.timedelta)``, i.e. ``H:MM:SS.ffffff``, ``H:MM:SS`` (no fraction when the
  microseconds are 0) or ``D day(s), H:MM:SS[.ffffff]``.
* ``radius``: the reference wrote ``"{:.3}"`` (3 significant digits, rounded to nearest, so a
  radius of 0.2496 was printed as "0.25" and counted as certified at 0.25). We write
  ``RADIUS_DECIMALS`` = 4 decimals rounded *down* (``0.24999 -> "0.2499"``). The printed radius is
  then never larger than the computed one, and for every threshold r with at most 4 decimals,
  ``printed >= r`` holds exactly when ``radius >= r`` does: certified accuracy read back from the
  file equals the one of the unrounded radii.
"""

import dataclasses
import decimal
import json
import math
import numbers
import operator
import os
import re
from typing import Dict, FrozenSet, Mapping, Optional, Sequence, Tuple

import numpy as np

try:
    import fcntl
except ImportError:  # not POSIX: no lock against a second writer
    fcntl = None

from tfsmooth import files
from tfsmooth.stats import ABSTAIN  # -1, the smoothed classifier's answer when it abstains

CERTIFY_COLUMNS = ("idx", "label", "predict", "radius", "correct", "time")
PREDICT_COLUMNS = ("idx", "label", "predict", "correct", "time")
ATTACK_COLUMNS = ("idx", "label", "predict", "basePredict", "correct", "time")
SAMPLEWISE_COLUMNS = (*CERTIFY_COLUMNS, "sigma", "radius_unallocated")
"""Sample-wise (transductive) certification (`tfsmooth.samplewise`): the reference columns with ``radius`` the
allocated r_j, plus the image's noise level sigma_j and its CERTIFY radius R_j before the allocation. Read as a
certify file whose `Results.transductive` is True."""
SEQUENTIAL_COLUMNS = (*CERTIFY_COLUMNS, "n_used")
"""Sequential certification (`tfsmooth.sequential`): the reference columns, ``radius`` the largest decided target
radius, plus the estimation draws the image used. Read as a certify file with `Results.n_used`."""
UNALLOCATED_COLUMNS = ("idx", "label", "predict", "radius_unallocated", "correct", "time", "sigma")
"""The per-image rows of a sample-wise run before the allocation (resumable; no ``radius`` column, so no tool
mistakes R_j for a certified radius of one classifier). Kind "unallocated"."""
KINDS = {"certify": CERTIFY_COLUMNS, "predict": PREDICT_COLUMNS, "attack": ATTACK_COLUMNS,
         "unallocated": UNALLOCATED_COLUMNS}
COLUMN_SETS = {CERTIFY_COLUMNS: "certify", SAMPLEWISE_COLUMNS: "certify", SEQUENTIAL_COLUMNS: "certify",
               PREDICT_COLUMNS: "predict",
               ATTACK_COLUMNS: "attack", UNALLOCATED_COLUMNS: "unallocated"}
"""Every column set a result file may have (in the order written), and its kind."""

RADIUS_DECIMALS = 4
TIME_DECIMALS = 4

_INT = re.compile(r"-?[0-9]+\Z")
_FLOAT = re.compile(r"[-+]?([0-9]+\.?[0-9]*|\.[0-9]+)([eE][-+]?[0-9]+)?\Z")
# str(datetime.timedelta): "[D day[s], ]H:MM:SS[.ffffff]"; D may be negative.
_TIMEDELTA = re.compile(
    r"(?:(-?[0-9]+) days?, )?([0-9]+):([0-5][0-9]):([0-5][0-9](?:\.[0-9]+)?)\Z")
_INT_COLUMNS = ("idx", "label", "predict", "basePredict", "correct", "n_used")


@dataclasses.dataclass(frozen=True, eq=False)
class Results:
    """The rows of one result file, as read-only numpy arrays of shape ``[rows]``.

    Attributes:
        kind: "certify", "predict" or "attack" (which column set the file has).
        idx: int64, index of each image in the evaluated split, >= 0, distinct.
        label: int64, true class, >= 0.
        predict: int64, the smoothed classifier's class or ABSTAIN (-1).
        correct: int64, 1 iff ``predict == label`` else 0.
        time: float64, wall-clock seconds spent on each image.
        radius: float64 certified ℓ2 radius (pixels in [0, 1], >= 0), or None unless
            kind == "certify".
        base_predict: int64 answer of the base classifier, or None unless kind == "attack".
        path: the file the rows were read from, or None.
        sigma: float64 noise level of each row (sample-wise certification, `SAMPLEWISE_COLUMNS` /
            `UNALLOCATED_COLUMNS`), or None.
        radius_unallocated: float64 CERTIFY radius R_j before the transductive allocation, or None.
        n_used: int64 estimation draws of each row (sequential certification, `SEQUENTIAL_COLUMNS`), or None.

    Raises:
        ValueError: unknown kind, arrays of different lengths or not 1-D, radius / base_predict
            present or absent against kind, or values breaking the rules above.
    """

    kind: str
    idx: np.ndarray
    label: np.ndarray
    predict: np.ndarray
    correct: np.ndarray
    time: np.ndarray
    radius: Optional[np.ndarray] = None
    base_predict: Optional[np.ndarray] = None
    path: Optional[str] = None
    sigma: Optional[np.ndarray] = None
    radius_unallocated: Optional[np.ndarray] = None
    n_used: Optional[np.ndarray] = None

    @property
    def transductive(self) -> bool:
        """Whether the rows are a sample-wise certification (radii valid for this test set only)."""
        return self.sigma is not None

    def __post_init__(self):
        if self.kind not in KINDS:
            raise ValueError(f"kind must be one of {sorted(KINDS)}, got {self.kind!r}")
        if (self.radius is None) != (self.kind != "certify"):
            raise ValueError(f"radius must be given exactly when kind == 'certify' (kind "
                             f"{self.kind!r})")
        if (self.base_predict is None) != (self.kind != "attack"):
            raise ValueError(f"base_predict must be given exactly when kind == 'attack' (kind "
                             f"{self.kind!r})")
        dtypes = {"idx": np.int64, "label": np.int64, "predict": np.int64,
                  "correct": np.int64, "time": np.float64, "radius": np.float64,
                  "base_predict": np.int64, "sigma": np.float64, "radius_unallocated": np.float64,
                  "n_used": np.int64}
        for name, dtype in dtypes.items():
            value = getattr(self, name)
            if value is None:
                continue
            array = np.asarray(value)
            if (dtype is np.int64 and array.size
                    and not np.issubdtype(array.dtype, np.integer) and array.dtype != bool):
                raise ValueError(f"{name} must hold integers, got dtype {array.dtype}")
            array = np.array(array, dtype=dtype)
            if array.ndim != 1 or array.shape != np.shape(self.idx):
                raise ValueError(f"{name} must be 1-D with the shape of idx "
                                 f"{np.shape(self.idx)}, got shape {array.shape}")
            array.flags.writeable = False
            object.__setattr__(self, name, array)
        self._check_values()

    def _check_values(self):
        if np.any(self.idx < 0) or len(np.unique(self.idx)) != len(self.idx):
            raise ValueError("idx must be distinct integers >= 0")
        if np.any(self.label < 0) or np.any(self.predict < ABSTAIN):
            raise ValueError(f"label must be >= 0 and predict >= ABSTAIN ({ABSTAIN})")
        if not np.array_equal(self.correct, (self.predict == self.label).astype(np.int64)):
            raise ValueError("correct must be 1 where predict == label and 0 elsewhere")
        if self.radius is not None and not np.all(np.isfinite(self.radius) & (self.radius >= 0)):
            raise ValueError("radius must be finite and >= 0")

    def __len__(self) -> int:
        return int(self.idx.shape[0])


def kind_of(columns: Sequence[str]) -> str:
    """Returns "certify", "predict", "attack" or "unallocated" for a header's column names (any order).

    Raises:
        ValueError: the names are not exactly one of the three column sets.
    """
    for expected, kind in COLUMN_SETS.items():
        if len(columns) == len(expected) and set(columns) == set(expected):
            return kind
    raise ValueError(f"header {tuple(columns)} is none of the known column sets "
                     f"{list(COLUMN_SETS)}")


def _parse_int(text: str) -> int:
    if not _INT.match(text):
        raise ValueError(f"{text!r} is not an integer")
    return int(text)


def _parse_float(text: str) -> float:
    if not _FLOAT.match(text):
        raise ValueError(f"{text!r} is not a finite decimal number")
    return float(text)


def parse_time(text: str) -> float:
    """Parses a ``time`` field to seconds (float).

    Accepts our format, seconds as a decimal number (``"1.2346"``), and the reference's
    ``str(datetime.timedelta)``: ``"0:00:01.234567"`` -> 1.234567, ``"0:00:02"`` -> 2.0,
    ``"1 day, 2:03:04.000001"`` -> 93784.000001.

    Raises:
        ValueError: the text is in neither format.
    """
    match = _TIMEDELTA.match(text)
    if match:
        days, hours, minutes, seconds = match.groups()
        return (int(days or 0) * 86400.0 + int(hours) * 3600.0 + int(minutes) * 60.0
                + float(seconds))
    if _FLOAT.match(text):
        return float(text)
    raise ValueError(f"time {text!r} is neither seconds nor H:MM:SS[.ffffff]")


def _check_row(row: Mapping[str, float]) -> None:
    """Checks the meaning of one parsed row; raises ValueError naming the offending column."""
    if row["idx"] < 0:
        raise ValueError(f"idx must be >= 0, got {row['idx']}")
    if row["label"] < 0:
        raise ValueError(f"label must be >= 0, got {row['label']}")
    if row["predict"] < ABSTAIN:
        raise ValueError(f"predict must be a class >= 0 or ABSTAIN ({ABSTAIN}), got "
                         f"{row['predict']}")
    if "n_used" in row and row["n_used"] < 0:
        raise ValueError(f"n_used must be >= 0, got {row['n_used']}")
    if "basePredict" in row and row["basePredict"] < 0:
        raise ValueError(f"basePredict must be >= 0, got {row['basePredict']}")
    expected = int(row["predict"] == row["label"])
    if row["correct"] != expected:
        raise ValueError(f"correct must be {expected} for predict {row['predict']} and label "
                         f"{row['label']}, got {row['correct']}")
    for name in ("radius", "radius_unallocated"):
        if name in row and not (math.isfinite(row[name]) and row[name] >= 0):
            raise ValueError(f"{name} must be finite and >= 0, got {row[name]}")
    if "sigma" in row and not (math.isfinite(row["sigma"]) and row["sigma"] > 0):
        raise ValueError(f"sigma must be finite and > 0, got {row['sigma']}")
    if "radius_unallocated" in row and "radius" in row and row["radius"] > row["radius_unallocated"]:
        raise ValueError(f"radius (allocated) must be <= radius_unallocated, got {row['radius']} > "
                         f"{row['radius_unallocated']}")
    if not math.isfinite(row["time"]):
        raise ValueError(f"time must be finite, got {row['time']}")


def _parse_row(fields: Sequence[str], columns: Sequence[str]) -> Dict[str, float]:
    """Parses and checks the fields of one line; raises ValueError without location."""
    if len(fields) != len(columns):
        raise ValueError(f"expected {len(columns)} tab-separated fields ({' '.join(columns)}), "
                         f"found {len(fields)}")
    row = {}
    for name, text in zip(columns, fields):
        try:
            if name in _INT_COLUMNS:
                row[name] = _parse_int(text)
            elif name == "time":
                row[name] = parse_time(text)
            else:
                row[name] = _parse_float(text)
        except ValueError as error:
            raise ValueError(f"column {name}: {error}") from None
    _check_row(row)
    return row


def _parse_rows(path: str, lines: Sequence[str], columns: Sequence[str]):
    """Parses data lines (line 2 on); returns the rows; raises ValueError with file and line."""
    rows, seen = [], {}
    for number, line in enumerate(lines, start=2):
        try:
            row = _parse_row(line.rstrip("\r").split("\t"), columns)
        except ValueError as error:
            raise ValueError(f"{path}, line {number}: {error}") from None
        if row["idx"] in seen:
            raise ValueError(f"{path}, line {number}: idx {row['idx']} already appeared on line "
                             f"{seen[row['idx']]}")
        seen[row["idx"]] = number
        rows.append(row)
    return rows


def _read_text(path: str) -> str:
    if not os.path.exists(path):
        raise FileNotFoundError(f"result file {path} does not exist")
    if os.path.isdir(path):
        raise ValueError(f"result file {path} is a directory, expected a TSV file")
    with open(path, "rb") as file:
        data = file.read()
    try:
        return data.decode("utf-8")
    except UnicodeDecodeError as error:
        raise ValueError(f"{path}: not UTF-8 text ({error})") from None


def read_results(path) -> Results:
    """Reads a certify / predict / attack TSV written by this package or by the reference code.

    The kind is recognized from the header; columns are matched by name, in any order. A last line
    without a trailing newline is accepted if it parses, and so are blank or whitespace-only lines
    at the end of the file (an editor's or a shell's extra newline); a blank line between rows is
    an error. Reference files' radii carry the rounding of ``"{:.3}"`` (see the module docstring).

    Args:
        path: str or os.PathLike, the TSV file.

    Returns:
        Results, with ``time`` in seconds whichever format the file used.

    Raises:
        FileNotFoundError: the file does not exist (the message names it).
        ValueError: empty file, unknown header (a comma-separated one gets a hint that the files
            are tab-separated), a blank line between rows, a line with the wrong number of fields,
            a non-numeric field, a duplicated idx, or ``correct`` disagreeing with
            ``predict == label``; the message names the file and the 1-based line number.
    """
    path = os.fspath(path)
    lines = _read_text(path).split("\n")
    while lines and not lines[-1].strip():  # the final newline's empty piece, trailing blank lines
        lines.pop()
    if not lines:
        raise ValueError(f"{path}, line 1: file is empty, expected a header line")
    kind, columns = _read_header(path, lines[0])
    # Line numbers are 1-based and the header is line 1, so line n is lines[n - 1]. Rows above the
    # first blank line are parsed first, so that the first error in the file is the one reported.
    blank = next((number for number, line in enumerate(lines[1:], start=2) if not line.strip()),
                 None)
    rows = _parse_rows(path, lines[1:len(lines) if blank is None else blank - 1], columns)
    if blank is not None:
        raise ValueError(f"{path}, line {blank}: blank line between rows (blank lines are allowed "
                         f"only at the end of the file)")

    def column(name):
        return np.array([row[name] for row in rows])

    return Results(
        kind=kind, idx=column("idx"), label=column("label"), predict=column("predict"),
        correct=column("correct"), time=column("time"),
        radius=column("radius") if kind == "certify" else None,
        base_predict=column("basePredict") if kind == "attack" else None, path=path,
        sigma=column("sigma") if "sigma" in columns else None,
        radius_unallocated=column("radius_unallocated") if "radius_unallocated" in columns else None,
        n_used=column("n_used") if "n_used" in columns else None)


def _read_header(path: str, line: str) -> Tuple[str, Sequence[str]]:
    """Returns (kind, column names) of a header line; raises ValueError naming file and line 1."""
    header = line.rstrip("\r")
    columns = header.split("\t")
    try:
        return kind_of(columns), columns
    except ValueError as error:
        if "\t" not in header and "," in header:
            raise ValueError(f"{path}, line 1: header {header!r} has commas and no tab: "
                             f"comma-separated? tfsmooth and the reference write tab-separated "
                             f"files") from None
        raise ValueError(f"{path}, line 1: {error}") from None


def format_radius(radius: float) -> str:
    """Formats a certified radius with RADIUS_DECIMALS decimals, rounded down: 0.24999 -> "0.2499".

    Rounding down is exact (done on the binary value of the float), so the printed radius is never
    larger than the certified one.
    """
    quantum = decimal.Decimal(1).scaleb(-RADIUS_DECIMALS)
    return str(decimal.Decimal(float(radius) + 0.0).quantize(quantum, decimal.ROUND_FLOOR))


def _format_row(row: Mapping[str, object], columns: Sequence[str]) -> str:
    """Checks one row given to ResultsWriter.write and returns its line (with newline)."""
    if set(row) != set(columns):
        raise ValueError(f"row must have exactly the columns {columns}, got {tuple(row)}")
    values = {}
    for name in columns:
        value = row[name]
        if name in _INT_COLUMNS:
            try:
                values[name] = operator.index(value)
            except TypeError:
                raise ValueError(f"column {name} must be an integer, got {value!r}") from None
        elif isinstance(value, numbers.Real) and not isinstance(value, bool):
            values[name] = float(value)
        else:
            raise ValueError(f"column {name} must be a real number, got {value!r}")
    _check_row(values)
    if values["time"] < 0:
        raise ValueError(f"time must be >= 0 seconds, got {values['time']}")
    fields = []
    for name in columns:
        if name in ("radius", "radius_unallocated"):
            fields.append(format_radius(values[name]))
        elif name == "time":
            fields.append(f"{values[name]:.{TIME_DECIMALS}f}")
        else:
            fields.append(str(values[name]))
    return "\t".join(fields) + "\n"


def _config_json(run_config: Mapping) -> Tuple[str, dict]:
    """Returns run_config as JSON text and as the dict that text loads back to."""
    if not isinstance(run_config, Mapping) or not all(isinstance(k, str) for k in run_config):
        raise ValueError(f"run_config must be a dict with str keys, got {run_config!r}")
    try:
        text = json.dumps(dict(run_config), indent=2, allow_nan=False) + "\n"
    except (TypeError, ValueError) as error:
        raise ValueError(f"run_config must be JSON-serializable without NaN/inf: {error}") from None
    return text, json.loads(text)


def _config_differences(found: Mapping, expected: Mapping, informational=()) -> str:
    def show(config, key):
        return json.dumps(config[key]) if key in config else "<missing>"

    lines = []
    for key in list(found) + [k for k in expected if k not in found]:
        if key in informational:
            continue
        if key not in found or key not in expected or found[key] != expected[key]:
            lines.append(f"  {key}: file has {show(found, key)}, this run has {show(expected, key)}")
    return "\n".join(lines)


class ResultsWriter:
    """Writes a result TSV one durable row at a time, resuming a file left by an interrupted run.

    A new file gets the header line and a JSON sidecar ``<path>.json`` holding ``run_config`` (the
    run's parameters: model path, sigma, n0, n, alpha, seed, skip, max, split, data set, ...).
    An existing file is resumed: its header must equal ``columns``, its sidecar must exist and
    equal ``run_config`` (after a JSON round trip), every complete row must parse (field count,
    integer idx, no duplicate idx, see ``read_results``); then an incomplete last line (no trailing
    newline: a crash in mid-write) is cut away, and ``done`` holds the finished idx. Nothing is
    written before all checks pass, so a refused invocation leaves the files byte for byte as they
    were. Rows are flushed and fsynced one by one. On POSIX the writer holds an exclusive
    ``flock`` on the TSV until closed, so a second run on the same file is refused.

    Use as a context manager::

        with ResultsWriter("out/certify.tsv", CERTIFY_COLUMNS, config) as writer:
            for i in indices:
                if i not in writer.done:
                    writer.write({"idx": i, ...})

    Args:
        path: str or os.PathLike, the TSV; missing parent directories are created.
        columns: one of `COLUMN_SETS` (CERTIFY_COLUMNS, PREDICT_COLUMNS, ATTACK_COLUMNS, SAMPLEWISE_COLUMNS or
            UNALLOCATED_COLUMNS), in that exact order.
        run_config: dict with str keys and JSON-serializable values (no NaN / inf).
        informational: keys of run_config stored in the sidecar but not compared on resume (e.g.
            the model's path, when its SHA-256 identifies it: a moved model resumes).

    Raises:
        ValueError: unknown columns; run_config not JSON-serializable; the path is a directory;
            the file is locked by another open writer; an existing file that is not UTF-8, lacks
            a complete header, has another header (message names the file, the expected and the
            found header), has no sidecar or one
            with other parameters (message lists each differing key with both values), or has a
            malformed / duplicated row (message names file and line).
    """

    def __init__(self, path, columns: Sequence[str], run_config: Mapping, informational: Sequence[str] = ()):
        self.path = os.fspath(path)
        self.informational = frozenset(informational)
        self.columns = tuple(columns)
        if self.columns not in COLUMN_SETS:
            raise ValueError(f"columns must be one of {list(COLUMN_SETS)}, got {self.columns}")
        config_text, config = _config_json(run_config)
        self.sidecar_path = self.path + ".json"
        if os.path.isdir(self.path):
            raise ValueError(f"result file {self.path} is a directory, expected a TSV file")
        if os.path.exists(self.path):
            self._file = self._open_locked()
            try:
                keep, self._done = self._check_existing(config)
            except BaseException:
                self._file.close()
                raise
            if keep != os.path.getsize(self.path):
                self._file.truncate(keep)
                os.fsync(self._file.fileno())
            self._file.seek(keep)
        else:
            os.makedirs(os.path.dirname(os.path.abspath(self.path)), exist_ok=True)
            files.atomic_write_text(self.sidecar_path, config_text)
            files.atomic_write_text(self.path, "\t".join(self.columns) + "\n")
            self._done = set()
            self._file = self._open_locked()
            self._file.seek(0, os.SEEK_END)

    def _open_locked(self):
        """Opens the TSV for update, holding an exclusive lock (POSIX) until close()."""
        file = open(self.path, "r+b")
        if fcntl is not None:
            try:
                fcntl.flock(file.fileno(), fcntl.LOCK_EX | fcntl.LOCK_NB)
            except OSError:
                file.close()
                raise ValueError(f"{self.path} is being written by another ResultsWriter "
                                 f"(locked); two runs must not write the same file") from None
        return file

    def _check_existing(self, config: dict) -> Tuple[int, set]:
        """Validates an existing file; returns (bytes to keep, finished idx). Writes nothing."""
        text = _read_text(self.path)
        if "\n" not in text:
            raise ValueError(f"{self.path}: no complete header line; expected "
                             f"{' '.join(self.columns)!r} (tab-separated)")
        complete, _, _ = text.rpartition("\n")
        lines = complete.split("\n")
        found_columns = tuple(lines[0].split("\t"))
        if found_columns != self.columns:
            raise ValueError(f"{self.path}: header does not match; expected columns "
                             f"{self.columns}, found {found_columns}")
        if not os.path.isfile(self.sidecar_path):
            raise ValueError(f"{self.path}: run-config sidecar {self.sidecar_path} is missing, so "
                             f"the existing rows cannot be checked to come from the same parameters")
        try:
            with open(self.sidecar_path, encoding="utf-8") as file:
                found = json.load(file)
        except (ValueError, UnicodeDecodeError) as error:
            raise ValueError(f"{self.sidecar_path}: not valid JSON ({error})") from None
        if not isinstance(found, dict):
            raise ValueError(f"{self.sidecar_path}: expected a JSON object, found {found!r}")
        compared = {k: v for k, v in found.items() if k not in self.informational}
        if compared != {k: v for k, v in config.items() if k not in self.informational}:
            raise ValueError(f"{self.path} was written with other parameters; resuming would mix "
                             f"results. Differences:\n{_config_differences(found, config, self.informational)}")
        rows = _parse_rows(self.path, lines[1:], self.columns)
        keep = len(complete.encode("utf-8")) + 1
        return keep, {row["idx"] for row in rows}

    @property
    def done(self) -> FrozenSet[int]:
        """The idx of the rows already in the file (finished images)."""
        return frozenset(self._done)

    def write(self, row: Mapping[str, object]) -> None:
        """Appends one row, then flushes and fsyncs it.

        Args:
            row: dict with exactly the writer's columns: integers for idx, label, predict
                (class or ABSTAIN), basePredict, correct (= int(predict == label)); a real for
                radius (ℓ2, >= 0, written rounded down to RADIUS_DECIMALS) and time (seconds,
                >= 0, written with TIME_DECIMALS decimals).

        Raises:
            ValueError: missing / extra columns, a wrong type or value, or an idx already written.
        """
        line = _format_row(row, self.columns)
        idx = operator.index(row["idx"])
        if idx in self._done:
            raise ValueError(f"{self.path}: idx {idx} is already in the file")
        self._file.write(line.encode("utf-8"))
        self._file.flush()
        os.fsync(self._file.fileno())
        self._done.add(idx)

    def close(self) -> None:
        """Closes the file; further writes raise ValueError."""
        self._file.close()

    def __enter__(self) -> "ResultsWriter":
        return self

    def __exit__(self, *exc_info) -> None:
        self.close()
