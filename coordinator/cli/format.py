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


def describe(item: DecisionRecord) -> str:
    """A decision in words, for `fleetbench explain` and the demo's report."""
    i = item.inputs
    when = time.strftime("%Y-%m-%d %H:%M:%S", time.localtime(item.at))
    lines = [f"{item.device_id}: decision of {when} (round {i.get('round')}, {i.get('reason')})"]
    if item.arch:
        lines.append(
            f"  chose {item.arch}\n"
            f"  predicted {i['predicted_ms']:.3f} ms, {i['with_margin_ms']:.3f} ms with the error margin, "
            f"under the budget of {i['budget_ms']:g} ms; {i.get('metric')} {i['accuracy']:.2f}"
        )
    else:
        lines.append(f"  nothing fits the budget of {i['budget_ms']:g} ms with the error margin")
    sigma: Optional[float] = i.get("log_error")
    lines.append(
        f"  measured on the device: {len(i['measured'])} sample architectures (job {i.get('job_id')}); "
        f"method {i['method']}"
        + (f", proxy {i['proxy']}" if i.get("proxy") else "")
        + (f", cross-validated log error {sigma:.3f}" if sigma is not None else "")
    )
    lines.append(f"  reference devices: {', '.join(i.get('reference_devices') or i['references'])}")
    for note in i.get("notes") or ():
        lines.append(f"  note: {note}")
    dep = item.deployment
    if dep is not None:
        got = f", smoke run p50 {dep.p50_ms:.3f} ms on the device" if dep.p50_ms is not None else ""
        lines.append(f"  pushed as rollout {item.rollout_id}: {dep.state}{got}")
    return "\n".join(lines)
