"""Tests of tfsmooth.analysis: certified accuracy, summaries, envelope, tables and plots."""

import json

import numpy as np
import pytest

from tfsmooth import analysis, results

# Reference-format certify file (Cohen et al.'s certify.py: radius "{:.3}", time as timedelta).
# Rows (correct, radius): (1, 0.457), (1, 0.25), abstain (0, 0.0), wrong class (0, 0.812),
# (1, 1.23). Certified at r counts correct rows with radius >= r, out of 5:
#   r = 0    -> {0.457, 0.25, 1.23}  3/5 = 0.6
#   r = 0.25 -> {0.457, 0.25, 1.23}  3/5 = 0.6   (0.25 >= 0.25 counts)
#   r = 0.5  -> {1.23}               1/5 = 0.2   (the wrong row's 0.812 never counts)
#   r = 0.75 -> {1.23}               1/5 = 0.2
#   r = 1.0  -> {1.23}               1/5 = 0.2
#   r = 1.25 -> {}                   0
# abstain rate 1/5 = 0.2. ACR (mean of radius x correct) = (0.457 + 0.25 + 1.23) / 5 = 0.3874.
CERTIFY_A = (
    "idx\tlabel\tpredict\tradius\tcorrect\ttime\n"
    "0\t3\t3\t0.457\t1\t0:00:01.234567\n"
    "20\t8\t8\t0.25\t1\t0:00:02\n"
    "40\t1\t-1\t0.0\t0\t0:00:01.500000\n"
    "60\t4\t5\t0.812\t0\t0:00:00.750000\n"
    "80\t6\t6\t1.23\t1\t1 day, 2:03:04.000001\n"
)
# Our format. Correct rows have radii {0.9, 0.6, 0.1}; idx 20 is wrong (radius 0.3), 4 rows:
#   r = 0 -> 3/4 = 0.75; 0.25 -> {0.9, 0.6} 0.5; 0.5 -> 0.5; 0.75 -> {0.9} 0.25; 1.0 -> 0.
#   ACR = (0.9 + 0.6 + 0.1) / 4 = 0.4 (the wrong row's 0.3 counts 0).
# No abstention.
CERTIFY_B = (
    "idx\tlabel\tpredict\tradius\tcorrect\ttime\n"
    "0\t3\t3\t0.9000\t1\t1.0000\n"
    "20\t8\t2\t0.3000\t0\t1.0000\n"
    "40\t1\t1\t0.6000\t1\t1.0000\n"
    "60\t4\t4\t0.1000\t1\t1.0000\n"
)
# Envelope (max of A and B) at 0, 0.25, 0.5, 0.75, 1.0:
#   max(0.6, 0.75) = 0.75, max(0.6, 0.5) = 0.6, max(0.2, 0.5) = 0.5, max(0.2, 0.25) = 0.25,
#   max(0.2, 0) = 0.2.
# Predict file: 2 of 3 correct (one abstention): empirical accuracy 2/3, abstain rate 1/3.
PREDICT_C = (
    "idx\tlabel\tpredict\tcorrect\ttime\n"
    "0\t3\t3\t1\t0:00:00.100000\n"
    "20\t8\t-1\t0\t0:00:00.200000\n"
    "40\t1\t1\t1\t0:00:00.300000\n"
)
# Attack file: 1 of 2 correct after the attack: empirical robust accuracy 0.5, no abstention.
ATTACK_D = (
    "idx\tlabel\tpredict\tbasePredict\tcorrect\ttime\n"
    "0\t3\t3\t3\t1\t0:00:03\n"
    "20\t8\t2\t8\t0\t0:00:04\n"
)
RADII = [0.0, 0.25, 0.5, 0.75, 1.0]


@pytest.fixture
def files(tmp_path, monkeypatch):
    """Writes the four files into tmp_path and makes it the working directory (short names)."""
    monkeypatch.chdir(tmp_path)
    for name, text in [("a.tsv", CERTIFY_A), ("b.tsv", CERTIFY_B), ("c.tsv", PREDICT_C),
                       ("d.tsv", ATTACK_D)]:
        (tmp_path / name).write_text(text)
    return tmp_path


def test_certified_accuracy_matches_hand_count(files):
    loaded = results.read_results("a.tsv")
    np.testing.assert_array_equal(
        analysis.certified_accuracy(loaded, RADII + [1.25]), [0.6, 0.6, 0.2, 0.2, 0.2, 0.0])
    # At r = 0.457 the row with radius exactly 0.457 still counts (2/5); just above it does not.
    np.testing.assert_array_equal(analysis.certified_accuracy(loaded, [0.457, 0.458]), [0.4, 0.2])


def test_abstentions_are_never_certified_even_with_a_radius(files):
    # An abstention whose radius column says 0.5 (not what CERTIFY writes, but readable): the row
    # is not correct, so it never counts; 1 of 2 rows is certified at 0.25.
    loaded = results.Results(kind="certify", idx=[0, 1], label=[2, 2], predict=[-1, 2],
                             correct=[0, 1], time=[0.0, 0.0], radius=[0.5, 0.5])
    np.testing.assert_array_equal(analysis.certified_accuracy(loaded, [0.0, 0.25]), [0.5, 0.5])


def test_accuracy_and_abstain_rate_of_each_kind(files):
    a, c, d = (results.read_results(name) for name in ("a.tsv", "c.tsv", "d.tsv"))
    assert analysis.accuracy(a) == 0.6 and analysis.abstain_rate(a) == 0.2
    assert analysis.accuracy(c) == pytest.approx(2 / 3) and analysis.abstain_rate(c) == pytest.approx(1 / 3)
    assert analysis.accuracy(d) == 0.5 and analysis.abstain_rate(d) == 0.0


def test_certified_accuracy_rejects_files_without_radius_and_empty_files(files):
    with pytest.raises(ValueError, match="no radius column; use accuracy"):
        analysis.certified_accuracy(results.read_results("c.tsv"), RADII)
    (files / "empty.tsv").write_text("\t".join(results.CERTIFY_COLUMNS) + "\n")
    empty = results.read_results("empty.tsv")
    for function in (analysis.accuracy, analysis.abstain_rate):
        with pytest.raises(ValueError, match="empty.tsv: no rows"):
            function(empty)
    with pytest.raises(ValueError, match="empty.tsv: no rows"):
        analysis.certified_accuracy(empty, RADII)


@pytest.mark.parametrize("radii, fragment", [
    ([-0.25], ">= 0"), ([float("nan")], "finite"), ([[0.0, 0.5]], "1-D"), (["a"], "numbers"),
    ([], "must not be empty"), ([0.5, 0.50], "distinct"),
])
def test_validate_radii_rejects_bad_radii(radii, fragment):
    with pytest.raises(ValueError, match=fragment):
        analysis.validate_radii(radii)


def test_radius_keys_are_shortest_float_text():
    assert [analysis.radius_key(r) for r in [0, 0.25, 0.5, 1, 1e-5]] == [
        "0.0", "0.25", "0.5", "1.0", "1e-05"]


EXPECTED_SUMMARY = {
    "a.tsv": {"certified_accuracy": {"0.0": 0.6, "0.25": 0.6, "0.5": 0.2, "0.75": 0.2, "1.0": 0.2},
              "acr": pytest.approx(0.3874, abs=1e-12), "abstain_rate": 0.2, "count": 5},
    "b.tsv": {"certified_accuracy": {"0.0": 0.75, "0.25": 0.5, "0.5": 0.5, "0.75": 0.25,
                                     "1.0": 0.0},
              "acr": pytest.approx(0.4, abs=1e-12), "abstain_rate": 0.0, "count": 4},
    "c.tsv": {"empirical_accuracy": 2 / 3, "abstain_rate": 1 / 3, "count": 3},
    "d.tsv": {"empirical_accuracy": 0.5, "abstain_rate": 0.0, "count": 2},
}


def test_summarize_gives_hand_computed_values(files):
    assert analysis.summarize(["a.tsv", "b.tsv", "c.tsv", "d.tsv"], RADII) == EXPECTED_SUMMARY
    # Any iterable of paths, e.g. a generator of pathlib.Path, gives the same keys.
    assert list(analysis.summarize((files / n for n in ["c.tsv"]), RADII)) == [str(files / "c.tsv")]


def test_envelope_is_best_certify_file_per_radius(files):
    summary = analysis.summarize(["a.tsv", "b.tsv", "c.tsv"], RADII)
    assert analysis.envelope(summary) == {"0.0": 0.75, "0.25": 0.6, "0.5": 0.5, "0.75": 0.25,
                                          "1.0": 0.2}


def test_envelope_without_certify_file_raises(files):
    with pytest.raises(ValueError, match="no certify entry"):
        analysis.envelope(analysis.summarize(["c.tsv"], RADII))


def test_summarize_rejects_bad_paths(files):
    with pytest.raises(ValueError, match="distinct"):
        analysis.summarize(["a.tsv", "a.tsv"], RADII)
    with pytest.raises(ValueError, match="non-empty sequence"):
        analysis.summarize([], RADII)
    with pytest.raises(ValueError, match="not one path"):
        analysis.summarize("a.tsv", RADII)  # a bare string is not a list of files
    with pytest.raises(FileNotFoundError, match="missing.tsv"):
        analysis.summarize(["missing.tsv"], RADII)


def test_format_json_is_exactly_the_summary_without_envelope(files):
    summary = analysis.summarize(["a.tsv", "b.tsv", "c.tsv", "d.tsv"], RADII)
    assert json.loads(analysis.format_table(summary, RADII, "json")) == EXPECTED_SUMMARY


def test_format_json_keeps_only_requested_radii(files):
    summary = analysis.summarize(["a.tsv"], RADII)
    assert json.loads(analysis.format_table(summary, [0.5, 0.0], "json")) == {
        "a.tsv": {"certified_accuracy": {"0.5": 0.2, "0.0": 0.6}, "acr": pytest.approx(0.3874, abs=1e-12),
                  "abstain_rate": 0.2, "count": 5}}


def test_format_markdown_table_in_percent_with_envelope(files):
    summary = analysis.summarize(["a.tsv", "b.tsv", "c.tsv"], RADII)
    # Percentages: a 60/60/20/20/20, b 75/50/50/25/0, c 2/3 = 66.7 % and 1/3 = 33.3 % abstain.
    assert analysis.format_table(summary, RADII, "markdown") == (
        "| file | r=0.0 | r=0.25 | r=0.5 | r=0.75 | r=1.0 | ACR | empirical | abstain | count |\n"
        "| --- | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: |\n"
        "| a.tsv | 60.0 | 60.0 | 20.0 | 20.0 | 20.0 | 0.387 | - | 20.0 | 5 |\n"
        "| b.tsv | 75.0 | 50.0 | 50.0 | 25.0 | 0.0 | 0.400 | - | 0.0 | 4 |\n"
        "| c.tsv | - | - | - | - | - | - | 66.7 | 33.3 | 3 |\n"
        "| envelope (best per radius) | 75.0 | 60.0 | 50.0 | 25.0 | 20.0 | - | - | - | - |\n"
        "\n"
        "Unit: certified accuracy (%) at l2 radius r (pixels in [0, 1]); ACR = average certified radius (mean "
        "of radius x correct, l2); empirical = accuracy (%)"
        " of predict/attack files (abstentions wrong); abstain = abstention rate (%).")


def test_format_plain_table_is_aligned_with_envelope_row(files):
    summary = analysis.summarize(["a.tsv", "b.tsv"], [0.0, 0.5])
    lines = analysis.format_table(summary, [0.0, 0.5], "table").splitlines()
    assert lines[:5] == [
        "file                        r=0.0  r=0.5    ACR  abstain  count",
        "--------------------------  -----  -----  -----  -------  -----",
        "a.tsv                        60.0   20.0  0.387     20.0      5",
        "b.tsv                        75.0   50.0  0.400      0.0      4",
        "envelope (best per radius)   75.0   50.0      -        -      -",
    ]
    assert "certified accuracy (%)" in lines[5]


def test_table_unit_note_explains_only_the_columns_present(files):
    # Only certify files: no "empirical" column, so no "empirical" in the note either.
    summary = analysis.summarize(["a.tsv", "b.tsv"], RADII)
    assert analysis.format_table(summary, RADII, "markdown").splitlines()[-1] == (
        "Unit: certified accuracy (%) at l2 radius r (pixels in [0, 1]); ACR = average certified radius (mean of "
        "radius x correct, l2); abstain = abstention rate (%).")
    assert "empirical" not in analysis.format_table(summary, RADII, "table")
    # Only predict/attack files: no ACR column, nor its note.
    other = analysis.summarize(["c.tsv", "d.tsv"], RADII)
    assert "ACR" not in analysis.format_table(other, RADII, "table")


def test_average_certified_radius_is_the_area_under_the_certified_accuracy_curve(files):
    loaded = results.read_results("a.tsv")
    assert analysis.average_certified_radius(loaded) == pytest.approx(0.3874, abs=1e-12)
    grid = np.linspace(0.0, 2.0, 200_001)  # certified accuracy is 0 beyond the largest radius, 1.23
    area = np.sum(analysis.certified_accuracy(loaded, grid)[:-1]) * (grid[1] - grid[0])
    assert area == pytest.approx(0.3874, abs=1e-4)
    with pytest.raises(ValueError, match="no radius column"):
        analysis.average_certified_radius(results.read_results("c.tsv"))
    # With a predict file the column and its note are there.
    summary = analysis.summarize(["a.tsv", "c.tsv"], RADII)
    assert "empirical = accuracy (%)" in analysis.format_table(summary, RADII, "table").splitlines()[-1]


def test_format_table_has_no_envelope_row_for_one_certify_file(files):
    summary = analysis.summarize(["a.tsv", "c.tsv"], RADII)
    for fmt in ("table", "markdown"):
        assert "envelope" not in analysis.format_table(summary, RADII, fmt)


def test_format_table_rejects_bad_arguments(files):
    summary = analysis.summarize(["a.tsv"], RADII)
    with pytest.raises(ValueError, match="fmt must be one of"):
        analysis.format_table(summary, RADII, "html")
    with pytest.raises(ValueError, match="lacks some of the radii"):
        analysis.format_table(summary, [2.0], "json")
    with pytest.raises(ValueError, match="summary is empty"):
        analysis.format_table({}, RADII, "table")


def test_written_radius_just_below_threshold_is_not_certified_at_it(tmp_path):
    # The reference's "{:.3}" would print 0.24999 as "0.25" and count it at r = 0.25; our writer
    # rounds down to "0.2499", so certified accuracy at 0.25 stays 0 as for the true radius.
    path = tmp_path / "c.tsv"
    with results.ResultsWriter(path, results.CERTIFY_COLUMNS, {"sigma": 0.25}) as writer:
        writer.write({"idx": 0, "label": 1, "predict": 1, "radius": 0.24999, "correct": 1,
                      "time": 1.0})
    np.testing.assert_array_equal(
        analysis.certified_accuracy(results.read_results(path), [0.2499, 0.25]), [1.0, 0.0])


PNG_MAGIC = b"\x89PNG\r\n\x1a\n"
MAGIC = {"png": (PNG_MAGIC,), "pdf": (b"%PDF",), "svg": (b"<?xml", b"<svg")}


def test_plot_writes_a_png(files):
    figure = analysis.plot_certified_accuracy(["a.tsv", "b.tsv", "c.tsv"], files / "plots" / "curve.png")
    data = (files / "plots" / "curve.png").read_bytes()
    assert data[:8] == PNG_MAGIC and len(data) > 5000
    # Lines: a, b, their envelope (dashed), the predict file's marker at radius 0, height 2/3.
    # Axis: 1.1 x the largest radius of the certify files (a's 1.23).
    (axes,) = figure.axes
    curve_a, curve_b, best, marker = axes.get_lines()
    assert axes.get_xlim() == pytest.approx((0.0, 1.1 * 1.23))
    np.testing.assert_array_equal(best.get_ydata(), np.maximum(curve_a.get_ydata(), curve_b.get_ydata()))
    assert (best.get_linestyle(), list(marker.get_xdata()), list(marker.get_ydata())) == ("--", [0.0], [100 * (2 / 3)])


@pytest.mark.parametrize("name", ["curve.pdf", "curve.svg", "CURVE.SVG", "curve.png"])
def test_plot_format_follows_the_extension(files, name):
    analysis.plot_certified_accuracy(["a.tsv", "c.tsv"], files / "plots" / name)
    data = (files / "plots" / name).read_bytes()
    assert data.startswith(MAGIC[name.lower().rsplit(".", 1)[1]])
    if name.lower().endswith(".svg"):
        assert b"<svg" in data[:2000]


def test_plot_is_in_percent_like_the_table(files):
    # The table: a.tsv at r=0 is 60.0 (%), c.tsv's empirical accuracy 66.7 (%). The plot's y axis
    # is in the same unit: its label says (%), ticks run 0..100, the curves hold the table's values.
    summary = analysis.summarize(["a.tsv", "c.tsv"], [0.0])
    table = analysis.format_table(summary, [0.0], "table")
    assert "60.0" in table.splitlines()[2] and "certified accuracy (%)" in table
    figure = analysis.plot_certified_accuracy(["a.tsv", "c.tsv"], "curve.png")
    (axes,) = figure.axes
    assert axes.get_ylabel() == "certified accuracy (%)"
    assert (axes.get_yticks()[0], axes.get_yticks()[-1]) == (0.0, 100.0)
    assert axes.get_ylim() == (0.0, 102.0)
    curve, marker = axes.get_lines()
    assert curve.get_ydata()[0] == pytest.approx(60.0) and max(curve.get_ydata()) <= 100.0
    assert f"{marker.get_ydata()[0]:.1f}" == "66.7"


@pytest.mark.parametrize("names, notes", [
    (["a.tsv", "b.tsv"], ["curves: certified accuracy (%), rows correct with certified radius >= r"]),
    (["a.tsv", "c.tsv"], ["curves: certified accuracy (%), rows correct with certified radius >= r",
                          "hollow markers: empirical accuracy (%) of predict files, not certified"]),
    (["c.tsv", "d.tsv"], ["hollow markers: empirical accuracy (%) of predict/attack files, not certified"]),
])
def test_plot_legend_explains_only_the_kinds_present(files, names, notes):
    figure = analysis.plot_certified_accuracy(names, "curve.png")
    legend = figure.axes[0].get_legend()
    assert legend.get_title().get_text().splitlines() == notes
    texts = [text.get_text() for text in legend.get_texts()]
    assert all("empirical" not in text for text in texts)  # the markers' labels name file and kind
    if names == ["a.tsv", "b.tsv"]:
        assert texts == ["a.tsv", "b.tsv", analysis.ENVELOPE_LABEL]
    if names == ["c.tsv", "d.tsv"]:
        assert texts == ["c.tsv: predict", "d.tsv: attack"]


def test_plot_accepts_results_and_labels(files):
    loaded = results.read_results("a.tsv")
    analysis.plot_certified_accuracy([loaded, "d.tsv"], "one.png", labels=["sigma 0.25", "attack"],
                                     max_radius=2.0)
    assert (files / "one.png").read_bytes()[:8] == PNG_MAGIC


@pytest.mark.parametrize("kwargs, fragment", [
    ({"paths_or_results": []}, "must not be empty"),
    ({"labels": ["only one"]}, "one entry per file"),
    ({"max_radius": 0.0}, "max_radius"),
    ({"max_radius": float("inf")}, "max_radius"),
    ({"out_path": "curve.jpg"}, r"must end in one of \.png, \.pdf, \.svg"),
    ({"out_path": "curve"}, r"must end in one of \.png, \.pdf, \.svg"),
    ({"paths_or_results": [3]}, "path or Results"),
])
def test_plot_rejects_bad_arguments(files, kwargs, fragment):
    arguments = {"paths_or_results": ["a.tsv", "b.tsv"], "out_path": "curve.png"}
    arguments.update(kwargs)
    with pytest.raises(ValueError, match=fragment):
        analysis.plot_certified_accuracy(**arguments)
    assert not (files / "curve.png").exists() and not (files / "curve.jpg").exists()


ATTACK_ROWS = "idx\tlabel\tpredict\tbasePredict\tcorrect\ttime\n0\t3\t3\t3\t1\t1.0\n20\t8\t-1\t2\t0\t1.0\n"


def test_attack_marker_goes_at_the_epsilon_of_its_run_record(tmp_path):
    path = tmp_path / "attack.tsv"
    path.write_text(ATTACK_ROWS)
    assert analysis.marker_radius(results.read_results(str(path))) == 0.0  # no record: radius 0
    (tmp_path / "attack.tsv.json").write_text(json.dumps({"kind": "attack", "epsilon": 0.5}))
    assert analysis.marker_radius(results.read_results(str(path))) == 0.5
    (tmp_path / "attack.tsv.json").write_text("{not json")
    assert analysis.marker_radius(results.read_results(str(path))) == 0.0  # unreadable record: radius 0
    (tmp_path / "attack.tsv.json").write_text(json.dumps({"epsilon": -1}))
    assert analysis.marker_radius(results.read_results(str(path))) == 0.0
    (tmp_path / "attack.tsv.json").write_text(json.dumps({"epsilon": 0.25}))
    # A certify file whose radii (correct: 0.1, 0.2; wrong: 0.15; one abstention) all lie below the marker's
    # 0.25: the marker's radius sets the axis, 1.1 x 0.25 = 0.275. The step curve's grid is every breakpoint
    # in [0, 0.275]: 0, 0.1, 0.15, 0.2, 0.275, where 2, 2, 1, 1, 0 of the 4 rows are certified.
    (tmp_path / "certify.tsv").write_text("idx\tlabel\tpredict\tradius\tcorrect\ttime\n0\t3\t3\t0.1\t1\t1.0\n"
                                          "1\t8\t8\t0.2\t1\t1.0\n2\t1\t5\t0.15\t0\t1.0\n3\t4\t-1\t0.0\t0\t1.0\n")
    certify = results.read_results(str(tmp_path / "certify.tsv"))
    figure = analysis.plot_certified_accuracy([certify, str(path)], tmp_path / "plot.png")
    assert (tmp_path / "plot.png").stat().st_size > 0
    (axes,) = figure.axes
    step, marker = axes.get_lines()
    assert axes.get_xlim() == pytest.approx((0.0, 0.275))
    grid = [0.0, 0.1, 0.15, 0.2, 0.275]
    np.testing.assert_allclose(step.get_xdata(), grid, rtol=0, atol=1e-15)
    np.testing.assert_array_equal(step.get_ydata(), 100 * analysis.certified_accuracy(certify, grid))
    np.testing.assert_array_equal(step.get_ydata(), [50.0, 50.0, 25.0, 25.0, 0.0])  # in %
    assert step.get_drawstyle() == "steps-pre"
    assert (list(marker.get_xdata()), list(marker.get_ydata())) == ([0.25], [50.0])  # 1 of 2 attacked rows correct


def test_default_plot_labels_keep_the_directory_when_file_names_repeat(tmp_path):
    for name in ("a", "b"):
        (tmp_path / name).mkdir()
        (tmp_path / name / "certify.tsv").write_text(CERTIFY_A)
    (tmp_path / "other.tsv").write_text(CERTIFY_A)
    items = [results.read_results(str(p)) for p in
             (tmp_path / "a" / "certify.tsv", tmp_path / "b" / "certify.tsv", tmp_path / "other.tsv")]
    assert analysis.default_labels(items) == ["a/certify.tsv", "b/certify.tsv", "other.tsv"]
