"""`tfsmooth certify --sigma-grid`: sample-wise (transductive) certification end to end on the embedded sample."""

import json
import os

import numpy as np
import pytest
from click.testing import CliRunner

from tfsmooth import jobs, results, samplewise
from tfsmooth.cli.main import cli

GRID = "0.12,0.25,0.5"


@pytest.fixture(scope="module")
def model(sample_model):
    return sample_model


def _certify(model, out, *extra):
    return CliRunner().invoke(cli, ["certify", model, "--dataset", "cifar10_sample", "--sigma", "0.25", "--n0", "20",
                                    "--n", "200", "--alpha", "0.01", "--skip", "100", "--batch", "400",
                                    "--sigma-grid", GRID, "--n-select", "20", "--out", str(out), *extra])


def test_samplewise_certify_writes_allocated_radii_and_resumes(model, tmp_path):
    out = tmp_path / "sw.tsv"
    result = _certify(model, out)
    assert result.exit_code == 0, result.output
    assert "transductive" in result.output and "radii cut by the allocation" in result.output
    rows = results.read_results(out)
    assert rows.kind == "certify" and rows.transductive and len(rows) == 10
    assert set(rows.sigma.tolist()) <= {0.12, 0.25, 0.5}
    assert np.all(rows.radius <= rows.radius_unallocated)
    with open(out) as f:
        assert f.readline().rstrip("\n").split("\t") == list(results.SAMPLEWISE_COLUMNS)
    record = json.loads(open(str(out) + ".json").read())
    assert record["transductive"] is True and record["sigma_grid"] == [0.12, 0.25, 0.5]
    assert record["n_select"] == 20 and record["allocation"] == "linprog" and record["sigma_select"] == "agree"
    unallocated = results.read_results(jobs.unallocated_path(str(out)))
    assert unallocated.kind == "unallocated" and np.array_equal(unallocated.radius_unallocated, rows.radius_unallocated)
    # Nearest neighbours on CIFAR-10 are far apart (>= 3.5) against radii < 1.5: nothing is cut here.
    assert np.array_equal(rows.radius, rows.radius_unallocated)
    text = out.read_text()
    again = _certify(model, out)  # resumes: nothing left to count, the allocated file is kept
    assert again.exit_code == 0 and "0 new rows" in again.output and out.read_text() == text
    os.remove(out)  # a crash after the last row but before the allocation: it is redone from the rows
    redone = _certify(model, out)
    assert redone.exit_code == 0 and "0 new rows" in redone.output and out.read_text() == text
    analyzed = CliRunner().invoke(cli, ["analyze", str(out), "--format", "markdown"])
    assert analyzed.exit_code == 0 and "[transductive]" in analyzed.output and "this test set only" in analyzed.output
    refused = CliRunner().invoke(cli, ["analyze", jobs.unallocated_path(str(out))])
    assert refused.exit_code != 0 and "before the transductive allocation" in refused.output
    other_rule = _certify(model, out, "--sigma-select", "radius")  # rows chosen by another rule: no mixing
    assert other_rule.exit_code != 0 and "has other parameters" in other_rule.output, other_rule.output
    assert out.read_text() == text


def test_samplewise_certify_matches_the_library(model, tmp_path):
    # The CLI's rows are the library's certificates at the chosen sigma (same seed, key = idx).
    from tfsmooth import data
    from tfsmooth.models.io import load_base_model

    out = tmp_path / "sw.tsv"
    assert _certify(model, out, "--max", "201").exit_code == 0
    rows = results.read_results(out)
    examples = list(data.select_examples(data.load_dataset("cifar10_sample", "test"), 100, 201))
    classifier = samplewise.SampleWiseSmoothedClassifier(load_base_model(model), 10, (0.12, 0.25, 0.5))
    answers = classifier.certify_batch(np.stack([image for _, image, _ in examples]), n0=20, n=200, alpha=0.01,
                                       seed=0, keys=[idx for idx, _, _ in examples], n_select=20)
    assert [a.sigma for a in answers] == rows.sigma.tolist()
    assert [a.label for a in answers] == rows.predict.tolist()
    np.testing.assert_allclose([a.radius for a in answers], rows.radius_unallocated, atol=1e-4)


def test_samplewise_certify_refuses_bad_options_and_foreign_files(model, tmp_path):
    for extra, message in [(("--sigma-grid", "0.25,abc"), "is not a number"),
                           (("--sigma-grid", "0.25,0"), "finite numbers > 0"),
                           (("--sigma-grid", "0.25,0.25"), "distinct"),
                           (("--n-select", "0"), "--n-select"),
                           (("--method", "cohen", "--method", "t-certify", "--out", str(tmp_path / "b.tsv")),
                            "one --method into one --out")]:
        result = _certify(model, tmp_path / "a.tsv", *extra)
        assert result.exit_code != 0 and message in result.output and "Traceback" not in result.output, result.output
    foreign = tmp_path / "foreign.tsv"
    foreign.write_text("idx\tlabel\tpredict\tradius\tcorrect\ttime\n0\t1\t1\t0.5\t1\t0.1\n")
    result = _certify(model, foreign)
    assert result.exit_code != 0 and "is not the allocated file of this sample-wise run" in result.output
    assert foreign.read_text().endswith("0.1\n") and not os.path.exists(jobs.unallocated_path(str(foreign)))
