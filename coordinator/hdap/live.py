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
from coordinator.hdap import TOL
from coordinator.hdap.planning import Planned, judged, plan_fleet
from coordinator.prune.widthlut import WidthLut


class HdapError(CoordinatorError):
    """The fleet could not be planned for (no device answered, no table came back)."""

    exit_code = 1  # the fleet failed to answer; the command was right


@dataclass(frozen=True)
class LiveOptions:
    grid: tuple[int, ...] = fam.DEFAULT_GRID
    sample: int = 30
    settings: Optional[dict[str, Any]] = None  # JobSettings fields
    timeout_s: float = 3600.0
    objective: str = "mean"
    tol: float = TOL
    seed: int = 0


@dataclass(frozen=True)
class LivePlan:
    devices: tuple[str, ...]  # the devices planned for (those that sent a profile)
    left_out: dict[str, str]  # device -> why
    planned: Planned
    representatives: tuple[str, ...]
    degradation: Optional[tuple[float, ...]]
    profiles: Optional[np.ndarray] = None  # (devices, probes) ms, the probes of profile_keys
    tol: float = TOL

    def as_json(self, plan: fam.Plan) -> dict[str, Any]:
        c = self.planned.clusters
        per_device = self.planned.surrogate.device_ms(plan.at(self.planned.result.widths))
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
            "tol": self.tol,
            "profiles": {}
            if self.profiles is None
            else {d: [round(float(ms), 6) for ms in row] for d, row in zip(self.devices, self.profiles)},
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
    from agent.protocol.jobs import JobSpec, WidthLutItem

    dispatch = dispatch or send
    got = profile(store, sku, plan.family, options, say, dispatch)
    devices, left_out, profiles, probes = list(got.devices), got.left_out, got.profiles, got.probes
    degradation = got.degradation
    extra = np.log(np.array(degradation))[:, None] if degradation else None

    def rep_tables(reps: Sequence[int]) -> list[WidthLut]:
        names = [devices[r] for r in reps]
        wjob = JobSpec(
            job_id=new_job_id("hdap-lut"),
            width_lut=WidthLutItem(space=plan.family, grid=options.grid, sample=options.sample),
            settings=_settings(options),
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
    return LivePlan(tuple(devices), left_out, planned, reps, degradation, profiles, options.tol)


@dataclass(frozen=True)
class Profiles:
    devices: tuple[str, ...]  # those that sent one
    profiles: np.ndarray  # (devices, probes) ms
    probes: tuple[LayerKey, ...]
    left_out: dict[str, str]  # device -> why
    degradation: Optional[tuple[float, ...]]  # every device's index, if all are known


def profile(
    store: Any,
    sku: str,
    family: str,
    options: LiveOptions,
    say: Callable[[str], None],
    dispatch: Optional[Callable[..., dict[str, Any]]] = None,
) -> Profiles:
    """A ``layer_profile`` job to every device of ``sku``: their probe layers' latencies."""
    from agent.protocol.jobs import JobSpec, LayerProfileItem

    dispatch = dispatch or send
    targets = store.devices_of_sku(sku)
    if not targets:
        from agent.common.errors import UsageError

        raise UsageError(f"--sku {sku!r}: no device of the fleet has it (see `fleetbench fleet`)")
    probes = tuple(profile_keys(fam.plan(family)))
    job = JobSpec(
        job_id=new_job_id("hdap-profile"),
        layer_profile=LayerProfileItem(space=family),
        settings=_settings(options),
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
    indexes = [getattr(store.device(d), "degradation_index", None) for d in devices]
    known = [float(i) for i in indexes if i is not None and i > 0]
    degradation = tuple(known) if len(known) == len(indexes) else None
    return Profiles(tuple(devices), np.array(rows), probes, left_out, degradation)


@dataclass(frozen=True)
class Recheck:
    """Whether a saved plan still describes its SKU, device by device."""

    rows: dict[str, dict[str, Any]]  # device -> status, cluster, distance, nearest
    gone: tuple[str, ...]  # planned for, and sent no profile now
    tol: float

    @property
    def holds(self) -> bool:
        return not self.gone and all(r["status"] == "ok" for r in self.rows.values())

    def as_json(self) -> dict[str, Any]:
        return {"holds": self.holds, "tol": self.tol, "devices": self.rows, "gone": list(self.gone)}


def recheck(
    store: Any,
    saved: dict[str, Any],
    options: LiveOptions,
    say: Callable[[str], None],
    dispatch: Optional[Callable[..., dict[str, Any]]] = None,
) -> Recheck:
    """Profile the plan's SKU again and compare every device with its cluster's representative,
    measured now (``distance``), and with its own profile when planned (``change``), both RMS log
    slowdowns: ``ok`` when both are within ``options.tol``, ``drifted`` when one is not (a
    representative that drifted makes its table a poor guide for its members), ``new`` for a
    device not in the plan; ``nearest`` is the representative it is closest to now."""
    got = profile(store, saved["sku"], saved["network"], options, say, dispatch)
    return compare(saved, dict(zip(got.devices, got.profiles)), options.tol)


def compare(saved: dict[str, Any], profiles: dict[str, Any], tol: float) -> Recheck:
    """``recheck``'s verdict on the profiles measured now (device -> probe latencies in ms)."""
    logs = {d: np.log(np.asarray(ms, float)) for d, ms in profiles.items()}
    then = {d: np.log(np.asarray(ms, float)) for d, ms in saved["profiles"].items()}
    reps = [c["representative"] for c in saved["clusters"]]
    cluster_of = {d: k for k, c in enumerate(saved["clusters"]) for d in c["devices"]}

    def rms(a: np.ndarray, b: np.ndarray) -> float:
        return round(float(np.sqrt(np.mean((a - b) ** 2))), 4)

    rows: dict[str, dict[str, Any]] = {}
    for d in logs:
        present = [r for r in reps if r in logs]
        k = cluster_of.get(d)
        row: dict[str, Any] = {
            "cluster": k,
            "nearest": min(present, key=lambda r: rms(logs[d], logs[r])) if present else None,
            "distance": rms(logs[d], logs[reps[k]]) if k is not None and reps[k] in logs else None,
            "change": rms(logs[d], then[d]) if d in then and len(then[d]) == len(logs[d]) else None,
        }
        if k is None:
            row["status"] = "new"
        elif row["distance"] is None:
            row["status"] = "unknown"  # its representative sent no profile
        else:
            worst = max(row["distance"], row["change"] if row["change"] is not None else 0.0)
            row["status"] = "ok" if worst <= tol else "drifted"
        rows[d] = row
    return Recheck(rows, tuple(d for d in cluster_of if d not in logs), tol)
