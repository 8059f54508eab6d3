"""LiteRT backend (``ai_edge_litert``, or ``tflite_runtime`` on older device images).

``--delegate edgetpu`` loads the Coral Edge TPU delegate from libedgetpu.  LiteRT's
Python API has no operator profiler, so ``--profile`` times each operator cut out
of the model into a one-operator model (see ``_tflite_ops``): the same approach as
a layer-wise lookup table, and honest about it in the output.
"""

from __future__ import annotations

import contextlib
import ctypes.util
import logging
import os
import re
import sys
from collections.abc import Iterator, Mapping
from typing import Any, Callable

import numpy as np

from agent.bench.backends.base import Backend, BackendOptions, Session
from agent.bench.inputs import Dim, TensorSpec
from agent.bench.results import BackendInfo, OpProfile
from agent.common.errors import (
    BackendUnavailableError,
    BenchmarkError,
    ModelError,
    UnsupportedModelError,
    UsageError,
)

logger = logging.getLogger(__name__)

# Delegates fleetbench knows how to load: name -> shared library per platform.
_EDGETPU_LIB = {"linux": "libedgetpu.so.1", "darwin": "libedgetpu.1.dylib", "win32": "edgetpu.dll"}
DELEGATES = ("edgetpu",)


def _runtime() -> tuple[Any, str, str]:
    """(interpreter module, package name, version); ImportError when neither is installed."""
    try:
        import ai_edge_litert
        from ai_edge_litert import interpreter as mod

        return mod, "ai_edge_litert", str(ai_edge_litert.__version__)
    except ImportError:
        pass
    # Old Raspberry Pi OS / Coral images pin numpy < 2 and ship tflite-runtime.
    import tflite_runtime
    from tflite_runtime import interpreter as mod

    return mod, "tflite_runtime", str(getattr(tflite_runtime, "__version__", "?"))


@contextlib.contextmanager
def quiet_native_stderr() -> Iterator[None]:
    """Silence LiteRT's C++ INFO lines ("Created TensorFlow Lite XNNPACK delegate for CPU.")
    that it writes straight to fd 2 on every load, breaking tables and progress lines.
    Errors still reach us as exceptions; with -vv (debug) nothing is silenced."""
    if logger.isEnabledFor(logging.DEBUG):
        yield
        return
    try:
        saved = os.dup(2)
    except OSError:
        yield
        return
    devnull = os.open(os.devnull, os.O_WRONLY)
    try:
        sys.stderr.flush()
        os.dup2(devnull, 2)
        yield
    finally:
        os.dup2(saved, 2)
        os.close(saved)
        os.close(devnull)


def _translate(err: Exception, path: str) -> Exception:
    text = str(err).strip()
    first = text.splitlines()[0] if text else type(err).__name__
    match = re.search(r"unresolved custom op: (\w+)", text) or re.search(
        r"Didn't find op for builtin opcode '(\w+)'", text
    )
    if match:
        return UnsupportedModelError(
            f"{path!r} uses operator {match.group(1)}, which this LiteRT runtime cannot run"
        )
    if "model identifier" in text or "Could not open" in text or "verif" in text.lower():
        return ModelError(f"{path!r} is not a valid TFLite model: {first}")
    return BenchmarkError(f"LiteRT failed on {path!r}: {first}")


def load_edgetpu_delegate(mod: Any) -> Any:
    """Load the Coral delegate, or say clearly why it cannot be."""
    lib = _EDGETPU_LIB.get(sys.platform, "libedgetpu.so.1")
    if sys.platform.startswith("linux") and ctypes.util.find_library("edgetpu") is None:
        raise BackendUnavailableError(
            "--delegate edgetpu needs libedgetpu, which is not installed on this device "
            "(on a Coral board or with a Coral USB stick: apt install libedgetpu1-std)"
        )
    try:
        return mod.load_delegate(lib)
    except (ValueError, OSError, RuntimeError) as err:
        raise BackendUnavailableError(
            f"libedgetpu is installed but the Edge TPU delegate did not load ({err}); "
            "is a Coral Edge TPU attached?"
        ) from err


class LiteRTSession(Session):
    def __init__(self, path: str, options: BackendOptions) -> None:
        mod, package, version = _runtime()
        self._path = path
        self._mod = mod
        self._options = options
        delegates = []
        if options.delegate == "edgetpu":
            delegates.append(load_edgetpu_delegate(mod))
        elif options.delegate:
            raise UsageError(f"--delegate {options.delegate!r} is not one of: {', '.join(DELEGATES)}")
        try:
            with quiet_native_stderr():
                self._interp = mod.Interpreter(
                    model_path=path,
                    num_threads=options.threads,
                    experimental_delegates=delegates or None,
                )
                self._interp.allocate_tensors()
        except (ValueError, RuntimeError) as err:
            raise _translate(err, path) from err
        self._details = self._interp.get_input_details()
        self.inputs = tuple(
            TensorSpec(
                name=d["name"],
                shape=tuple(self._dim(s) for s in d.get("shape_signature", d["shape"])),
                dtype=np.dtype(d["dtype"]).name,
            )
            for d in self._details
        )
        self.info = BackendInfo(
            name="litert",
            version=version,
            threads=options.threads,
            delegate=options.delegate,
            runtime=package,
        )

    @staticmethod
    def _dim(d: Any) -> Dim:
        d = int(d)
        return d if d > 0 else None

    def prepare(self, feeds: Mapping[str, np.ndarray]) -> Callable[[], object]:
        interp = self._interp
        try:
            resized = False
            for d in self._details:
                arr = feeds[d["name"]]
                if tuple(d["shape"]) != arr.shape:
                    interp.resize_tensor_input(d["index"], list(arr.shape), strict=False)
                    resized = True
            if resized:
                interp.allocate_tensors()
            for d in self._details:
                interp.set_tensor(d["index"], feeds[d["name"]])
        except (ValueError, RuntimeError) as err:
            raise _translate(err, self._path) from err
        # Inputs stay in the interpreter's buffers between runs, as in benchmark_model.
        return interp.invoke

    def outputs(self) -> list[np.ndarray]:
        try:
            self._interp.invoke()
        except (ValueError, RuntimeError) as err:
            raise _translate(err, self._path) from err
        return [self._interp.get_tensor(d["index"]).copy() for d in self._interp.get_output_details()]

    def profile(self, feeds: Mapping[str, np.ndarray], runs: int) -> list[OpProfile]:
        from agent.bench.backends import _tflite_ops

        with open(self._path, "rb") as fh:
            content = fh.read()
        return _tflite_ops.profile_ops(content, self._mod, self._options.threads, runs, path=self._path)

    def close(self) -> None:
        self._interp = None


class LiteRTBackend(Backend):
    name = "litert"
    extra = "litert"
    formats = ("tflite",)

    def available(self) -> bool:
        try:
            _runtime()
        except ImportError:
            return False
        return True

    def version(self) -> str:
        return _runtime()[2]

    def open(self, path: str, options: BackendOptions) -> Session:
        if options.providers:
            raise UsageError(
                f"--providers is an onnxruntime option; {path!r} runs on LiteRT "
                "(use --delegate for its accelerators)"
            )
        return LiteRTSession(path, options)


__all__ = ["DELEGATES", "LiteRTBackend", "LiteRTSession"]
