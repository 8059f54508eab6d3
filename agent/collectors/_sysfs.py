"""The one reader for /sys and /proc, with an injectable root.

Tests point ``root`` at a tree captured from a real board under ``tmp_path``;
on a device it is ``/``.  Reads never raise for a missing or unreadable file:
a sensor that is not there is simply ``None``, and empty or zero values are
treated as "unavailable" by the callers that know their units.
"""

from __future__ import annotations

import glob
import os
import shutil
import subprocess
from typing import Callable, Optional

#: runs a helper program (argv) and returns its stdout, or None if it is missing or fails
Runner = Callable[[list[str]], Optional[str]]


def run_helper(argv: list[str], timeout_s: float = 10.0) -> Optional[str]:
    """stdout of a helper program (getprop, termux-battery-status), None if absent or failing."""
    exe = shutil.which(argv[0])
    if exe is None:
        return None
    try:
        out = subprocess.run([exe, *argv[1:]], capture_output=True, text=True, timeout=timeout_s)
    except (OSError, subprocess.SubprocessError):
        return None
    return out.stdout if out.returncode == 0 else None


class SysfsReader:
    """Read small text files below ``root`` (default ``/``)."""

    def __init__(self, root: str = "/") -> None:
        self.root = os.path.abspath(root)

    @property
    def is_live(self) -> bool:
        """True when reading the real machine, so psutil may be asked as well."""
        return self.root == "/"

    def path(self, rel: str) -> str:
        return os.path.join(self.root, rel.lstrip("/"))

    def exists(self, rel: str) -> bool:
        return os.path.exists(self.path(rel))

    def read_text(self, rel: str) -> Optional[str]:
        """Stripped file contents, or None if missing, unreadable or empty.

        Device-tree strings end in NUL bytes, which are stripped too.
        """
        try:
            with open(self.path(rel), "rb") as fh:
                raw = fh.read(65536)
        except OSError:
            return None
        text = raw.decode("utf-8", "replace").replace("\x00", "").strip()
        return text or None

    def read_int(self, rel: str, base: int = 10) -> Optional[int]:
        """Integer contents (``base=16`` accepts a ``0x`` prefix), or None."""
        text = self.read_text(rel)
        if text is None:
            return None
        try:
            return int(text, base)
        except ValueError:
            return None

    def glob(self, pattern: str) -> list[str]:
        """Paths relative to root (with a leading ``/``) matching ``pattern``, sorted."""
        prefix = len(self.root.rstrip("/"))
        return sorted(p[prefix:] or "/" for p in glob.glob(self.path(pattern)))
