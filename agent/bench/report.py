"""Render results as a table for people, or CSV / JSON for tools.  Returns text; cli prints it."""

from __future__ import annotations

import csv
import io
import json
from collections.abc import Sequence

from agent.bench.results import BenchResult

CSV_COLUMNS = (
    "model", "path", "format", "backend", "backend_version", "threads", "n",
    "mean_ms", "std_ms", "min_ms", "p50_ms", "p90_ms", "p99_ms", "max_ms", "cv", "outliers",
    "load_ms", "first_run_ms", "timer", "warnings", "id", "created_at",
)  # fmt: skip


def _row(r: BenchResult) -> dict:
    s = r.stats
    return {
        "model": r.model.name,
        "path": r.model.path,
        "format": r.model.format,
        "backend": r.backend.name,
        "backend_version": r.backend.version,
        "threads": r.backend.threads,
        "n": s.n,
        "mean_ms": f"{s.mean_ms:.6f}",
        "std_ms": f"{s.std_ms:.6f}",
        "min_ms": f"{s.min_ms:.6f}",
        "p50_ms": f"{s.p50_ms:.6f}",
        "p90_ms": f"{s.p90_ms:.6f}",
        "p99_ms": f"{s.p99_ms:.6f}",
        "max_ms": f"{s.max_ms:.6f}",
        "cv": f"{s.cv:.6f}",
        "outliers": s.outliers,
        "load_ms": f"{r.protocol.load_ms:.3f}",
        "first_run_ms": f"{r.protocol.first_run_ms:.3f}",
        "timer": r.timer.impl,
        "warnings": "; ".join(r.warnings),
        "id": r.id,
        "created_at": r.created_at,
    }


def to_csv(results: Sequence[BenchResult]) -> str:
    buf = io.StringIO()
    writer = csv.DictWriter(buf, fieldnames=CSV_COLUMNS, lineterminator="\n")
    writer.writeheader()
    for r in results:
        writer.writerow(_row(r))
    return buf.getvalue()


def to_json(results: Sequence[BenchResult], samples: bool = True) -> str:
    return json.dumps([r.to_dict(samples=samples) for r in results], indent=2) + "\n"


def _ms(v: float) -> str:
    return f"{v:.3f}" if v < 100 else f"{v:.1f}"


def to_table(results: Sequence[BenchResult], profile_top: int = 10) -> str:
    head = ("model", "backend", "thr", "n", "p50 ms", "p90 ms", "p99 ms", "mean ms", "CV %")
    rows: list[Sequence[str]] = [head]
    for r in results:
        s = r.stats
        backend = f"{r.backend.name} {r.backend.version}"
        if r.backend.runtime and r.backend.runtime not in (r.backend.name, "ai_edge_litert"):
            backend = f"{r.backend.name} ({r.backend.runtime} {r.backend.version})"
        if r.backend.delegate:
            backend += f" +{r.backend.delegate}"
        rows.append((
            r.model.name, backend, str(r.backend.threads), str(s.n),
            _ms(s.p50_ms), _ms(s.p90_ms), _ms(s.p99_ms), _ms(s.mean_ms), f"{s.cv * 100:.1f}",
        ))  # fmt: skip
    widths = [max(len(row[i]) for row in rows) for i in range(len(head))]
    lines = []
    for k, row in enumerate(rows):
        cells = [c.ljust(w) if i < 2 else c.rjust(w) for i, (c, w) in enumerate(zip(row, widths))]
        lines.append("  ".join(cells).rstrip())
        if k == 0:
            lines.append("  ".join("-" * w for w in widths))
    for r in results:
        for w in r.warnings:
            lines.append(f"warning: {r.model.name}: {w}")
    for r in results:
        if r.profile:
            lines.append("")
            how = "each operator timed alone" if r.model.format == "tflite" else "runtime profiler"
            lines.append(f"slowest operators of {r.model.name} ({r.backend.name}, {how}):")
            top = r.profile[:profile_top]
            wname = max(len(p.name) for p in top)
            wtype = max(len(p.op_type) for p in top)
            for p in top:
                lines.append(
                    f"  {p.name.ljust(wname)}  {p.op_type.ljust(wtype)}  "
                    f"{p.mean_ms:9.3f} ms  {p.share * 100:5.1f} %"
                )
    if results:
        r = results[0]
        d = r.device
        gov = "/".join(d.governors) or "n/a"
        temp = f", {d.max_temperature_c:.0f} C" if d.max_temperature_c is not None else ""
        lines.append("")
        lines.append(
            f"device: {d.board or d.cpu_model or d.machine}, {d.cores_logical} cpus, "
            f"governor {gov}{temp}; "
            f"timer: {r.timer.impl} ({r.timer.clock})"
        )
        if d.unreadable:
            lines.append(f"not readable here: {', '.join(d.unreadable)}")
    return "\n".join(lines) + "\n"
