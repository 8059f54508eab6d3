"""ONNX Runtime backend: threads, execution providers, ORT's own profiler."""

from __future__ import annotations

import functools
import json
import os
import re
import tempfile
from collections.abc import Mapping
from typing import Any, Callable

import numpy as np

from agent.bench.backends.base import Backend, BackendOptions, Session, aggregate_op_times
from agent.bench.inputs import Dim, TensorSpec
from agent.bench.results import BackendInfo, OpProfile
from agent.common.errors import (
    BackendUnavailableError,
    BenchmarkError,
    ModelError,
    UnsupportedModelError,
    UsageError,
)

# ORT reports element types as "tensor(float)" and so on.
_ORT_DTYPES = {
    "tensor(float)": "float32",
    "tensor(float16)": "float16",
    "tensor(double)": "float64",
    "tensor(int8)": "int8",
    "tensor(uint8)": "uint8",
    "tensor(int16)": "int16",
    "tensor(uint16)": "uint16",
    "tensor(int32)": "int32",
    "tensor(uint32)": "uint32",
    "tensor(int64)": "int64",
    "tensor(uint64)": "uint64",
    "tensor(bool)": "bool",
}


def _ort() -> Any:
    import onnxruntime

    return onnxruntime


def resolve_providers(requested: tuple[str, ...], available: list[str]) -> list[str]:
    """Map short names (``cpu``, ``cuda``, ``tensorrt``) to ORT provider names.

    >>> resolve_providers(("cuda", "cpu"), ["CUDAExecutionProvider", "CPUExecutionProvider"])
    ['CUDAExecutionProvider', 'CPUExecutionProvider']
    """
    if not requested:
        return ["CPUExecutionProvider"]
    by_short = {p.lower().replace("executionprovider", ""): p for p in available}
    chosen = []
    for name in requested:
        key = name.strip().lower().replace("executionprovider", "")
        if key not in by_short:
            short = ", ".join(sorted(by_short))
            raise BackendUnavailableError(
                f"execution provider {name!r} is not available in this onnxruntime build (available: {short})"
            )
        chosen.append(by_short[key])
    return chosen


def _translate(err: Exception, path: str) -> Exception:
    """Turn ORT's pybind exceptions into fleetbench errors naming the model."""
    kind = type(err).__name__
    first = str(err).strip().splitlines()[0] if str(err).strip() else kind
    first = re.sub(r"^\[ONNXRuntimeError\] : \d+ : \w+ : ", "", first)
    # "Could not find an implementation for Foo(17) node with name ..." (kernel missing)
    # "No Op registered for Foo with domain_version of 17" (operator unknown)
    match = re.search(r"implementation for (\w+)\((\d+)\)", first) or re.search(
        r"No Op registered for (\w+) with domain_version of (\d+)", first
    )
    if kind == "NotImplemented" or match:
        what = f"operator {match.group(1)} (opset {match.group(2)})" if match else "an operator"
        return UnsupportedModelError(
            f"{path!r} uses {what}, which onnxruntime {_ort().__version__} cannot run"
        )
    if kind in ("InvalidProtobuf",) or "Protobuf parsing failed" in first:
        return ModelError(f"{path!r} is not a valid ONNX model (it does not parse as one)")
    if kind in ("InvalidGraph", "Fail", "InvalidArgument", "NoModel"):
        return ModelError(f"onnxruntime cannot load {path!r}: {first}")
    return BenchmarkError(f"onnxruntime failed on {path!r}: {first}")


class OrtSession(Session):
    def __init__(self, path: str, options: BackendOptions) -> None:
        ort = _ort()
        self._path = path
        self._options = options
        self._providers = resolve_providers(options.providers, ort.get_available_providers())
        try:
            self._sess = ort.InferenceSession(path, self._session_options(), providers=self._providers)
        except Exception as err:  # ORT raises pybind-generated types only
            raise _translate(err, path) from err
        self.inputs = tuple(
            TensorSpec(
                name=i.name,
                shape=tuple(self._dim(d) for d in i.shape),
                dtype=self._dtype(i.name, i.type),
            )
            for i in self._sess.get_inputs()
        )
        self.info = BackendInfo(
            name="onnxruntime",
            version=ort.__version__,
            threads=options.threads,
            providers=tuple(self._sess.get_providers()),
            runtime="onnxruntime",
        )
        self._feeds: dict[str, np.ndarray] = {}

    def _session_options(self, profile_prefix: str = "") -> Any:
        ort = _ort()
        so = ort.SessionOptions()
        so.intra_op_num_threads = self._options.threads
        so.inter_op_num_threads = 1
        so.execution_mode = ort.ExecutionMode.ORT_SEQUENTIAL
        so.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_ALL
        so.log_severity_level = 3  # errors only: warnings would interleave with progress
        if profile_prefix:
            so.enable_profiling = True
            so.profile_file_prefix = profile_prefix
        return so

    @staticmethod
    def _dim(d: Any) -> Dim:
        if isinstance(d, int):
            return d if d > 0 else None
        return str(d) if d else None

    def _dtype(self, name: str, ort_type: str) -> str:
        try:
            return _ORT_DTYPES[ort_type]
        except KeyError:
            raise UnsupportedModelError(
                f"{self._path!r}: input {name!r} has type {ort_type}, which fleetbench cannot feed"
            ) from None

    def prepare(self, feeds: Mapping[str, np.ndarray]) -> Callable[[], object]:
        self._feeds = dict(feeds)
        # sess.run with the output list None: the same call a user's code makes.
        return functools.partial(self._sess.run, None, self._feeds)

    def outputs(self) -> list[np.ndarray]:
        try:
            return list(self._sess.run(None, self._feeds))
        except Exception as err:
            raise _translate(err, self._path) from err

    def profile(self, feeds: Mapping[str, np.ndarray], runs: int) -> list[OpProfile]:
        ort = _ort()
        with tempfile.TemporaryDirectory(prefix="fleetbench-ortprof-") as tmp:
            sess = ort.InferenceSession(
                self._path,
                self._session_options(os.path.join(tmp, "ort")),
                providers=self._providers,
            )
            for _ in range(runs):
                sess.run(None, dict(feeds))
            trace = sess.end_profiling()
            with open(trace, encoding="utf-8") as fh:
                events = json.load(fh)
        op_events = []
        for ev in events:
            # Kernel executions are "Node" events named "<node>_kernel_time".
            if ev.get("cat") != "Node" or not str(ev.get("name", "")).endswith("_kernel_time"):
                continue
            node = ev["name"][: -len("_kernel_time")]
            op_type = ev.get("args", {}).get("op_name", "?")
            op_events.append((node, op_type, float(ev.get("dur", 0)) / 1000.0))
        return aggregate_op_times(op_events, runs)


class OnnxRuntimeBackend(Backend):
    name = "onnxruntime"
    extra = "onnx"
    formats = ("onnx",)

    def available(self) -> bool:
        try:
            _ort()
        except ImportError:
            return False
        return True

    def version(self) -> str:
        return str(_ort().__version__)

    def open(self, path: str, options: BackendOptions) -> Session:
        if options.delegate:
            raise UsageError(
                f"--delegate {options.delegate} is a LiteRT option; {path!r} runs on onnxruntime "
                "(use --providers for its execution providers)"
            )
        return OrtSession(path, options)
