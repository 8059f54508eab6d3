"""One spec, three materializations: PyTorch, ONNX and TFLite compute the same network from the same
arrays, for every family, at pruned widths, with batch-norm statistics that are not the identity."""

from __future__ import annotations

import numpy as np
import pytest

torch = pytest.importorskip("torch")
pytest.importorskip("onnxruntime")
pytest.importorskip("ai_edge_litert")

from runtimes import run_onnx, run_tflite  # noqa: E402

from agent.materialize import families as fam  # noqa: E402
from agent.materialize import model_bytes  # noqa: E402
from agent.materialize.weights import seeded, to_network  # noqa: E402
from coordinator.prune.torchnet import PlanNet  # noqa: E402


@pytest.mark.parametrize(
    "family, resolution",
    [("resnet20", 16), ("resnet56", 8), ("resnet50", 64), ("mobilenetv1", 64)],
)
def test_pytorch_onnx_and_tflite_agree(family, resolution):
    rng = np.random.default_rng(1)
    widths = [int(rng.integers(1, w + 1)) for w in fam.parse_widths(family, "x0.25")]
    plan = fam.plan(family, widths, classes=5, resolution=resolution)
    params = seeded(plan, 9)
    x = rng.standard_normal((2, 3, resolution, resolution)).astype(np.float32)
    with torch.no_grad():
        expected = PlanNet(plan).load_params(params).eval()(torch.from_numpy(x)).numpy()
    net = to_network(plan, params)
    scale = float(np.abs(expected).max())
    assert expected.shape == (2, 5) and scale > 0
    for i in range(2):
        onnx_out = run_onnx(model_bytes(net, "onnx"), x[i : i + 1])
        tflite_out = run_tflite(model_bytes(net, "tflite"), x[i : i + 1])
        assert np.allclose(onnx_out[0], expected[i], rtol=1e-4, atol=1e-4 * scale)
        assert np.allclose(tflite_out[0], expected[i], rtol=1e-4, atol=1e-4 * scale)


def test_the_arrays_go_in_and_come_out_unchanged():
    plan = fam.plan("mobilenetv1", "x0.25", resolution=32)
    params = seeded(plan, 2)
    out = PlanNet(plan).load_params(params).params()
    assert out.keys() == params.keys() and all(np.array_equal(out[k], params[k]) for k in params)
    with pytest.raises(Exception, match="'stem:w' is"):
        PlanNet(fam.plan("mobilenetv1", "x0.5", resolution=32)).load_params(params)
