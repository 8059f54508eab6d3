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
class MaxPool:
    """Max pooling; its input is never negative (it follows a ReLU), so zero padding is exact."""

    out: str
    src: str
    kernel: int
    stride: int
    pad: int = 0


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


Layer = Union[Conv, Relu, Relu6, AvgPool, MaxPool, Add, Affine, Zeros, GlobalAvgPool, Dense]


@dataclass(frozen=True)
class Network:
    name: str
    input_channels: int
    resolution: int
    layers: tuple[Layer, ...]
    output: str
    notes: tuple[str, ...] = field(default=())
    input_name: str = "input"


def bn_scale_shift(
    gamma: np.ndarray, beta: np.ndarray, mean: np.ndarray, var: np.ndarray, eps: float = 1e-5
) -> tuple[np.ndarray, np.ndarray]:
    """Inference batch norm as ``x * scale + shift``, per channel."""
    scale = gamma / np.sqrt(var + eps)
    return scale, beta - mean * scale


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
    scale, shift = bn_scale_shift(gamma, beta, mean, var, eps)
    return (weight * scale[:, None, None, None]).astype(np.float32), shift.astype(np.float32)


class SeededWeights:
    """Random weights drawn in build order: the same architecture and seed give the same model.

    Batch-norm statistics are random too (and folded), so activations keep a sane scale
    through a deep network; latency does not depend on any of these values.
    """

    def __init__(self, seed: int) -> None:
        self.rng = np.random.default_rng(seed)

    def _bn(self, c: int) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
        rng = self.rng
        gamma, beta = rng.uniform(0.5, 1.0, c), rng.normal(0.0, 0.1, c)
        mean, var = rng.normal(0.0, 0.1, c), rng.uniform(0.5, 1.5, c)
        return gamma, beta, mean, var

    def conv_bn(self, cin: int, cout: int, k: int) -> tuple[np.ndarray, np.ndarray]:
        """He-initialized (cout, cin, k, k) weights with a batch norm folded in."""
        w = self.rng.standard_normal((cout, cin, k, k)) * (2.0 / (cin * k * k)) ** 0.5
        return fold_bn(w, *self._bn(cout))

    def affine(self, c: int) -> tuple[np.ndarray, np.ndarray]:
        """A batch norm with nothing to fold into, as per-channel scale and shift."""
        scale, shift = bn_scale_shift(*self._bn(c))
        return scale.astype(np.float32), shift.astype(np.float32)

    def dense(self, cin: int, cout: int) -> tuple[np.ndarray, np.ndarray]:
        w = self.rng.standard_normal((cout, cin)) / cin**0.5
        return w.astype(np.float32), self.rng.normal(0.0, 0.01, cout).astype(np.float32)


def value_shapes(net: Network) -> dict[str, tuple[int, int]]:
    """(channels, spatial size) of every value; size 0 for flat vectors (pooled, logits)."""
    shapes = {net.input_name: (net.input_channels, net.resolution)}
    for layer in net.layers:
        if isinstance(layer, Conv):
            c, size = shapes[layer.src]
            k = layer.weight.shape[2]
            shapes[layer.out] = (layer.channels, (size + 2 * layer.pad - k) // layer.stride + 1)
        elif isinstance(layer, (AvgPool, MaxPool)):
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
