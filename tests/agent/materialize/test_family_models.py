"""The prunable families as ONNX and TFLite models that compute the same thing, and `fleetbench lut`
over a family (a width table)."""

from __future__ import annotations

import csv

import numpy as np
import pytest
from daemon_proc import fleetbench as cli
from runtimes import run_onnx, run_tflite

from agent.materialize import families as fam
from agent.materialize import materialize, model_bytes


@pytest.mark.parametrize(
    "family, spec, resolution",
    [
        ("resnet20", "x0.5", 32),
        ("resnet56", "x0.75", 16),
        ("resnet50", "x0.25", 64),
        ("mobilenetv1", "x0.5", 96),
    ],
)
def test_onnx_and_tflite_compute_the_same_pruned_network(family, spec, resolution):
    rng = np.random.default_rng(0)
    widths = [int(rng.integers(1, w + 1)) for w in fam.parse_widths(family, spec)]
    net = materialize(family, fam.format_widths(widths), seed=3, classes=7, resolution=resolution)
    x = rng.standard_normal((1, 3, resolution, resolution)).astype(np.float32)
    y_onnx, y_tflite = run_onnx(model_bytes(net, "onnx"), x), run_tflite(model_bytes(net, "tflite"), x)
    assert y_onnx.shape == y_tflite.shape == (1, 7)
    scale = float(np.abs(y_onnx).max())
    assert scale > 0 and np.allclose(y_onnx, y_tflite, rtol=1e-4, atol=1e-4 * scale)


def test_fleetbench_lut_over_a_family_writes_a_width_table(tmp_path):
    out = cli("lut", "--space", "resnet20", "--widths", "50,100", "--sample", "4", "--runs", "3",
              "--min-time", "0", "-o", str(tmp_path / "lut.csv"))  # fmt: skip
    assert out.returncode == 0, out.stderr
    assert "sum of layers vs whole models (4 resnet20 width specs on the 50,100 % grid, onnx" in out.stdout
    with open(tmp_path / "lut.csv") as fh:
        rows = list(csv.DictReader(fh))
    assert len(rows) == fam.table_size("resnet20", (50, 100))
    assert {r["op"] for r in rows} == {"conv", "relu", "add", "head"} and all(
        float(r["p50_ms"]) > 0 for r in rows
    )


@pytest.mark.parametrize(
    "args, error",
    [
        (("--space", "resnet20", "--widths", "0,50"), "must be whole percents from 1 to 100"),
        (("--space", "resnet20", "--widths", "fifty"), "must be whole percents from 1 to 100"),
        (("--space", "nas-bench-201", "--widths", "50"), "--widths and --resolution are for the prunable"),
        (
            ("--space", "mobilenetv1", "--resolution", "100"),
            "mobilenetv1's resolution must be a multiple of 32",
        ),
    ],
)
def test_fleetbench_lut_refuses_a_bad_grid_in_one_sentence(tmp_path, args, error):
    out = cli("lut", *args, "--sample", "2", "-o", str(tmp_path / "lut.csv"))
    assert out.returncode == 2 and error in out.stderr, out.stderr
    assert "Traceback" not in out.stderr and not (tmp_path / "lut.csv").exists()
