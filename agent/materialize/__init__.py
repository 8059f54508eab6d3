"""Search-space architectures as real models, so a device can time an arch string it is sent.

``materialize(space, arch, ...)`` builds a backend-neutral ``Network`` (weights random
and seeded: latency does not depend on their values); ``write_model`` writes it as
ONNX (NCHW) or TFLite (NHWC), chosen by the file extension, atomically.
"""

from __future__ import annotations

import os
from typing import Any

from agent.errors import UsageError

SPACES = ("nas-bench-201",)
FORMATS = {".onnx": "onnx", ".tflite": "tflite"}


def materialize(space: str, arch: str, seed: int = 0, classes: int = 10, resolution: int = 32) -> Any:
    """The ``Network`` of ``arch`` in ``space``; UsageError names what is wrong with the request."""
    if space != "nas-bench-201":
        raise UsageError(f"unknown search space {space!r} (known: {', '.join(SPACES)})")
    from agent.materialize import nasbench201

    try:
        return nasbench201.build(arch, classes=classes, resolution=resolution, seed=seed)
    except ValueError as err:
        raise UsageError(f"{space} arch {arch!r}: {err}") from None


def model_bytes(net: Any, fmt: str) -> bytes:
    if fmt == "onnx":
        try:
            from agent.materialize.to_onnx import to_onnx
        except ImportError as err:
            from agent.errors import BackendUnavailableError

            raise BackendUnavailableError(
                "writing .onnx models needs the onnx package (pip install 'fleetbench[onnx]')"
            ) from err
        return bytes(to_onnx(net).SerializeToString())
    from agent.materialize.to_tflite import to_tflite

    return to_tflite(net)


def format_for(path: str) -> str:
    ext = os.path.splitext(path)[1].lower()
    if ext not in FORMATS:
        raise UsageError(
            f"output {path!r} must end in .onnx or .tflite (the format is chosen by the extension)"
        )
    return FORMATS[ext]


def write_model(net: Any, path: str) -> str:
    """Write ``net`` to ``path`` (format by extension) via a temporary file and a rename."""
    from agent.files import check_writable, write_bytes_atomic

    fmt = format_for(path)
    check_writable(path, "output")
    write_bytes_atomic(path, model_bytes(net, fmt), "output")
    return path
