"""NAS-Bench-201 architectures as ONNX and TFLite models that compute the same thing."""

from __future__ import annotations

import os

import numpy as np
import pytest
from daemon_proc import fleetbench as cli
from runtimes import run_onnx, run_tflite

from agent.common.errors import UsageError
from agent.materialize import materialize, model_bytes, nasbench201, network, write_model

pytest.importorskip("onnxruntime")
pytest.importorskip("ai_edge_litert")

REPO = os.path.dirname(os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__)))))
DENSE = "|nor_conv_3x3~0|+|nor_conv_3x3~0|nor_conv_1x1~1|+|skip_connect~0|avg_pool_3x3~1|nor_conv_3x3~2|"
SPARSE = "|nor_conv_3x3~0|+|none~0|none~1|+|skip_connect~0|none~1|none~2|"  # edge 0->1 is dead
CONSTANT = "|nor_conv_3x3~0|+|none~0|none~1|+|none~0|none~1|none~2|"  # no path in to out
POOLS = "|avg_pool_3x3~0|+|avg_pool_3x3~0|skip_connect~1|+|avg_pool_3x3~0|none~1|skip_connect~2|"


@pytest.mark.parametrize(
    "arch, classes, resolution",
    [(DENSE, 10, 32), (SPARSE, 100, 32), (CONSTANT, 10, 32), (POOLS, 120, 16), (DENSE, 120, 16)],
)
def test_onnx_and_tflite_compute_the_same_network(arch, classes, resolution):
    net = materialize("nas-bench-201", arch, seed=7, classes=classes, resolution=resolution)
    x = np.random.default_rng(1).standard_normal((1, 3, resolution, resolution)).astype(np.float32)
    y_onnx = run_onnx(model_bytes(net, "onnx"), x)
    y_tflite = run_tflite(model_bytes(net, "tflite"), x)
    assert y_onnx.shape == y_tflite.shape == (1, classes)
    scale = float(np.abs(y_onnx).max())
    assert scale > 0 and np.allclose(y_onnx, y_tflite, rtol=1e-4, atol=1e-5 * scale)


def test_the_same_arch_and_seed_give_the_same_bytes():
    a = model_bytes(materialize("nas-bench-201", DENSE, seed=3), "tflite")
    assert a == model_bytes(materialize("nas-bench-201", DENSE, seed=3), "tflite")
    assert a != model_bytes(materialize("nas-bench-201", DENSE, seed=4), "tflite")
    assert model_bytes(materialize("nas-bench-201", DENSE, seed=3), "onnx") == model_bytes(
        materialize("nas-bench-201", DENSE, seed=3), "onnx"
    )


def count(net, kind):
    return sum(isinstance(layer, kind) for layer in net.layers)


def test_the_network_has_the_benchmarks_structure():
    net = nasbench201.build(DENSE)
    # stem + 2 reductions x 3 + 15 cells x 4 live conv edges (3x3, 3x3, 1x1, 3x3)
    assert count(net, network.Conv) == 1 + 2 * 3 + 15 * 4
    widths = sorted({layer.channels for layer in net.layers if isinstance(layer, network.Conv)})
    assert widths == [16, 32, 64] and net.notes == ()
    # the ReLU before convolutions reading one node is computed once (node 0 feeds three of them)
    assert count(net, network.Relu) == 2 * 2 + 15 * 3 + 1


def test_pruning_is_reported_in_the_models(tmp_path):
    net = nasbench201.build(SPARSE)
    assert net.notes == ("dead edges removed in every cell: nor_conv_3x3~0->1",)
    assert count(net, network.Conv) == 1 + 2 * 3  # the cells keep only the skip 0->3
    onnx_path = write_model(net, str(tmp_path / "m.onnx"))
    tflite_path = write_model(net, str(tmp_path / "m.tflite"))
    import onnx

    props = {p.key: p.value for p in onnx.load(onnx_path).metadata_props}
    assert "nor_conv_3x3~0->1" in props["fleetbench.notes"]
    with open(tflite_path, "rb") as fh:
        assert b"dead edges removed" in fh.read()
    constant = nasbench201.build(CONSTANT)
    assert "constant zero map" in constant.notes[-1] and count(constant, network.Zeros) == 3


@pytest.mark.parametrize(
    "arch, message",
    [
        ("|nor_conv_3x3~0|", "3"),
        ("|conv_5x5~0|+|none~0|none~1|+|none~0|none~1|none~2|", "unknown operation 'conv_5x5'"),
        ("|none~1|+|none~0|none~1|+|none~0|none~1|none~2|", "must be written op~0"),
        ("nor_conv_3x3~0", "must start and end with '|'"),
    ],
)
def test_bad_arch_strings(arch, message):
    with pytest.raises(UsageError) as info:
        materialize("nas-bench-201", arch)
    assert message in str(info.value) and "nas-bench-201 arch" in str(info.value)


def test_bad_choices():
    with pytest.raises(UsageError, match="classes must be one of 10, 100, 120"):
        materialize("nas-bench-201", DENSE, classes=7)
    with pytest.raises(UsageError, match="resolution must be a multiple of 4"):
        materialize("nas-bench-201", DENSE, resolution=30)
    with pytest.raises(UsageError, match="unknown search space 'ofa'"):
        materialize("ofa", DENSE)


def test_make_model_writes_both_formats_and_the_model_runs(tmp_path, onnx_model):
    for name in ("cell.onnx", "cell.tflite"):
        out = cli("make-model", "--space", "nas-bench-201", DENSE, "-o", str(tmp_path / name), "--seed", "1")
        assert out.returncode == 0, out.stderr
        assert f"wrote {tmp_path / name}" in out.stderr
    out = cli("bench", str(tmp_path / "cell.onnx"), str(tmp_path / "cell.tflite"), "--runs", "3",
              "--min-time", "0", "--warmup", "1", "--warmup-time", "0", "-q", "--format", "csv")  # fmt: skip
    assert out.returncode == 0, out.stderr
    assert "cell.onnx" in out.stdout and "cell.tflite" in out.stdout


@pytest.mark.parametrize(
    "args, message",
    [
        (["|bogus|", "-o", "{d}/m.onnx"], "nas-bench-201 arch '|bogus|'"),
        ([DENSE, "-o", "{d}/m.pt"], "must end in .onnx or .tflite"),
        ([DENSE, "-o", "{d}/missing/m.onnx"], "does not exist"),
        ([DENSE, "-o", "{d}/m.onnx", "--classes", "7"], "classes must be one of 10, 100, 120"),
    ],
)
def test_make_model_errors_leave_nothing_behind(tmp_path, args, message):
    out = cli("make-model", *[a.replace("{d}", str(tmp_path)) for a in args])
    assert out.returncode == 2 and message in out.stderr and "Traceback" not in out.stderr
    assert os.listdir(tmp_path) == []
