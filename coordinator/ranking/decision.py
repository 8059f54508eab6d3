"""One re-ranking decision for one device: which architectures to measure, then which to deploy.

The ranking core's part of the re-ranking loop (``coordinator.reranker`` drives it): pure
functions of tables, with no database or broker.

``plan_samples`` picks the k architectures whose measurement on the device teaches the
predictor most (the ranking core's planner, over the reference devices' latencies).
``decide`` adds the device's measured cells as a new column, predicts the rest of it
(``fill_table``: the cross-device predictor when the probes are among them), inflates each
predicted latency by the cross-validated error margin, and picks the most accurate
architecture that still fits the latency budget.  ``instant_decide`` is the first pick for
a new device, from its probes alone: the optimizer network's, in one forward pass.  The
``Decision`` keeps its inputs, so ``explain`` can say why a device got its model.
"""

from __future__ import annotations

import time
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Optional

import numpy as np

from coordinator.errors import NotEnoughDataError, UnknownNameError
from coordinator.ranking import optimizer, planning, predictors, uncertainty
from coordinator.ranking.crossdevice import TrainedPredictor
from coordinator.ranking.fill import fill_table
from coordinator.ranking.optimizer import OptimizerNet
from coordinator.ranking.pareto import best_under_budget
from coordinator.ranking.spaces.base import SearchSpace
from coordinator.ranking.tables import LatencyTable


@dataclass(frozen=True)
class Decision:
    device: str
    arch: Optional[str]  # None: nothing fits the budget
    budget_ms: float
    #: the chosen architecture's latency on the device: its own measurement when ``basis`` is
    #: "measured" (one of the samples: no margin), else the prediction ("predicted")
    predicted_ms: Optional[float]
    with_margin_ms: Optional[float]
    accuracy: Optional[float]
    measured: dict[str, float]  # the device's own measurements the decision rests on
    method: str
    proxy: Optional[str]
    references: tuple[str, ...]
    log_error: Optional[float]
    took_s: float
    notes: tuple[str, ...] = field(default=())
    basis: Optional[str] = None  # "measured" / "predicted"; None when nothing fits
    #: "instant" (the optimizer network, from the probes) or "refined" (from probes and samples)
    stage: str = "refined"


def plan_samples(reference: LatencyTable, space: SearchSpace, k: int, seed: int = 0) -> list[str]:
    """The ``k`` architectures to measure on a new device."""
    refs = reference.fully_measured()
    refs_log = np.log(reference.ms[:, refs]) if len(refs) else None
    design = predictors.Design.build(space, reference.archs, refs_log)
    return [reference.archs[i] for i in planning.plan(design, k, planning.DEFAULT_PLANNER, seed)]


def decide(
    reference: LatencyTable,
    space: SearchSpace,
    device: str,
    measured: Mapping[str, float],
    accuracy: Mapping[str, float],
    budget_ms: float,
    method: Optional[str] = None,
) -> Decision:
    """The best architecture for ``device`` under ``budget_ms``, from its few measurements
    (``method`` None: the cross-device predictor if they include the probes, else fleet)."""
    start = time.perf_counter()
    if device in reference.devices:
        raise UnknownNameError(f"{device!r} is already a column of the reference table")
    rows = {a: i for i, a in enumerate(reference.archs)}
    unknown = [a for a in measured if a not in rows]
    if unknown:
        raise UnknownNameError(
            f"{len(unknown)} measured architecture(s) are not in the table, e.g. {unknown[0]!r}"
        )
    if len(measured) < 2:
        raise NotEnoughDataError(f"{device} has {len(measured)} measurement(s); a decision needs at least 2")
    column = np.full(len(reference.archs), np.nan)
    for arch, ms in measured.items():
        column[rows[arch]] = ms
    table = LatencyTable(reference.archs, (*reference.devices, device), np.c_[reference.ms, column])
    filled, report = fill_table(table, space, method=method, with_error=True)
    j = len(reference.devices)
    latency = filled.ms[:, j]
    sigma = report.log_error.get(device)
    factor = np.where(np.isnan(column), uncertainty.margin_factor(sigma), 1.0)
    acc = np.array([accuracy.get(a, np.nan) for a in reference.archs])
    usable = np.isfinite(acc) & np.isfinite(latency)
    candidates = np.flatnonzero(usable)
    best = best_under_budget((latency * factor)[candidates], acc[candidates], budget_ms)
    i = None if best is None else int(candidates[best])
    return Decision(
        device=device,
        arch=None if i is None else reference.archs[i],
        budget_ms=budget_ms,
        predicted_ms=None if i is None else float(latency[i]),
        with_margin_ms=None if i is None else float(latency[i] * factor[i]),
        accuracy=None if i is None else float(acc[i]),
        measured=dict(measured),
        method=report.method.get(device, method or predictors.DEFAULT_METHOD),
        proxy=report.proxy,
        references=tuple(report.references),
        log_error=sigma,
        took_s=time.perf_counter() - start,
        notes=tuple(report.warnings),
        basis=None if i is None else ("predicted" if np.isnan(column[i]) else "measured"),
    )


def instant_decide(
    trained: TrainedPredictor,
    net: OptimizerNet,
    space: SearchSpace,
    candidates: Sequence[str],
    device: str,
    probes: Mapping[str, float],
    accuracy: Mapping[str, float],
    budget_ms: float,
) -> Decision:
    """The first pick for a new device, from its probe latencies (``probes``: arch -> ms) alone:
    the optimizer network's shortlist checked with the cross-device predictor's posterior.
    ``candidates`` are the architectures it may choose (those with an accuracy)."""
    start = time.perf_counter()
    missing = [p for p in trained.probes if p not in probes]
    if missing:
        have = len(trained.probes) - len(missing)
        raise NotEnoughDataError(
            f"{device} has {have} of the {len(trained.probes)} probes measured; an instant pick needs all"
        )
    archs = [a for a in candidates if a in accuracy]
    enc = space.encode_all(archs)
    model = trained.model
    basis = model.basis(enc["onehot"], enc["alive"])
    probe_enc = space.encode_all(list(trained.probes))
    probe_log = np.log([probes[p] for p in trained.probes])
    fit = model.adapt(model.basis(probe_enc["onehot"], probe_enc["alive"]), probe_log)
    acc = np.array([accuracy[a] for a in archs])
    pick = optimizer.decide(net, trained, fit, probe_log, float(np.log(budget_ms)), basis, enc["onehot"], acc)
    i = None if pick is None else pick.row
    std = None if i is None else float(fit.log_std(basis[i : i + 1])[0])
    predicted = None if pick is None else float(np.exp(pick.predicted_log))
    how = "the optimizer network" + (
        " (its shortlist missed: predict-then-search)" if pick and pick.fallback else ""
    )
    return Decision(
        device=device,
        arch=None if i is None else archs[i],
        budget_ms=budget_ms,
        predicted_ms=predicted,
        with_margin_ms=None
        if predicted is None or std is None
        else predicted * float(np.exp(optimizer.MARGIN_Z * std)),
        accuracy=None if i is None else float(acc[i]),
        measured=dict(probes),
        method=f"{how} from {len(trained.probes)} probes (predictor of {len(trained.devices)} devices)",
        proxy=None,
        references=trained.devices,
        log_error=std,
        took_s=time.perf_counter() - start,
        basis=None if i is None else "predicted",
        stage="instant",
    )
