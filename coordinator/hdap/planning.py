"""HDAP's planning, the same for a real fleet and a simulated one: profiles -> clusters -> the
representatives' width tables -> the surrogate -> the fleet-aware search.

``plan_fleet`` takes the profiles and a way to get a representative's full width table (a job
to a real board, or a simulated board's truth) and asks for nothing else; ``simulate`` runs it
on a described fleet and measures every method against the fleet's truth.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any, Optional

import numpy as np

from agent.materialize import families as fam
from agent.materialize.lut import KINDS, LayerKey, kind, profile_keys
from agent.materialize.weights import Params
from coordinator.hdap.cluster import TOL, Clusters, cluster, slowdowns, surrogate_ratios
from coordinator.hdap.fleetmodel import FleetModel
from coordinator.hdap.search import SearchResult, search


@dataclass(frozen=True)
class Planned:
    clusters: Clusters
    surrogate: FleetModel
    result: SearchResult
    seconds: float


def plan_fleet(
    plan: fam.Plan,
    params: Params,
    ratio: float,
    profiles: np.ndarray,
    probes: Sequence[LayerKey],
    rep_tables: Callable[[Sequence[int]], Sequence[Any]],
    objective: str = "mean",
    tol: float = TOL,
    seed: int = 0,
    say: Optional[Callable[[str], None]] = None,
    extra: Optional[np.ndarray] = None,
    **search_options: Any,
) -> Planned:
    """Cluster the devices on ``profiles`` (devices x probes, and ``extra`` features in log units
    such as the degradation index), ask ``rep_tables(devices)`` for the representatives' tables
    (all at once: on a real fleet they are measured in parallel), and search the widths for the
    fleet's surrogate."""
    say = say or (lambda text: None)
    started = time.monotonic()
    features = slowdowns(profiles)
    if extra is not None:
        features = np.hstack([features, np.asarray(extra, float).reshape(len(features), -1)])
    clusters = cluster(features, tol, seed=seed)
    say(f"hdap: {clusters.k} cluster(s) of {', '.join(map(str, clusters.sizes))} device(s)")
    tables = list(rep_tables(clusters.representatives))
    ratios = surrogate_ratios(profiles, clusters, [kind(p) for p in probes], KINDS)
    surrogate = FleetModel(tables, clusters.labels, ratios)
    result = search(plan, params, ratio, surrogate, objective, seed=seed, say=say, **search_options)
    return Planned(clusters, surrogate, result, time.monotonic() - started)


def per_cluster(
    planned: Planned,
    plan: fam.Plan,
    params: Params,
    ratio: float,
    objective: str = "mean",
    seed: int = 0,
    say: Optional[Callable[[str], None]] = None,
    **search_options: Any,
) -> list[SearchResult]:
    """The option beside HDAP's one model for the SKU: a model per cluster, each searched for its
    own devices' surrogate (same constraints, same judge), starting from the fleet's widths.  Costs
    a search per cluster."""
    say = say or (lambda text: None)
    results = []
    for k in range(planned.clusters.k):
        members = planned.clusters.members(k)
        say(f"hdap: cluster {k + 1}'s own model ({len(members)} device(s))")
        sub = planned.surrogate.subset(np.asarray(members))
        results.append(
            search(
                plan, params, ratio, sub, objective, seed=seed, start=planned.result.widths, **search_options
            )
        )
    return results


def cluster_ms(
    model: FleetModel, clusters: Clusters, widths: Sequence[tuple[int, ...]], plan: fam.Plan
) -> np.ndarray:
    """(devices,) each device's latency under ``model`` for its own cluster's widths."""
    per_device = np.empty(model.devices)
    for k, w in enumerate(widths):
        members = clusters.members(k)
        per_device[members] = model.subset(members).device_ms(plan.at(w))
    return per_device


class DeviceTable:
    """One board's table: its group's, times its own factor by layer kind."""

    def __init__(self, table: Any, factors: np.ndarray) -> None:
        self.table, self.factors = table, factors
        self._index = {k: i for i, k in enumerate(KINDS)}

    def layer_ms(self, key: LayerKey) -> float:
        return float(self.table.layer_ms(key) * self.factors[self._index[kind(key)]])

    def predict_ms(self, plan: fam.Plan) -> float:
        from agent.materialize.lut import plan_keys

        return sum(self.layer_ms(k) for k in plan_keys(plan))


def simulate(
    fleet: Any,
    plan: fam.Plan,
    params: Params,
    ratio: float,
    objective: str = "mean",
    tol: float = TOL,
    seed: int = 0,
    say: Optional[Callable[[str], None]] = None,
    oracle: bool = True,
    clusters_own: bool = False,
    **search_options: Any,
) -> dict[str, Any]:
    """HDAP and the baselines on a simulated fleet, each judged by the fleet's truth; with
    ``clusters_own`` also a model per cluster (``per_cluster``), each device running its own."""
    from coordinator.prune.methods import l1_widths, netadapt, uniform_widths

    say = say or (lambda text: None)
    rng = np.random.default_rng(seed)
    truth = FleetModel(fleet.tables, fleet.condition_of, fleet.factors)
    probes = profile_keys(plan)

    def board(d: int) -> DeviceTable:
        return DeviceTable(fleet.tables[fleet.condition_of[d]], fleet.factors[d])

    say(f"hdap: profiling {fleet.devices} device(s) on {len(probes)} probe layers")
    true_probes = np.array([[t.layer_ms(p) for p in probes] for t in fleet.tables])  # (conditions, probes)
    index = {k: i for i, k in enumerate(KINDS)}
    probe_kind = np.array([index[kind(p)] for p in probes])
    profiles = true_probes[fleet.condition_of] * fleet.factors[:, probe_kind]
    profiles = profiles * np.exp(rng.normal(0.0, fleet.profile_noise, profiles.shape))

    def tables(reps: Sequence[int]) -> list[DeviceTable]:
        return [board(r) for r in reps]

    planned = plan_fleet(
        plan, params, ratio, profiles, probes, tables, objective, tol, seed, say, **search_options
    )
    srcc, error = surrogate_quality(planned, truth, plan, rng)
    widths: dict[str, tuple[int, ...]] = {"hdap": planned.result.widths}
    widths["uniform"] = uniform_widths(plan, ratio)
    widths["l1"] = l1_widths(plan, params, ratio)
    one = int(rng.integers(fleet.devices))  # NetAdapt tunes for one board of the SKU
    widths["netadapt"] = netadapt(plan, params, ratio, board(one), None)[0].widths
    if oracle:
        say("hdap: the oracle (every device's table)")
        widths["oracle"] = search(plan, params, ratio, truth, objective, seed=seed, **search_options).widths
    report: dict[str, Any] = {
        "network": plan.family,
        "devices": fleet.devices,
        "conditions": len(fleet.conditions),
        "clusters": planned.clusters.k,
        "full_luts": planned.clusters.k,
        "measured_share": planned.clusters.k / fleet.devices,
        "planning_s": round(planned.seconds, 2),
        "predicted_hdap_ms": round(planned.result.mean_ms, 4),
        "surrogate_srcc": round(srcc, 4),
        "surrogate_error": round(error, 4),
        **judged(planned.result),
    }
    for name, w in widths.items():
        at = plan.at(w)
        report.update(_figures(name, truth.device_ms(at)))
        report[f"{name}_flops"] = round(at.macs / plan.macs, 4)
        report[f"{name}_widths"] = fam.format_widths(w)
    if clusters_own:
        results = per_cluster(planned, plan, params, ratio, objective, seed, say, **search_options)
        per_device = cluster_ms(truth, planned.clusters, [r.widths for r in results], plan)
        report.update(_figures("per_cluster", per_device))
        report["per_cluster_widths"] = [fam.format_widths(r.widths) for r in results]
        report["per_cluster_flops"] = round(max(r.flops_ratio for r in results), 4)  # the largest
    return report


def _figures(name: str, per_device: np.ndarray) -> dict[str, float]:
    """A method's fleet average, 90th percentile device and slowest decile's average, in ms."""
    slowest = np.sort(per_device)[-max(1, len(per_device) // 10) :]
    return {
        f"{name}_ms": round(float(per_device.mean()), 4),
        f"{name}_p90_ms": round(float(np.quantile(per_device, 0.9)), 4),
        f"{name}_slowest_decile_ms": round(float(slowest.mean()), 4),
    }


def judged(result: SearchResult) -> dict[str, float]:
    """The search's accuracy check (before fine-tuning, on training images) of its result and of
    ``l1``'s widths, for a report; nothing when it ran without one."""
    if result.judged is None or result.judged_l1 is None:
        return {}
    return {"hdap_judged_acc": round(result.judged, 4), "l1_judged_acc": round(result.judged_l1, 4)}


def surrogate_quality(
    planned: Planned,
    truth: FleetModel,
    plan: fam.Plan,
    rng: np.random.Generator,
    specs: int = 20,
    devices: int = 200,
) -> tuple[float, float]:
    """How well the surrogate ranks ``specs`` random width specs on devices that were not measured
    (mean SRCC over up to ``devices`` of them), and its mean relative error there."""
    from scipy.stats import spearmanr

    reps = set(planned.clusters.representatives)
    others = np.array([d for d in range(truth.devices) if d not in reps])
    if len(others) == 0:
        return 1.0, 0.0
    chosen = rng.choice(others, size=min(devices, len(others)), replace=False)
    candidates = fam.sample(plan.family, specs, rng)
    plans = [plan.at(s) for s in candidates]
    est = np.array([planned.surrogate.device_ms(p)[chosen] for p in plans])  # (specs, devices)
    true = np.array([truth.device_ms(p)[chosen] for p in plans])
    rhos = [spearmanr(est[:, j], true[:, j])[0] for j in range(len(chosen))]
    return float(np.mean(rhos)), float(np.mean(np.abs(est / true - 1)))
