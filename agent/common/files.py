"""Writing result files safely: whole or not at all."""

from __future__ import annotations

import os
import tempfile
from typing import Optional

from agent.common.errors import UsageError


def check_writable(path: str, what: str = "--output") -> None:
    """Fail *before* long work if ``path`` could not be written afterwards."""
    directory = os.path.dirname(os.path.abspath(path))
    if not os.path.isdir(directory):
        raise UsageError(f"{what} {path!r}: directory {directory!r} does not exist")
    if not os.access(directory, os.W_OK):
        raise UsageError(f"{what} {path!r}: directory {directory!r} is not writable")
    if os.path.isdir(path):
        raise UsageError(f"{what} {path!r} is a directory")


def _mode_for(path: str) -> int:
    try:
        return os.stat(path).st_mode & 0o777  # keep the mode of the file being replaced
    except OSError:
        umask = os.umask(0)
        os.umask(umask)
        return 0o666 & ~umask


def write_text_atomic(path: str, text: str, what: str = "--output", mode: Optional[int] = None) -> None:
    """Write ``text`` (UTF-8) to ``path`` atomically: see ``write_bytes_atomic``."""
    write_bytes_atomic(path, text.encode("utf-8"), what, mode)


def write_bytes_atomic(path: str, data: bytes, what: str = "--output", mode: Optional[int] = None) -> None:
    """Write ``data`` to ``path`` via a temporary file and a rename, so a crash or a full
    disk mid-write never leaves half a file where a good one (or none) was.  ``mode``: the
    file's permissions (default: those of the file replaced, else what the umask allows)."""
    check_writable(path, what)
    directory = os.path.dirname(os.path.abspath(path))
    try:
        fd, tmp = tempfile.mkstemp(prefix=".fleetbench-", dir=directory)
    except OSError as err:
        raise UsageError(f"{what} {path!r} cannot be written: {err.strerror}") from err
    try:
        # mkstemp makes the file 0600; a result file should read like any other the user writes.
        os.chmod(tmp, _mode_for(path) if mode is None else mode)
        with os.fdopen(fd, "wb") as fh:
            fh.write(data)
            fh.flush()
            os.fsync(fh.fileno())
        os.replace(tmp, path)
    except OSError as err:
        if os.path.exists(tmp):
            os.unlink(tmp)
        raise UsageError(f"{what} {path!r} cannot be written: {err.strerror}") from err
    except BaseException:
        if os.path.exists(tmp):
            os.unlink(tmp)
        raise


def child_path(directory: str, name: str, what: str) -> str:
    """``directory/name`` for a ``name`` that came from outside (a push id, a job id, a model
    name): UsageError unless it is one plain file name that stays inside ``directory``.

    >>> child_path("/state/jobs", "j-1.json", "job file")
    '/state/jobs/j-1.json'
    """
    if not name or name in (".", "..") or "/" in name or "\\" in name or "\x00" in name:
        raise UsageError(f"{what} {name!r} is not a plain file name")
    path = os.path.join(directory, name)
    if os.path.dirname(os.path.normpath(path)) != os.path.normpath(directory):
        raise UsageError(f"{what} {name!r} leaves {directory!r}")
    return path
