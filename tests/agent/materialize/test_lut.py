"""Layer lookup tables: decomposition, one-layer models for every kind of layer, the CLI."""

from __future__ import annotations

import csv
import os

import numpy as np
import pytest
from daemon_proc import fleetbench as cli
from runtimes import run_onnx, run_tflite
from test_nasbench201 import DENSE, SPARSE

from agent.materialize import lut, materialize, model_bytes
from agent.materialize.lut import LayerKey

pytest.importorskip("onnxruntime")
pytest.importorskip("ai_edge_litert")

MBV2 = "d:22222-k:3333333333-e:3333333333"


def test_decomposition_counts_every_costly_layer():
    keys = lut.decompose(materialize("nas-bench-201", DENSE))
    convs = [k for k in keys if k.op == "conv"]
    assert len(convs) == 1 + 2 * 3 + 15 * 4
    assert LayerKey("conv", 16, 32, 32, 3, 2, 1) in keys  # the first reduction, at 32x32 in
    assert keys[-1] == LayerKey("head", 64, 10, 8)
    assert sum(k.op == "add" and k.arity == 3 for k in keys) == 15  # node 3 sums three edges
    sparse = lut.decompose(materialize("nas-bench-201", SPARSE))
    assert len(sparse) < len(keys)
    assert LayerKey("conv", 16, 16, 32, 3, 1, 1) not in sparse  # the dead 3x3 edge is not counted


def test_every_kind_of_layer_becomes_a_runnable_model_in_both_formats():
    nets = [materialize("nas-bench-201", a) for a in (DENSE, SPARSE)]
    nets.append(materialize("mobilenetv2", MBV2, resolution=64))
    kinds = lut.distinct(nets)
    assert {k.op for k in kinds} == {"conv", "dwconv", "relu", "relu6", "avgpool", "add", "affine", "head"}
    for key in kinds:
        net = lut.layer_network(key)
        x = np.random.default_rng(0).standard_normal((1, key.cin, key.size, key.size)).astype(np.float32)
        y_onnx, y_tflite = run_onnx(model_bytes(net, "onnx"), x), run_tflite(model_bytes(net, "tflite"), x)
        if y_onnx.ndim == 4:
            y_tflite = y_tflite.transpose(0, 3, 1, 2)
        assert np.allclose(y_onnx, y_tflite, rtol=1e-4, atol=1e-4), key.name


def test_prediction_is_the_sum_and_rows_round_trip():
    net = materialize("nas-bench-201", SPARSE)
    table = dict.fromkeys(lut.distinct([net]), 0.5)
    assert lut.predict_ms(table, net) == 0.5 * len(lut.decompose(net))
    rows = [{k: str(v) for k, v in row.items()} for row in lut.to_rows(table, lut.distinct([net]))]
    assert lut.from_rows(rows) == table
    with pytest.raises(KeyError):
        lut.predict_ms({}, net)


def test_fleetbench_lut_writes_the_table_and_reports_the_ranking(tmp_path):
    out = cli("lut", "--space", "nas-bench-201", "--sample", "4", "--runs", "3", "--min-time", "0",
              "-o", str(tmp_path / "lut.csv"))  # fmt: skip
    assert out.returncode == 0, out.stderr
    assert "sum of layers vs whole models (4 nas-bench-201 archs, onnx, 1 thread(s)): SRCC" in out.stdout
    with open(tmp_path / "lut.csv") as fh:
        rows = list(csv.DictReader(fh))
    assert rows and all(float(r["p50_ms"]) > 0 and int(r["uses"]) >= 1 for r in rows)
    assert {r["op"] for r in rows} >= {"conv", "relu", "head"}


def test_fleetbench_lut_checks_its_output_before_any_work(tmp_path):
    out = cli("lut", "--sample", "4", "-o", str(tmp_path / "missing" / "lut.csv"))
    assert out.returncode == 2 and "does not exist" in out.stderr and "Traceback" not in out.stderr
    assert not os.path.exists(tmp_path / "missing")


def test_fleetbench_lut_refuses_more_architectures_than_the_space_has(tmp_path):
    out = cli("lut", "--sample", "20000", "-o", str(tmp_path / "lut.csv"))
    assert out.returncode == 2 and "nas-bench-201 has only 15625 architectures" in out.stderr
    assert "Traceback" not in out.stderr and os.listdir(tmp_path) == []
