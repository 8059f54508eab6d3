"""Writing result files safely: whole or not at all."""

from __future__ import annotations

import os
import tempfile

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


def write_text_atomic(path: str, text: str, what: str = "--output") -> None:
    """Write ``text`` (UTF-8) to ``path`` atomically: see ``write_bytes_atomic``."""
    write_bytes_atomic(path, text.encode("utf-8"), what)


def write_bytes_atomic(path: str, data: bytes, what: str = "--output") -> None:
    """Write ``data`` to ``path`` via a temporary file and a rename, so a crash or a full
    disk mid-write never leaves half a file where a good one (or none) was."""
    check_writable(path, what)
    directory = os.path.dirname(os.path.abspath(path))
    try:
        fd, tmp = tempfile.mkstemp(prefix=".fleetbench-", dir=directory)
    except OSError as err:
        raise UsageError(f"{what} {path!r} cannot be written: {err.strerror}") from err
    try:
        # mkstemp makes the file 0600; a result file should read like any other the user writes.
        os.chmod(tmp, _mode_for(path))
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
