"""notebooks/quickstart.ipynb runs as shipped (one training epoch instead of five) and writes what it says."""

import json
import pathlib

import pytest

from tfsmooth import results

NOTEBOOK = pathlib.Path(__file__).resolve().parent.parent / "notebooks" / "quickstart.ipynb"


@pytest.mark.slow
def test_quickstart_notebook_runs_and_writes_its_tsv_and_plot(tmp_path, monkeypatch):
    cells = json.loads(NOTEBOOK.read_text())["cells"]
    code = "\n\n".join("".join(cell["source"]) for cell in cells if cell["cell_type"] == "code")
    assert code.count("epochs=5") == 1, "the notebook's training budget changed: update this test"
    monkeypatch.chdir(tmp_path)
    exec(compile(code.replace("epochs=5", "epochs=1"), str(NOTEBOOK), "exec"), {})  # noqa: S102
    rows = results.read_results("notebook_certify.tsv")
    # skip=100 on the 1,000 sample test images: idx 0, 100, ..., 900, one certificate each.
    assert rows.idx.tolist() == list(range(0, 1000, 100))
    assert set(rows.correct.tolist()) <= {0, 1} and all(rows.radius >= 0)
    assert all((rows.correct == 1) == (rows.predict == rows.label))
    assert (tmp_path / "notebook_certified_accuracy.png").stat().st_size > 0
