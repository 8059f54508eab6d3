"""Optional dependencies: a clear sentence, not a traceback, when one is not installed."""

from __future__ import annotations

import importlib.util

from coordinator.errors import ExtraMissingError


def need(module: str, what: str, extras: str = "coordinator") -> None:
    """ExtraMissingError naming the pip extra unless ``module`` can be imported.

    >>> need("json", "reading JSON")
    """
    if importlib.util.find_spec(module) is None:
        raise ExtraMissingError(f"{what} needs {module}: pip install 'fleetbench[{extras}]'")
