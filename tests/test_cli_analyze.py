"""Tests of the `tfsmooth analyze` command through click's CliRunner."""

import json

import pytest
from click.testing import CliRunner

from tfsmooth.cli.analyze import analyze

# Two reference-format certify files and a predict file. Hand counts (see test_analysis.py for
# the same rules): a: correct radii {0.457, 0.25}, 1 abstention, 4 rows ->
#   r = 0: 2/4 = 0.5, 0.25: 0.5, 0.5: 0, 0.75: 0, 1.0: 0; abstain 1/4 = 0.25.
# b: correct radii {1.1}, wrong row radius 0.9, 2 rows -> 0.5 at 0 .. 1.0; abstain 0.
# envelope: 0.5 everywhere (max(0.5, 0.5), max(0, 0.5), ...).
# c (predict): 1 of 2 correct, no abstention -> empirical 0.5, abstain 0.
FILES = {
    "a.tsv": ("idx\tlabel\tpredict\tradius\tcorrect\ttime\n"
              "0\t3\t3\t0.457\t1\t0:00:01.234567\n"
              "20\t8\t8\t0.25\t1\t0:00:02\n"
              "40\t1\t-1\t0.0\t0\t0:00:01.500000\n"
              "60\t4\t5\t0.812\t0\t0:00:00.750000\n"),
    "b.tsv": ("idx\tlabel\tpredict\tradius\tcorrect\ttime\n"
              "0\t3\t3\t1.1000\t1\t1.0000\n"
              "20\t8\t2\t0.9000\t0\t1.0000\n"),
    "c.tsv": ("idx\tlabel\tpredict\tcorrect\ttime\n"
              "0\t3\t3\t1\t0:00:00.100000\n"
              "20\t8\t2\t0\t0:00:00.200000\n"),
    "bad.tsv": ("idx\tlabel\tpredict\tradius\tcorrect\ttime\n"
                "0\t3\t3\t0.5\t1\t1.0\n"
                "20\t8\t8\tx\t1\t1.0\n"),
    # b.tsv with blank lines: at the end (an editor's extra newlines) fine, between rows an error.
    "trailing.tsv": ("idx\tlabel\tpredict\tradius\tcorrect\ttime\n"
                     "0\t3\t3\t1.1000\t1\t1.0000\n"
                     "20\t8\t2\t0.9000\t0\t1.0000\n\n  \n"),
    "gap.tsv": ("idx\tlabel\tpredict\tradius\tcorrect\ttime\n"
                "0\t3\t3\t1.1000\t1\t1.0000\n\n"
                "20\t8\t2\t0.9000\t0\t1.0000\n"),
    "b.csv": ("idx,label,predict,radius,correct,time\n"
              "0,3,3,1.1000,1,1.0000\n"
              "20,8,2,0.9000,0,1.0000\n"),
}


@pytest.fixture
def runner(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    for name, text in FILES.items():
        (tmp_path / name).write_text(text)
    return CliRunner()


def test_analyze_prints_table_with_default_radii_and_envelope(runner):
    result = runner.invoke(analyze, ["a.tsv", "b.tsv", "c.tsv"])
    assert result.exit_code == 0, result.output
    lines = result.stdout.splitlines()
    assert lines[0].split() == ["file", "r=0.0", "r=0.25", "r=0.5", "r=0.75", "r=1.0",
                                "ACR", "empirical", "abstain", "count"]
    # ACR: a (0.457 + 0.25) / 4 = 0.17675, b 1.1 / 2 = 0.55.
    assert lines[2].split() == ["a.tsv", "50.0", "50.0", "0.0", "0.0", "0.0", "0.177", "-", "25.0", "4"]
    assert lines[3].split() == ["b.tsv", "50.0", "50.0", "50.0", "50.0", "50.0", "0.550", "-", "0.0", "2"]
    assert lines[4].split() == ["c.tsv", "-", "-", "-", "-", "-", "-", "50.0", "0.0", "2"]
    assert lines[5].split() == ["envelope", "(best", "per", "radius)", "50.0", "50.0", "50.0",
                                "50.0", "50.0", "-", "-", "-", "-"]


def test_analyze_json_output_parses_to_the_summary(runner):
    result = runner.invoke(analyze, ["a.tsv", "c.tsv", "--radii", "0,0.5", "--format", "json"])
    assert result.exit_code == 0, result.output
    assert json.loads(result.stdout) == {
        "a.tsv": {"certified_accuracy": {"0.0": 0.5, "0.5": 0.0}, "acr": pytest.approx(0.17675, abs=1e-12),
                  "abstain_rate": 0.25, "count": 4},
        "c.tsv": {"empirical_accuracy": 0.5, "abstain_rate": 0.0, "count": 2},
    }


def test_analyze_markdown_output(runner):
    result = runner.invoke(analyze, ["b.tsv", "--radii", "1.0,1.25", "--format", "markdown"])
    assert result.exit_code == 0, result.output
    # b: the only correct row has radius 1.1: certified at 1.0 (1/2), not at 1.25.
    assert result.stdout.splitlines()[:3] == [
        "| file | r=1.0 | r=1.25 | ACR | abstain | count |",
        "| --- | ---: | ---: | ---: | ---: | ---: |",
        "| b.tsv | 50.0 | 0.0 | 0.550 | 0.0 | 2 |",
    ]


def test_analyze_writes_plot(runner, tmp_path):
    result = runner.invoke(analyze, ["a.tsv", "b.tsv", "--plot", "out/curve.png"])
    assert result.exit_code == 0, result.output
    assert (tmp_path / "out" / "curve.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"


def test_analyze_tolerates_trailing_blank_lines(runner):
    result = runner.invoke(analyze, ["trailing.tsv", "--radii", "0,1.0"])
    assert result.exit_code == 0, result.output
    assert result.stdout.splitlines()[2].split() == ["trailing.tsv", "50.0", "50.0", "0.550", "0.0", "2"]


def test_analyze_comma_separated_file_gives_one_line_hint(runner):
    result = runner.invoke(analyze, ["b.csv"])
    assert result.exit_code != 0 and isinstance(result.exception, SystemExit)
    (error,) = [line for line in result.output.splitlines() if line.startswith("Error")]
    assert "b.csv, line 1:" in error
    assert error.endswith("comma-separated? tfsmooth and the reference write tab-separated files")
    assert "Traceback" not in result.output


@pytest.mark.parametrize("name, magic", [("curve.pdf", (b"%PDF",)), ("curve.svg", (b"<?xml", b"<svg"))])
def test_analyze_writes_pdf_and_svg_plots(runner, tmp_path, name, magic):
    result = runner.invoke(analyze, ["a.tsv", "c.tsv", "--plot", f"out/{name}"])
    assert result.exit_code == 0, result.output
    assert (tmp_path / "out" / name).read_bytes().startswith(magic)


def test_analyze_refuses_unsupported_plot_extension_before_reading_files(runner, tmp_path):
    result = runner.invoke(analyze, ["bad.tsv", "--plot", "curve.jpg"])
    assert result.exit_code != 0 and isinstance(result.exception, SystemExit)
    assert "--plot" in result.output and ".png, .pdf, .svg" in result.output
    assert "line 3" not in result.output  # bad.tsv was not read: its error would name its line 3
    assert not (tmp_path / "curve.jpg").exists()


def test_analyze_help_states_the_units(runner):
    result = runner.invoke(analyze, ["--help"])
    text = " ".join(result.output.split())
    assert "Tables and plot are in %, --format json in fractions in [0, 1]" in text
    assert ".png, .pdf or .svg" in text


@pytest.mark.parametrize("args, names", [
    (["a.tsv", "--radii", "a,b"], ["--radii", "'a' is not a number"]),
    (["a.tsv", "--radii=-1"], ["--radii", ">= 0"]),
    (["a.tsv", "--radii", "0,nan"], ["--radii", "finite"]),
    (["a.tsv", "--radii", "0,0.5,0.50"], ["--radii", "distinct"]),
    (["a.tsv", "--radii", "0,,1"], ["--radii", "'' is not a number"]),
    (["missing.tsv"], ["FILE.tsv", "missing.tsv", "does not exist"]),
    (["bad.tsv"], ["FILE.tsv", "bad.tsv, line 3", "radius"]),
    (["gap.tsv"], ["FILE.tsv", "gap.tsv, line 3", "blank line between rows"]),
    (["a.tsv", "a.tsv"], ["FILE.tsv", "distinct"]),
    ([], ["Missing argument", "FILE.tsv"]),
    (["a.tsv", "--format", "html"], ["--format", "html"]),
    (["a.tsv", "--plot", "curve.jpg"], ["--plot", "must end in one of .png, .pdf, .svg"]),
])
def test_analyze_bad_arguments_exit_nonzero_naming_the_argument(runner, args, names):
    result = runner.invoke(analyze, args)
    assert result.exit_code != 0
    assert isinstance(result.exception, SystemExit)  # a click error, not a crash
    assert "Traceback" not in result.output
    for name in names:
        assert name in result.output
