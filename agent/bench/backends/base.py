"""What every runtime backend provides: open a model, describe its inputs, run it."""

from __future__ import annotations

import abc
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Callable, Optional

import numpy as np

from agent.bench.inputs import TensorSpec
from agent.bench.results import BackendInfo, OpProfile


@dataclass(frozen=True)
class BackendOptions:
    threads: int
    providers: tuple[str, ...] = ()  # ONNX Runtime execution providers, in priority order
    delegate: Optional[str] = None  # LiteRT delegate name ("edgetpu")


class Session(abc.ABC):
    """A loaded model, ready to run."""

    #: the model's inputs as the runtime declares them (dynamic dims unresolved)
    inputs: tuple[TensorSpec, ...]
    info: BackendInfo

    @abc.abstractmethod
    def prepare(self, feeds: Mapping[str, np.ndarray]) -> Callable[[], object]:
        """Bind inputs (resizing dynamic ones) and return the zero-argument call to time."""

    @abc.abstractmethod
    def outputs(self) -> list[np.ndarray]:
        """Run once with the prepared inputs and return the outputs (for checks)."""

    @abc.abstractmethod
    def profile(self, feeds: Mapping[str, np.ndarray], runs: int) -> list[OpProfile]:
        """Per-operator timing over ``runs`` runs, slowest first (a separate pass)."""

    def close(self) -> None:  # noqa: B027 - optional hook
        """Release the runtime's resources."""


class Backend(abc.ABC):
    """A runtime that can execute some model formats."""

    name: str
    #: the pip extra that installs this runtime: ``pip install 'fleetbench[<extra>]'``
    extra: str
    #: model formats it runs ("onnx", "tflite")
    formats: tuple[str, ...]

    @abc.abstractmethod
    def available(self) -> bool:
        """True if the runtime can be imported here."""

    @abc.abstractmethod
    def version(self) -> str:
        """Runtime version string (call only when available)."""

    @abc.abstractmethod
    def open(self, path: str, options: BackendOptions) -> Session:
        """Load ``path``; raise ModelError / UnsupportedModelError / BackendUnavailableError."""


def aggregate_op_times(events: Sequence[tuple[str, str, float]], runs: int) -> list[OpProfile]:
    """(node, op type, ms) events over ``runs`` runs -> per-node mean ms, slowest first."""
    totals: dict[str, list] = {}
    for name, op_type, ms in events:
        entry = totals.setdefault(name, [op_type, 0.0])
        entry[1] += ms
    grand = sum(v[1] for v in totals.values()) or 1.0
    profiles = [
        OpProfile(name=name, op_type=op_type, mean_ms=total / max(runs, 1), share=total / grand)
        for name, (op_type, total) in totals.items()
    ]
    profiles.sort(key=lambda p: p.mean_ms, reverse=True)
    return profiles
