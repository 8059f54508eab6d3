"""Both runtimes on real models: ours (same weights in both) and the onnx wheel's architectures."""

from __future__ import annotations

import os

import modelgen
import numpy as np
import pytest

from agent.bench import backends
from agent.bench.backends.base import BackendOptions
from agent.bench.inputs import make_inputs
from agent.bench.runner import BenchSettings, run_benchmark
from agent.common.errors import ModelError, UnsupportedModelError, UsageError

ort = pytest.importorskip("onnxruntime")
pytest.importorskip("ai_edge_litert")

QUICK = BenchSettings(runs=3, warmup_runs=1, warmup_time_s=0, min_time_s=0, max_time_s=30, threads=1)


def _open(path, **kw):
    return backends.for_model(path).open(path, BackendOptions(threads=1, **kw))


def test_ort_and_litert_compute_the_same_network(onnx_model, tflite_model):
    x = np.random.default_rng(5).standard_normal((1, 3, 8, 8)).astype(np.float32)
    o = _open(onnx_model)
    o.prepare({"x": x})
    t = _open(tflite_model)
    t.prepare({"x": modelgen.nhwc(x)})
    y_ort, y_tfl = o.outputs()[0], t.outputs()[0]
    assert y_ort.shape == y_tfl.shape == (1, modelgen.CLASSES)
    np.testing.assert_allclose(y_ort, y_tfl, rtol=1e-4, atol=1e-5)


def test_detect_format(tmp_path, onnx_model, tflite_model):
    assert backends.detect_format(onnx_model) == "onnx"
    assert backends.detect_format(tflite_model) == "tflite"
    renamed = tmp_path / "model.bin"
    with open(tflite_model, "rb") as fh:
        renamed.write_bytes(fh.read())
    assert backends.detect_format(str(renamed)) == "tflite"  # by identifier, not name


@pytest.mark.parametrize("name,content,match", [
    ("missing.onnx", None, "does not exist"),
    ("empty.onnx", b"", "empty file"),
    ("notes.txt", b"hello world", "expected a .onnx or .tflite"),
    ("fake.tflite", b"\x00" * 64, "no TFL3"),
])  # fmt: skip
def test_not_a_model(tmp_path, name, content, match):
    path = tmp_path / name
    if content is not None:
        path.write_bytes(content)
    with pytest.raises(ModelError, match=match):
        backends.for_model(str(path))


def test_garbage_onnx_is_a_model_error(tmp_path):
    path = tmp_path / "garbage.onnx"
    path.write_bytes(os.urandom(256))
    with pytest.raises(ModelError, match=r"garbage\.onnx"):
        _open(str(path))


def test_backend_name_checked():
    with pytest.raises(UsageError, match="not one of"):
        backends.get("tensorflow")


def test_backend_must_run_the_format(onnx_model):
    with pytest.raises(UsageError, match="cannot run"):
        backends.for_model(onnx_model, "litert")


def test_unsupported_operator_onnx(tmp_path):
    path = modelgen.onnx_single_op(str(tmp_path / "foo.onnx"), "FleetbenchNoSuchOp")
    with pytest.raises(UnsupportedModelError, match="FleetbenchNoSuchOp"):
        _open(path)


def test_unsupported_operator_tflite(tmp_path):
    path = modelgen.tflite_custom_op(str(tmp_path / "custom.tflite"))
    with pytest.raises(UnsupportedModelError, match="FleetbenchNoSuchOp"):
        _open(path)


def test_missing_edgetpu_is_said_clearly(tflite_model):
    import ctypes.util

    if ctypes.util.find_library("edgetpu"):
        pytest.skip("this machine has libedgetpu")
    from agent.common.errors import BackendUnavailableError

    with pytest.raises(BackendUnavailableError, match="libedgetpu"):
        _open(tflite_model, delegate="edgetpu")


def test_unknown_execution_provider(onnx_model):
    from agent.common.errors import BackendUnavailableError

    with pytest.raises(BackendUnavailableError, match=r"available: .*cpu"):
        _open(onnx_model, providers=("nosuchthing",))


def test_dynamic_batch_onnx(tmp_path, conv_weights):
    path = modelgen.onnx_conv_net(str(tmp_path / "dyn.onnx"), conv_weights, batch="N")
    with pytest.raises(UsageError, match="--shape x=1x3x8x8"):
        run_benchmark(path, QUICK)
    settings = BenchSettings(**{**QUICK.__dict__, "shapes": {"x": (4, 3, 8, 8)}})
    result = run_benchmark(path, settings)
    assert result.model.inputs[0].shape == (4, 3, 8, 8)


def test_dynamic_batch_tflite(tmp_path):
    path = modelgen.tflite_dense(str(tmp_path / "dyn.tflite"), dynamic_batch=True)
    with pytest.raises(UsageError, match="--shape x=1x16"):
        run_benchmark(path, QUICK)
    sess = _open(path)
    sess.prepare(make_inputs(sess.inputs, {"x": (5, 16)}))
    assert sess.outputs()[0].shape == (5, 8)


@pytest.mark.parametrize("name", ["squeezenet", "resnet50", "shufflenet", "inception_v1"])
def test_real_architectures_from_the_onnx_wheel(name):
    path = modelgen.onnx_example(name)
    result = run_benchmark(path, QUICK)
    assert result.stats.n >= 3
    assert result.backend.name == "onnxruntime"
    assert result.model.sha256 and result.model.size_bytes == os.path.getsize(path)


def test_onnx_wheel_squeezenet_output_shape():
    sess = _open(modelgen.onnx_example("squeezenet"))
    shapes = {s.name: s.shape for s in sess.inputs}
    sess.prepare(make_inputs(sess.inputs, shapes))  # type: ignore[arg-type]
    out = sess.outputs()[0]
    assert out.shape[0] == 1 and np.isfinite(out).all()


@pytest.mark.parametrize("fixture", ["onnx_model", "tflite_model"])
def test_profile_lists_operators(request, fixture):
    path = request.getfixturevalue(fixture)
    settings = BenchSettings(**{**QUICK.__dict__, "profile": True, "profile_runs": 3})
    result = run_benchmark(path, settings)
    assert result.profile
    assert sum(p.share for p in result.profile) == pytest.approx(1.0)
    assert [p.mean_ms for p in result.profile] == sorted((p.mean_ms for p in result.profile), reverse=True)
    types = {p.op_type for p in result.profile}
    assert ("CONV_2D" in types) if fixture == "tflite_model" else any("Conv" in t for t in types)


def test_tflite_split_keeps_every_operator(tflite_model):
    from agent.bench.backends import _tflite_ops

    with open(tflite_model, "rb") as fh:
        pieces = _tflite_ops.split_ops(fh.read())
    assert [t for _, t, _ in pieces] == ["CONV_2D", "AVERAGE_POOL_2D", "RESHAPE", "FULLY_CONNECTED"]


def test_cli_backend_names_match_the_registry():
    from agent.bench import BACKEND_NAMES, backends

    assert tuple(backends.names()) == BACKEND_NAMES


def test_the_cli_and_the_daemon_do_not_load_numpy():
    """The idle agent's memory target: numpy and the runtimes load only in worker processes, and
    the coordinator's libraries (which every `fleetbench` command's parser registers) not at all."""
    import subprocess
    import sys

    heavy = (
        "numpy",
        "onnxruntime",
        "ai_edge_litert",
        "sqlalchemy",
        "scipy",
        "matplotlib",
        "onnx",
        "torch",
        "sklearn",
    )
    code = (
        "import sys; from agent import cli, daemon; cli.build_parser(); "
        f"print(sorted(m for m in {heavy!r} if m in sys.modules))"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "[]"
