"""notebooks/quickstart.ipynb runs in a real Jupyter kernel (one training epoch instead of five) and shows what it says.

The kernel is this test's own Python (`sys.executable`, through a kernel spec in a temporary directory, so no
kernel registered on the machine is used), started in a temporary working directory with its own IPython
directory (no profile or start-up file of the machine runs).
"""

import base64
import json
import os
import pathlib
import site
import sys

import jupyter_client.kernelspec
import nbclient
import nbformat
import pytest

import tfsmooth
from tfsmooth import data, results

NOTEBOOK = pathlib.Path(__file__).resolve().parent.parent / "notebooks" / "quickstart.ipynb"
CERTIFY_TSV = "notebook_certify.tsv"
PLOT_PNG = "notebook_certified_accuracy.png"
KERNEL = "tfsmooth-test"
CELL_TIMEOUT_S = 300  # per cell; the whole notebook takes about a minute on 2 CPU cores


def _kernel_manager(tmp_path):
    """A KernelManager for an ipykernel of sys.executable that imports the tfsmooth this test imported."""
    env = {"IPYTHONDIR": str(tmp_path / "ipython")}
    package_parent = str(pathlib.Path(tfsmooth.__file__).resolve().parent.parent)
    site_dirs = {str(pathlib.Path(path).resolve()) for path in [*site.getsitepackages(), site.getusersitepackages()]}
    if package_parent not in site_dirs:  # a source tree or an editable install: put it first, as it is here
        env["PYTHONPATH"] = os.pathsep.join([package_parent, *filter(None, [os.environ.get("PYTHONPATH")])])
    spec_dir = tmp_path / "kernels" / KERNEL
    spec_dir.mkdir(parents=True)
    (spec_dir / "kernel.json").write_text(json.dumps({
        "argv": [sys.executable, "-m", "ipykernel_launcher", "-f", "{connection_file}"],
        "display_name": "tfsmooth test", "language": "python", "env": env}))
    specs = jupyter_client.kernelspec.KernelSpecManager(kernel_dirs=[str(tmp_path / "kernels")])
    return jupyter_client.KernelManager(kernel_name=KERNEL, kernel_spec_manager=specs)


def _with_one_epoch(notebook):
    """Inserts `EPOCHS = 1` after the cell tagged "parameters" (papermill's convention)."""
    tagged = [i for i, cell in enumerate(notebook.cells) if "parameters" in cell.metadata.get("tags", [])]
    assert len(tagged) == 1, "the notebook must have one cell tagged 'parameters'"
    assert "EPOCHS = 5" in notebook.cells[tagged[0]].source, "the notebook's training budget changed: update this test"
    injected = nbformat.v4.new_code_cell("EPOCHS = 1", metadata={"tags": ["injected-parameters"]})
    notebook.cells.insert(tagged[0] + 1, injected)


def _cell(notebook, cell_id):
    return next(cell for cell in notebook.cells if cell.get("id") == cell_id)


def _stdout(cell):
    return "".join(out.text for out in cell.outputs if out.output_type == "stream" and out.name == "stdout")


def _write_stale_results(tmp_path):
    """What the previous notebook left: rows of another model under a record of sigma and n only."""
    with open(tmp_path / CERTIFY_TSV, "w") as tsv:
        tsv.write("\t".join(results.CERTIFY_COLUMNS) + "\n")
        tsv.writelines(f"{idx}\t0\t0\t0.5\t1\t1.0\n" for idx in range(0, 1000, 100))
    (tmp_path / (CERTIFY_TSV + ".json")).write_text(json.dumps({"sigma": 0.25, "n": 2000}))


def test_quickstart_notebook_is_shipped_executed_with_its_table_and_plot():
    notebook = nbformat.read(NOTEBOOK, as_version=4)
    nbformat.validate(notebook)
    code = [cell for cell in notebook.cells if cell.cell_type == "code"]
    assert all(cell.execution_count for cell in code), "run the notebook top to bottom before committing it"
    assert not [out for cell in code for out in cell.outputs if out.output_type == "error"]
    assert _stdout(_cell(notebook, "certify")).startswith("\t".join(results.CERTIFY_COLUMNS) + "\n")
    assert "image/png" in _cell(notebook, "plot").outputs[-1].data
    assert NOTEBOOK.stat().st_size < 300_000


@pytest.mark.slow
def test_quickstart_notebook_runs_in_a_kernel_and_shows_the_new_models_table_and_plot(tmp_path):
    work = tmp_path / "work"
    work.mkdir()
    _write_stale_results(work)  # a re-run must not resume it
    notebook = nbformat.read(NOTEBOOK, as_version=4)
    _with_one_epoch(notebook)
    client = nbclient.NotebookClient(notebook, km=_kernel_manager(tmp_path), timeout=CELL_TIMEOUT_S,
                                     startup_timeout=120, resources={"metadata": {"path": str(work)}})
    client.execute()  # raises CellExecutionError, naming the cell, if one raises

    assert not [out for cell in notebook.cells if cell.cell_type == "code" for out in cell.outputs
                if out.output_type == "error"]
    # skip=100 on the 1,000 sample test images: idx 0, 100, ..., 900, one certificate each, of the model
    # just trained: the stale rows (label 0 everywhere) are gone.
    labels = data.load_sample_arrays()["test_labels"][::100].tolist()
    rows = results.read_results(work / CERTIFY_TSV)
    assert rows.idx.tolist() == list(range(0, 1000, 100))
    assert rows.label.tolist() == labels
    assert set(rows.correct.tolist()) <= {0, 1} and all(rows.radius >= 0)
    assert all((rows.correct == 1) == (rows.predict == rows.label))
    assert json.loads((work / (CERTIFY_TSV + ".json")).read_text())["model_sha256"]

    # The certify cell prints that TSV, the table cell one row for it, the plot cell shows a PNG image.
    assert _stdout(_cell(notebook, "certify")) == (work / CERTIFY_TSV).read_text()
    table = _stdout(_cell(notebook, "table")).splitlines()
    assert all(f"{radius}" in table[0] for radius in ("0.0", "0.25", "0.5")), table
    assert [line for line in table if line.startswith(f"| {CERTIFY_TSV} |")], table
    shown = [out for out in _cell(notebook, "plot").outputs if out.output_type == "execute_result"]
    assert len(shown) == 1 and "image/png" in shown[0].data, "the figure shows as text, not as an image"
    assert base64.b64decode(shown[0].data["image/png"]).startswith(b"\x89PNG\r\n\x1a\n")
    assert (work / PLOT_PNG).read_bytes().startswith(b"\x89PNG\r\n\x1a\n")
