"""probes, train-predictor, train-optimizer, optimize and predict's crossdevice method, as a user
drives them: outputs, files and one clear sentence for each kind of bad input."""

from __future__ import annotations

import csv
import json

import numpy as np
import pytest

from agent.cli import main
from coordinator.ranking import NB201_ACCURACY, NB201_LATENCY, SHIPPED_PREDICTORS, crossdevice
from coordinator.ranking.tables import read_table

pytest.importorskip("scipy")
DEVICE = "raspberry_pi4"


def _code(args):
    try:
        return main(args)
    except SystemExit as stop:  # argparse's own errors
        return stop.code


@pytest.fixture(scope="module")
def probes():
    return crossdevice.load(SHIPPED_PREDICTORS["nas-bench-201"]).probes


def _table(path, keep, devices=(DEVICE,), value=None):
    """The public table's DEVICE column with only the ``keep`` architectures measured."""
    with open(NB201_LATENCY) as fh:
        rows = list(csv.reader(fh))
    cols = [rows[0].index(d) for d in devices]
    with open(path, "w", newline="") as fh:
        w = csv.writer(fh)
        w.writerow(["arch", *devices])
        for r in rows[1:]:
            cells = [r[c] if r[0] in keep else "" for c in cols]
            if value is not None and r[0] in keep:
                cells = [value(r[0], c) for c in cells]
            w.writerow([r[0], *cells])
    return str(path)


def test_probes_prints_the_probe_architectures(capsys, probes):
    assert main(["probes", "--space", "nas-bench-201"]) == 0
    lines = capsys.readouterr().out.splitlines()
    assert tuple(lines) == probes and len(lines) == 20
    assert set(lines) <= set(read_table(NB201_LATENCY).archs)


def test_train_predictor_from_any_table_then_probes_and_predict_use_it(capsys, tmp_path):
    model = tmp_path / "mine.npz"
    assert main(["train-predictor", NB201_LATENCY, "-o", str(model), "--probes", "8", "--rank", "4"]) == 0
    err = capsys.readouterr().err
    assert "training on 6 devices x 1999 architectures" in err and "imputing missing cells" in err
    assert f"wrote {model}" in err
    assert main(["probes", "--model", str(model)]) == 0
    mine = capsys.readouterr().out.splitlines()
    assert len(mine) == 8
    # predict: a new device measured on those 8 probes only is filled by the cross-device model
    table = _table(tmp_path / "new.csv", set(mine), devices=("jetson_tx2_edgegpu", DEVICE))
    out = tmp_path / "out.csv"
    assert main(["predict", table, "-o", str(out), "--predictor", str(model), "--method", "crossdevice"]) == 0
    assert (
        f"{DEVICE}: 8 measured, 1991 predicted (crossdevice from 8 probes + 0 samples"
        in capsys.readouterr().err
    )
    filled = read_table(str(out))
    assert not np.isnan(filled.ms).any()
    meta = json.loads((tmp_path / "out.csv.meta.json").read_text())
    assert meta["method"] == "crossdevice" and meta["devices"][DEVICE]["log_error_std"] > 0


def test_predict_uses_the_cross_device_model_by_default_when_the_probes_are_there(capsys, tmp_path, probes):
    full = read_table(NB201_LATENCY)
    keep = set(probes) | set(full.archs[::100])
    table = _table(tmp_path / "t.csv", keep, devices=("pixel3", DEVICE))
    out = tmp_path / "o.csv"
    assert main(["predict", table, "-o", str(out)]) == 0
    err = capsys.readouterr().err
    assert f"{DEVICE}: {len(keep)} measured" in err and "crossdevice from 20 probes + " in err
    truth = full.column(DEVICE)
    got = read_table(str(out)).column(DEVICE)
    from scipy.stats import spearmanr

    assert spearmanr(got, truth).correlation > 0.9
    assert json.loads((tmp_path / "o.csv.meta.json").read_text())["method"] == "auto"


def test_optimize_prints_one_json_decision(capsys, tmp_path, probes):
    table = _table(tmp_path / "t.csv", set(probes))
    args = ["optimize", table, "--device", DEVICE, "--budget-ms", "45", "--accuracy", NB201_ACCURACY,
            "--metric", "cifar10_top1", "--format", "json"]  # fmt: skip
    assert main(args) == 0
    out = json.loads(capsys.readouterr().out)
    assert set(out) >= {"arch", "predicted_ms", "accuracy", "decision_s"}
    assert out["arch"] in read_table(NB201_LATENCY).archs and 0 < out["predicted_ms"] <= 45
    assert 0 < out["decision_s"] < 10
    truth = dict(zip(read_table(NB201_LATENCY).archs, read_table(NB201_LATENCY).column(DEVICE)))
    assert truth[out["arch"]] <= 45 * 1.2  # the real Pi agrees, within prediction error
    assert main([*args, "--method", "search"]) == 0
    search = json.loads(capsys.readouterr().out)
    assert search["method"] == "search" and search["predicted_ms"] <= 45
    assert search["accuracy"] >= out["accuracy"] - 1.0
    assert main([*args[:-2], "--format", "table"]) == 0
    assert capsys.readouterr().out.startswith(f"{DEVICE}, budget 45 ms: |")


def _bad(tmp_path, probes):
    few = _table(tmp_path / "few.csv", set(probes[:12]))
    neg = _table(tmp_path / "neg.csv", set(probes), value=lambda a, c: "-3" if a == probes[0] else c)
    other = tmp_path / "other.npz"
    trained = crossdevice.load(SHIPPED_PREDICTORS["nas-bench-201"])
    trained.model.save(str(other), "mobilenetv2", trained.probes, trained.devices)
    ok = _table(tmp_path / "ok.csv", set(probes))
    rows = (tmp_path / "ok.csv").read_text().splitlines()
    short = tmp_path / "short.csv"  # a table without (most of) the probe rows
    short.write_text(
        "\n".join([rows[0], *(r for r in rows[1:] if r.split(",")[0] not in probes[:15])]) + "\n"
    )
    base = ["--device", DEVICE, "--accuracy", NB201_ACCURACY, "--metric", "cifar10_top1"]
    return [
        (
            ["optimize", few, *base, "--budget-ms", "45"],
            f"{DEVICE} needs its 20 probe architectures measured "
            "and column raspberry_pi4 has 12 measured (empty, NaN, zero or negative cells are not) "
            "(`fleetbench probes --space nas-bench-201` lists them)",
        ),
        (
            ["optimize", neg, *base, "--budget-ms", "45"],
            "column raspberry_pi4 has 19 measured (empty, NaN, zero or negative cells are not)",
        ),
        (
            ["optimize", ok, *base, "--budget-ms", "0.5"],
            "no candidate is predicted to fit 0.5 ms on raspberry_pi4",
        ),
        (
            ["optimize", ok, *base, "--budget-ms", "45", "--predictor", str(other)],
            "was trained for the mobilenetv2 space, not nas-bench-201",
        ),
        (
            ["optimize", ok, *base, "--budget-ms", "45", "--optimizer", SHIPPED_PREDICTORS["nas-bench-201"]],
            "is a fleetbench.crossdevice file, not a fleetbench.optimizer model",
        ),
        (
            ["optimize", ok, *base, "--budget-ms", "45", "--predictor", str(tmp_path / "none.npz")],
            "does not exist",
        ),
        (
            ["predict", few, "-o", str(tmp_path / "x.csv"), "--method", "crossdevice"],
            f"device {DEVICE} has "
            "12 of the 20 probe architectures measured; the crossdevice method needs them all",
        ),
        (["train-predictor", few, "-o", str(tmp_path / "m.npz")], "training needs 2 or more devices, got 1"),
    ]


def test_bad_input_is_one_sentence_and_a_nonzero_exit(capsys, tmp_path, probes):
    for args, message in _bad(tmp_path, probes):
        assert _code(args) == 2, args
        err = capsys.readouterr().err
        assert message in err, (args, err)
        assert "Traceback" not in err and len(err.strip().splitlines()) == 1, err
    assert (
        _code(
            ["optimize", "t.csv", "--device", "d", "--budget-ms", "nan", "--accuracy", "a", "--metric", "m"]
        )
        == 2
    )
    assert "'nan' is not a positive number of milliseconds" in capsys.readouterr().err


@pytest.mark.slow
def test_train_optimizer_writes_a_network_optimize_uses(capsys, tmp_path, probes):
    pytest.importorskip("sklearn")
    net = tmp_path / "net.npz"
    args = ["train-optimizer", "--accuracy", NB201_ACCURACY, "--metric", "cifar100_top1", "--synthetic", "60",
            "-o", str(net)]  # fmt: skip
    assert main(args) == 0
    assert "training the network on" in capsys.readouterr().err
    table = _table(tmp_path / "t.csv", set(probes))
    assert main(["optimize", table, "--device", DEVICE, "--budget-ms", "60", "--accuracy", NB201_ACCURACY,
                 "--metric", "cifar100_top1", "--optimizer", str(net), "--format", "json"]) == 0  # fmt: skip
    assert json.loads(capsys.readouterr().out)["predicted_ms"] <= 60
    # a network for another metric is refused
    assert _code(["optimize", table, "--device", DEVICE, "--budget-ms", "60", "--accuracy", NB201_ACCURACY,
                  "--metric", "cifar10_top1", "--optimizer", str(net)]) == 2  # fmt: skip
    assert "was trained for cifar100_top1, not cifar10_top1" in capsys.readouterr().err
