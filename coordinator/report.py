"""The demo's HTML report: one self-contained file (figures embedded as PNG).

summary      each device, its budget, the model chosen, predicted vs measured latency
SRCC         ranking agreement between the reference devices and the fleet's devices,
             over the architectures every fleet device measured
predicted    the chosen model's predicted latency vs its smoke run on the device; and,
vs measured  for simulated devices (whose whole column is known), the predicted column
             against the truth over every architecture
decisions    `fleetbench explain` for each device
"""

from __future__ import annotations

import base64
import html
import io
import time
from typing import Any

import numpy as np

from agent.bench.stats import spearman


def _png(fig: Any) -> str:
    import matplotlib.pyplot as plt

    buf = io.BytesIO()
    fig.savefig(buf, format="png", dpi=110)
    plt.close(fig)
    return f'<img alt="figure" src="data:image/png;base64,{base64.b64encode(buf.getvalue()).decode()}">'


def _srcc_figure(store: Any, reranker: Any, rows: list[dict[str, Any]]) -> str:
    import matplotlib.pyplot as plt

    from coordinator.plots import heatmap

    archs = list(reranker.plan)
    index = {a: i for i, a in enumerate(reranker.reference.archs)}
    columns = {d: reranker.reference.ms[[index[a] for a in archs], j]
               for j, d in enumerate(reranker.reference.devices)}  # fmt: skip
    for r in rows:
        d = r["decision"]
        if d:
            measured = d.inputs["measured"]
            columns[r["device"] + (" (sim)" if r["simulated"] else "")] = np.array(
                [measured.get(a, np.nan) for a in archs]
            )
    names = list(columns)
    srcc = np.full((len(names), len(names)), np.nan)
    for i, a in enumerate(names):
        for j, b in enumerate(names):
            ok = np.isfinite(columns[a]) & np.isfinite(columns[b])
            if ok.sum() >= 3:
                srcc[i, j] = spearman(columns[a][ok], columns[b][ok])
    path = io.BytesIO()
    heatmap(names, srcc, path)
    plt.close("all")
    return (
        f'<img alt="SRCC heatmap" src="data:image/png;base64,{base64.b64encode(path.getvalue()).decode()}">'
    )


def _chosen_figure(rows: list[dict[str, Any]]) -> str:
    import matplotlib.pyplot as plt

    points = [r for r in rows if r["predicted_ms"] and r["smoke_ms"]]
    fig, ax = plt.subplots(figsize=(5.5, 4.5))
    for r in points:
        ax.scatter(r["predicted_ms"], r["smoke_ms"], marker="s" if r["simulated"] else "o", s=50)
        ax.annotate(r["device"], (r["predicted_ms"], r["smoke_ms"]), fontsize=8, xytext=(4, 4),
                    textcoords="offset points")  # fmt: skip
    if points:
        top = max(max(r["predicted_ms"], r["smoke_ms"]) for r in points) * 1.15
        ax.plot([0, top], [0, top], color="grey", linewidth=0.8, linestyle="--")
        ax.set_xlim(0, top)
        ax.set_ylim(0, top)
    ax.set_xlabel("predicted latency of the chosen model (ms)")
    ax.set_ylabel("measured on the device, smoke run p50 (ms)")
    ax.set_title("Chosen model: predicted vs measured")
    fig.tight_layout()
    return _png(fig)


def _column_figures(reranker: Any, rows: list[dict[str, Any]], sims: list[Any]) -> list[tuple[str, str]]:
    """For each simulated device: its predicted column vs the truth over every architecture."""
    import matplotlib.pyplot as plt

    from coordinator.ranking.fill import fill_table
    from coordinator.ranking.tables import LatencyTable

    out = []
    ref = reranker.reference
    for r in rows:
        sim = next((s for s in sims if s.device_id == r["device"]), None)
        if sim is None or not r["decision"]:
            continue
        measured = r["decision"].inputs["measured"]
        column = np.array([measured.get(a, np.nan) for a in ref.archs])
        table = LatencyTable(ref.archs, (*ref.devices, sim.device_id), np.c_[ref.ms, column])
        filled, _ = fill_table(table, reranker.space, with_error=False)
        predicted = filled.ms[:, -1]
        truth = np.array([sim.true_ms(a) if a in sim.latency_ms else np.nan for a in ref.archs])
        ok = np.isfinite(truth) & np.isfinite(predicted)
        rho = spearman(predicted[ok], truth[ok])
        fig, ax = plt.subplots(figsize=(4.5, 4.2))
        ax.scatter(truth[ok], predicted[ok], s=4, alpha=0.4)
        top = float(max(truth[ok].max(), predicted[ok].max())) * 1.05
        ax.plot([0, top], [0, top], color="grey", linewidth=0.8, linestyle="--")
        ax.set_xlabel("true latency (published x drift), ms")
        ax.set_ylabel("predicted from the samples, ms")
        ax.set_title(f"{sim.device_id} (simulated): SRCC {rho:.3f}", fontsize=10)
        fig.tight_layout()
        out.append((f"{sim.device_id}: {int(ok.sum())} architectures, SRCC {rho:.3f}", _png(fig)))
    return out


def write_report(path: str, store: Any, config: Any, rows: list[dict[str, Any]], sims: list[Any]) -> None:
    import matplotlib

    matplotlib.use("Agg")
    from coordinator.cli.format import describe
    from coordinator.reranker import Reranker

    reranker = Reranker(store, config, client=None)
    esc = html.escape

    def cell(value: Any, fmt: str = "{:.2f}") -> str:
        return "-" if value is None else esc(fmt.format(value) if isinstance(value, float) else str(value))

    table = "".join(
        f"<tr><td>{esc(r['device'])}{' <em>(simulated)</em>' if r['simulated'] else ''}</td>"
        f"<td>{cell(r['sku'])}</td><td>{cell(r['budget_ms'])}</td><td><code>{cell(r['arch'])}</code></td>"
        f"<td>{cell(r['predicted_ms'])}</td><td>{cell(r['smoke_ms'])}</td><td>{cell(r['true_ms'])}</td>"
        f"<td>{cell(r['accuracy'])}</td><td>{cell(r['state'])}</td></tr>"
        for r in rows
    )
    columns = "".join(f"<figure>{img}<figcaption>{esc(cap)}</figcaption></figure>"
                      for cap, img in _column_figures(reranker, rows, sims))  # fmt: skip
    explained = "".join(f"<pre>{esc(describe(r['decision']))}</pre>" for r in rows if r["decision"])
    page = f"""<!doctype html>
<html lang="en"><head><meta charset="utf-8"><title>fleetbench demo report</title>
<style>
body {{ font-family: system-ui, sans-serif; margin: 2em; max-width: 75em; color: #222; }}
table {{ border-collapse: collapse; }}
td, th {{ border: 1px solid #ccc; padding: 0.3em 0.6em; font-size: 0.9em; }}
th {{ background: #f0f0f0; }} code {{ font-size: 0.8em; }} figure {{ display: inline-block; margin: 0.5em; }}
.note {{ background: #fff8e0; padding: 0.6em 1em; border-left: 4px solid #e0b000; }}
</style></head><body>
<h1>fleetbench demo</h1>
<p>{esc(time.strftime("%Y-%m-%d %H:%M:%S"))}. Search space {esc(config.rerank.space)}; each device measured
{len(reranker.plan)} planned architectures; its whole latency column was predicted from the reference devices
({esc(", ".join(reranker.reference.devices))}); the most accurate architecture ({esc(config.rerank.metric)})
that fits its budget with the error margin was pushed, signed, installed and smoke-run on it.</p>
<p class="note"><strong>Simulated devices</strong> answer from the published NAS-Bench-201 latencies
(HW-NAS-Bench) of a real board, times a drift factor (an aged board is slower), with noise. Those columns are
left out of the coordinator's reference table. <strong>{esc(rows[0]["device"] if rows else "")}</strong> is
a real agent on this machine, timing materialized models with ONNX Runtime.</p>
<h2>Devices and the model each received</h2>
<table><tr><th>device</th><th>SKU</th><th>budget ms</th><th>chosen architecture</th><th>predicted ms</th>
<th>measured ms (smoke run)</th><th>true ms (simulated)</th><th>accuracy %</th><th>deployment</th></tr>
{table}</table>
<h2>Latency ranking agreement (SRCC)</h2>
<p>Over the {len(reranker.plan)} architectures every device measured.</p>
{_srcc_figure(store, reranker, rows)}
<h2>Predicted vs measured</h2>
{_chosen_figure(rows)}
{columns}
<h2>Why each device got its model</h2>
{explained}
</body></html>
"""
    tmp = path + ".tmp"
    with open(tmp, "w", encoding="utf-8") as fh:
        fh.write(page)
    import os

    os.replace(tmp, path)
