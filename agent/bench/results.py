"""The benchmark result record: immutable, versioned, to and from JSON in one place.

The schema is documented in docs/results.md.  ``SCHEMA_VERSION`` changes when a
field changes meaning or disappears; new optional fields may be added without a
change, and readers ignore fields they do not know.
"""

from __future__ import annotations

import dataclasses
import datetime as _dt
import json
import sys
import typing
import uuid
from dataclasses import dataclass, field
from typing import Any, Optional

from agent.bench.metadata import DeviceSnapshot
from agent.bench.stats import LatencyStats
from agent.common.errors import FleetbenchError

SCHEMA_VERSION = 1


@dataclass(frozen=True)
class InputInfo:
    name: str
    shape: tuple[int, ...]
    dtype: str


@dataclass(frozen=True)
class ModelInfo:
    path: str
    name: str
    format: str  # "onnx" or "tflite"
    size_bytes: int
    sha256: str
    inputs: tuple[InputInfo, ...]


@dataclass(frozen=True)
class BackendInfo:
    name: str  # registry name: "onnxruntime", "litert"
    version: str
    threads: int
    providers: tuple[str, ...] = ()  # ONNX Runtime execution providers in use
    delegate: Optional[str] = None  # LiteRT delegate, e.g. "edgetpu"
    runtime: str = ""  # the Python package that ran it: "onnxruntime", "ai_edge_litert", "tflite_runtime"


@dataclass(frozen=True)
class TimerInfo:
    impl: str  # "native" or "python"
    clock: str
    resolution_ns: int


@dataclass(frozen=True)
class ProtocolInfo:
    """What was asked for, and what the run actually did."""

    warmup_runs: int
    warmup_time_s: float
    runs: int
    min_time_s: float
    max_time_s: float
    seed: int
    isolated: bool
    warmup_done: int
    measure_time_s: float
    load_ms: float
    first_run_ms: float
    #: runs timed together as one sample (more than 1 under a CPU quota: see the runner)
    runs_per_sample: int = 1


@dataclass(frozen=True)
class OpProfile:
    """One operator's share of a run, from the runtime's profiler."""

    name: str
    op_type: str
    mean_ms: float
    share: float  # of the summed operator time


@dataclass(frozen=True)
class BenchResult:
    model: ModelInfo
    backend: BackendInfo
    timer: TimerInfo
    protocol: ProtocolInfo
    stats: LatencyStats
    device: DeviceSnapshot
    samples_ns: tuple[int, ...] = ()  # empty in summaries (--no-samples)
    warnings: tuple[str, ...] = ()
    profile: tuple[OpProfile, ...] = ()
    schema_version: int = SCHEMA_VERSION
    id: str = field(default_factory=lambda: uuid.uuid4().hex)
    created_at: str = field(
        default_factory=lambda: _dt.datetime.now(_dt.timezone.utc).isoformat(timespec="seconds")
    )

    # -- serialization: the only place that knows the wire form ------------------

    def to_dict(self, samples: bool = True) -> dict[str, Any]:
        data = dataclasses.asdict(self)
        if not samples:
            data.pop("samples_ns")
        return data

    def to_json(self, samples: bool = True, indent: Optional[int] = None) -> str:
        return json.dumps(self.to_dict(samples=samples), indent=indent, sort_keys=False)

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> BenchResult:
        version = data.get("schema_version")
        if version != SCHEMA_VERSION:
            raise ResultFormatError(
                f"result record has schema_version {version!r}; this fleetbench reads version "
                f"{SCHEMA_VERSION}"
            )
        try:
            return _build(cls, data)
        except (KeyError, TypeError, ValueError) as err:
            raise ResultFormatError(f"result record is malformed: {err}") from err

    @classmethod
    def from_json(cls, text: str) -> BenchResult:
        try:
            data = json.loads(text)
        except ValueError as err:
            raise ResultFormatError(f"result record is not JSON: {err}") from err
        if not isinstance(data, dict):
            raise ResultFormatError("result record is not a JSON object")
        return cls.from_dict(data)


class ResultFormatError(FleetbenchError):
    """A stored or received result record cannot be read."""


def _build(tp: Any, value: Any) -> Any:
    """Rebuild a value of type ``tp`` from its JSON form (dataclasses, tuples, Optional)."""
    if value is None:
        return None
    if isinstance(tp, type) and dataclasses.is_dataclass(tp):
        hints = typing.get_type_hints(tp, vars(sys.modules[tp.__module__]))
        kwargs = {}
        for f in dataclasses.fields(tp):
            if f.name in value:
                kwargs[f.name] = _build(hints[f.name], value[f.name])
            elif f.default is dataclasses.MISSING and f.default_factory is dataclasses.MISSING:
                raise KeyError(f"missing field {tp.__name__}.{f.name}")
        return tp(**kwargs)
    origin = typing.get_origin(tp)
    args = typing.get_args(tp)
    if origin is typing.Union:  # Optional[X]
        inner = [a for a in args if a is not type(None)]
        return _build(inner[0], value)
    if origin is tuple:
        if len(args) == 2 and args[1] is Ellipsis:
            return tuple(_build(args[0], v) for v in value)
        return tuple(_build(a, v) for a, v in zip(args, value))
    if tp is float:
        return float(value)
    if tp in (int, str, bool):
        if not isinstance(value, tp) or (tp is int and isinstance(value, bool)):
            raise TypeError(f"expected {tp.__name__}, got {value!r}")
        return value
    return value
