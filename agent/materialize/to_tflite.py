"""A ``Network`` as a TFLite flatbuffer (NHWC), through the LiteRT schema's object API.

No TensorFlow: the model is assembled from the generated schema classes that ship
with ai-edge-litert (``schema_py_generated``) and serialized with ``flatbuffers``.
PyTorch-style symmetric padding that TFLite's SAME cannot express (a 3x3 stride-2
convolution pads 1 on every side; SAME would pad 0 before and 1 after) becomes an
explicit PAD before a VALID convolution, as converters emit it.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any, Optional

import numpy as np

from agent.common.errors import BackendUnavailableError
from agent.materialize import network as nw


def schema() -> Any:
    try:
        from ai_edge_litert import schema_py_generated
    except ImportError as err:
        raise BackendUnavailableError(
            "writing .tflite models needs the LiteRT schema from ai-edge-litert "
            "(pip install 'fleetbench[litert]')"
        ) from err
    return schema_py_generated


class FlatModelBuilder:
    """Tensors, buffers and operators of one subgraph, packed into a TFLite model."""

    def __init__(self) -> None:
        self.s = schema()
        self.tensors: list = []
        self.buffers: list = [self.s.BufferT()]  # buffer 0: the empty sentinel
        self.ops: list = []
        self.codes: list[tuple[int, Optional[str]]] = []

    def tensor(
        self,
        name: str,
        shape: Sequence[int],
        data: Optional[np.ndarray] = None,
        dtype: str = "float32",
        signature: Optional[Sequence[int]] = None,
    ) -> int:
        s = self.s
        t = s.TensorT()
        t.name = name
        t.shape = list(shape)
        if signature is not None:
            t.shapeSignature = list(signature)
        t.type = {"float32": s.TensorType.FLOAT32, "int32": s.TensorType.INT32}[dtype]
        t.buffer = 0
        if data is not None:
            buf = s.BufferT()
            buf.data = np.frombuffer(np.ascontiguousarray(data, dtype=dtype).tobytes(), dtype=np.uint8)
            self.buffers.append(buf)
            t.buffer = len(self.buffers) - 1
        self.tensors.append(t)
        return len(self.tensors) - 1

    def op(
        self,
        code: int,
        inputs: Sequence[int],
        outputs: Sequence[int],
        opt_type: int = 0,
        options: object = None,
        custom: Optional[str] = None,
    ) -> None:
        if (code, custom) not in self.codes:
            self.codes.append((code, custom))
        o = self.s.OperatorT()
        o.opcodeIndex = self.codes.index((code, custom))
        o.inputs, o.outputs = list(inputs), list(outputs)
        o.builtinOptionsType = opt_type
        o.builtinOptions = options
        self.ops.append(o)

    def build(self, inputs: Sequence[int], outputs: Sequence[int], description: str = "fleetbench") -> bytes:
        import flatbuffers

        s = self.s
        sub = s.SubGraphT()
        sub.tensors, sub.inputs, sub.outputs, sub.operators = (
            self.tensors,
            list(inputs),
            list(outputs),
            self.ops,
        )
        sub.name = "main"
        m = s.ModelT()
        m.version = 3
        m.subgraphs = [sub]
        m.buffers = self.buffers
        m.description = description
        m.operatorCodes = []
        for code, custom in self.codes:
            oc = s.OperatorCodeT()
            oc.builtinCode = code
            oc.deprecatedBuiltinCode = min(code, 127)  # builtins past 127 live only in the new field
            oc.version = 1
            if custom:
                oc.customCode = custom
            m.operatorCodes.append(oc)
        b = flatbuffers.Builder(1024)
        b.Finish(m.Pack(b), file_identifier=b"TFL3")
        return bytes(b.Output())


def to_tflite(net: nw.Network) -> bytes:
    """The model's flatbuffer bytes; its description carries the network name and notes."""
    b = FlatModelBuilder()
    s = b.s
    shapes = nw.value_shapes(net)  # value -> (channels, spatial size; 0 for flat vectors)
    ids: dict[str, int] = {}

    def value(name: str, data: Optional[np.ndarray] = None) -> int:
        """The NHWC (or flat) tensor of a value of the network."""
        channels, size = shapes[name]
        ids[name] = b.tensor(name, [1, size, size, channels] if size else [1, channels], data)
        return ids[name]

    def pool_options(kernel: int, stride: int, padding: int) -> Any:
        o = s.Pool2DOptionsT()
        o.padding, o.strideW, o.strideH, o.filterWidth, o.filterHeight = (
            padding,
            stride,
            stride,
            kernel,
            kernel,
        )
        return o

    def padded(
        name: str, src: int, channels: int, size: int, k: int, stride: int, pad: int
    ) -> tuple[int, int]:
        """The input and TFLite padding of a window of ``k`` with PyTorch's symmetric ``pad``."""
        if pad == 0:
            return src, s.Padding.VALID
        if stride == 1 and pad == k // 2:
            return src, s.Padding.SAME
        # symmetric padding SAME cannot express: explicit PAD (zeros), then VALID
        pads = b.tensor(f"{name}/pads", [4, 2], np.array([[0, 0], [pad, pad], [pad, pad], [0, 0]], np.int32),
                        dtype="int32")  # fmt: skip
        out = b.tensor(f"{name}/padded", [1, size + 2 * pad, size + 2 * pad, channels])
        b.op(s.BuiltinOperator.PAD, [src, pads], [out], s.BuiltinOptions.PadOptions, s.PadOptionsT())
        return out, s.Padding.VALID

    x_in = value(net.input_name)
    for layer in net.layers:
        if isinstance(layer, nw.Conv):
            cin, size = shapes[layer.src]
            k = int(layer.weight.shape[2])
            src = ids[layer.src]
            src, padding = padded(layer.out, src, cin, size, k, layer.stride, layer.pad)
            bias = b.tensor(f"{layer.out}/B", [layer.channels], layer.bias)
            out = value(layer.out)
            if layer.depthwise:  # TFLite keeps depthwise filters as (1, kh, kw, channels)
                w = b.tensor(f"{layer.out}/W", [1, k, k, layer.channels], layer.weight.transpose(1, 2, 3, 0))
                o = s.DepthwiseConv2DOptionsT()
                o.depthMultiplier = 1
                code, opt_type = s.BuiltinOperator.DEPTHWISE_CONV_2D, s.BuiltinOptions.DepthwiseConv2DOptions
            elif layer.groups == 1:
                w = b.tensor(
                    f"{layer.out}/W", [layer.channels, k, k, cin], layer.weight.transpose(0, 2, 3, 1)
                )
                o = s.Conv2DOptionsT()
                code, opt_type = s.BuiltinOperator.CONV_2D, s.BuiltinOptions.Conv2DOptions
            else:  # pragma: no cover - no search space asks for it
                raise ValueError(f"{layer.out}: grouped convolution with {layer.groups} groups")
            o.padding, o.strideW, o.strideH = padding, layer.stride, layer.stride
            o.dilationWFactor = o.dilationHFactor = 1
            b.op(code, [src, w, bias], [out], opt_type, o)
        elif isinstance(layer, (nw.Relu, nw.Relu6)):
            code = s.BuiltinOperator.RELU if isinstance(layer, nw.Relu) else s.BuiltinOperator.RELU6
            b.op(code, [ids[layer.src]], [value(layer.out)])
        elif isinstance(layer, nw.AvgPool):
            if layer.pad == 0:
                padding = s.Padding.VALID
            elif layer.stride == 1 and layer.pad == layer.kernel // 2:
                padding = s.Padding.SAME  # TFLite's SAME average skips the padding too
            else:  # pragma: no cover - no search space asks for it
                raise ValueError(f"{layer.out}: padded average pooling with stride {layer.stride}")
            b.op(
                s.BuiltinOperator.AVERAGE_POOL_2D,
                [ids[layer.src]],
                [value(layer.out)],
                s.BuiltinOptions.Pool2DOptions,
                pool_options(layer.kernel, layer.stride, padding),
            )
        elif isinstance(layer, nw.MaxPool):
            c, size = shapes[layer.src]
            # zero padding is exact: a max pool's input follows a ReLU (network.MaxPool)
            src, padding = padded(layer.out, ids[layer.src], c, size, layer.kernel, layer.stride, layer.pad)
            b.op(
                s.BuiltinOperator.MAX_POOL_2D,
                [src],
                [value(layer.out)],
                s.BuiltinOptions.Pool2DOptions,
                pool_options(layer.kernel, layer.stride, padding),
            )
        elif isinstance(layer, nw.Add):
            c, size = shapes[layer.srcs[0]]
            acc = ids[layer.srcs[0]]
            for i, term in enumerate(layer.srcs[1:], start=1):
                last = i == len(layer.srcs) - 1
                out = value(layer.out) if last else b.tensor(f"{layer.out}/{i}", [1, size, size, c])
                b.op(
                    s.BuiltinOperator.ADD,
                    [acc, ids[term]],
                    [out],
                    s.BuiltinOptions.AddOptions,
                    s.AddOptionsT(),
                )
                acc = out
        elif isinstance(layer, nw.Affine):
            c, size = shapes[layer.src]
            scaled = b.tensor(f"{layer.out}/scaled", [1, size, size, c])
            b.op(
                s.BuiltinOperator.MUL,
                [ids[layer.src], b.tensor(f"{layer.out}/scale", [c], layer.scale)],
                [scaled],
                s.BuiltinOptions.MulOptions,
                s.MulOptionsT(),
            )
            b.op(
                s.BuiltinOperator.ADD,
                [scaled, b.tensor(f"{layer.out}/shift", [c], layer.shift)],
                [value(layer.out)],
                s.BuiltinOptions.AddOptions,
                s.AddOptionsT(),
            )
        elif isinstance(layer, nw.Zeros):
            value(layer.out, np.zeros((1, layer.size, layer.size, layer.channels), np.float32))
        elif isinstance(layer, nw.GlobalAvgPool):
            axes = b.tensor(f"{layer.out}/axes", [2], np.array([1, 2], np.int32), dtype="int32")
            o = s.ReducerOptionsT()
            o.keepDims = False
            b.op(
                s.BuiltinOperator.MEAN,
                [ids[layer.src], axes],
                [value(layer.out)],
                s.BuiltinOptions.ReducerOptions,
                o,
            )
        elif isinstance(layer, nw.Dense):
            units = int(layer.weight.shape[0])
            w = b.tensor(f"{layer.out}/W", list(layer.weight.shape), layer.weight)
            bias = b.tensor(f"{layer.out}/B", [units], layer.bias)
            b.op(
                s.BuiltinOperator.FULLY_CONNECTED,
                [ids[layer.src], w, bias],
                [value(layer.out)],
                s.BuiltinOptions.FullyConnectedOptions,
                s.FullyConnectedOptionsT(),
            )
        else:  # pragma: no cover - a new layer type without a writer
            raise TypeError(f"no TFLite writer for {type(layer).__name__}")
    description = "\n".join((net.name, *net.notes))
    return b.build([x_in], [ids[net.output]], description=description)
