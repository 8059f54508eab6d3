"""Real example models that come with the onnx package: ``example:squeezenet`` and friends.

The onnx wheel ships small real architectures (SqueezeNet, ResNet-50, ...) for its
backend tests, with deliberately tiny weights: no one here wrote them, and they are
on every machine that has the ``onnx`` extra, so a first run needs no download.
"""

from __future__ import annotations

import os

from agent.common.errors import BackendUnavailableError, ModelError

PREFIX = "example:"


def _light_dir() -> str:
    try:
        import onnx
    except ImportError:
        raise BackendUnavailableError(
            "example models come with the onnx package: pip install 'fleetbench[onnx]'"
        ) from None
    return os.path.join(os.path.dirname(onnx.__file__), "backend", "test", "data", "light")


def available() -> dict[str, str]:
    """Example name -> path of its .onnx file."""
    d = _light_dir()
    if not os.path.isdir(d):
        return {}
    return {
        f[len("light_") : -len(".onnx")]: os.path.join(d, f)
        for f in sorted(os.listdir(d))
        if f.startswith("light_") and f.endswith(".onnx")
    }


def resolve(model: str) -> str:
    """A model argument as a path: ``example:NAME`` is looked up, anything else passes through."""
    if not model.startswith(PREFIX):
        return model
    name = model[len(PREFIX) :]
    found = available()
    if name not in found:
        names = ", ".join(found) or "none in this onnx build"
        raise ModelError(f"{model!r} is not an example model; examples: {names}")
    return found[name]
