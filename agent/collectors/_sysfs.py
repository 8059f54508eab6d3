"""The one reader for /sys and /proc, with an injectable root.

Tests point ``root`` at a tree captured from a real board under ``tmp_path``;
on a device it is ``/``.  Reads never raise for a missing or unreadable file:
a sensor that is not there is simply ``None``, and empty or zero values are
treated as "unavailable" by the callers that know their units.  A container, a
chroot or an Android app (SELinux) may see only part of /sys and /proc:
``hidden`` names the places a device normally has that are missing or unreadable.
"""

from __future__ import annotations

import glob
import logging
import os
import shutil
import subprocess
from typing import Callable, Optional

#: runs a helper program (argv) and returns its stdout, or None if it is missing or fails
Runner = Callable[[list[str]], Optional[str]]

logger = logging.getLogger(__name__)
#: helpers that did not answer in time: not run again by this process (termux-battery-status
#: waits forever for the Termux:API app when it is not installed)
_STUCK: set[str] = set()


def run_helper(argv: list[str], timeout_s: float = 5.0) -> Optional[str]:
    """stdout of a helper program (getprop, termux-battery-status), None if absent or failing.
    One that does not answer within ``timeout_s`` is said once and not asked again."""
    exe = shutil.which(argv[0])
    if exe is None or argv[0] in _STUCK:
        return None
    try:
        out = subprocess.run([exe, *argv[1:]], capture_output=True, text=True, timeout=timeout_s)
    except subprocess.TimeoutExpired:
        _STUCK.add(argv[0])
        hint = " (is the Termux:API app installed?)" if argv[0].startswith("termux-") else ""
        logger.warning("%s did not answer within %g s%s; not asking it again", argv[0], timeout_s, hint)
        return None
    except (OSError, subprocess.SubprocessError):
        return None
    return out.stdout if out.returncode == 0 else None


#: where every Linux device keeps what the collectors read, and whether it may be empty (a
#: board without a battery or a thermal sensor still has those directories, empty; the cpu
#: directory and the /proc files never are)
PLACES = (("/sys/class/power_supply", True), ("/sys/class/thermal", True), ("/sys/devices/system/cpu", False),
          ("/proc/cpuinfo", False), ("/proc/loadavg", False), ("/proc/meminfo", False))  # fmt: skip


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

    def hidden(self, places: tuple[tuple[str, bool], ...] = PLACES) -> tuple[str, ...]:
        """Which of ``places`` are missing, unreadable or (where they never are) empty here.

        >>> SysfsReader("/nonexistent").hidden((("/proc/loadavg", False),))
        ('/proc/loadavg (missing)',)
        """
        out = []
        for rel, may_be_empty in places:
            path = self.path(rel)
            try:
                if os.path.isdir(path):
                    empty = not os.listdir(path)
                else:
                    with open(path, "rb") as fh:
                        empty = not fh.read(65536).strip(b"\x00 \t\n")
            except FileNotFoundError:
                out.append(f"{rel} (missing)")
            except OSError:
                out.append(f"{rel} (unreadable)")
            else:
                if empty and not may_be_empty:
                    out.append(f"{rel} (empty)")
        return tuple(out)

    def glob(self, pattern: str) -> list[str]:
        """Paths relative to root (with a leading ``/``) matching ``pattern``, sorted."""
        prefix = len(self.root.rstrip("/"))
        return sorted(p[prefix:] or "/" for p in glob.glob(self.path(pattern)))
