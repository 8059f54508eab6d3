"""The demo's HTML report: one self-contained file (figures embedded as PNG).

summary      each device, its budget, the model chosen, its latency when chosen (measured
             or predicted) and its smoke run with the run's noise
SRCC         ranking agreement between the reference devices and the fleet's devices,
             over the architectures every fleet device measured; a sentence for each
             device whose ranking disagrees with every reference device
predicted    the chosen model's expected latency vs its smoke run on the device; and,
vs measured  for simulated devices (whose whole column is known), the predicted column
             against the truth over every architecture (log axes: devices differ 50x)
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


def _srcc_figure(store: Any, reranker: Any, rows: list[dict[str, Any]]) -> tuple[str, list[str]]:
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
    img = f'<img alt="SRCC heatmap" src="data:image/png;base64,{base64.b64encode(path.getvalue()).decode()}">'
    return img, srcc_notes(names, srcc, len(reranker.reference.devices), len(archs))


#: below this, a device's ranking is said to disagree with the reference devices'
AGREES = 0.9


def srcc_notes(names: list[str], srcc: Any, refs: int, archs: int) -> list[str]:
    """A sentence for each fleet device that ranks architectures unlike every reference device."""
    notes = []
    for i in range(refs, len(names)):
        row = srcc[i, :refs]
        if not np.isfinite(row).any():
            continue
        j = int(np.nanargmax(row))
        if row[j] >= AGREES:
            continue
        notes.append(
            f"{names[i]} ranks these {archs} architectures unlike every reference device (best SRCC "
            f"{row[j]:.2f}, with {names[j]}). Latency monotonicity does not hold for it: architectures "
            "chosen on one proxy device would not serve it. This is why each device measures its own "
            "samples: they adapt the predictor to it (the few-shot adaptation of Lu et al.), and its "
            "decision rests on them. An SRCC over so few architectures is itself rough."
        )
    return notes


def _log_axes(ax: Any, values: list[float]) -> None:
    """Log axes over ``values`` (latencies of devices an order of magnitude apart) and the y = x line."""
    from matplotlib.ticker import FuncFormatter, LogLocator, NullFormatter

    lo, hi = min(values) / 1.4, max(values) * 1.4
    ax.set_xscale("log")
    ax.set_yscale("log")
    for axis in (ax.xaxis, ax.yaxis):  # ticks at 1, 2, 5 x 10^n, written as numbers
        axis.set_major_locator(LogLocator(subs=(1.0, 2.0, 5.0)))
        axis.set_major_formatter(FuncFormatter(lambda v, _: f"{v:g}"))
        axis.set_minor_formatter(NullFormatter())
    ax.set_xlim(lo, hi)
    ax.set_ylim(lo, hi)
    ax.plot([lo, hi], [lo, hi], color="grey", linewidth=0.8, linestyle="--")


def _chosen_figure(rows: list[dict[str, Any]]) -> str:
    import matplotlib.pyplot as plt

    points = [r for r in rows if r["expected_ms"] and r["smoke_ms"]]
    fig, ax = plt.subplots(figsize=(6.0, 5.0))
    for r in points:
        x, y = r["expected_ms"], r["smoke_ms"]
        interval = r["smoke_interval"]
        yerr = [[y - interval[0]], [interval[1] - y]] if interval else None
        ax.errorbar(x, y, yerr=yerr, marker="s" if r["basis"] == "measured" else "o", markersize=7, capsize=3)
        ax.annotate(r["device"], (x, y), fontsize=9, xytext=(5, 5), textcoords="offset points")
    if points:
        _log_axes(ax, [v for r in points for v in (r["expected_ms"], r["smoke_ms"])])
    ax.set_xlabel("chosen model when chosen, ms (o predicted, \u25a1 measured sample)")
    ax.set_ylabel("smoke run p50 on the device, ms (95 % interval)")
    ax.set_title("The chosen model: expected vs measured (log axes)", fontsize=11)
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
        fig, ax = plt.subplots(figsize=(4.6, 4.3))
        ax.scatter(truth[ok], predicted[ok], s=4, alpha=0.4)
        _log_axes(ax, [float(truth[ok].min()), float(truth[ok].max()), float(predicted[ok].min()),
                       float(predicted[ok].max())])  # fmt: skip
        ax.set_xlabel("true latency (published x drift), ms")
        ax.set_ylabel("predicted from the samples, ms")
        ax.set_title(f"{sim.device_id} (simulated): SRCC {rho:.3f}", fontsize=10)
        fig.tight_layout()
        caption = f"{sim.device_id}: {int(ok.sum())} architectures, SRCC {rho:.3f}"
        if rho < AGREES:
            like = [spearman(ref.ms[ok, j], truth[ok]) for j in range(len(ref.devices))]
            j = int(np.nanargmax(like))
            sigma = r["decision"].inputs.get("log_error")
            caption += (
                f". Predicted from {len(measured)} samples, its column ranks the architectures only roughly "
                f"like the truth: no reference device ranks them like it (the closest, {ref.devices[j]}, "
                f"at SRCC {like[j]:.2f} over all of them), so the prediction has little to borrow. The "
                "error margin is wide accordingly"
                + (f" (cross-validated log error {sigma:.2f})" if sigma is not None else "")
                + ", and a choice among the device's own samples needs none."
            )
        out.append((caption, _png(fig)))
    return out


def _round(store: Any, decision: Any) -> list[Any]:
    """The decisions of ``decision``'s round, oldest first: the instant pick, then the refined ones."""
    same = [
        d
        for d in store.decisions(decision.device_id)
        if d.inputs.get("round") == decision.inputs.get("round")
    ]
    return list(reversed(same)) or [decision]


def _probe_words(reranker: Any) -> str:
    if reranker.instant is None:
        return ""
    trained = reranker.instant[0]
    return (
        f"each device first measured the {len(trained.probes)} probe architectures and got an instant pick "
        "from the optimizer network (its probes and the budget in, an architecture out, checked with the "
        f"cross-device predictor of {len(trained.devices)} devices), which was pushed at once; "
    )


def _trained_on(reranker: Any) -> str:
    if reranker.instant is None:
        return ""
    return (
        "; but the cross-device predictor behind the instant pick was trained on every published device, "
        "these included, so their instant picks are optimistic (benchmarks/RESULTS.md has the "
        "leave-one-device-out figures)"
    )


def write_report(path: str, store: Any, config: Any, rows: list[dict[str, Any]], sims: list[Any]) -> None:
    import matplotlib

    matplotlib.use("Agg")
    from coordinator.cli.format import describe
    from coordinator.reranker import Reranker

    reranker = Reranker(store, config, client=None)
    esc = html.escape

    def cell(value: Any, fmt: str = "{:.2f}") -> str:
        return "-" if value is None else esc(fmt.format(value) if isinstance(value, float) else str(value))

    def arch(value: Any) -> str:  # may break after each cell of the string, not only at its end
        return "-" if not value else f"<code>{esc(value).replace('+', '+<wbr>')}</code>"

    def expected(r: dict[str, Any]) -> str:
        return "-" if r["expected_ms"] is None else f"{r['expected_ms']:.2f} <small>{esc(r['basis'])}</small>"

    def smoke(r: dict[str, Any]) -> str:
        if r["smoke_ms"] is None:
            return "-"
        noise = "<br><small>{:.2f}-{:.2f}</small>".format(*r["smoke_interval"]) if r["smoke_interval"] else ""
        return f"{r['smoke_ms']:.2f}{noise}"

    table = "".join(
        f"<tr><td>{esc(r['device'])}{'<br><em>simulated</em>' if r['simulated'] else ''}</td>"
        f"<td>{cell(r['sku'])}</td><td>{cell(r['budget_ms'])}</td><td>{arch(r['arch'])}</td>"
        f"<td>{expected(r)}</td><td>{smoke(r)}</td><td>{cell(r['within_budget'])}</td>"
        f"<td>{cell(r['true_ms'])}</td><td>{cell(r['accuracy'])}</td><td>{cell(r['state'])}</td></tr>"
        for r in rows
    )
    columns = "".join(f"<figure>{img}<figcaption>{esc(cap)}</figcaption></figure>"
                      for cap, img in _column_figures(reranker, rows, sims))  # fmt: skip
    explained = "".join(
        f"<pre>{esc(describe(d))}</pre>" for r in rows if r["decision"] for d in _round(store, r["decision"])
    )
    heat, notes = _srcc_figure(store, reranker, rows)
    said = "".join(f'<p class="note">{esc(n)}</p>' for n in notes)
    page = f"""<!doctype html>
<html lang="en"><head><meta charset="utf-8"><title>fleetbench demo report</title>
<meta name="viewport" content="width=device-width, initial-scale=1">
<style>
body {{ font-family: system-ui, sans-serif; margin: 2em auto; padding: 0 1em; max-width: 80em; color: #222;
        line-height: 1.45; }}
table {{ border-collapse: collapse; width: 100%; }}
td, th {{ border: 1px solid #ccc; padding: 0.35em 0.6em; text-align: left; vertical-align: top; }}
th {{ background: #f0f0f0; }}
code, pre {{ font-family: ui-monospace, "DejaVu Sans Mono", Menlo, Consolas, monospace; font-size: 0.88em; }}
code {{ overflow-wrap: anywhere; }}
small {{ color: #555; }}
img {{ max-width: 100%; height: auto; }}
figure {{ display: inline-block; margin: 0.5em; vertical-align: top; max-width: 36em; }}
pre {{ white-space: pre-wrap; overflow-wrap: anywhere; background: #f7f7f7; padding: 0.6em 0.8em; }}
.note {{ background: #fff8e0; padding: 0.6em 1em; border-left: 4px solid #e0b000; }}
</style></head><body>
<h1>fleetbench demo</h1>
<p>{esc(time.strftime("%Y-%m-%d %H:%M:%S"))}. Search space {esc(config.rerank.space)};
{_probe_words(reranker)}each device then measured {len(reranker.plan)} planned architectures; its whole
latency column was predicted from the reference devices ({esc(", ".join(reranker.reference.devices))});
the most accurate architecture ({esc(config.rerank.metric)}) that fits its budget with the error
margin was pushed, signed, installed and smoke-run on it. A device whose
smoke run is over the budget beyond the run's noise rolls the model back, and the coordinator chooses again
with that measurement (at most {config.rerank.retries} times).</p>
<p class="note"><strong>Simulated devices</strong> answer from the published NAS-Bench-201 latencies
(HW-NAS-Bench) of a real board, times a drift factor (an aged board is slower), with noise. Those columns are
left out of the coordinator's reference table{_trained_on(reranker)}.
<strong>{esc(rows[0]["device"] if rows else "")}</strong> is a real agent on this machine, timing materialized
models with ONNX Runtime.</p>
<h2>Devices and the model each received</h2>
<p><em>Chosen model ms</em> is the chosen architecture's latency on the device when it was chosen:
<em>measured</em> (by the device itself: a probe, a sample or a smoke run) or <em>predicted</em> (the
error margin is added when checking the budget). The smoke run is the device timing the model it
installed, with the 95 % interval of its median.</p>
<table><tr><th>device</th><th>SKU</th><th>budget ms</th><th>chosen architecture</th><th>chosen model ms</th>
<th>smoke run p50 ms</th><th>within budget</th><th>true ms (simulated)</th><th>accuracy %</th>
<th>deployment</th></tr>
{table}</table>
<h2>Latency ranking agreement (SRCC)</h2>
<p>Over the {len(reranker.plan)} architectures every device measured. A cell says how alike two devices
order these architectures by latency (Spearman's rank correlation: 1 the same order, 0 unrelated). Where a
fleet device agrees with a reference device ({AGREES} or more), architectures chosen on that proxy serve it
(latency monotonicity); where it agrees with none, its own samples adapt the predictor. Over so few
architectures an SRCC is rough.</p>
{heat}
{said}
<h2>Predicted vs measured</h2>
<p>On log axes (the devices' latencies are orders of magnitude apart); the dashed line is predicted =
measured. First each device's chosen model, then, for each simulated device (whose whole column is known),
its predicted column against the truth over every architecture.</p>
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
