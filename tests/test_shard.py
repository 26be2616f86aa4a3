"""Certification across machines: --shard I/K and `tfsmooth merge` (issue 14, part 2)."""

import json
import os

import numpy as np
import pytest
from click.testing import CliRunner

from tfsmooth import checks, data, results
from tfsmooth.cli.main import cli


def test_shards_are_disjoint_and_together_the_selection():
    ds = data.load_dataset("cifar10_sample", "test")
    whole = [idx for idx, _, _ in data.select_examples(ds, 7, 500)]
    parts = [[idx for idx, _, _ in data.select_examples(ds, 7, 500, (i, 3))] for i in range(3)]
    assert sorted(sum(parts, [])) == whole
    for i, part in enumerate(parts):
        assert part == whole[i::3]  # position in the selection = I (mod K)
    for bad in [(3, 3), (-1, 2), (0, 0), (0,), "0/2", (0.0, 2), (True, 2)]:
        with pytest.raises(ValueError, match="shard must be"):
            checks.check_shard(bad)


@pytest.fixture(scope="module")
def model(sample_model):
    return sample_model


def _run(command, model, out, *extra):
    options = {"certify": ["--n0", "20", "--n", "200"], "predict": ["--n", "200"],
               "attack": ["--attack", "base-pgd", "--num-steps", "2", "--n", "200"]}[command]
    return CliRunner().invoke(cli, [command, model, "--dataset", "cifar10_sample", "--sigma", "0.25", "--alpha",
                                    "0.01", "--skip", "100", "--batch", "400", *options, "--out", str(out), *extra])


def _rows(path):
    with open(path) as f:
        header, *lines = f.read().splitlines()
    time = header.split("\t").index("time")
    return header, [tuple(v for k, v in enumerate(line.split("\t")) if k != time) for line in lines]


@pytest.mark.parametrize("command", ["certify", "predict", "attack"])
def test_merged_shards_are_the_unsharded_run_row_for_row(command, model, tmp_path):
    whole = tmp_path / "whole.tsv"
    assert _run(command, model, whole).exit_code == 0
    shards = [tmp_path / f"shard{i}.tsv" for i in range(3)]
    for i, path in enumerate(shards):
        result = _run(command, model, path, "--shard", f"{i}/3")
        assert result.exit_code == 0, result.output
        assert json.loads(open(str(path) + ".json").read())["shard"] == [i, 3]
    assert [len(results.read_results(p)) for p in shards] == [4, 3, 3]
    merged = tmp_path / "merged.tsv"
    result = CliRunner().invoke(cli, ["merge", *map(str, shards[::-1]), "--out", str(merged)])
    assert result.exit_code == 0 and "10 rows of 3 shards" in result.output, result.output
    assert _rows(merged) == _rows(whole)  # every column but time
    merged_record, whole_record = (json.loads(open(str(p) + ".json").read()) for p in (merged, whole))
    assert merged_record == whole_record
    again = _run(command, model, merged)  # the unsharded command sees a finished run
    assert again.exit_code == 0 and "0 new rows" in again.output


def test_merge_refuses_shards_that_do_not_make_one_complete_run(model, tmp_path):
    shards = [tmp_path / f"s{i}.tsv" for i in range(3)]
    for i, path in enumerate(shards):
        assert _run("certify", model, path, "--shard", f"{i}/3").exit_code == 0
    other_seed = tmp_path / "seed.tsv"
    assert _run("certify", model, other_seed, "--shard", "2/3", "--seed", "5").exit_code == 0

    def merge(*paths, out="m.tsv"):
        return CliRunner().invoke(cli, ["merge", *map(str, paths), "--out", str(tmp_path / out)])

    cases = [((shards[0], shards[1]), "shards 2/3 are missing"),
             ((shards[0], shards[1], shards[1]), "is given twice"),
             ((shards[0], shards[1], other_seed), "their records differ in seed")]
    for paths, message in cases:
        result = merge(*paths)
        assert result.exit_code != 0 and message in result.output and "Traceback" not in result.output, result.output
        assert not os.path.exists(tmp_path / "m.tsv")
    lines = shards[2].read_text().splitlines(keepends=True)  # a shard still running: its last row not yet written
    shards[2].write_text("".join(lines[:-1]))
    result = merge(*shards)
    assert result.exit_code != 0 and "is not complete: it lacks 1 rows" in result.output
    shards[2].write_text("".join(lines))
    (tmp_path / "exists.tsv").write_text("x")
    result = merge(*shards, out="exists.tsv")
    assert result.exit_code != 0 and "exists" in result.output
    assert merge(*shards).exit_code == 0


def test_samplewise_certification_cannot_be_sharded(model, tmp_path):
    result = _run("certify", model, tmp_path / "sw.tsv", "--sigma-grid", "0.25,0.5", "--shard", "0/2")
    assert result.exit_code != 0 and "sharding it is not supported" in result.output
    result = _run("certify", model, tmp_path / "bad.tsv", "--shard", "2/2")
    assert result.exit_code != 0 and "0 <= I < K" in result.output
    assert np.all([not os.path.exists(tmp_path / name) for name in ("sw.tsv", "bad.tsv")])


def test_scheme_3_shards_merge_into_the_unsharded_scheme_3_run_and_never_with_scheme_2(model, tmp_path):
    # Noise scheme 3 (tfsmooth.noise.NOISE_SCHEMES) keeps "noise depends only on (seed, idx)": its shards are the
    # unsharded scheme-3 run row for row; a scheme-2 shard is refused by the record comparison.
    whole = tmp_path / "whole3.tsv"
    assert _run("certify", model, whole, "--noise-scheme", "3").exit_code == 0
    shards = [tmp_path / f"s3_{i}.tsv" for i in range(2)]
    for i, path in enumerate(shards):
        assert _run("certify", model, path, "--shard", f"{i}/2", "--noise-scheme", "3").exit_code == 0
    merged = tmp_path / "merged3.tsv"
    result = CliRunner().invoke(cli, ["merge", *map(str, shards), "--out", str(merged)])
    assert result.exit_code == 0, result.output
    assert _rows(merged) == _rows(whole)
    assert json.loads(open(str(merged) + ".json").read())["noise_scheme"] == 3
    scheme_2 = tmp_path / "s2_1.tsv"
    assert _run("certify", model, scheme_2, "--shard", "1/2").exit_code == 0
    mixed = CliRunner().invoke(cli, ["merge", str(shards[0]), str(scheme_2), "--out", str(tmp_path / "mixed.tsv")])
    assert mixed.exit_code != 0 and "noise_scheme" in mixed.output and "Traceback" not in mixed.output, mixed.output
