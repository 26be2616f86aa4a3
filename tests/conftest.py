"""Test set-up shared by all tests.

* `tfsmooth.cli` is packaged from the top-level `cli/` directory (setup.py `package_dir`). When
  the tests run against the source tree instead of an installed package (or an editable install of
  another checkout), map it here.
* `cifar_dir` locates the real CIFAR-10 binary files: $TFSMOOTH_DATA_DIR, else ../shared/data.
"""

import importlib.util
import os
import pathlib
import sys

import pytest

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

ROOT = pathlib.Path(__file__).resolve().parent.parent

def _cli_of_this_tree():
    """`tfsmooth.cli` from this tree's cli/: the installed package's when it is this tree's, else mapped here (no
    install, or an editable install of another checkout while PYTHONPATH points at this one)."""
    try:
        import tfsmooth.cli as installed
        if pathlib.Path(installed.__file__).resolve().parent == ROOT / "cli":
            return
    except ImportError:
        pass
    for name in [name for name in sys.modules if name == "tfsmooth.cli" or name.startswith("tfsmooth.cli.")]:
        del sys.modules[name]
    spec = importlib.util.spec_from_file_location(
        "tfsmooth.cli", ROOT / "cli" / "__init__.py", submodule_search_locations=[str(ROOT / "cli")])
    module = importlib.util.module_from_spec(spec)
    sys.modules["tfsmooth.cli"] = module
    spec.loader.exec_module(module)


_cli_of_this_tree()


def _cifar_dir():
    candidates = [os.environ.get("TFSMOOTH_DATA_DIR"), ROOT.parent / "shared" / "data" / "cifar-10-batches-bin"]
    for candidate in candidates:
        if candidate and (pathlib.Path(candidate) / "test_batch.bin").is_file():
            return pathlib.Path(candidate)
    return None


@pytest.fixture(scope="session")
def cifar_dir():
    """Path of the real CIFAR-10 binary directory; skips the test when it is absent."""
    path = _cifar_dir()
    if path is None:
        pytest.skip("real CIFAR-10 files not found: set TFSMOOTH_DATA_DIR or put ../shared/data beside the repo")
    return path


@pytest.fixture(scope="session")
def sample_model(tmp_path_factory):
    """Path of a small_cnn trained for one epoch on the embedded sample (sigma = 0.25) by `tfsmooth train`: a
    real, quickly made base classifier for command-line tests of certification. Shared by the whole session."""
    from click.testing import CliRunner

    from tfsmooth import jobs
    from tfsmooth.cli.main import cli

    outdir = tmp_path_factory.mktemp("sample_model") / "run"
    result = CliRunner().invoke(cli, ["train", "--dataset", "cifar10_sample", "--arch", "small_cnn", "--epochs", "1",
                                      "--batch", "500", "--val-examples", "0", "--sigma", "0.25",
                                      "--outdir", str(outdir)], catch_exceptions=False)
    assert result.exit_code == 0, result.output
    return str(outdir / jobs.BASE_MODEL_FILE)
