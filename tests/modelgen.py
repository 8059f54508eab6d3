"""Small real models built in the tests: ONNX via onnx.helper, TFLite via the LiteRT schema.

``conv_net`` builds the same network, with the same weights, for both runtimes:
NHWC for TFLite, NCHW for ONNX (each as its runtime expects), so a test can run
both on one input and compare outputs.
"""

from __future__ import annotations

import numpy as np

from agent.materialize.to_tflite import FlatModelBuilder

H = W = 8
C_IN, C_OUT, CLASSES = 3, 4, 10


def conv_net_weights(seed: int = 0) -> dict[str, np.ndarray]:
    rng = np.random.default_rng(seed)
    return {
        "conv_w": rng.standard_normal((C_OUT, 3, 3, C_IN)).astype(np.float32) * 0.3,  # OHWI
        "conv_b": rng.standard_normal(C_OUT).astype(np.float32) * 0.1,
        "fc_w": rng.standard_normal((CLASSES, (H // 2) * (W // 2) * C_OUT)).astype(np.float32) * 0.1,
        "fc_b": rng.standard_normal(CLASSES).astype(np.float32) * 0.1,
    }


# --------------------------------------------------------------------------- ONNX


def onnx_conv_net(path: str, weights: dict[str, np.ndarray], batch: object = 1) -> str:
    """Conv3x3(SAME)+ReLU -> AvgPool2x2 -> (to NHWC) -> Flatten -> Gemm, NCHW input ``x``."""
    import onnx
    from onnx import TensorProto, helper, numpy_helper

    inits = [
        numpy_helper.from_array(weights["conv_w"].transpose(0, 3, 1, 2).copy(), "conv_w"),  # OIHW
        numpy_helper.from_array(weights["conv_b"], "conv_b"),
        numpy_helper.from_array(weights["fc_w"], "fc_w"),
        numpy_helper.from_array(weights["fc_b"], "fc_b"),
        numpy_helper.from_array(np.array([-1, weights["fc_w"].shape[1]], np.int64), "flat_shape"),
    ]
    nodes = [
        helper.make_node("Conv", ["x", "conv_w", "conv_b"], ["c"], name="conv", pads=[1, 1, 1, 1]),
        helper.make_node("Relu", ["c"], ["r"], name="relu"),
        helper.make_node("AveragePool", ["r"], ["p"], name="pool", kernel_shape=[2, 2], strides=[2, 2]),
        helper.make_node("Transpose", ["p"], ["t"], name="to_nhwc", perm=[0, 2, 3, 1]),
        helper.make_node("Reshape", ["t", "flat_shape"], ["f"], name="flatten"),
        helper.make_node("Gemm", ["f", "fc_w", "fc_b"], ["y"], name="fc", transB=1),
    ]
    graph = helper.make_graph(
        nodes,
        "conv_net",
        [helper.make_tensor_value_info("x", TensorProto.FLOAT, [batch, C_IN, H, W])],
        [helper.make_tensor_value_info("y", TensorProto.FLOAT, [batch, CLASSES])],
        initializer=inits,
    )
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])
    model.ir_version = 8
    onnx.checker.check_model(model, full_check=True)
    onnx.save(model, path)
    return path


def onnx_single_op(path: str, op_type: str, domain: str = "") -> str:
    """A one-node model of an operator no runtime implements (for error tests)."""
    import onnx
    from onnx import TensorProto, helper

    node = helper.make_node(op_type, ["x"], ["y"], domain=domain)
    graph = helper.make_graph(
        [node], "one", [helper.make_tensor_value_info("x", TensorProto.FLOAT, [1, 4])],
        [helper.make_tensor_value_info("y", TensorProto.FLOAT, [1, 4])],
    )  # fmt: skip
    opsets = [helper.make_opsetid("", 17)] + ([helper.make_opsetid(domain, 1)] if domain else [])
    model = helper.make_model(graph, opset_imports=opsets)
    model.ir_version = 8
    onnx.save(model, path)
    return path


# --------------------------------------------------------------------------- TFLite


def tflite_conv_net(path: str, weights: dict[str, np.ndarray]) -> str:
    """The same network as ``onnx_conv_net``, NHWC input ``x``."""
    b = FlatModelBuilder()
    s = b.s
    x = b.tensor("x", [1, H, W, C_IN])
    cw = b.tensor("conv_w", weights["conv_w"].shape, weights["conv_w"])
    cb = b.tensor("conv_b", weights["conv_b"].shape, weights["conv_b"])
    c = b.tensor("conv", [1, H, W, C_OUT])
    conv = s.Conv2DOptionsT()
    conv.padding, conv.strideW, conv.strideH = s.Padding.SAME, 1, 1
    conv.dilationWFactor = conv.dilationHFactor = 1
    conv.fusedActivationFunction = s.ActivationFunctionType.RELU
    b.op(s.BuiltinOperator.CONV_2D, [x, cw, cb], [c], s.BuiltinOptions.Conv2DOptions, conv)
    p = b.tensor("pool", [1, H // 2, W // 2, C_OUT])
    pool = s.Pool2DOptionsT()
    pool.padding, pool.strideW, pool.strideH, pool.filterWidth, pool.filterHeight = (
        s.Padding.VALID,
        2,
        2,
        2,
        2,
    )
    b.op(s.BuiltinOperator.AVERAGE_POOL_2D, [c], [p], s.BuiltinOptions.Pool2DOptions, pool)
    flat = weights["fc_w"].shape[1]
    shp = b.tensor("flat_shape", [2], np.array([1, flat], np.int32), dtype="int32")
    f = b.tensor("flatten", [1, flat])
    rs = s.ReshapeOptionsT()
    rs.newShape = [1, flat]
    b.op(s.BuiltinOperator.RESHAPE, [p, shp], [f], s.BuiltinOptions.ReshapeOptions, rs)
    fw = b.tensor("fc_w", weights["fc_w"].shape, weights["fc_w"])
    fb = b.tensor("fc_b", weights["fc_b"].shape, weights["fc_b"])
    y = b.tensor("y", [1, CLASSES])
    b.op(s.BuiltinOperator.FULLY_CONNECTED, [f, fw, fb], [y],
         s.BuiltinOptions.FullyConnectedOptions, s.FullyConnectedOptionsT())  # fmt: skip
    with open(path, "wb") as fh:
        fh.write(b.build([x], [y]))
    return path


def tflite_dense(path: str, features: int = 16, units: int = 8, dynamic_batch: bool = False) -> str:
    """One FULLY_CONNECTED layer; with ``dynamic_batch`` the batch dimension is -1."""
    b = FlatModelBuilder()
    s = b.s
    rng = np.random.default_rng(1)
    sig = [-1, features] if dynamic_batch else None
    x = b.tensor("x", [1, features], signature=sig)
    w = b.tensor("w", [units, features], rng.standard_normal((units, features)).astype(np.float32))
    y = b.tensor("y", [1, units], signature=[-1, units] if dynamic_batch else None)
    b.op(s.BuiltinOperator.FULLY_CONNECTED, [x, w, -1], [y],
         s.BuiltinOptions.FullyConnectedOptions, s.FullyConnectedOptionsT())  # fmt: skip
    with open(path, "wb") as fh:
        fh.write(b.build([x], [y]))
    return path


def tflite_custom_op(path: str, name: str = "FleetbenchNoSuchOp") -> str:
    """A model whose only operator is a custom op no runtime has."""
    b = FlatModelBuilder()
    s = b.s
    x = b.tensor("x", [1, 4])
    y = b.tensor("y", [1, 4])
    b.op(s.BuiltinOperator.CUSTOM, [x], [y], custom=name)
    with open(path, "wb") as fh:
        fh.write(b.build([x], [y]))
    return path


def onnx_example(name: str) -> str:
    """Path of a real architecture shipped in the onnx wheel (light_<name>.onnx)."""
    from agent.bench import examples

    return examples.resolve(f"example:{name}")


def nhwc(x_nchw: np.ndarray) -> np.ndarray:
    return np.ascontiguousarray(x_nchw.transpose(0, 2, 3, 1))


if __name__ == "__main__":
    # `python tests/modelgen.py DIR` writes conv.onnx and conv.tflite (same weights) into DIR.
    import os
    import sys

    out = sys.argv[1] if len(sys.argv) > 1 else "."
    w = conv_net_weights()
    print(onnx_conv_net(os.path.join(out, "conv.onnx"), w))
    print(tflite_conv_net(os.path.join(out, "conv.tflite"), w))
