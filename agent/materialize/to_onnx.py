"""A ``Network`` as an ONNX model (opset 17, NCHW), built with ``onnx.helper``."""

from __future__ import annotations

from typing import Any

import numpy as np

from agent.materialize import network as nw

OPSET = 17
IR_VERSION = 8


def to_onnx(net: nw.Network) -> Any:
    """The model, checked with ``onnx.checker`` (full check, shapes inferred)."""
    import onnx
    from onnx import TensorProto, helper, numpy_helper

    nodes, inits = [], []

    def const(name: str, value: np.ndarray) -> str:
        inits.append(numpy_helper.from_array(np.ascontiguousarray(value, dtype=np.float32), name))
        return name

    for layer in net.layers:
        if isinstance(layer, nw.Conv):
            k = layer.weight.shape[2]
            inputs = [layer.src, const(f"{layer.out}/W", layer.weight), const(f"{layer.out}/B", layer.bias)]
            nodes.append(
                helper.make_node(
                    "Conv",
                    inputs,
                    [layer.out],
                    name=layer.out,
                    kernel_shape=[k, k],
                    strides=[layer.stride] * 2,
                    pads=[layer.pad] * 4,
                    group=layer.groups,
                )
            )
        elif isinstance(layer, nw.Relu):
            nodes.append(helper.make_node("Relu", [layer.src], [layer.out], name=layer.out))
        elif isinstance(layer, nw.Relu6):
            if "relu6/min" not in {i.name for i in inits}:
                const("relu6/min", np.array(0.0, np.float32))
                const("relu6/max", np.array(6.0, np.float32))
            nodes.append(
                helper.make_node("Clip", [layer.src, "relu6/min", "relu6/max"], [layer.out], name=layer.out)
            )
        elif isinstance(layer, (nw.AvgPool, nw.MaxPool)):
            # average pooling skips the padding (count_include_pad=0), as PyTorch's here does
            average = isinstance(layer, nw.AvgPool)
            extra: dict[str, Any] = {"count_include_pad": 0} if average else {}
            nodes.append(
                helper.make_node(
                    "AveragePool" if average else "MaxPool",
                    [layer.src],
                    [layer.out],
                    name=layer.out,
                    kernel_shape=[layer.kernel] * 2,
                    strides=[layer.stride] * 2,
                    pads=[layer.pad] * 4,
                    **extra,
                )
            )
        elif isinstance(layer, nw.Add):
            op = "Add" if len(layer.srcs) == 2 else "Sum"
            nodes.append(helper.make_node(op, list(layer.srcs), [layer.out], name=layer.out))
        elif isinstance(layer, nw.Affine):
            c = layer.scale.shape[0]
            scaled = f"{layer.out}/scaled"
            nodes.append(
                helper.make_node(
                    "Mul",
                    [layer.src, const(f"{layer.out}/scale", layer.scale.reshape(c, 1, 1))],
                    [scaled],
                    name=scaled,
                )
            )
            nodes.append(
                helper.make_node(
                    "Add",
                    [scaled, const(f"{layer.out}/shift", layer.shift.reshape(c, 1, 1))],
                    [layer.out],
                    name=layer.out,
                )
            )
        elif isinstance(layer, nw.Zeros):
            const(layer.out, np.zeros((1, layer.channels, layer.size, layer.size), np.float32))
        elif isinstance(layer, nw.GlobalAvgPool):
            pooled = f"{layer.out}/4d"
            nodes.append(helper.make_node("GlobalAveragePool", [layer.src], [pooled], name=pooled))
            nodes.append(helper.make_node("Flatten", [pooled], [layer.out], name=layer.out, axis=1))
        elif isinstance(layer, nw.Dense):
            nodes.append(
                helper.make_node(
                    "Gemm",
                    [layer.src, const(f"{layer.out}/W", layer.weight), const(f"{layer.out}/B", layer.bias)],
                    [layer.out],
                    name=layer.out,
                    transB=1,
                )
            )
        else:  # pragma: no cover - a new layer type without a writer
            raise TypeError(f"no ONNX writer for {type(layer).__name__}")
    channels, size = nw.value_shapes(net)[net.output]
    out_shape = [1, channels] if size == 0 else [1, channels, size, size]
    graph = helper.make_graph(
        nodes,
        "fleetbench",
        [
            helper.make_tensor_value_info(
                net.input_name, TensorProto.FLOAT, [1, net.input_channels, net.resolution, net.resolution]
            )
        ],
        [helper.make_tensor_value_info(net.output, TensorProto.FLOAT, out_shape)],
        initializer=inits,
    )
    model = helper.make_model(
        graph, opset_imports=[helper.make_opsetid("", OPSET)], producer_name="fleetbench"
    )
    # IR 8 (ONNX 1.10+) is what opset 17 needs; newer onnx packages write a newer IR by default
    # that the onnxruntime on older device images (and even 1.31) refuses to load.
    model.ir_version = IR_VERSION
    model.doc_string = net.name
    for key, value in (("fleetbench.network", net.name), ("fleetbench.notes", "\n".join(net.notes))):
        entry = model.metadata_props.add()
        entry.key, entry.value = key, value
    onnx.checker.check_model(model, full_check=True)
    return model
