"""How the coordinator's commands (and the demo's report) put things for people."""

from __future__ import annotations

import sys
import time
from typing import TYPE_CHECKING, Any, Optional

if TYPE_CHECKING:  # (the store imports SQLAlchemy; every `fleetbench` command imports this module)
    from coordinator.store.records import DecisionRecord, Deployment


def print_table(header: tuple[str, ...], rows: list[tuple[Any, ...]], out: Any = None) -> None:
    """Columns padded to their widest cell, two spaces apart."""
    out = out or sys.stdout
    widths = [max(len(str(r[i])) for r in (header, *rows)) for i in range(len(header))]
    for r in (header, *rows):
        print("  ".join(str(v).ljust(w) for v, w in zip(r, widths)).rstrip(), file=out)


def budget_verdict(
    measured_ms: Optional[float], budget_ms: Optional[float], low_ms: Optional[float] = None
) -> tuple[str, str]:
    """Whether a model meets its budget as the device measured it, given the noise the device
    reported (``low_ms``: the low end of its median's 95 % interval), as (kind, words): "yes";
    "NO" ("NO (+12 %)") when over beyond the noise; "within" ("within noise (+1 %)") when the
    median is over but the interval reaches under; "-" when either is unknown.

    >>> budget_verdict(1.03, 0.92, 1.01), budget_verdict(0.93, 0.92, 0.9)
    (('NO', 'NO (+12 %)'), ('within', 'within noise (+1 %)'))
    """
    if not measured_ms or not budget_ms:
        return "-", "-"
    over = measured_ms / budget_ms - 1
    if over <= 0:
        return "yes", "yes"
    if low_ms is not None and low_ms <= budget_ms:
        return "within", f"within noise (+{over * 100:.0f} %)"
    return "NO", f"NO (+{over * 100:.0f} %)"


def within_budget(
    measured_ms: Optional[float], budget_ms: Optional[float], low_ms: Optional[float] = None
) -> str:
    """``budget_verdict``'s words.

    >>> within_budget(1.03, 0.92, 1.01), within_budget(0.5, 0.92), within_budget(0.93, 0.92, 0.9)
    ('NO (+12 %)', 'yes', 'within noise (+1 %)')
    """
    return budget_verdict(measured_ms, budget_ms, low_ms)[1]


def basis(item: DecisionRecord) -> Optional[str]:
    """How the chosen architecture's latency was known: "measured" (one of the device's own
    samples) or "predicted"; None when nothing was chosen.  (Decisions from before 0.3 did not
    record it: their own samples say.)"""
    if not item.arch:
        return None
    return item.inputs.get("basis") or ("measured" if item.arch in item.inputs["measured"] else "predicted")


def decision_verdict(item: DecisionRecord) -> tuple[str, str]:
    """``budget_verdict`` of a decision's smoke run on the device."""
    dep = item.deployment
    return budget_verdict(dep.p50_ms if dep else None, item.budget_ms, dep.p50_lo_ms if dep else None)


def interval(dep: Deployment, digits: int = 3) -> str:
    """The 95 % interval of a smoke run's median as the device reported it, "1.010-1.050"; "" if none."""
    if dep.p50_lo_ms is None or dep.p50_hi_ms is None:
        return ""
    return f"{dep.p50_lo_ms:.{digits}f}-{dep.p50_hi_ms:.{digits}f}"


def noise(dep: Deployment, digits: int = 3) -> str:
    """The same said after a latency, " (95 % interval 1.010-1.050)"; "" from devices before 0.3."""
    return f" (95 % interval {interval(dep, digits)})" if interval(dep) else ""


#: how each stage of a round is named in words (decisions before 0.4 were all "refined")
STAGES = {"instant": "instant pick, ", "refined": ""}


def stage(item: DecisionRecord) -> str:
    """ "instant" (the optimizer network, from the device's probes) or "refined" (from its samples)."""
    return str(item.inputs.get("stage") or "refined")


def describe(item: DecisionRecord) -> str:
    """A decision in words, for `fleetbench explain`, the dashboard and the demo's report (lines
    kept short enough to read without scrolling)."""
    i = item.inputs
    when = time.strftime("%Y-%m-%d %H:%M:%S", time.localtime(item.at))
    stage = STAGES.get(i.get("stage") or "refined", "")
    lines = [
        f"{item.device_id}: {stage}decision of {when} (round {i.get('round')})",
        f"  why: {i.get('reason')}",
    ]
    if item.arch:
        lines.append(f"  chose {item.arch}")
        if basis(item) == "measured":
            lines.append(f"  measured {i['predicted_ms']:.3f} ms on the device (its own measurement: "
                         f"no margin), under the budget of {i['budget_ms']:g} ms")  # fmt: skip
        else:
            lines.append(f"  predicted {i['predicted_ms']:.3f} ms, {i['with_margin_ms']:.3f} ms with the "
                         f"error margin, under the budget of {i['budget_ms']:g} ms")  # fmt: skip
        lines.append(f"  {i.get('metric')} {i['accuracy']:.2f}")
    else:
        lines.append(f"  nothing fits the budget of {i['budget_ms']:g} ms with the error margin")
    sigma: Optional[float] = i.get("log_error")
    probes = " (its probes)" if i.get("stage") == "instant" else ""
    lines.append(
        f"  measured on the device: {len(i['measured'])} architectures{probes} (job {i.get('job_id')})"
    )
    lines.append(f"  predicted by: {i['method']}" + (f", proxy {i['proxy']}" if i.get("proxy") else ""))
    if sigma is not None:
        lines.append(f"  cross-validated log error {sigma:.3f}")
    lines.append(f"  reference devices: {', '.join(i.get('reference_devices') or i['references'])}")
    for note in i.get("notes") or ():
        lines.append(f"  note: {note}")
    dep = item.deployment
    if dep is not None:
        lines.append(f"  pushed as rollout {item.rollout_id}: {dep.state}")
        if dep.p50_ms is not None:
            verdict = decision_verdict(item)[1]
            lines.append(
                f"  smoke run on the device: p50 {dep.p50_ms:.3f} ms{noise(dep)}; within budget: {verdict}"
            )
        elif dep.detail and dep.state != "installed":
            lines.append(f"  {dep.detail}")
    return "\n".join(lines)
