"""The explicit registry of runtime backends, and model-format detection.

Backends register here by name; nothing is discovered by import side effects.
A backend whose runtime is not installed is still registered, so fleetbench can
say which extra installs it.
"""

from __future__ import annotations

import os

from agent.bench.backends.base import Backend, BackendOptions, Session
from agent.bench.backends.litert import LiteRTBackend
from agent.bench.backends.onnxruntime import OnnxRuntimeBackend
from agent.common.errors import BackendUnavailableError, ModelError, UsageError

_REGISTRY: dict[str, Backend] = {}


def register(backend: Backend) -> None:
    """Add a backend under its ``name`` (replacing one of the same name)."""
    _REGISTRY[backend.name] = backend


def names() -> list[str]:
    return sorted(_REGISTRY)


def get(name: str) -> Backend:
    try:
        return _REGISTRY[name]
    except KeyError:
        raise UsageError(f"--backend {name!r} is not one of: auto, {', '.join(names())}") from None


register(OnnxRuntimeBackend())
register(LiteRTBackend())

# FlatBuffers put the 4-byte file identifier at offset 4; LiteRT models say "TFL3".
_TFLITE_IDENT = b"TFL3"
_EXTENSIONS = {".onnx": "onnx", ".ort": "onnx", ".tflite": "tflite", ".lite": "tflite"}


def detect_format(path: str) -> str:
    """``"onnx"`` or ``"tflite"``: by the file's identifier, else by its extension."""
    if not os.path.exists(path):
        raise ModelError(f"model {path!r} does not exist")
    if os.path.isdir(path):
        raise ModelError(f"model {path!r} is a directory, not a model file")
    try:
        with open(path, "rb") as fh:
            head = fh.read(8)
    except OSError as err:
        raise ModelError(f"model {path!r} cannot be read: {err.strerror}") from err
    if len(head) == 0:
        raise ModelError(f"model {path!r} is an empty file")
    if head[4:8] == _TFLITE_IDENT:
        return "tflite"
    fmt = _EXTENSIONS.get(os.path.splitext(path)[1].lower())
    if fmt == "tflite":
        raise ModelError(f"{path!r} is not a TFLite model (no TFL3 file identifier)")
    if fmt is None:
        raise ModelError(f"{path!r} is not a model fleetbench recognizes: expected a .onnx or .tflite file")
    return fmt


def for_model(path: str, backend: str = "auto") -> Backend:
    """The backend to run ``path`` with: the one named, or the first that runs its format."""
    fmt = detect_format(path)
    if backend != "auto":
        chosen = get(backend)
        if fmt not in chosen.formats:
            raise UsageError(f"--backend {backend} cannot run {path!r}, which is a {fmt} model")
        candidates = [chosen]
    else:
        candidates = [b for b in (_REGISTRY[n] for n in names()) if fmt in b.formats]
    for cand in candidates:
        if cand.available():
            return cand
    cand = candidates[0]
    raise BackendUnavailableError(
        f"the {cand.name} backend needed for {path!r} is not installed; "
        f"install it with: pip install 'fleetbench[{cand.extra}]'"
    )


__all__ = [
    "Backend",
    "BackendOptions",
    "Session",
    "detect_format",
    "for_model",
    "get",
    "names",
    "register",
]
