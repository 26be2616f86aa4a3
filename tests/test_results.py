"""Tests of tfsmooth.results: reading reference / own TSVs and the resumable ResultsWriter."""

import json
import os
import math

import numpy as np
import pytest

from tfsmooth import results

# A certify file exactly as the reference code of Cohen et al. writes it: radius "{:.3}", time
# str(datetime.timedelta) -- with a fraction, without one ("0:00:02"), and with a day.
REFERENCE_CERTIFY = (
    "idx\tlabel\tpredict\tradius\tcorrect\ttime\n"
    "0\t3\t3\t0.457\t1\t0:00:01.234567\n"
    "20\t8\t8\t0.25\t1\t0:00:02\n"
    "40\t1\t-1\t0.0\t0\t0:00:01.500000\n"       # abstention
    "60\t4\t5\t0.812\t0\t0:00:00.750000\n"      # wrong class
    "80\t6\t6\t1.23\t1\t1 day, 2:03:04.000001\n"
)
REFERENCE_PREDICT = (
    "idx\tlabel\tpredict\tcorrect\ttime\n"
    "0\t3\t3\t1\t0:00:00.100000\n"
    "20\t8\t-1\t0\t0:00:00.200000\n"
)
REFERENCE_ATTACK = (
    "idx\tlabel\tpredict\tbasePredict\tcorrect\ttime\n"
    "0\t3\t3\t3\t1\t0:00:03\n"
    "20\t8\t2\t8\t0\t0:00:04\n"
)
CONFIG = {"model": "/models/sigma_0.25.keras", "sigma": 0.25, "n0": 100, "n": 100000,
          "alpha": 0.001, "seed": 0, "skip": 20, "max": -1, "split": "test", "dataset": "cifar10"}


def _write(path, text):
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(text.encode("utf-8"))
    return path


def _row(idx, label=3, predict=3, radius=0.5, time=1.0):
    return {"idx": idx, "label": label, "predict": predict, "radius": radius,
            "correct": int(predict == label), "time": time}


# ------------------------------------------------------------------------------------- reading
def test_read_reference_certify_file_parses_every_column(tmp_path):
    loaded = results.read_results(_write(tmp_path / "ref.tsv", REFERENCE_CERTIFY))
    assert loaded.kind == "certify"
    assert len(loaded) == 5
    np.testing.assert_array_equal(loaded.idx, [0, 20, 40, 60, 80])
    np.testing.assert_array_equal(loaded.label, [3, 8, 1, 4, 6])
    np.testing.assert_array_equal(loaded.predict, [3, 8, results.ABSTAIN, 5, 6])
    np.testing.assert_array_equal(loaded.correct, [1, 1, 0, 0, 1])
    np.testing.assert_array_equal(loaded.radius, [0.457, 0.25, 0.0, 0.812, 1.23])
    # 1 day, 2:03:04.000001 = 86400 + 2*3600 + 3*60 + 4.000001 = 93784.000001 s.
    np.testing.assert_allclose(loaded.time, [1.234567, 2.0, 1.5, 0.75, 93784.000001],
                               rtol=0, atol=1e-9)
    assert loaded.base_predict is None
    assert loaded.path == str(tmp_path / "ref.tsv")


@pytest.mark.parametrize("text, seconds", [
    ("0:00:01.234567", 1.234567),
    ("0:00:02", 2.0),                    # timedelta prints no fraction for whole seconds
    ("1:02:03", 3723.0),                 # 3600 + 2*60 + 3
    ("2 days, 0:00:01.500000", 172801.5),  # 2*86400 + 1.5
    ("1.2346", 1.2346),                  # our format: seconds
])
def test_parse_time_accepts_seconds_and_timedelta_text(text, seconds):
    assert results.parse_time(text) == pytest.approx(seconds, abs=1e-9)


@pytest.mark.parametrize("text", ["abc", "1:2:3", "0:61:00", "", "1,5", "1_0"])
def test_parse_time_rejects_other_text(text):
    with pytest.raises(ValueError, match="time"):
        results.parse_time(text)


def test_read_reference_predict_and_attack_files_recognize_their_kind(tmp_path):
    predicted = results.read_results(_write(tmp_path / "p.tsv", REFERENCE_PREDICT))
    assert predicted.kind == "predict"
    assert predicted.radius is None and predicted.base_predict is None
    np.testing.assert_array_equal(predicted.predict, [3, -1])
    attacked = results.read_results(_write(tmp_path / "a.tsv", REFERENCE_ATTACK))
    assert attacked.kind == "attack"
    np.testing.assert_array_equal(attacked.base_predict, [3, 8])
    np.testing.assert_array_equal(attacked.time, [3.0, 4.0])


def test_read_matches_columns_by_name_in_any_order(tmp_path):
    text = "time\tcorrect\tradius\tpredict\tlabel\tidx\n2.5\t1\t0.75\t7\t7\t11\n"
    loaded = results.read_results(_write(tmp_path / "r.tsv", text))
    assert (loaded.kind, loaded.idx[0], loaded.label[0], loaded.radius[0], loaded.time[0]) == (
        "certify", 11, 7, 0.75, 2.5)


def test_read_accepts_last_line_without_newline(tmp_path):
    loaded = results.read_results(_write(tmp_path / "r.tsv", REFERENCE_PREDICT.rstrip("\n")))
    np.testing.assert_array_equal(loaded.idx, [0, 20])


@pytest.mark.parametrize("tail", ["\n\n", "\n \n\t\n", "\r\n\r\n", "\n   "])
def test_read_accepts_trailing_blank_lines(tmp_path, tail):
    loaded = results.read_results(_write(tmp_path / "r.tsv", REFERENCE_PREDICT.rstrip("\n") + tail))
    np.testing.assert_array_equal(loaded.idx, [0, 20])


def test_read_comma_separated_file_gives_one_line_hint(tmp_path):
    text = REFERENCE_CERTIFY.replace("\t", ",")  # e.g. saved from a spreadsheet as CSV
    with pytest.raises(ValueError) as error:
        results.read_results(_write(tmp_path / "r.csv", text))
    message = str(error.value)
    assert message.startswith(f"{tmp_path / 'r.csv'}, line 1: ") and "\n" not in message
    assert "comma-separated? tfsmooth and the reference write tab-separated files" in message


def test_read_header_only_file_gives_zero_rows(tmp_path):
    loaded = results.read_results(_write(tmp_path / "r.tsv", "\t".join(results.CERTIFY_COLUMNS)
                                         + "\n"))
    assert len(loaded) == 0 and loaded.radius.shape == (0,)


def test_read_missing_file_raises_file_not_found_naming_it(tmp_path):
    with pytest.raises(FileNotFoundError, match="nope.tsv"):
        results.read_results(tmp_path / "nope.tsv")


HEADER = "idx\tlabel\tpredict\tradius\tcorrect\ttime\n"


@pytest.mark.parametrize("text, location, fragment", [
    ("", "line 1", "empty"),
    ("\n\n \n", "line 1", "empty"),  # only blank lines: as empty
    ("idx\tlabel\tpredict\n0\t1\t1\n", "line 1", "header"),
    ("idx\tlabel\tpredict\tradius\tcorrect\tcorrect\n", "line 1", "header"),
    (HEADER + "0\t3\t3\t0.5\t1\t1.0\n1\t3\t3\tbig\t1\t1.0\n", "line 3", "radius"),
    (HEADER + "0\t3\t3\t0.5\t1\n", "line 2", "expected 6 tab-separated fields"),
    (HEADER + "0\t3\t3\t0.5\t1\t1.0\t9\n", "line 2", "found 7"),
    (HEADER + "1_0\t3\t3\t0.5\t1\t1.0\n", "line 2", "idx"),
    (HEADER + "0.5\t3\t3\t0.5\t1\t1.0\n", "line 2", "idx"),
    (HEADER + "7\t3\t3\t0.5\t1\t1.0\n7\t4\t4\t0.5\t1\t1.0\n", "line 3", "idx 7 already"),
    (HEADER + "0\t3\t4\t0.5\t1\t1.0\n", "line 2", "correct must be 0"),
    (HEADER + "0\t3\t3\t-0.5\t1\t1.0\n", "line 2", "radius"),
    (HEADER + "0\t3\t3\tnan\t1\t1.0\n", "line 2", "radius"),
    (HEADER + "0\t3\t-2\t0.5\t0\t1.0\n", "line 2", "predict"),
    (HEADER + "0\t3\t3\t0.5\t1\t1.0\n\n1\t3\t3\t0.5\t1\t1.0\n", "line 3", "blank line between rows"),
    (HEADER + "0\t3\t3\t0.5\t1\t1.0\n \t\n1\t3\t3\t0.5\t1\t1.0\n\n", "line 3", "blank line between rows"),
    # An error above a blank line is the one reported: the file's first error.
    (HEADER + "0\t3\t3\tbig\t1\t1.0\n\n1\t3\t3\t0.5\t1\t1.0\n", "line 2", "radius"),
    ("idx,label,predict,radius,correct,time\n0,3,3,0.5,1,1.0\n", "line 1",
     "comma-separated? tfsmooth and the reference write tab-separated files"),
])
def test_read_malformed_file_raises_value_error_with_file_and_line(tmp_path, text, location,
                                                                   fragment):
    path = _write(tmp_path / "bad.tsv", text)
    with pytest.raises(ValueError) as error:
        results.read_results(path)
    message = str(error.value)
    assert str(path) in message and location in message and fragment in message


def test_results_rejects_inconsistent_arrays():
    with pytest.raises(ValueError, match="shape of idx"):
        results.Results(kind="predict", idx=[0, 1], label=[1], predict=[1], correct=[1],
                        time=[0.0])
    with pytest.raises(ValueError, match="radius must be given"):
        results.Results(kind="certify", idx=[0], label=[1], predict=[1], correct=[1], time=[0.0])
    with pytest.raises(ValueError, match="correct must be 1"):
        results.Results(kind="predict", idx=[0], label=[1], predict=[1], correct=[0], time=[0.0])
    with pytest.raises(ValueError, match="integers"):
        results.Results(kind="predict", idx=[0.5], label=[1], predict=[1], correct=[1],
                        time=[0.0])


def test_results_arrays_are_read_only():
    loaded = results.Results(kind="predict", idx=[0], label=[1], predict=[1], correct=[1],
                             time=[0.0])
    with pytest.raises(ValueError):
        loaded.idx[0] = 5


# ------------------------------------------------------------------------------------- writing
def test_writer_new_file_gets_header_and_sidecar(tmp_path):
    path = tmp_path / "runs" / "deep" / "certify.tsv"
    with results.ResultsWriter(path, results.CERTIFY_COLUMNS, CONFIG) as writer:
        assert writer.done == frozenset()
    assert path.read_bytes() == b"idx\tlabel\tpredict\tradius\tcorrect\ttime\n"
    assert json.loads((tmp_path / "runs" / "deep" / "certify.tsv.json").read_text()) == CONFIG


def test_writer_rounds_radius_down_and_time_to_four_decimals(tmp_path):
    path = tmp_path / "c.tsv"
    with results.ResultsWriter(path, results.CERTIFY_COLUMNS, CONFIG) as writer:
        writer.write(_row(0, radius=0.24999, time=1.23456))      # floor -> 0.2499; 1.2346
        writer.write(_row(1, radius=0.25, time=0.0))             # exact -> 0.2500
        writer.write(_row(2, radius=2 / 3, time=2))              # 0.66666... -> 0.6666, not 0.6667
        writer.write(_row(3, predict=results.ABSTAIN, radius=0.0, time=np.float32(0.5)))
    assert path.read_text().splitlines()[1:] == [
        "0\t3\t3\t0.2499\t1\t1.2346",
        "1\t3\t3\t0.2500\t1\t0.0000",
        "2\t3\t3\t0.6666\t1\t2.0000",
        "3\t3\t-1\t0.0000\t0\t0.5000",
    ]


def test_format_radius_never_exceeds_the_radius():
    for radius in [0.1, 0.29, 0.3, 1 / 7, 3.8109, 0.0, 1e-7, 12.34567]:
        printed = results.format_radius(radius)
        assert float(printed) <= radius and radius - float(printed) < 1e-4
    assert results.format_radius(0.29) == "0.2899"  # the double 0.29 is 0.28999999999999998...


def test_writer_output_round_trips_through_read_results(tmp_path):
    path = tmp_path / "a.tsv"
    with results.ResultsWriter(path, results.ATTACK_COLUMNS, CONFIG) as writer:
        writer.write({"idx": 5, "label": 2, "predict": 2, "basePredict": 7, "correct": 1,
                      "time": 0.25})
        writer.write({"idx": 9, "label": 2, "predict": -1, "basePredict": 2, "correct": 0,
                      "time": 3})
    loaded = results.read_results(path)
    assert loaded.kind == "attack"
    np.testing.assert_array_equal(loaded.idx, [5, 9])
    np.testing.assert_array_equal(loaded.base_predict, [7, 2])
    np.testing.assert_array_equal(loaded.time, [0.25, 3.0])


def test_writer_resume_skips_done_rows_and_appends(tmp_path):
    path = tmp_path / "c.tsv"
    with results.ResultsWriter(path, results.CERTIFY_COLUMNS, CONFIG) as writer:
        writer.write(_row(0))
        writer.write(_row(20))
    with results.ResultsWriter(path, results.CERTIFY_COLUMNS, dict(CONFIG)) as writer:
        assert writer.done == {0, 20}
        writer.write(_row(40))
    assert path.read_text().splitlines()[1:] == [
        "0\t3\t3\t0.5000\t1\t1.0000", "20\t3\t3\t0.5000\t1\t1.0000", "40\t3\t3\t0.5000\t1\t1.0000"]


def test_writer_resume_drops_truncated_last_line(tmp_path):
    path = tmp_path / "c.tsv"
    with results.ResultsWriter(path, results.CERTIFY_COLUMNS, CONFIG) as writer:
        writer.write(_row(0))
    with open(path, "ab") as file:
        file.write(b"20\t3\t3\t0.5")  # a crash in mid-write
    with results.ResultsWriter(path, results.CERTIFY_COLUMNS, CONFIG) as writer:
        assert writer.done == {0}
    assert path.read_bytes() == HEADER.encode() + b"0\t3\t3\t0.5000\t1\t1.0000\n"


def test_writer_interrupted_then_resumed_file_equals_uninterrupted(tmp_path):
    rows = [_row(i * 20, label=i % 3, predict=i % 2, radius=0.1 * i, time=i) for i in range(5)]
    whole = tmp_path / "whole.tsv"
    with results.ResultsWriter(whole, results.CERTIFY_COLUMNS, CONFIG) as writer:
        for row in rows:
            writer.write(row)
    pieces = tmp_path / "pieces.tsv"
    with results.ResultsWriter(pieces, results.CERTIFY_COLUMNS, CONFIG) as writer:
        for row in rows[:3]:
            writer.write(row)
    with open(pieces, "ab") as file:
        file.write(b"60\t0\t1\t0.3")  # killed while writing the 4th row
    with results.ResultsWriter(pieces, results.CERTIFY_COLUMNS, CONFIG) as writer:
        for row in rows:
            if row["idx"] not in writer.done:
                writer.write(row)
    assert pieces.read_bytes() == whole.read_bytes()
    assert (tmp_path / "pieces.tsv.json").read_bytes() == (tmp_path / "whole.tsv.json").read_bytes()


def _existing_run(tmp_path, tail=b""):
    path = tmp_path / "c.tsv"
    with results.ResultsWriter(path, results.CERTIFY_COLUMNS, CONFIG) as writer:
        writer.write(_row(0))
    with open(path, "ab") as file:
        file.write(tail)
    return path, path.read_bytes(), (tmp_path / "c.tsv.json").read_bytes()


def test_writer_refuses_other_config_listing_differences_and_leaves_files_untouched(tmp_path):
    path, before, sidecar_before = _existing_run(tmp_path, tail=b"20\t3\t3")
    other = dict(CONFIG, sigma=0.5, seed=1)
    del other["skip"]
    with pytest.raises(ValueError) as error:
        results.ResultsWriter(path, results.CERTIFY_COLUMNS, other)
    message = str(error.value)
    assert str(path) in message
    assert "sigma: file has 0.25, this run has 0.5" in message
    assert "seed: file has 0, this run has 1" in message
    assert "skip: file has 20, this run has <missing>" in message
    assert "alpha" not in message  # equal keys are not listed
    assert path.read_bytes() == before  # even the incomplete last line is still there
    assert (tmp_path / "c.tsv.json").read_bytes() == sidecar_before


def test_writer_refuses_other_header_and_leaves_file_untouched(tmp_path):
    path, before, _ = _existing_run(tmp_path)
    with pytest.raises(ValueError) as error:
        results.ResultsWriter(path, results.PREDICT_COLUMNS, CONFIG)
    message = str(error.value)
    assert str(path) in message and "expected columns ('idx', 'label', 'predict', 'correct'" in message
    assert "found ('idx', 'label', 'predict', 'radius'" in message
    assert path.read_bytes() == before


def test_writer_refuses_file_without_sidecar(tmp_path):
    path, before, _ = _existing_run(tmp_path)
    (tmp_path / "c.tsv.json").unlink()
    with pytest.raises(ValueError, match="sidecar .*c.tsv.json is missing"):
        results.ResultsWriter(path, results.CERTIFY_COLUMNS, CONFIG)
    assert path.read_bytes() == before


@pytest.mark.parametrize("tail, line", [
    (b"20\t3\t3\tx\t1\t1.0\n", "line 3"),
    (b"0\t3\t3\t0.5\t1\t1.0\n", "line 3"),   # duplicate idx 0
    (b"20\t3\t3\n30\t3\t3\t0.5\t1\t1.0\n", "line 3"),
])
def test_writer_refuses_malformed_existing_rows_and_leaves_file_untouched(tmp_path, tail, line):
    path, before, _ = _existing_run(tmp_path, tail=tail)
    with pytest.raises(ValueError) as error:
        results.ResultsWriter(path, results.CERTIFY_COLUMNS, CONFIG)
    assert str(path) in str(error.value) and line in str(error.value)
    assert path.read_bytes() == before


def test_writer_refuses_duplicate_idx(tmp_path):
    path = tmp_path / "c.tsv"
    with results.ResultsWriter(path, results.CERTIFY_COLUMNS, CONFIG) as writer:
        writer.write(_row(7))
        with pytest.raises(ValueError, match="idx 7 is already"):
            writer.write(_row(7))
    with results.ResultsWriter(path, results.CERTIFY_COLUMNS, CONFIG) as writer:
        with pytest.raises(ValueError, match="idx 7 is already"):
            writer.write(_row(7, radius=0.9))
    assert path.read_text().count("\n") == 2  # header + one row


@pytest.mark.parametrize("row, fragment", [
    ({"idx": 0, "label": 3, "predict": 3, "correct": 1, "time": 1.0}, "exactly the columns"),
    (dict(_row(0), extra=1), "exactly the columns"),
    (_row(0, radius=-0.1), "radius must be finite and >= 0"),
    (_row(0, radius=math.nan), "radius must be finite and >= 0"),
    (_row(0, radius="0.5"), "radius must be a real number"),
    (_row(0, time=-1.0), "time must be >= 0"),
    (dict(_row(0), correct=0), "correct must be 1"),
    (dict(_row(0), idx=1.5), "idx must be an integer"),
    (_row(-3), "idx must be >= 0"),
])
def test_writer_rejects_bad_rows_without_writing(tmp_path, row, fragment):
    path = tmp_path / "c.tsv"
    with results.ResultsWriter(path, results.CERTIFY_COLUMNS, CONFIG) as writer:
        with pytest.raises(ValueError, match=fragment):
            writer.write(row)
        assert writer.done == frozenset()
    assert path.read_bytes() == HEADER.encode()


@pytest.mark.parametrize("columns, config, fragment", [
    (("idx", "label", "predict"), CONFIG, "columns must be one of"),
    (tuple(reversed(results.CERTIFY_COLUMNS)), CONFIG, "columns must be one of"),
    (results.CERTIFY_COLUMNS, {"model": object()}, "JSON-serializable"),
    (results.CERTIFY_COLUMNS, {"sigma": math.nan}, "JSON-serializable"),
    (results.CERTIFY_COLUMNS, {1: "a"}, "str keys"),
    (results.CERTIFY_COLUMNS, [("sigma", 0.25)], "dict"),
])
def test_writer_rejects_bad_arguments_and_creates_nothing(tmp_path, columns, config, fragment):
    with pytest.raises(ValueError, match=fragment):
        results.ResultsWriter(tmp_path / "sub" / "c.tsv", columns, config)
    assert not (tmp_path / "sub").exists()


def test_writer_rejects_directory_path(tmp_path):
    with pytest.raises(ValueError, match="is a directory"):
        results.ResultsWriter(tmp_path, results.CERTIFY_COLUMNS, CONFIG)


def test_writer_refuses_empty_existing_file(tmp_path):
    path = _write(tmp_path / "c.tsv", "")
    with pytest.raises(ValueError, match="no complete header line"):
        results.ResultsWriter(path, results.CERTIFY_COLUMNS, CONFIG)
    assert path.read_bytes() == b""


def test_second_writer_on_an_open_file_is_refused(tmp_path):
    path = tmp_path / "c.tsv"
    with results.ResultsWriter(path, results.CERTIFY_COLUMNS, CONFIG) as writer:
        writer.write(_row(0))
        before = path.read_bytes()
        with pytest.raises(ValueError, match="being written by another ResultsWriter"):
            results.ResultsWriter(path, results.CERTIFY_COLUMNS, CONFIG)
        assert path.read_bytes() == before
        writer.write(_row(20))  # the first writer is unaffected
    with results.ResultsWriter(path, results.CERTIFY_COLUMNS, CONFIG) as writer:
        assert writer.done == {0, 20}


def test_new_result_files_get_ordinary_permissions(tmp_path):
    # A TSV is created through a temporary file; it must end up with the usual 0666 & ~umask mode, not 0600.
    path = tmp_path / "cert.tsv"
    umask = os.umask(0o022)
    try:
        with results.ResultsWriter(path, results.CERTIFY_COLUMNS, {"n": 1}):
            pass
    finally:
        os.umask(umask)
    assert (path.stat().st_mode & 0o777) == 0o644
    assert (tmp_path / "cert.tsv.json").stat().st_mode & 0o777 == 0o644
