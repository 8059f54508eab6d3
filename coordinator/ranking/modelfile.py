"""Model files (the cross-device predictor, the optimizer network): ``.npz`` arrays and a JSON
header, never pickle, so a file from anywhere can be loaded without running anything."""

from __future__ import annotations

import json
import os
import tempfile
import zipfile
from typing import Optional

import numpy as np

from coordinator.errors import ModelFileError


def save_npz(path: str, arrays: dict[str, np.ndarray]) -> None:
    """Write ``arrays`` (one of them the JSON ``header`` as bytes) to ``path`` atomically."""
    directory = os.path.dirname(os.path.abspath(path))
    fd, tmp = tempfile.mkstemp(dir=directory, suffix=".npz.tmp")
    try:
        with os.fdopen(fd, "wb") as fh:
            np.savez(fh, **arrays)  # type: ignore[arg-type]  # numpy stubs: **kwds typed as bool
        umask = os.umask(0)
        os.umask(umask)
        os.chmod(tmp, 0o666 & ~umask)  # mkstemp makes 0600; a model is not a secret
        os.replace(tmp, path)
    except BaseException:
        if os.path.exists(tmp):
            os.unlink(tmp)
        raise


def read_npz(
    path: str, what: str, fmt: str, version: int, space: Optional[str] = None
) -> tuple[dict, dict[str, np.ndarray]]:
    """(header, arrays) of a fleetbench .npz model file of ``fmt`` and ``version`` (and ``space``,
    if given); ModelFileError, naming the file and what is wrong, for anything else."""
    try:
        with np.load(path, allow_pickle=False) as data:
            arrays = {k: data[k] for k in data.files}
    except FileNotFoundError:
        raise ModelFileError(f"{what} {path!r} does not exist") from None
    except (OSError, ValueError, zipfile.BadZipFile, EOFError) as err:
        raise ModelFileError(f"{what} {path!r} is not a fleetbench model file ({err})") from None
    try:
        header = json.loads(bytes(arrays.pop("header")).decode())
    except (KeyError, ValueError, UnicodeDecodeError):
        raise ModelFileError(f"{what} {path!r} is not a fleetbench model file (no header)") from None
    if not isinstance(header, dict) or header.get("format") != fmt:
        got = header.get("format") if isinstance(header, dict) else None
        raise ModelFileError(f"{what} {path!r} is a {got or 'unknown'} file, not a {fmt} model")
    if header.get("version") != version:
        raise ModelFileError(
            f"{what} {path!r} is version {header.get('version')} of {fmt}; this fleetbench reads version "
            f"{version}: retrain it with this fleetbench"
        )
    if space is not None and header.get("space") != space:
        raise ModelFileError(f"{what} {path!r} was trained for the {header.get('space')} space, not {space}")
    return header, arrays
