"""How the coordinator's commands (and the demo's report) put things for people."""

from __future__ import annotations

import sys
import time
from typing import TYPE_CHECKING, Any, Optional

if TYPE_CHECKING:  # (the store imports SQLAlchemy; every `fleetbench` command imports this module)
    from coordinator.store.records import DecisionRecord


def print_table(header: tuple[str, ...], rows: list[tuple[Any, ...]], out: Any = None) -> None:
    """Columns padded to their widest cell, two spaces apart."""
    out = out or sys.stdout
    widths = [max(len(str(r[i])) for r in (header, *rows)) for i in range(len(header))]
    for r in (header, *rows):
        print("  ".join(str(v).ljust(w) for v, w in zip(r, widths)).rstrip(), file=out)


def within_budget(
    measured_ms: Optional[float], budget_ms: Optional[float], low_ms: Optional[float] = None
) -> str:
    """Whether a model meets its budget as the device measured it, given the noise the device
    reported (``low_ms``: the low end of its median's 95 % interval): "yes"; "NO (+12 %)" when
    over beyond the noise; "within noise (+1 %)" when the median is over but the interval
    reaches under; "-" when either is unknown.

    >>> within_budget(1.03, 0.92, 1.01), within_budget(0.5, 0.92), within_budget(0.93, 0.92, 0.9)
    ('NO (+12 %)', 'yes', 'within noise (+1 %)')
    """
    if not measured_ms or not budget_ms:
        return "-"
    over = measured_ms / budget_ms - 1
    if over <= 0:
        return "yes"
    if low_ms is not None and low_ms <= budget_ms:
        return f"within noise (+{over * 100:.0f} %)"
    return f"NO (+{over * 100:.0f} %)"


def describe(item: DecisionRecord) -> str:
    """A decision in words, for `fleetbench explain`, the dashboard and the demo's report (lines
    kept short enough to read without scrolling)."""
    i = item.inputs
    when = time.strftime("%Y-%m-%d %H:%M:%S", time.localtime(item.at))
    lines = [f"{item.device_id}: decision of {when} (round {i.get('round')})", f"  why: {i.get('reason')}"]
    if item.arch:
        basis = i.get("basis") or ("measured" if item.arch in i["measured"] else "predicted")
        lines.append(f"  chose {item.arch}")
        if basis == "measured":
            lines.append(f"  measured {i['predicted_ms']:.3f} ms on the device (one of its samples: "
                         f"no margin), under the budget of {i['budget_ms']:g} ms")  # fmt: skip
        else:
            lines.append(f"  predicted {i['predicted_ms']:.3f} ms, {i['with_margin_ms']:.3f} ms with the "
                         f"error margin, under the budget of {i['budget_ms']:g} ms")  # fmt: skip
        lines.append(f"  {i.get('metric')} {i['accuracy']:.2f}")
    else:
        lines.append(f"  nothing fits the budget of {i['budget_ms']:g} ms with the error margin")
    sigma: Optional[float] = i.get("log_error")
    lines.append(f"  measured on the device: {len(i['measured'])} architectures (job {i.get('job_id')})")
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
            noise = (
                f" (95 % interval {dep.p50_lo_ms:.3f}-{dep.p50_hi_ms:.3f})"
                if dep.p50_lo_ms is not None
                else ""
            )
            verdict = within_budget(dep.p50_ms, item.budget_ms, dep.p50_lo_ms)
            lines.append(
                f"  smoke run on the device: p50 {dep.p50_ms:.3f} ms{noise}; within budget: {verdict}"
            )
        elif dep.detail and dep.state != "installed":
            lines.append(f"  {dep.detail}")
    return "\n".join(lines)
