"""`tfsmooth certify --method t-certify`: one counting pass, one TSV per method, run records that keep methods apart."""

import json

import keras
import numpy as np
import pytest
from click.testing import CliRunner
from scipy.stats import norm

from tfsmooth import data, results, stats
from tfsmooth.cli.main import cli
from tfsmooth.smoothing import SmoothedClassifier

THRESHOLDS = (0.3, 0.7)


@pytest.fixture(scope="module")
def interval_model_file(tmp_path_factory):
    """f(x) = the number of THRESHOLDS below the top-left red pixel x[0, 0, 0] (classes 0, 1, 2 of 10).

    Logit c = c * x[0, 0, 0] - (t_1 + ... + t_c) for c <= 2 and -100 for the rest, so under noise sigma
    p_c = Phi((t_{c+1} - x) / sigma) - Phi((t_c - x) / sigma): for pixels near 0.5 the mass is spread over
    three classes, where T-CERTIFY's bound on the runner-up is tighter than 1 - p_a_lower.
    """
    kernel = np.zeros((32 * 32 * 3, 10), np.float32)
    kernel[0, :3] = [0.0, 1.0, 2.0]  # pixel [0, 0, 0] comes first in the flattened image
    bias = np.array([0.0, -THRESHOLDS[0], -sum(THRESHOLDS)] + [-100.0] * 7, np.float32)
    model = keras.Sequential([keras.Input((32, 32, 3)), keras.layers.Flatten(), keras.layers.Dense(10)])
    model.layers[-1].set_weights([kernel, bias])
    path = tmp_path_factory.mktemp("model") / "interval.keras"
    model.save(path)
    return str(path)


CERTIFY = ("certify", "--dataset", "cifar10_sample", "--sigma", "0.25", "--n0", "20", "--n", "1000",
           "--batch", "500", "--skip", "25", "--max", "500", "--seed", "3")


def _invoke(*args):
    return CliRunner().invoke(cli, [str(a) for a in args], catch_exceptions=False)


def _fails(*args):
    result = CliRunner().invoke(cli, [str(a) for a in args])
    assert result.exit_code != 0 and "Traceback" not in result.output
    return result.output


def _rows(path):
    return [line.rsplit("\t", 1)[0] for line in open(path).read().splitlines()]


def test_one_pass_for_two_methods_writes_what_two_separate_runs_write(interval_model_file, tmp_path):
    both = [tmp_path / "both_cohen.tsv", tmp_path / "both_tight.tsv"]
    result = _invoke(*CERTIFY, "--method", "cohen", "--method", "t-certify", interval_model_file,
                     "--out", both[0], "--out", both[1])
    assert result.exit_code == 0, result.output
    assert "(cohen)" in result.output and "(t-certify)" in result.output
    alone = [tmp_path / "cohen.tsv", tmp_path / "tight.tsv"]
    for method, out in zip(("cohen", "t-certify"), alone):
        assert _invoke(*CERTIFY, "--method", method, interval_model_file, "--out", out).exit_code == 0
    assert _rows(both[0]) == _rows(alone[0]) and _rows(both[1]) == _rows(alone[1])
    assert _rows(both[0]) != _rows(both[1])  # the methods decide differently on these counts
    record = json.loads(open(f"{both[1]}.json").read())
    assert (record["method"], record["alpha_split"]) == ("t-certify", 0.5)
    # A CERTIFY record is what it was before T-CERTIFY existed (so older files resume): no method means cohen.
    assert "method" not in json.loads(open(f"{both[0]}.json").read())


def test_t_certify_rows_are_the_library_decision_and_gain_where_the_mass_is_spread(interval_model_file, tmp_path):
    out = tmp_path / "tight.tsv"
    assert _invoke(*CERTIFY, "--method", "t-certify", "--alpha-split", "0.7", interval_model_file,
                   "--out", out).exit_code == 0
    cohen = tmp_path / "cohen.tsv"
    assert _invoke(*CERTIFY, interval_model_file, "--out", cohen).exit_code == 0
    tight, plain = results.read_results(str(out)), results.read_results(str(cohen))
    images = {idx: (image, label) for idx, image, label in
              data.select_examples(data.load_dataset("cifar10_sample", "test"), skip=25, max_index=500)}
    assert tight.idx.tolist() == sorted(images)
    smoothed = SmoothedClassifier(keras.models.load_model(interval_model_file), 10, 0.25)
    idx = [int(i) for i in tight.idx]
    certs = smoothed.certify_batch(np.stack([images[i][0] for i in idx]), n0=20, n=1000, alpha=0.001,
                                   batch_size=500, seed=3, keys=idx, method="t-certify", alpha_split=0.7)
    assert [c.label for c in certs] == tight.predict.tolist()
    np.testing.assert_allclose([c.radius if c.label != stats.ABSTAIN else 0.0 for c in certs],
                               np.where(tight.predict == stats.ABSTAIN, 0.0, tight.radius), atol=1e-4)
    # Where the pixel lies in the middle interval, the mass off class 1 is split between classes 0 and 2, so
    # p_b_upper is far below 1 - p_a_lower: T-CERTIFY certifies a larger radius, or answers where CERTIFY
    # abstains (p_1 < 1/2). E.g. pixel 0.4: p = (0.345, 0.540, 0.115).
    pixel = np.array([images[i][0][0, 0, 0] for i in idx])
    p_1 = norm.cdf((THRESHOLDS[1] - pixel) / 0.25) - norm.cdf((THRESHOLDS[0] - pixel) / 0.25)
    middle = tight.predict == 1
    assert middle.sum() >= 3, (pixel, tight.predict)
    assert np.all(tight.radius[middle] > plain.radius[middle] + 0.01), (pixel, tight.radius, plain.radius)
    assert np.any((plain.predict == stats.ABSTAIN) & (tight.predict == 1) & (p_1 < 0.55))


def test_a_resume_never_mixes_methods(interval_model_file, tmp_path):
    out = tmp_path / "cert.tsv"
    assert _invoke(*CERTIFY, "--max", "200", interval_model_file, "--out", out).exit_code == 0
    before = out.read_bytes()
    for change in (("--method", "t-certify"), ("--method", "t-certify", "--alpha-split", "auto")):
        assert "other parameters" in _fails(*CERTIFY, *change, interval_model_file, "--out", out)
        assert out.read_bytes() == before
    tight = tmp_path / "tight.tsv"
    assert _invoke(*CERTIFY, "--max", "200", "--method", "t-certify", interval_model_file, "--out", tight).exit_code == 0
    # Another split is another run, too.
    assert "other parameters" in _fails(*CERTIFY, "--method", "t-certify", "--alpha-split", "0.9",
                                        interval_model_file, "--out", tight)


@pytest.mark.parametrize("args, message", [
    (("--method", "cohen", "--method", "t-certify"), "give one --out per --method"),
    (("--method", "t_certify"), "'t_certify' is not one of 'cohen', 't-certify'"),
    (("--method", "t-certify", "--alpha-split", "0"), "'0' is not a number in (0, 1] or 'auto'"),
    (("--method", "t-certify", "--alpha-split", "1.5"), "'1.5' is not a number in (0, 1] or 'auto'"),
    (("--method", "t-certify", "--alpha-split", "nan"), "'nan' is not a number in (0, 1] or 'auto'"),
    (("--method", "t-certify", "--alpha-split", "best"), "'best' is not a number in (0, 1] or 'auto'"),
    (("--method", "t-certify", "--n", "10"), "too small to ever certify with t-certify"),
])
def test_bad_method_arguments_fail_cleanly_without_output(interval_model_file, tmp_path, args, message):
    out = tmp_path / "cert.tsv"
    assert message in _fails(*CERTIFY, *args, interval_model_file, "--out", out)
    assert not out.exists() and not (tmp_path / "cert.tsv.json").exists()
