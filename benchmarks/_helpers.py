"""What the benchmark scripts share: the tests' helpers (a real mosquitto, agent processes).

They are loaded by file path: putting tests/ on sys.path would let a tests/ module shadow
the agent package (a namespace package is found before the editable install's finder).
"""

from __future__ import annotations

import importlib
import importlib.abc
import importlib.util
import os
import sys
from typing import Any

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


class _TestHelpers(importlib.abc.MetaPathFinder):
    """Finds ``tests/{name}.py`` for a top-level ``import name`` that nothing else found: the
    helpers import one another (``wire`` imports ``keys``), and only their files are found,
    never tests/ directories such as tests/agent."""

    def find_spec(self, name: str, path: Any, target: Any = None) -> Any:
        file = os.path.join(REPO, "tests", f"{name}.py")
        if path is None and "." not in name and os.path.isfile(file):
            return importlib.util.spec_from_file_location(name, file)
        return None


def load_test_helper(name: str) -> Any:
    """``tests/{name}.py`` as a module (``broker``, ``daemon_proc``, ``tls``, ``wire``)."""
    if not any(isinstance(f, _TestHelpers) for f in sys.meta_path):
        sys.meta_path.append(_TestHelpers())  # after the standard finders: the packages win
    return importlib.import_module(name)
