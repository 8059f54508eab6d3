"""The parameters of a family's plan as arrays, the weights file, and the device's ``Network``.

Parameters are named by operation: ``NAME:w`` (a convolution's OIHW weight, or the
classifier's (out, in)), ``NAME:gamma``, ``NAME:beta``, ``NAME:mean``, ``NAME:var`` (its
batch norm, unfolded), ``NAME:b`` (the classifier's bias).  PyTorch
(``coordinator.prune.torchnet``) reads and writes the same names, so trained weights
reach ONNX and TFLite as arrays.

A weights file is an ``.npz`` of those arrays plus ``__meta__``, a JSON header with the
format, its version, the family, the widths, classes and resolution, and free-form
``info`` (what trained it, accuracy).  It is read without pickle.
"""

from __future__ import annotations

import io
import json
import os
from collections.abc import Mapping
from typing import Any, Optional

import numpy as np

from agent.common.errors import UsageError
from agent.materialize import families as fam
from agent.materialize import network as nw

FORMAT = "fleetbench-weights"
VERSION = 1

Params = dict[str, np.ndarray]


class WeightsError(UsageError):
    """A weights file that cannot be read, or does not fit the network asked for."""


def shapes(plan: fam.Plan) -> dict[str, tuple[int, ...]]:
    """The shape of every parameter of ``plan``."""
    out: dict[str, tuple[int, ...]] = {}
    for op in plan.ops:
        if isinstance(op, fam.ConvOp):
            out[f"{op.name}:w"] = (op.cout, 1 if op.depthwise else op.cin, op.kernel, op.kernel)
            for part in ("gamma", "beta", "mean", "var"):
                out[f"{op.name}:{part}"] = (op.cout,)
        elif isinstance(op, fam.HeadOp):
            out[f"{op.name}:w"] = (op.classes, op.cin)
            out[f"{op.name}:b"] = (op.classes,)
    return out


def seeded(plan: fam.Plan, seed: int = 0) -> Params:
    """He-initialized weights and random batch-norm statistics (latency does not depend on them)."""
    rng = np.random.default_rng(seed)
    params: Params = {}
    for name, shape in shapes(plan).items():
        part = name.rsplit(":", 1)[1]
        if part == "w" and len(shape) == 4:
            value = rng.standard_normal(shape) * (2.0 / (shape[1] * shape[2] * shape[3])) ** 0.5
        elif part == "w":
            value = rng.standard_normal(shape) / shape[1] ** 0.5
        elif part == "gamma":
            value = rng.uniform(0.5, 1.0, shape)
        elif part in ("beta", "mean"):
            value = rng.normal(0.0, 0.1, shape)
        elif part == "var":
            value = rng.uniform(0.5, 1.5, shape)
        else:
            value = rng.normal(0.0, 0.01, shape)
        params[name] = value.astype(np.float32)
    return params


def check(plan: fam.Plan, params: Mapping[str, np.ndarray], source: str) -> None:
    """WeightsError naming the first parameter missing or of another shape than ``plan`` needs."""
    for name, shape in shapes(plan).items():
        if name not in params:
            raise WeightsError(f"{source} has no {name!r}: it is not a {plan.family} at these widths")
        if tuple(params[name].shape) != shape:
            raise WeightsError(
                f"{source}: {name!r} is {tuple(params[name].shape)}, the {plan.family} at widths "
                f"{plan.spec[:60]} needs {shape}"
            )


def to_network(plan: fam.Plan, params: Mapping[str, np.ndarray], name: Optional[str] = None) -> nw.Network:
    """The inference graph of ``plan`` with ``params``: batch norm folded, ReLUs as layers."""
    layers: list[Any] = []
    for op in plan.ops:
        if isinstance(op, fam.ConvOp):
            w, b = nw.fold_bn(params[f"{op.name}:w"], params[f"{op.name}:gamma"], params[f"{op.name}:beta"],
                              params[f"{op.name}:mean"], params[f"{op.name}:var"])  # fmt: skip
            conv_out = f"{op.name}/conv" if op.relu else op.name
            layers.append(nw.Conv(conv_out, op.src, w, b, op.stride, op.pad, op.cout if op.depthwise else 1))
            if op.relu:
                layers.append(nw.Relu(op.name, conv_out))
        elif isinstance(op, fam.AddOp):
            layers.append(nw.Add(f"{op.name}/add", op.srcs))
            layers.append(nw.Relu(op.name, f"{op.name}/add"))
        elif isinstance(op, fam.MaxPoolOp):
            layers.append(nw.MaxPool(op.name, op.src, op.kernel, op.stride, op.pad))
        else:
            layers.append(nw.GlobalAvgPool(f"{op.name}/pool", op.src))
            w, b = (np.asarray(params[f"{op.name}:{p}"], np.float32) for p in ("w", "b"))
            layers.append(nw.Dense(op.name, f"{op.name}/pool", w, b))
    label = name or f"{plan.family} widths={plan.spec}"
    return nw.Network(label, 3, plan.resolution, tuple(layers), plan.output)


# -- the file ----------------------------------------------------------------------------------


def save(path: str, plan: fam.Plan, params: Mapping[str, np.ndarray], info: Optional[dict] = None) -> str:
    """Write ``params`` of ``plan`` with its header, atomically."""
    from agent.common.files import write_bytes_atomic

    check(plan, params, "the weights to save")
    meta = {"format": FORMAT, "version": VERSION, "family": plan.family, "widths": list(plan.widths),
            "classes": plan.classes, "resolution": plan.resolution, "info": info or {}}  # fmt: skip
    buf = io.BytesIO()
    arrays: dict[str, Any] = {name: np.asarray(params[name], np.float32) for name in shapes(plan)}
    arrays["__meta__"] = np.array(json.dumps(meta))
    np.savez(buf, **arrays)
    write_bytes_atomic(path, buf.getvalue(), "weights file")
    return path


def load(path: str) -> tuple[fam.Plan, Params, dict]:
    """The plan, parameters and ``info`` of a weights file; WeightsError says what is wrong."""
    what = f"weights file {path}"
    if not os.path.isfile(path):
        raise WeightsError(f"{what} does not exist")
    try:
        with np.load(path, allow_pickle=False) as data:
            arrays = {name: data[name] for name in data.files}
    except (OSError, ValueError, EOFError):
        why = "fleetbench train and prune write them"
        raise WeightsError(f"{what} is not an .npz of arrays ({why})") from None
    try:
        meta = json.loads(str(arrays.pop("__meta__")))
        assert isinstance(meta, dict)
    except (KeyError, ValueError, AssertionError):
        raise WeightsError(
            f"{what} has no fleetbench header (__meta__); it was not written by fleetbench"
        ) from None
    if meta.get("format") != FORMAT:
        raise WeightsError(f"{what} is a {meta.get('format')!r} file, not {FORMAT}")
    if meta.get("version") != VERSION:
        raise WeightsError(
            f"{what} is version {meta.get('version')!r}; this fleetbench reads version {VERSION}"
        )
    family = meta.get("family")
    if family not in fam.FAMILIES:
        raise WeightsError(f"{what} is for {family!r}, not a family this fleetbench knows")
    try:
        the_plan = fam.plan(
            family, [int(w) for w in meta["widths"]], int(meta["classes"]), int(meta["resolution"])
        )
    except (KeyError, TypeError, ValueError) as err:
        raise WeightsError(f"{what}: its header does not describe a {family}: {err}") from None
    check(the_plan, arrays, what)
    return the_plan, arrays, dict(meta.get("info") or {})


def matching(path: str, family: str, spec: Optional[str], classes: Optional[int],
             resolution: Optional[int]) -> tuple[fam.Plan, Params]:  # fmt: skip
    """The weights of ``path`` for a network asked for on the command line; WeightsError when the
    file is of another family or widths (a spec left out takes the file's widths)."""
    the_plan, params, _ = load(path)
    if the_plan.family != family:
        raise WeightsError(f"weights file {path} holds a {the_plan.family}, not a {family}")
    if spec is not None:
        try:
            widths = fam.parse_widths(family, spec)
        except ValueError as err:
            raise WeightsError(f"--widths: {err}") from None
        if widths != the_plan.widths:
            asked = fam.format_widths(widths)[:60]
            raise WeightsError(
                f"weights file {path} is a {family} at widths {the_plan.spec[:60]}, not {asked}"
            )
    if classes is not None and classes != the_plan.classes:
        raise WeightsError(f"weights file {path} has {the_plan.classes} classes, not {classes}")
    if resolution is not None and resolution != the_plan.resolution:
        # convolutions do not care, but the file says what input the weights were trained on
        the_plan = fam.plan(family, the_plan.widths, the_plan.classes, resolution)
    return the_plan, params
