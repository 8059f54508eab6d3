"""HDAP on a real fleet, through the running coordinator: profile jobs to every device of the SKU,
width-table jobs to the representatives, then the planning of ``planning.plan_fleet``.

Each step is a job the coordinator seals and sends (``coordinator.fleetjobs``), so the command
needs nothing but the coordinator's database; a device that does not answer in time is left out
of the plan (and said), a representative that does not is replaced by the next-nearest member
of its cluster.  The tables are measured at the family's default input size.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any, Optional

import numpy as np

from agent.materialize import families as fam
from agent.materialize.lut import LayerKey, from_rows, profile_keys
from agent.materialize.weights import Params
from coordinator.errors import CoordinatorError
from coordinator.fleetjobs import follow, new_job_id, queue
from coordinator.hdap.planning import Planned, judged, plan_fleet
from coordinator.prune.widthlut import WidthLut


class HdapError(CoordinatorError):
    """The fleet could not be planned for (no device answered, no table came back)."""


@dataclass(frozen=True)
class LiveOptions:
    grid: tuple[int, ...] = fam.DEFAULT_GRID
    sample: int = 30
    settings: Optional[dict[str, Any]] = None  # JobSettings fields
    timeout_s: float = 3600.0
    objective: str = "mean"
    tol: float = 0.05
    seed: int = 0


@dataclass(frozen=True)
class LivePlan:
    devices: tuple[str, ...]  # the devices planned for (those that sent a profile)
    left_out: dict[str, str]  # device -> why
    planned: Planned
    representatives: tuple[str, ...]
    degradation: Optional[tuple[float, ...]]

    def as_json(self, plan: fam.Plan) -> dict[str, Any]:
        c = self.planned.clusters
        per_device = self.planned.surrogate.device_ms(
            fam.plan(plan.family, self.planned.result.widths, plan.classes, plan.resolution)
        )
        return {
            "widths": fam.format_widths(self.planned.result.widths),
            "flops_ratio": round(self.planned.result.flops_ratio, 6),
            "predicted_fleet_ms": round(self.planned.result.mean_ms, 6),
            "predicted_p90_ms": round(self.planned.result.p90_ms, 6),
            "clusters": [
                {
                    "representative": self.representatives[k],
                    "devices": [self.devices[i] for i in c.members(k)],
                }
                for k in range(c.k)
            ],
            "predicted_ms": {d: round(float(ms), 6) for d, ms in zip(self.devices, per_device)},
            "left_out": self.left_out,
            "full_luts": c.k,
            "measured_share": round(c.k / max(1, len(self.devices) + len(self.left_out)), 6),
            **judged(self.planned.result),
        }


def _settings(options: LiveOptions) -> Any:
    import msgspec

    from agent.protocol.jobs import JobSettings

    return msgspec.convert(options.settings or {}, JobSettings)


def _table(answer: Any) -> Optional[dict[LayerKey, float]]:
    for data in answer.results:
        table = data.get("lut")
        if table and table.get("rows"):
            return from_rows(table["rows"])
    return None


def send(store: Any, spec: Any, targets: Sequence[str], timeout_s: float) -> dict[str, Any]:
    """A job to every one of ``targets`` at once, and their answers (``fleetjobs.Answer``)."""
    queue(store, spec, targets)
    return follow(store, spec.job_id, targets, timeout_s)


def run(
    store: Any,
    sku: str,
    plan: fam.Plan,
    params: Params,
    ratio: float,
    options: LiveOptions,
    say: Callable[[str], None],
    dispatch: Optional[Callable[..., dict[str, Any]]] = None,
    judge: Optional[Callable[[tuple[int, ...]], float]] = None,
) -> LivePlan:
    """Profiles, clusters, the representatives' tables, the search: the plan for ``sku``.
    ``dispatch(store, spec, targets, timeout_s)`` sends a job and collects the answers (a
    benchmark on one shared host sends to one device at a time); ``judge`` is the search's
    accuracy check (``coordinator.prune.pipeline.accuracy_judge``), None without data."""
    from agent.protocol.jobs import JobSpec, LayerProfileItem, WidthLutItem

    dispatch = dispatch or send
    targets = store.devices_of_sku(sku)
    if not targets:
        raise HdapError(f"--sku {sku!r}: no device of the fleet has it (see `fleetbench fleet`)")
    probes = profile_keys(fam.plan(plan.family))
    settings = _settings(options)
    job = JobSpec(
        job_id=new_job_id("hdap-profile"),
        layer_profile=LayerProfileItem(space=plan.family),
        settings=settings,
    )
    say(f"hdap: profiling {len(targets)} device(s) of {sku!r} ({len(probes)} probe layers each)")
    answers = dispatch(store, job, targets, options.timeout_s)
    devices, rows, left_out = [], [], {}
    for d in targets:
        table = _table(answers[d])
        if table is None or any(p not in table for p in probes):
            a = answers[d]
            left_out[d] = f"no profile ({a.state}{': ' + a.detail if a.detail else ''})"
            continue
        devices.append(d)
        rows.append([table[p] for p in probes])
    if not devices:
        raise HdapError(f"no device of {sku!r} sent its profile in {options.timeout_s:g} s: {left_out}")
    for d, why in left_out.items():
        say(f"hdap: {d} left out: {why}")
    profiles = np.array(rows)
    indexes = [getattr(store.device(d), "degradation_index", None) for d in devices]
    known = [float(i) for i in indexes if i is not None and i > 0]
    degradation = tuple(known) if len(known) == len(indexes) else None
    extra = np.log(np.array(degradation))[:, None] if degradation else None

    def rep_tables(reps: Sequence[int]) -> list[WidthLut]:
        names = [devices[r] for r in reps]
        wjob = JobSpec(
            job_id=new_job_id("hdap-lut"),
            width_lut=WidthLutItem(space=plan.family, grid=options.grid, sample=options.sample),
            settings=settings,
        )
        say(f"hdap: full width tables from {', '.join(names)}")
        got = dispatch(store, wjob, names, options.timeout_s)
        tables = []
        for name in names:
            table = _table(got[name])
            if table is None:
                a = got[name]
                raise HdapError(
                    f"representative {name} sent no width table ({a.state}"
                    f"{': ' + a.detail if a.detail else ''})"
                )
            tables.append(WidthLut(table, f"{name}'s width table"))
        return tables

    planned = plan_fleet(
        plan,
        params,
        ratio,
        profiles,
        probes,
        rep_tables,
        options.objective,
        options.tol,
        options.seed,
        say,
        extra,
        judge=judge,
    )
    reps = tuple(devices[r] for r in planned.clusters.representatives)
    return LivePlan(tuple(devices), left_out, planned, reps, degradation)
