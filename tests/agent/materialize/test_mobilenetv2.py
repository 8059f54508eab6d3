"""The MobileNetV2-style (Once-for-All) space: arch strings, structure, and both formats agreeing."""

from __future__ import annotations

import numpy as np
import pytest
from runtimes import run_onnx, run_tflite

from agent.common.errors import UsageError
from agent.materialize import materialize, mobilenetv2, model_bytes, network

pytest.importorskip("onnxruntime")
pytest.importorskip("ai_edge_litert")

SMALL = "d:22222-k:3333333333-e:3333333333"
MIXED = "d:23423-k:35737353373537-e:34646436463464"
LARGE = "d:44444-k:77777777777777777777-e:66666666666666666666"


@pytest.mark.parametrize("arch, resolution, classes", [(SMALL, 64, 10), (MIXED, 96, 1000), (LARGE, 32, 100)])
def test_onnx_and_tflite_compute_the_same_network(arch, resolution, classes):
    net = materialize("mobilenetv2", arch, seed=5, classes=classes, resolution=resolution)
    x = np.random.default_rng(2).standard_normal((1, 3, resolution, resolution)).astype(np.float32)
    y_onnx, y_tflite = run_onnx(model_bytes(net, "onnx"), x), run_tflite(model_bytes(net, "tflite"), x)
    assert y_onnx.shape == y_tflite.shape == (1, classes)
    scale = float(np.abs(y_onnx).max())
    assert scale > 0 and np.allclose(y_onnx, y_tflite, rtol=1e-4, atol=1e-4 * scale)


def test_structure_follows_the_arch():
    net = mobilenetv2.build(MIXED, resolution=224)
    depthwise = [layer for layer in net.layers if isinstance(layer, network.Conv) and layer.depthwise]
    assert len(depthwise) == 1 + 14 + 1  # first block, the 2+3+4+2+3 searched blocks, the last block
    assert [layer.weight.shape[2] for layer in depthwise[1:-1]] == [3, 5, 7, 3, 7, 3, 5, 3, 3, 7, 3, 5, 3, 7]
    # residuals: every block but the first of each stage (stride or width changes there)
    adds = [layer for layer in net.layers if isinstance(layer, network.Add)]
    assert len(adds) == (2 - 1) + (3 - 1) + (4 - 1) + (2 - 1) + (3 - 1)
    expand = [
        layer for layer in net.layers if isinstance(layer, network.Conv) and layer.out.endswith("expand/conv")
    ]
    assert expand[0].weight.shape[:2] == (16 * 3, 16)  # stage 0 block 0: expansion 3 of 16 channels


def test_default_network_is_imagenet_sized():
    net = materialize("mobilenetv2", SMALL)
    assert net.resolution == 224 and net.layers[-1].weight.shape == (1000, 1280)


@pytest.mark.parametrize(
    "arch, message",
    [
        ("d:2222-k:33333333-e:33333333", "needs 5 stage depths"),
        ("d:22225-k:3333333333-e:3333333333", "depth 5 is out of range"),
        ("d:22222-k:3333333334-e:3333333333", "kernel 4 is out of range"),
        ("d:22222-k:333333333-e:3333333333", "k: needs one digit per block: 10"),
        ("d:22222-k:3333333333-e:33333333x3", "must be digits"),
        ("k:3-d:2-e:3", "it must read d:DDDDD-k:KKK...-e:EEE..."),
    ],
)
def test_bad_arch_strings(arch, message):
    with pytest.raises(UsageError) as info:
        materialize("mobilenetv2", arch)
    assert message in str(info.value)


def test_bad_resolution():
    with pytest.raises(UsageError, match="resolution must be a multiple of 32"):
        materialize("mobilenetv2", SMALL, resolution=100)
