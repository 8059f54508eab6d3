"""A small description of a feed-forward CNN, independent of ONNX and TFLite.

A ``Network`` is an input shape and a list of layers in execution order; every layer
reads named values and writes one.  Weights are numpy arrays in PyTorch's layout
(convolutions OIHW, dense OI); each writer converts to its runtime's layout (ONNX
NCHW as is, TFLite NHWC/OHWI).  Batch norm is already folded into the convolution
before it, as an inference graph would have it.  ``notes`` says what the builder
simplified (dead edges removed, constant cells), so the model can say so too.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Union

import numpy as np


@dataclass(frozen=True)
class Conv:
    out: str
    src: str
    weight: np.ndarray  # (out_channels, in_channels / groups, kh, kw)
    bias: np.ndarray  # (out_channels,)
    stride: int = 1
    pad: int = 0  # symmetric, as PyTorch pads
    groups: int = 1  # == channels: a depthwise convolution

    @property
    def depthwise(self) -> bool:
        return self.groups > 1 and self.groups == self.channels and self.weight.shape[1] == 1

    @property
    def channels(self) -> int:
        return int(self.weight.shape[0])


@dataclass(frozen=True)
class Relu:
    out: str
    src: str


@dataclass(frozen=True)
class Relu6:
    out: str
    src: str


@dataclass(frozen=True)
class AvgPool:
    out: str
    src: str
    kernel: int
    stride: int
    pad: int = 0  # padded cells are not counted in the average (count_include_pad=False)


@dataclass(frozen=True)
class Add:
    out: str
    srcs: tuple[str, ...]


@dataclass(frozen=True)
class Affine:
    """Per-channel ``x * scale + shift`` (a batch norm with nothing before it to fold into)."""

    out: str
    src: str
    scale: np.ndarray
    shift: np.ndarray


@dataclass(frozen=True)
class Zeros:
    """A constant zero feature map: a cell whose every path was cut by ``none`` edges."""

    out: str
    channels: int
    size: int


@dataclass(frozen=True)
class GlobalAvgPool:
    out: str
    src: str  # (N, C, H, W) -> (N, C)


@dataclass(frozen=True)
class Dense:
    out: str
    src: str
    weight: np.ndarray  # (out_features, in_features)
    bias: np.ndarray


Layer = Union[Conv, Relu, Relu6, AvgPool, Add, Affine, Zeros, GlobalAvgPool, Dense]


@dataclass(frozen=True)
class Network:
    name: str
    input_channels: int
    resolution: int
    layers: tuple[Layer, ...]
    output: str
    notes: tuple[str, ...] = field(default=())
    input_name: str = "input"


def fold_bn(
    weight: np.ndarray,
    gamma: np.ndarray,
    beta: np.ndarray,
    mean: np.ndarray,
    var: np.ndarray,
    eps: float = 1e-5,
) -> tuple[np.ndarray, np.ndarray]:
    """A bias-free convolution followed by batch norm, as one convolution with a bias.

    >>> one = np.array([1.0])
    >>> w, b = fold_bn(np.ones((1, 1, 1, 1)), 2 * one, one, 0.5 * one, 3 * one, eps=1.0)
    >>> float(w[0, 0, 0, 0]), float(b[0])
    (1.0, 0.5)
    """
    scale = gamma / np.sqrt(var + eps)
    return (weight * scale[:, None, None, None]).astype(np.float32), (beta - mean * scale).astype(np.float32)


def value_shapes(net: Network) -> dict[str, tuple[int, int]]:
    """(channels, spatial size) of every value; size 0 for flat vectors (pooled, logits)."""
    shapes = {net.input_name: (net.input_channels, net.resolution)}
    for layer in net.layers:
        if isinstance(layer, Conv):
            c, size = shapes[layer.src]
            k = layer.weight.shape[2]
            shapes[layer.out] = (layer.channels, (size + 2 * layer.pad - k) // layer.stride + 1)
        elif isinstance(layer, AvgPool):
            c, size = shapes[layer.src]
            shapes[layer.out] = (c, (size + 2 * layer.pad - layer.kernel) // layer.stride + 1)
        elif isinstance(layer, Add):
            shapes[layer.out] = shapes[layer.srcs[0]]
        elif isinstance(layer, Zeros):
            shapes[layer.out] = (layer.channels, layer.size)
        elif isinstance(layer, GlobalAvgPool):
            shapes[layer.out] = (shapes[layer.src][0], 0)
        elif isinstance(layer, Dense):
            shapes[layer.out] = (int(layer.weight.shape[0]), 0)
        else:  # Relu, Relu6, Affine keep their input's shape
            shapes[layer.out] = shapes[layer.src]
    return shapes
