"""Model inputs: specs read from the model, ``--shape`` overrides, seeded data.

Latency does not depend on input values for the networks fleetbench times, so
inputs are random but seeded (the same run twice feeds the same bytes).  Dynamic
dimensions cannot be guessed: a batch size of 1 and a sequence of 128 are both
plausible and give different latencies, so they must be named with ``--shape``.
"""

from __future__ import annotations

import re
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Optional, Union

import numpy as np

from agent.common.errors import UsageError

Dim = Union[int, str, None]  # int: fixed; str: symbolic name; None: unknown


@dataclass(frozen=True)
class TensorSpec:
    """One model input as the runtime declares it; ``dtype`` is a numpy dtype name."""

    name: str
    shape: tuple[Dim, ...]
    dtype: str

    @property
    def dynamic_dims(self) -> tuple[int, ...]:
        """Indices of dimensions that are not a fixed positive size."""
        return tuple(i for i, d in enumerate(self.shape) if not (isinstance(d, int) and d > 0))


def format_shape(shape: Sequence[Dim]) -> str:
    """``(1, 'N', None)`` -> ``'1xNx?'``, the form ``--shape`` takes."""
    return "x".join("?" if d is None else str(d) for d in shape) or "scalar"


def parse_shape_arg(text: str) -> tuple[str, tuple[int, ...]]:
    """Parse one ``--shape NAME=DxDx...`` argument.

    >>> parse_shape_arg("data=1x3x224x224")
    ('data', (1, 3, 224, 224))
    """
    name, sep, dims = text.rpartition("=")
    if not sep or not name or not dims:
        raise UsageError(f"--shape {text!r} is not of the form NAME=DxDx... (e.g. data=1x3x224x224)")
    shape = []
    for part in re.split("[xX]", dims):
        part = part.strip()
        if not part.isdigit() or int(part) <= 0:
            raise UsageError(f"--shape {text!r}: dimension {part!r} is not a positive integer")
        shape.append(int(part))
    return name, tuple(shape)


def parse_shape_args(texts: Sequence[str]) -> dict[str, tuple[int, ...]]:
    """Parse every ``--shape`` argument; naming one input twice is an error."""
    shapes: dict[str, tuple[int, ...]] = {}
    for text in texts:
        name, shape = parse_shape_arg(text)
        if name in shapes:
            raise UsageError(f"--shape names input {name!r} twice")
        shapes[name] = shape
    return shapes


def resolve_shapes(
    specs: Sequence[TensorSpec], overrides: Mapping[str, tuple[int, ...]], model: str
) -> dict[str, tuple[int, ...]]:
    """Concrete shape for every input: the model's own, or the ``--shape`` given for it."""
    names = [s.name for s in specs]
    unknown = sorted(set(overrides) - set(names))
    if unknown:
        raise UsageError(
            f"--shape names {', '.join(map(repr, unknown))}, but {model}'s inputs are: "
            + ", ".join(f"{s.name} ({format_shape(s.shape)})" for s in specs)
        )
    resolved: dict[str, tuple[int, ...]] = {}
    for spec in specs:
        if spec.name in overrides:
            shape = overrides[spec.name]
            if len(shape) != len(spec.shape):
                raise UsageError(
                    f"--shape {spec.name}={format_shape(shape)} has {len(shape)} dimensions, "
                    f"but {model} declares {spec.name} as {format_shape(spec.shape)}"
                )
            for want, got in zip(spec.shape, shape):
                if isinstance(want, int) and want > 0 and want != got:
                    raise UsageError(
                        f"--shape {spec.name}={format_shape(shape)} does not match the fixed "
                        f"shape {format_shape(spec.shape)} that {model} declares"
                    )
            resolved[spec.name] = shape
        elif spec.dynamic_dims:
            example = "x".join(str(d) if isinstance(d, int) and d > 0 else "1" for d in spec.shape)
            raise UsageError(
                f"{model}: input {spec.name!r} has dynamic shape {format_shape(spec.shape)}; "
                f"give its size with --shape {spec.name}={example} (replace the 1s as needed)"
            )
        else:
            resolved[spec.name] = tuple(int(d) for d in spec.shape)  # type: ignore[arg-type]
    return resolved


def make_inputs(
    specs: Sequence[TensorSpec], shapes: Mapping[str, tuple[int, ...]], seed: int = 0
) -> dict[str, np.ndarray]:
    """Seeded random data for every input.

    Floats are standard normal; integers are drawn from [0, 10) (safe as indices
    for embeddings and gathers); uint8/int8 span their range as quantized images do.
    """
    rng = np.random.default_rng(seed)
    data: dict[str, np.ndarray] = {}
    for spec in specs:
        shape = shapes[spec.name]
        dtype = np.dtype(spec.dtype)
        arr: Optional[np.ndarray]
        if dtype.kind == "f":
            arr = rng.standard_normal(shape).astype(dtype)
        elif dtype.kind == "b":
            arr = rng.integers(0, 2, size=shape).astype(dtype)
        elif dtype in (np.dtype(np.uint8), np.dtype(np.int8)):
            info = np.iinfo(dtype)
            arr = rng.integers(info.min, int(info.max) + 1, size=shape).astype(dtype)
        elif dtype.kind in "iu":
            arr = rng.integers(0, 10, size=shape).astype(dtype)
        else:
            raise UsageError(
                f"input {spec.name!r} has type {dtype.name}, which fleetbench cannot generate data for"
            )
        data[spec.name] = np.ascontiguousarray(arr)
    return data
