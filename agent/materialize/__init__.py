"""Search-space architectures as real models, so a device can time an arch string it is sent.

``materialize(space, arch, ...)`` builds a backend-neutral ``Network`` (weights random
and seeded: latency does not depend on their values); ``write_model`` writes it as
ONNX (NCHW) or TFLite (NHWC), chosen by the file extension, atomically.  The prunable
families (``families``: resnet20, resnet56, resnet50, mobilenetv1) are spaces too: their
"arch" is a width spec.
"""

from __future__ import annotations

import os
from typing import Any, Optional

from agent.common.errors import UsageError
from agent.materialize.families import DEFAULTS as FAMILY_DEFAULTS
from agent.materialize.families import FAMILIES

SPACES = ("nas-bench-201", "mobilenetv2", *FAMILIES)
FORMATS = {".onnx": "onnx", ".tflite": "tflite"}
#: (classes, resolution) each space's networks have unless asked otherwise
DEFAULTS = {"nas-bench-201": (10, 32), "mobilenetv2": (1000, 224), **FAMILY_DEFAULTS}


def materialize(
    space: str, arch: str, seed: int = 0, classes: Optional[int] = None, resolution: Optional[int] = None
) -> Any:
    """The ``Network`` of ``arch`` in ``space``; UsageError names what is wrong with the request."""
    module = _module(space)
    default_classes, default_resolution = DEFAULTS[space]
    try:
        return module.build(
            arch, classes=classes or default_classes, resolution=resolution or default_resolution, seed=seed
        )
    except ValueError as err:
        raise UsageError(f"{space} arch {arch!r}: {err}") from None


def _module(space: str) -> Any:
    if space == "nas-bench-201":
        from agent.materialize import nasbench201

        return nasbench201
    if space == "mobilenetv2":
        from agent.materialize import mobilenetv2

        return mobilenetv2
    if space in FAMILIES:
        return _Family(space)
    raise UsageError(f"unknown search space {space!r} (known: {', '.join(SPACES)})")


class _Family:
    """A prunable family behind the interface of a search-space module (the arch is a width spec)."""

    def __init__(self, family: str) -> None:
        self.family = family

    def parse_arch(self, arch: str) -> tuple[int, ...]:
        from agent.materialize.families import parse_widths

        return parse_widths(self.family, arch)

    def check_options(self, classes: int, resolution: int) -> None:
        from agent.materialize.families import check_options

        check_options(classes, resolution, self.family)

    def sample(self, n: int, rng: Any) -> list[str]:
        from agent.materialize.families import sample

        return sample(self.family, n, rng)

    def build(self, arch: str, classes: int, resolution: int, seed: int) -> Any:
        from agent.materialize.families import plan
        from agent.materialize.weights import seeded, to_network

        the_plan = plan(self.family, arch, classes, resolution)
        return to_network(the_plan, seeded(the_plan, seed))


def sample(space: str, n: int, seed: int) -> list[str]:
    """``n`` distinct architectures of ``space``, reproducible from ``seed``."""
    import numpy as np

    try:
        return list(_module(space).sample(n, np.random.default_rng(seed)))
    except ValueError as err:  # more architectures than the space has
        raise UsageError(f"cannot sample {n} architectures: {err}") from None


def check(space: str, arch: str, classes: Optional[int] = None, resolution: Optional[int] = None) -> None:
    """Check a request without building anything (cheap: no numpy); ValueError says what is wrong."""
    module = _module(space)
    module.parse_arch(arch)
    module.check_options(classes or DEFAULTS[space][0], resolution or DEFAULTS[space][1])


def model_bytes(net: Any, fmt: str) -> bytes:
    if fmt == "onnx":
        try:
            from agent.materialize.to_onnx import to_onnx
        except ImportError as err:
            from agent.common.errors import BackendUnavailableError

            raise BackendUnavailableError(
                "writing .onnx models needs the onnx package (pip install 'fleetbench[onnx]')"
            ) from err
        return bytes(to_onnx(net).SerializeToString())
    from agent.materialize.to_tflite import to_tflite

    return to_tflite(net)


def parameter_bytes(net: Any) -> int:
    """The bytes of a network's weights: what its model file will hold, near enough."""
    import numpy as np

    return sum(
        value.nbytes
        for layer in net.layers
        for value in vars(layer).values()
        if isinstance(value, np.ndarray)
    )


def format_for(path: str) -> str:
    ext = os.path.splitext(path)[1].lower()
    if ext not in FORMATS:
        raise UsageError(
            f"output {path!r} must end in .onnx or .tflite (the format is chosen by the extension)"
        )
    return FORMATS[ext]


def write_model(net: Any, path: str) -> str:
    """Write ``net`` to ``path`` (format by extension) via a temporary file and a rename."""
    from agent.common.files import check_writable, write_bytes_atomic

    fmt = format_for(path)
    check_writable(path, "output")
    write_bytes_atomic(path, model_bytes(net, fmt), "output")
    return path
