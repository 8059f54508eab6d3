"""The benchmark clock: a tiny C extension and its pure-Python twin.

``IMPL`` says which one is in use (``"native"`` or ``"python"``) and goes into
every result, because the twin adds its own loop overhead to each sample.
``FLEETBENCH_TIMER=python`` forces the twin; a failed import of the extension
falls back to it with a warning, never silently.
"""

from __future__ import annotations

import logging
import os
from types import ModuleType

logger = logging.getLogger(__name__)

IMPL: str
FALLBACK_REASON: str | None = None

if os.environ.get("FLEETBENCH_TIMER", "").strip().lower() == "python":
    from bench_kernels._python import CLOCK, now_ns, resolution_ns, time_calls

    IMPL = "python"
    FALLBACK_REASON = "FLEETBENCH_TIMER=python"
else:
    try:
        from bench_kernels._timer import CLOCK, now_ns, resolution_ns, time_calls
    except ImportError as err:
        from bench_kernels._python import CLOCK, now_ns, resolution_ns, time_calls

        IMPL = "python"
        FALLBACK_REASON = f"native timer not built ({err})"
        logger.warning(
            "native timer unavailable, using the pure-Python twin (%s); "
            "reinstall fleetbench with a C compiler to get it",
            err,
        )
    else:
        IMPL = "native"


def implementations() -> dict[str, ModuleType]:
    """Every timer implementation importable here: ``"python"``, and ``"native"`` when it is
    built.  For the tests and benchmarks that hold the twins against each other."""
    from bench_kernels import _python

    found: dict[str, ModuleType] = {"python": _python}
    try:
        from bench_kernels import _timer
    except ImportError:
        return found
    found["native"] = _timer
    return found


__all__ = ["CLOCK", "FALLBACK_REASON", "IMPL", "implementations", "now_ns", "resolution_ns", "time_calls"]
