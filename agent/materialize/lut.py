"""Layer lookup tables: time each distinct layer once, predict a network as the sum of its layers.

An architecture is decomposed into layers described by what their cost depends on
(operator, input channels, output channels, spatial size, kernel, stride, padding,
number of summed inputs).  Each distinct layer is timed as a one-layer model on the
device; a network's predicted latency is the sum over its layers.  The sum misses
what whole-model runtimes add or save (operator fusion, memory reuse, per-run
overhead), so it is judged by how well it *ranks* whole-model measurements on the
same device, which is what the ranking core needs.

Two simplifications, said once: a ``Zeros`` constant costs nothing; the classifier
head (global average pool and the dense layer) is timed as one entry, because a
dense layer alone would need a flat input that the one-layer model format does not
have.
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import asdict, dataclass, fields
from typing import Any, Optional

import numpy as np

from agent.materialize import network as nw
from agent.materialize.families import KINDS


@dataclass(frozen=True, order=True)
class LayerKey:
    op: str  # conv, dwconv, relu, relu6, avgpool, maxpool, add, affine, head
    cin: int
    cout: int
    size: int  # input height and width
    kernel: int = 0
    stride: int = 1
    pad: int = 0
    arity: int = 1  # inputs summed by an add

    @property
    def name(self) -> str:
        detail = f" k{self.kernel} s{self.stride} p{self.pad}" if self.kernel else ""
        arity = f" x{self.arity}" if self.op == "add" else ""
        return f"{self.op}{detail}{arity} {self.cin}->{self.cout} @{self.size}"


COLUMNS = tuple(f.name for f in fields(LayerKey))


def decompose(net: nw.Network) -> list[LayerKey]:
    """One key per layer of ``net`` that costs time, in execution order."""
    shapes = nw.value_shapes(net)
    keys = []
    for layer in net.layers:
        if isinstance(layer, nw.Conv):
            cin, size = shapes[layer.src]
            keys.append(LayerKey("dwconv" if layer.depthwise else "conv", cin, layer.channels, size,
                                 int(layer.weight.shape[2]), layer.stride, layer.pad))  # fmt: skip
        elif isinstance(layer, (nw.Relu, nw.Relu6, nw.Affine)):
            c, size = shapes[layer.src]
            op = {nw.Relu: "relu", nw.Relu6: "relu6", nw.Affine: "affine"}[type(layer)]
            keys.append(LayerKey(op, c, c, size))
        elif isinstance(layer, (nw.AvgPool, nw.MaxPool)):
            c, size = shapes[layer.src]
            op = "avgpool" if isinstance(layer, nw.AvgPool) else "maxpool"
            keys.append(LayerKey(op, c, c, size, layer.kernel, layer.stride, layer.pad))
        elif isinstance(layer, nw.Add):
            c, size = shapes[layer.srcs[0]]
            keys.append(LayerKey("add", c, c, size, arity=len(layer.srcs)))
        elif isinstance(layer, nw.GlobalAvgPool):
            c, size = shapes[layer.src]
            units = next(
                int(x.weight.shape[0]) for x in net.layers if isinstance(x, nw.Dense) and x.src == layer.out
            )
            keys.append(LayerKey("head", c, units, size))
        # Zeros: a constant; Dense: timed with its pooling as "head"
    return keys


def layer_network(key: LayerKey, seed: int = 0) -> nw.Network:
    """A model of just this layer (random weights: only its time matters)."""
    rng = np.random.default_rng(seed)
    x = "input"
    if key.op in ("conv", "dwconv"):
        groups = key.cin if key.op == "dwconv" else 1
        w = rng.standard_normal((key.cout, key.cin // groups, key.kernel, key.kernel)).astype(np.float32)
        layers: list[Any] = [nw.Conv("y", x, w, np.zeros(key.cout, np.float32), key.stride, key.pad, groups)]
    elif key.op == "relu":
        layers = [nw.Relu("y", x)]
    elif key.op == "relu6":
        layers = [nw.Relu6("y", x)]
    elif key.op == "affine":
        layers = [nw.Affine("y", x, np.ones(key.cin, np.float32), np.zeros(key.cin, np.float32))]
    elif key.op == "avgpool":
        layers = [nw.AvgPool("y", x, key.kernel, key.stride, key.pad)]
    elif key.op == "maxpool":
        layers = [nw.MaxPool("y", x, key.kernel, key.stride, key.pad)]
    elif key.op == "add":
        layers = [nw.Add("y", (x,) * key.arity)]
    elif key.op == "head":
        w = rng.standard_normal((key.cout, key.cin)).astype(np.float32)
        layers = [nw.GlobalAvgPool("pool", x), nw.Dense("y", "pool", w, np.zeros(key.cout, np.float32))]
    else:
        raise ValueError(f"unknown layer kind {key.op!r}")
    return nw.Network(f"layer {key.name}", key.cin, key.size, tuple(layers), "y")


def distinct(nets: Iterable[nw.Network]) -> Counter:
    """How many of ``nets`` use each distinct layer (at least once)."""
    uses: Counter = Counter()
    for net in nets:
        uses.update(set(decompose(net)))
    return uses


def predict_ms(table: dict[LayerKey, float], net: nw.Network) -> float:
    """The sum of the layers' times; KeyError names a layer the table lacks."""
    return float(sum(table[key] for key in decompose(net)))


def to_rows(table: dict[LayerKey, float], uses: Counter) -> list[dict[str, Any]]:
    return [{**asdict(key), "name": key.name, "p50_ms": round(ms, 6), "uses": uses.get(key, 0)}
            for key, ms in sorted(table.items())]  # fmt: skip


def write_csv(path: str, rows: Sequence[dict[str, Any]]) -> None:
    """The table as CSV (one row per layer; ``from_rows`` reads it back), written atomically."""
    import csv
    import io

    from agent.common.files import write_text_atomic

    out = io.StringIO()
    writer = csv.DictWriter(out, fieldnames=[*COLUMNS, "name", "p50_ms", "uses"], lineterminator="\n",
                            extrasaction="ignore")  # fmt: skip
    writer.writeheader()
    writer.writerows(rows)
    write_text_atomic(path, out.getvalue())


def from_rows(rows: Sequence[Mapping[str, Any]]) -> dict[LayerKey, float]:
    """The table of ``to_rows``' rows: read from a CSV (strings) or from a result (numbers)."""
    table = {}
    for row in rows:
        key = LayerKey(row["op"], *(int(row[c]) for c in COLUMNS[1:]))
        table[key] = float(row["p50_ms"])
    return table


@dataclass(frozen=True)
class LutRun:
    """A table measured on this device, with the whole models it was checked against."""

    table: dict[LayerKey, float]
    uses: Counter
    archs: tuple[str, ...]
    measured_ms: tuple[float, ...]  # whole models, p50
    predicted_ms: tuple[float, ...]  # sums of layers

    @property
    def srcc(self) -> float:
        from agent.bench.stats import spearman

        return spearman(np.array(self.measured_ms), np.array(self.predicted_ms))


def run(space: str, archs: Sequence[str], fmt: str, settings: Any, progress: Any = None) -> LutRun:
    """Time every distinct layer of ``archs`` and every whole model; ``progress(text)`` as it goes."""
    from agent.materialize import materialize

    nets = [materialize(space, arch) for arch in archs]
    uses = distinct(nets)
    table, whole = _time(
        uses, [lambda net=net: net for net in nets], fmt, settings, progress or (lambda text: None)
    )
    return LutRun(table, uses, tuple(archs), tuple(whole), tuple(predict_ms(table, net) for net in nets))


def _time(
    uses: Counter, builders: Sequence[Any], fmt: str, settings: Any, say: Any
) -> tuple[dict, list[float]]:
    """Each layer of ``uses`` timed as a one-layer model, then each network ``builders`` make timed
    whole: two passes in opposite orders, the lower p50 kept (a device whose speed drifts with
    heat or a shared host would otherwise rank models by when they were measured)."""
    import os
    import tempfile

    from agent.bench.runner import run_benchmark
    from agent.materialize import write_model

    table: dict[LayerKey, float] = {}
    with tempfile.TemporaryDirectory(prefix="fleetbench-lut-") as tmp:
        for i, key in enumerate(sorted(uses), start=1):
            say(f"layer {i}/{len(uses)}: {key.name}")
            path = write_model(layer_network(key), os.path.join(tmp, f"layer{i}.{fmt}"))
            table[key] = run_benchmark(path, settings).stats.p50_ms
        paths = []
        for i, build in enumerate(builders):
            say(f"building whole model {i + 1}/{len(builders)}")
            paths.append(write_model(build(), os.path.join(tmp, f"model{i}.{fmt}")))
        whole = [float("inf")] * len(paths)
        for n, i in enumerate([*range(len(paths)), *reversed(range(len(paths)))], start=1):
            say(f"whole model {n}/{2 * len(paths)}")
            whole[i] = min(whole[i], run_benchmark(paths[i], settings).stats.p50_ms)
    return table, whole


# -- width lookup tables: a prunable family's layers at every width of a grid ------------------


def plan_keys(plan: Any) -> list[LayerKey]:
    """``decompose(weights.to_network(plan, ...))`` from the plan alone: no weights built, so a
    predictor can price thousands of width specs."""
    from agent.materialize import families as fam

    keys = []
    for op in plan.ops:
        if isinstance(op, fam.ConvOp):
            keys.append(LayerKey("dwconv" if op.depthwise else "conv", op.cin, op.cout, op.size, op.kernel,
                                 op.stride, op.pad))  # fmt: skip
            if op.relu:
                keys.append(LayerKey("relu", op.cout, op.cout, op.out_size))
        elif isinstance(op, fam.AddOp):
            keys.append(LayerKey("add", op.channels, op.channels, op.size, arity=2))
            keys.append(LayerKey("relu", op.channels, op.channels, op.size))
        elif isinstance(op, fam.MaxPoolOp):
            keys.append(LayerKey("maxpool", op.channels, op.channels, op.size, op.kernel, op.stride, op.pad))
        else:
            keys.append(LayerKey("head", op.cin, op.classes, op.size))
    return keys


def run_profile(family: str, fmt: str, settings: Any, progress: Any = None) -> LutRun:
    """Time ``family``'s probe layers (``profile_keys``): this device's profile, in seconds."""
    from agent.materialize import families as fam

    keys = Counter(profile_keys(fam.plan(family)))
    table, _ = _time(keys, [], fmt, settings, progress or (lambda text: None))
    return LutRun(table, keys, (), (), ())


def run_widths(family: str, percents: Sequence[int], sample: int, seed: int, fmt: str, settings: Any,
               progress: Any = None, resolution: Optional[int] = None) -> LutRun:  # fmt: skip
    """Time every layer of ``family`` at every grid width, then ``sample`` whole width specs on
    the grid against the sums of their layers; ``progress(text)`` as it goes."""
    from agent.materialize import families as fam
    from agent.materialize.weights import seeded, to_network

    uses: Counter = Counter()
    for widths in fam.cover_specs(family, percents):
        uses.update(set(plan_keys(fam.plan(family, widths, resolution=resolution))))
    specs = fam.sample(family, sample, np.random.default_rng(seed), percents)
    plans = [fam.plan(family, spec, resolution=resolution) for spec in specs]
    builders = [lambda p=p: to_network(p, seeded(p)) for p in plans]
    table, whole = _time(uses, builders, fmt, settings, progress or (lambda text: None))
    sums = tuple(float(sum(table[k] for k in plan_keys(p))) for p in plans)
    return LutRun(table, uses, tuple(specs), tuple(whole), sums)


# -- layer kinds and device profiles ----------------------------------------------------------


def kind(key: LayerKey) -> str:
    """The kind of a layer (``KINDS``).

    >>> kind(LayerKey("conv", 16, 16, 32, 3, 1, 1)), kind(LayerKey("relu", 16, 16, 32))
    ('conv', 'memory')
    """
    if key.op == "conv":
        return "pointwise" if key.kernel == 1 else "conv"
    if key.op == "dwconv":
        return "depthwise"
    if key.op == "head":
        return "head"
    return "memory"


def profile_keys(plan: Any, per_kind: int = 2) -> list[LayerKey]:
    """The probe layers of a device profile for ``plan``'s family: of each kind the plan has, the
    layers at its largest and smallest spatial size (``per_kind`` in all), the heaviest there.
    Deterministic, so a device and the coordinator agree on them without saying."""
    by_kind: dict[str, list[LayerKey]] = {}
    for key in sorted(set(plan_keys(plan))):
        by_kind.setdefault(kind(key), []).append(key)
    chosen = []
    for k in KINDS:
        keys = by_kind.get(k, [])
        sizes = sorted({key.size for key in keys}, reverse=True)
        picks = (
            [sizes[round(i * (len(sizes) - 1) / max(1, per_kind - 1))] for i in range(per_kind)]
            if sizes
            else []
        )
        for size in dict.fromkeys(picks):
            chosen.append(max((key for key in keys if key.size == size), key=lambda x: (x.cin * x.cout, x)))
    return chosen
