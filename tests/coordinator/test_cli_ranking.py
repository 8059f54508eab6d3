"""The ranking commands as other tools drive them: names, flags and formats are a contract."""

from __future__ import annotations

import csv
import json

import numpy as np
import pytest

from agent.cli import main
from coordinator.ranking import NB201_ACCURACY, NB201_LATENCY
from coordinator.ranking.tables import read_table

pytest.importorskip("scipy")


def _code(args):
    try:
        return main(args)
    except SystemExit as stop:  # argparse's own errors
        return stop.code


@pytest.fixture(scope="module")
def sparse_table(tmp_path_factory):
    """The public table with the Raspberry Pi 4 reduced to 12 measured architectures."""
    path = tmp_path_factory.mktemp("rank") / "fleet.csv"
    with open(NB201_LATENCY) as fh:
        rows = list(csv.reader(fh))
    j = rows[0].index("raspberry_pi4")
    with open(path, "w", newline="") as fh:
        w = csv.writer(fh)
        w.writerow(rows[0])
        for i, r in enumerate(rows[1:]):
            w.writerow([*r[:j], r[j] if i % 166 == 0 else "", *r[j + 1 :]])
    return str(path)


def test_monotonicity_table_and_json(capsys, tmp_path):
    assert main(["monotonicity", NB201_LATENCY]) == 0
    out, err = capsys.readouterr()
    assert "SRCC" in out and "proxy: " in out and "coral_edgetpu: 259 of 1999 cells missing" in err
    png = tmp_path / "heat.png"
    assert main(["monotonicity", NB201_LATENCY, "--format", "json", "--kendall", "--png", str(png)]) == 0
    data = json.loads(capsys.readouterr().out)
    assert data["devices"][0] == "jetson_tx2_edgegpu" and len(data["srcc"]) == 6
    assert data["counts"][1][1] == 1740 and "kendall_tau" in data
    assert data["proxy"] in data["devices"] and data["reuse_threshold"] == 0.9
    assert png.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"


def test_plan_samples_prints_k_arch_strings(capsys, sparse_table):
    assert main(["plan-samples", sparse_table, "--target", "raspberry_pi4", "-k", "7", "--seed", "3"]) == 0
    lines = capsys.readouterr().out.splitlines()
    assert len(lines) == 7 and all(line.startswith("|") for line in lines)
    measured = {
        a
        for a, v in zip(read_table(sparse_table).archs, read_table(sparse_table).column("raspberry_pi4"))
        if v == v
    }
    assert not measured & set(lines)  # already measured architectures are not proposed again
    assert main(["plan-samples", sparse_table, "--target", "brand_new", "-k", "3"]) == 0
    assert len(capsys.readouterr().out.splitlines()) == 3


def test_predict_fills_the_table(tmp_path, capsys, sparse_table):
    out = tmp_path / "pred.csv"
    assert main(["predict", sparse_table, "--space", "nas-bench-201", "-o", str(out)]) == 0
    err = capsys.readouterr().err
    assert "raspberry_pi4: 13 measured, 1986 predicted (fleet from" in err
    before, after = read_table(sparse_table), read_table(str(out))
    assert after.archs == before.archs and after.devices == before.devices
    assert not np.isnan(after.ms).any()
    kept = before.measured
    np.testing.assert_allclose(after.ms[kept], before.ms[kept], rtol=1e-5)


def test_predict_with_proxy_and_method(tmp_path, capsys, sparse_table):
    out = tmp_path / "pred.csv"
    args = ["predict", sparse_table, "-o", str(out), "--proxy", "pixel3", "--method", "adaproxy"]
    assert main(args) == 0
    meta = json.loads((tmp_path / "pred.csv.meta.json").read_text())
    assert meta["devices"]["raspberry_pi4"]["how"] == "adaproxy from pixel3"


def test_rank_budget_and_pareto(capsys):
    base = [
        "rank",
        NB201_LATENCY,
        "--device",
        "pixel3",
        "--accuracy",
        NB201_ACCURACY,
        "--metric",
        "cifar10_top1",
    ]
    assert main([*base, "--budget-ms", "20", "--pareto", "--format", "json"]) == 0
    data = json.loads(capsys.readouterr().out)
    assert data["pick"]["latency_ms"] <= 20
    front = data["pareto"]
    assert [p["latency_ms"] for p in front] == sorted(p["latency_ms"] for p in front)
    assert [p["cifar10_top1"] for p in front] == sorted(p["cifar10_top1"] for p in front)
    assert data["pick"]["arch"] in {p["arch"] for p in front}
    assert main([*base, "--budget-ms", "0.001"]) == 1
    assert "no architecture fits" in capsys.readouterr().out


def test_rank_warns_about_missing_latencies(capsys):
    args = ["rank", NB201_LATENCY, "--device", "coral_edgetpu", "--accuracy", NB201_ACCURACY,
            "--metric", "cifar100_top1"]  # fmt: skip
    assert main(args) == 0
    assert "259 architectures have no latency on coral_edgetpu" in capsys.readouterr().err


@pytest.mark.parametrize("args,code,message", [
    (["predict", NB201_LATENCY, "-o", "x.csv", "--proxy", "nosuch"], 2, "device 'nosuch' is not"),
    (["predict", NB201_LATENCY, "-o", "x.csv", "--method", "magic"], 2, "--method 'magic'"),
    (["predict", NB201_LATENCY, "-o", "/nonexistent/x.csv"], 2, "does not exist"),
    (["predict", NB201_LATENCY, "-o", "x.csv", "--space", "darts"], 2, "--space 'darts'"),
    (["rank", NB201_LATENCY, "--device", "nosuch", "--accuracy", NB201_ACCURACY, "--metric", "cifar10_top1"],
     2, "device 'nosuch'"),
    (["rank", NB201_LATENCY, "--device", "pixel3", "--accuracy", NB201_ACCURACY, "--metric", "top1"],
     2, "--metric 'top1'"),
    (["plan-samples", NB201_LATENCY, "--target", "pixel3", "-k", "3"], 2, "0 unmeasured"),
    (["monotonicity", "nope.csv"], 2, "does not exist"),
    (["predict", NB201_LATENCY], 2, "required: -o/--output"),
])  # fmt: skip
def test_bad_input_is_one_clear_line(capsys, tmp_path, monkeypatch, args, code, message):
    monkeypatch.chdir(tmp_path)
    assert _code(args) == code
    err = capsys.readouterr().err
    assert message in err and "Traceback" not in err
    assert not (tmp_path / "x.csv").exists()


def test_bad_arch_names_file_and_line(tmp_path, capsys):
    p = tmp_path / "t.csv"
    p.write_text("arch,a\n|skip_connect~0|+|none~0|none~1|+|none~0|none~1|none~2|,1\n|bogus|,2\n")
    assert _code(["predict", str(p), "-o", str(tmp_path / "o.csv")]) == 2
    assert "line 3: '|bogus|' is not a nas-bench-201 architecture" in capsys.readouterr().err


def test_predict_writes_a_sidecar_that_rank_uses(tmp_path, capsys, sparse_table):
    out = tmp_path / "pred.csv"
    assert main(["predict", sparse_table, "-o", str(out)]) == 0
    assert "typical error" in capsys.readouterr().err
    meta = json.loads((tmp_path / "pred.csv.meta.json").read_text())
    assert meta["schema"] == "fleetbench.predict/1" and meta["rows"] == 1999
    pi = meta["devices"]["raspberry_pi4"]
    assert pi["measured"] == 13 and len(pi["predicted_rows"]) == 1986 and pi["log_error_std"] > 0
    assert meta["devices"]["pixel3"]["predicted_rows"] == []

    base = ["rank", str(out), "--device", "raspberry_pi4", "--accuracy", NB201_ACCURACY,
            "--metric", "cifar10_top1", "--budget-ms", "40", "--format", "json"]  # fmt: skip
    assert main(base) == 0
    auto = json.loads(capsys.readouterr().out)["pick"]
    assert main([*base, "--margin", "0"]) == 0
    bare = json.loads(capsys.readouterr().out)["pick"]
    assert auto["predicted"]  # 13 of 1999 measured: the pick is almost surely a predicted cell
    assert auto["latency_ms"] < auto["latency_with_margin_ms"] <= 40
    assert bare["latency_with_margin_ms"] == bare["latency_ms"] <= 40
    assert auto["cifar10_top1"] <= bare["cifar10_top1"]  # safety costs accuracy, never gains it


def test_measured_table_gets_no_margin(capsys):
    args = ["rank", NB201_LATENCY, "--device", "pixel3", "--accuracy", NB201_ACCURACY,
            "--metric", "cifar10_top1", "--budget-ms", "20", "--format", "json"]  # fmt: skip
    assert main(args) == 0
    pick = json.loads(capsys.readouterr().out)["pick"]
    assert pick["predicted"] is False and pick["latency_with_margin_ms"] == pick["latency_ms"]


def test_bad_margin(capsys):
    args = ["rank", NB201_LATENCY, "--device", "pixel3", "--accuracy", NB201_ACCURACY,
            "--metric", "cifar10_top1", "--budget-ms", "20", "--margin", "lots"]  # fmt: skip
    assert _code(args) == 2
    assert "argument --margin: 'lots' is not 'auto' or a percentage" in capsys.readouterr().err


@pytest.mark.parametrize("budget", ["nan", "inf", "0", "-5", "fast"])
def test_bad_budget(capsys, budget):
    args = ["rank", NB201_LATENCY, "--device", "pixel3", "--accuracy", NB201_ACCURACY,
            "--metric", "cifar10_top1", "--budget-ms", budget]  # fmt: skip
    assert _code(args) == 2
    assert "is not a positive number of milliseconds" in capsys.readouterr().err


def test_export_writes_the_fleets_measurements_as_a_table_the_ranking_commands_read(tmp_path, capsys):
    """Results of three devices (two SKUs, one device measuring twice) become a wide table of
    medians, per device or per SKU, that `monotonicity` reads."""
    from wire import result

    from agent.protocol import messages as m
    from agent.protocol.jobs import ArchItem
    from agent.protocol.reports import StatusData
    from coordinator.store import Message, open_store

    archs = read_table(NB201_LATENCY).archs[:6]
    store = open_store(str(tmp_path / "fleet.sqlite"))
    batch = []
    for device, sku, scale in (("pi-a", "Pi 4", 1.0), ("pi-b", "Pi 4", 1.2), ("jet-a", "Jetson", 0.1)):
        status = m.make(m.StatusMessage, device, StatusData(state="online", protocol=2, sku=sku))
        batch.append(Message(f"fleetbench/v1/devices/{device}/status", m.encode(status)))
        for i, arch in enumerate(archs):
            for repeat, noise in enumerate((1.0, 1.1, 0.9) if device == "pi-a" else (1.0,)):
                msg = result(device, "j", f"x{i}", (i + 1) * scale * noise, f"r{i}-{repeat}",
                             ArchItem(space="nas-bench-201", arch=arch))  # fmt: skip
                batch.append(Message(f"fleetbench/v1/devices/{device}/results", m.encode(msg)))
    store.ingest(batch)
    db = str(tmp_path / "fleet.sqlite")
    out = str(tmp_path / "latency.csv")
    assert _code(["export", "--db", db, "--space", "nas-bench-201", "-o", out]) == 0
    table = read_table(out)
    assert table.devices == ("jet-a", "pi-a", "pi-b") and set(table.archs) == set(archs)
    assert table.column("pi-a")[table.archs.index(archs[2])] == pytest.approx(3.0)  # median of 3.3, 3.0, 2.7
    assert _code(["export", "--db", db, "--by", "sku", "--sku", "Pi 4", "-o", out]) == 0
    by_sku = read_table(out)
    assert by_sku.devices == ("Pi 4",) and by_sku.column("Pi 4")[
        by_sku.archs.index(archs[0])
    ] == pytest.approx(1.1)  # pi-a 1.0 (median of 3), pi-b 1.2
    assert _code(["export", "--db", db, "--by", "sku", "--space", "nas-bench-201", "-o", out]) == 0
    capsys.readouterr()
    assert _code(["monotonicity", out]) == 0
    assert "Jetson" in capsys.readouterr().out
    assert _code(["export", "--db", db, "--sku", "Coral", "-o", out]) == 2
    assert "the fleet measured nothing for --sku 'Coral' yet" in capsys.readouterr().err
