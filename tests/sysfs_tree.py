"""Lay out a /sys and /proc tree under a temporary root, as a board would show it."""

from __future__ import annotations

import os
from typing import Union

from agent.collectors._sysfs import SysfsReader


def make_tree(root: object, files: dict[str, Union[str, bytes]]) -> SysfsReader:
    """Write ``files`` (absolute paths -> contents) below ``root``; a reader rooted there."""
    for rel, content in files.items():
        path = os.path.join(str(root), rel.lstrip("/"))
        os.makedirs(os.path.dirname(path), exist_ok=True)
        with open(path, "wb") as fh:
            fh.write(content.encode() if isinstance(content, str) else content)
    return SysfsReader(str(root))
