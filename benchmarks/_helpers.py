"""What the benchmark scripts share: the tests' helpers (a real mosquitto, agent processes).

They are loaded by file path: putting tests/ on sys.path would let a tests/ module shadow
the agent package (a namespace package is found before the editable install's finder).
"""

from __future__ import annotations

import importlib.util
import os
from typing import Any

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def load_test_helper(name: str) -> Any:
    """``tests/{name}.py`` as a module (``broker``, ``daemon_proc``)."""
    spec = importlib.util.spec_from_file_location(
        f"fleetbench_test_{name}", os.path.join(REPO, "tests", f"{name}.py")
    )
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module
