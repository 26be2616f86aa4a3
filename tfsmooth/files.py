"""Durable file writes and small file utilities (ground floor: no TensorFlow).

One atomic-write helper for every file a job writes (result-file sidecars, run configs, training
state, model files, pseudo-labels): the content goes to a temporary file in the same directory, is
synced, and replaces the target by a rename, so a crash leaves either the old file or the new one,
never a partial one.
"""

from __future__ import annotations

import hashlib
import json
import os
import tempfile
from typing import Callable


def atomic_write(path, save: Callable[[str], None]) -> None:
    """Writes `path` all or nothing: `save(temporary path)`, fsync, rename over `path`.

    The temporary file is in `path`'s directory, hidden (".tmp-..."), with `path`'s extension (Keras
    and numpy choose the format from it), and gets the permissions a plain `open` would (0666 less
    the umask).

    Args:
        path: the target file.
        save: writes the whole content to the path it is given (e.g. `model.save`, `np.savez`).

    Raises:
        Whatever `save` raises; then the temporary file is removed and `path` is untouched.
    """
    path = os.fspath(path)
    directory = os.path.dirname(os.path.abspath(path))
    handle, temporary = tempfile.mkstemp(dir=directory, prefix=".tmp-", suffix=os.path.splitext(path)[1])
    os.close(handle)
    try:
        save(temporary)
        with open(temporary, "rb+") as file:
            os.fsync(file.fileno())
        umask = os.umask(0)
        os.umask(umask)
        os.chmod(temporary, 0o666 & ~umask)  # mkstemp's 0600 would hide results from other users
        os.replace(temporary, path)
    except BaseException:
        if os.path.exists(temporary):
            os.remove(temporary)
        raise


def atomic_write_text(path, text: str) -> None:
    """Writes UTF-8 text to `path` all or nothing (`atomic_write`)."""

    def save(temporary):
        with open(temporary, "w", encoding="utf-8", newline="") as file:
            file.write(text)

    atomic_write(path, save)


def write_json(path, obj) -> None:
    """Writes `obj` as indented, key-sorted JSON, all or nothing."""
    atomic_write_text(path, json.dumps(obj, indent=2, sort_keys=True) + "\n")


def read_json(path):
    """The JSON content of `path`.

    Raises:
        ValueError: naming the file, if it cannot be read or is not valid JSON.
    """
    try:
        with open(path, encoding="utf-8") as file:
            return json.load(file)
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as err:
        raise ValueError(f"cannot read {path}: {err}") from None


def file_sha256(path) -> str:
    """Hex SHA-256 of a file's bytes, read in 1 MiB chunks."""
    digest = hashlib.sha256()
    with open(path, "rb") as file:
        for chunk in iter(lambda: file.read(1 << 20), b""):
            digest.update(chunk)
    return digest.hexdigest()


def read_npz(path, keys, what: str, rerun: str) -> dict:
    """The arrays `keys` of an `.npz` written by a tfsmooth job, read without pickle.

    Args:
        path: the file.
        keys: the names that must be in it.
        what: how the file is described in errors (e.g. "a pseudo-labels .npz written by `tfsmooth pseudo-label`
            (a zip of label int64 [N] and str dataset, split, data_source)").
        rerun: the command that writes such a file, named where keys are missing.

    Returns:
        {key: numpy array}.

    Raises:
        FileNotFoundError: `path` does not exist.
        ValueError: not an `.npz` (e.g. a bare `.npy` array, a damaged zip) or one lacking a key.
    """
    import zipfile

    import numpy as np

    if not os.path.isfile(path):
        raise FileNotFoundError(f"file not found: {path}")
    try:
        archive = np.load(path, allow_pickle=False)
        if not isinstance(archive, np.lib.npyio.NpzFile):
            raise ValueError(f"it holds a single {archive.dtype} {archive.shape} array (.npy format)")
        with archive:
            missing = [key for key in keys if key not in archive.files]
            if missing:
                raise ValueError(f"it lacks {', '.join(missing)} (rerun `{rerun}`)")
            return {key: archive[key] for key in keys}
    except (OSError, ValueError, zipfile.BadZipFile) as err:
        raise ValueError(f"{path} is not {what}: {err}") from None
