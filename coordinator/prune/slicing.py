"""Structured pruning on the shared arrays: filter importance, and narrowing a plan's weights.

Keeping filters of a prunable layer keeps its rows (weights and batch norm) and the
matching input channels of whatever reads it: the next convolution, a depthwise
convolution with its batch norm (MobileNetV1), or the classifier.  The kept filters
carry their trained values; nothing else changes.  Needs numpy only.

>>> from agent.materialize import families as fam
>>> from agent.materialize.weights import seeded
>>> plan = fam.plan("resnet20")
>>> small, params = narrow(plan, seeded(plan), keep_largest(plan, seeded(plan), (8,) * 9))
>>> small.widths[:3], params["s0b0c2:w"].shape
((8, 8, 8), (16, 8, 3, 3))
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence

import numpy as np

from agent.materialize import families as fam
from agent.materialize.weights import Params

#: per width index, the filters kept (indices into the current plan's channels, ascending)
Kept = dict[int, np.ndarray]


def filter_norms(plan: fam.Plan, params: Mapping[str, np.ndarray]) -> dict[int, np.ndarray]:
    """Each prunable layer's filters' L1 norms (Li et al., ICLR 2017), by width index."""
    return {i: np.abs(params[f"{op.name}:w"]).reshape(op.cout, -1).sum(axis=1)
            for i, op in plan.producers().items()}  # fmt: skip


def relative_norms(plan: fam.Plan, params: Mapping[str, np.ndarray]) -> dict[int, np.ndarray]:
    """Each prunable layer's filter norms over their layer's mean, ascending: the importance the
    ``l1`` baseline ranks filters by across layers (raw norms grow with a layer's fan-in)."""
    return {
        i: np.sort(norms / max(float(norms.mean()), 1e-12)) for i, norms in filter_norms(plan, params).items()
    }


class Importance:
    """The importance a width spec removes from ``plan``: each layer loses its smallest relative norms.

    >>> from agent.materialize.weights import seeded
    >>> plan = fam.plan("resnet20")
    >>> Importance(plan, seeded(plan)).lost(plan.widths)
    0.0
    """

    def __init__(self, plan: fam.Plan, params: Mapping[str, np.ndarray]) -> None:
        self.cum = [
            np.concatenate([[0.0], np.cumsum(rel)]) for _, rel in sorted(relative_norms(plan, params).items())
        ]
        self.full = plan.widths

    def lost(self, widths: Sequence[int]) -> float:
        return float(sum(c[f - w] for c, f, w in zip(self.cum, self.full, widths)))


def narrow_to(
    plan: fam.Plan, params: Mapping[str, np.ndarray], widths: Sequence[int]
) -> tuple[fam.Plan, Params]:
    """``plan`` at ``widths``, each layer keeping its filters of largest L1 norm with their weights."""
    return narrow(plan, params, keep_largest(plan, params, widths))


def keep_largest(plan: fam.Plan, params: Mapping[str, np.ndarray], widths: Sequence[int]) -> Kept:
    """At each prunable layer, the ``widths[i]`` filters of largest L1 norm."""
    norms = filter_norms(plan, params)
    kept = {}
    for i, width in enumerate(widths):
        if width > len(norms[i]):
            raise ValueError(f"layer {i + 1} has {len(norms[i])} filters; cannot keep {width}")
        kept[i] = np.sort(np.argsort(-norms[i], kind="stable")[:width])
    return kept


def narrow(plan: fam.Plan, params: Mapping[str, np.ndarray], kept: Kept) -> tuple[fam.Plan, Params]:
    """The plan at the kept widths and its weights, sliced from ``params``."""
    widths = tuple(len(kept[i]) if i in kept else w for i, w in enumerate(plan.widths))
    small = plan.at(widths)
    out: Params = {}
    for op in plan.ops:
        if isinstance(op, fam.ConvOp):
            w = np.asarray(params[f"{op.name}:w"])
            rows = kept.get(op.width) if op.width is not None else None
            parts = {p: np.asarray(params[f"{op.name}:{p}"]) for p in ("gamma", "beta", "mean", "var")}
            if rows is not None:
                w = w[rows]
                parts = {p: v[rows] for p, v in parts.items()}
            cols = kept.get(op.cin_width) if op.cin_width is not None and not op.depthwise else None
            if cols is not None:
                w = w[:, cols]
            out[f"{op.name}:w"] = np.ascontiguousarray(w, np.float32)
            out.update({f"{op.name}:{p}": np.ascontiguousarray(v, np.float32) for p, v in parts.items()})
        elif isinstance(op, fam.HeadOp):
            w = np.asarray(params[f"{op.name}:w"])
            cols = kept.get(op.cin_width) if op.cin_width is not None else None
            out[f"{op.name}:w"] = np.ascontiguousarray(w[:, cols] if cols is not None else w, np.float32)
            out[f"{op.name}:b"] = np.asarray(params[f"{op.name}:b"], np.float32)
    return small, out
