"""Prunable network families: ResNet (CIFAR and ImageNet shapes) and MobileNetV1, with per-layer widths.

A family's network is described once, as a ``Plan``: its operations in execution order,
each convolution with batch norm *unfolded* (so training and pruning see the real
parameters) and, where its output channels can be pruned, the index of the width that
sets them.  Every materialization reads the same plan: the device's ``Network`` (batch
norm folded, then ONNX or TFLite), PyTorch (``coordinator.prune.torchnet``), FLOPs and
parameter counts, and the layer keys of a width lookup table.  This module needs no numpy.

Which channels can be pruned (the rule): a layer's output channels are prunable unless
a residual addition ties them to another layer's.  In a ResNet basic block (resnet20,
resnet56) that is the first convolution; in a bottleneck (resnet50), the first two; in
MobileNetV1 the stem and every pointwise convolution (each depthwise convolution keeps
the channels of its input).  Block outputs, projection shortcuts and the stem of a
ResNet are left alone, as is usual in channel pruning.

Width spec (the "arch" of a family): ``full`` (every prunable layer at its full width);
``x0.5`` (every prunable layer at round(0.5 x full), at least 1: MobileNetV1's width
multiplier, or uniform pruning); or the channels of every prunable layer, in order,
separated by commas (``8,16,16,...``: as many as the family has prunable layers, each
from 1 to twice its full width).

FLOPs are multiply-accumulates of convolutions and the classifier, as the pruning
literature counts them (ResNet-50: 4.1 G); parameters are weights, biases and batch-norm
scales and shifts.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any, Optional, Union

FAMILIES = ("resnet20", "resnet56", "resnet50", "mobilenetv1")
#: (classes, resolution) unless asked otherwise
DEFAULTS = {"resnet20": (10, 32), "resnet56": (10, 32), "resnet50": (1000, 224), "mobilenetv1": (1000, 224)}
#: how far a width spec may widen a layer
MAX_WIDEN = 2.0
#: what a layer's cost is mostly made of (``lut.kind``); a board ages unevenly across these (a
#: throttled clock slows arithmetic, worn or shared memory the elementwise layers, fewer cores the
#: large convolutions most).  Here, not in ``lut``, so the daemon can count them without numpy.
KINDS = ("conv", "pointwise", "depthwise", "memory", "head")
#: a width table's candidate widths, in percent of each prunable layer's full width, unless asked otherwise
DEFAULT_GRID = (25, 50, 75, 100)


@dataclass(frozen=True)
class ConvOp:
    """A convolution without bias, its batch norm, and a ReLU unless ``relu`` is False."""

    name: str
    src: str
    cin: int
    cout: int
    kernel: int
    stride: int = 1
    depthwise: bool = False
    relu: bool = True
    #: the width (index into the spec) that sets ``cout``; a depthwise convolution shares its input's
    width: Optional[int] = None
    #: the width that sets ``cin`` (the producer of ``src`` was pruned), None when fixed
    cin_width: Optional[int] = None
    size: int = 0  # input height and width

    @property
    def pad(self) -> int:
        return self.kernel // 2

    @property
    def out_size(self) -> int:
        return (self.size + 2 * self.pad - self.kernel) // self.stride + 1

    @property
    def macs(self) -> int:
        per_output = (1 if self.depthwise else self.cin) * self.kernel * self.kernel
        return self.cout * per_output * self.out_size**2

    @property
    def params(self) -> int:
        return self.cout * (1 if self.depthwise else self.cin) * self.kernel**2 + 2 * self.cout


@dataclass(frozen=True)
class AddOp:
    """A residual addition, then a ReLU."""

    name: str
    srcs: tuple[str, str]
    channels: int
    size: int


@dataclass(frozen=True)
class MaxPoolOp:
    """Max pooling (it always follows a ReLU, so zero padding equals -inf padding)."""

    name: str
    src: str
    channels: int
    size: int
    kernel: int = 3
    stride: int = 2
    pad: int = 1

    @property
    def out_size(self) -> int:
        return (self.size + 2 * self.pad - self.kernel) // self.stride + 1


@dataclass(frozen=True)
class HeadOp:
    """Global average pooling and a linear classifier."""

    name: str
    src: str
    cin: int
    classes: int
    size: int
    cin_width: Optional[int] = None

    @property
    def macs(self) -> int:
        return self.cin * self.classes

    @property
    def params(self) -> int:
        return self.cin * self.classes + self.classes


Op = Union[ConvOp, AddOp, MaxPoolOp, HeadOp]


@dataclass(frozen=True)
class Plan:
    family: str
    widths: tuple[int, ...]
    classes: int
    resolution: int
    ops: tuple[Op, ...]

    @property
    def output(self) -> str:
        return self.ops[-1].name

    @property
    def spec(self) -> str:
        return format_widths(self.widths)

    @property
    def macs(self) -> int:
        return sum(op.macs for op in self.ops if isinstance(op, (ConvOp, HeadOp)))

    @property
    def params(self) -> int:
        return sum(op.params for op in self.ops if isinstance(op, (ConvOp, HeadOp)))

    def at(self, spec: Union[str, Sequence[int]]) -> Plan:
        """The same network (family, classes, resolution) at other widths (a spec or the widths)."""
        return plan(
            self.family, spec if isinstance(spec, str) else tuple(spec), self.classes, self.resolution
        )

    def producers(self) -> dict[int, ConvOp]:
        """The (non-depthwise) convolution whose filters each width counts."""
        return {op.width: op for op in self.ops if isinstance(op, ConvOp) and op.width is not None
                and not op.depthwise}  # fmt: skip


# -- the families ------------------------------------------------------------------------------


class _Builder:
    """Appends operations, tracking each value's channels, size and the width that set them."""

    def __init__(self, resolution: int, widths: Optional[Sequence[int]]) -> None:
        self.ops: list[Op] = []
        self.shape: dict[str, tuple[int, int, Optional[int]]] = {"input": (3, resolution, None)}
        self.widths = widths
        self.full: list[int] = []  # the full width of each prunable layer, in order

    def conv(self, name: str, src: str, cout: int, k: int, stride: int = 1, relu: bool = True,
             prunable: bool = False, depthwise: bool = False) -> str:  # fmt: skip
        cin, size, cin_width = self.shape[src]
        width: Optional[int] = None
        if depthwise:
            cout, width = cin, cin_width
        elif prunable:
            width = len(self.full)
            self.full.append(cout)
            if self.widths is not None:
                cout = self.widths[width]
        op = ConvOp(name, src, cin, cout, k, stride, depthwise, relu, width, cin_width, size)
        self.ops.append(op)
        self.shape[name] = (cout, op.out_size, width)
        return name

    def add(self, name: str, a: str, b: str) -> str:
        channels, size, _ = self.shape[a]
        self.ops.append(AddOp(name, (a, b), channels, size))
        self.shape[name] = (channels, size, None)
        return name

    def maxpool(self, name: str, src: str) -> str:
        channels, size, width = self.shape[src]
        op = MaxPoolOp(name, src, channels, size)
        self.ops.append(op)
        self.shape[name] = (channels, op.out_size, width)
        return name

    def head(self, src: str, classes: int) -> None:
        cin, size, width = self.shape[src]
        self.ops.append(HeadOp("fc", src, cin, classes, size, width))


def _cifar_resnet(b: _Builder, blocks: int) -> None:
    x = b.conv("stem", "input", 16, 3)
    c = 16
    for stage, width in enumerate((16, 32, 64)):
        for j in range(blocks):
            stride = 2 if stage and j == 0 else 1
            name = f"s{stage}b{j}"
            y = b.conv(f"{name}c1", x, width, 3, stride, prunable=True)
            y = b.conv(f"{name}c2", y, width, 3, relu=False)
            # option B: a 1x1 projection where the shape changes, identity elsewhere
            short = b.conv(f"{name}sc", x, width, 1, stride, relu=False) if stride != 1 or c != width else x
            x, c = b.add(name, y, short), width


def _resnet50(b: _Builder) -> None:
    x = b.conv("stem", "input", 64, 7, 2)
    x = b.maxpool("pool", x)
    c = 64
    for stage, (mid, blocks) in enumerate(zip((64, 128, 256, 512), (3, 4, 6, 3))):
        out = mid * 4
        for j in range(blocks):
            stride = 2 if stage and j == 0 else 1  # on the 3x3, as torchvision's ResNet v1.5
            name = f"s{stage}b{j}"
            y = b.conv(f"{name}c1", x, mid, 1, prunable=True)
            y = b.conv(f"{name}c2", y, mid, 3, stride, prunable=True)
            y = b.conv(f"{name}c3", y, out, 1, relu=False)
            short = b.conv(f"{name}sc", x, out, 1, stride, relu=False) if j == 0 else x
            x, c = b.add(name, y, short), out
    del c


#: MobileNetV1's separable blocks: (pointwise channels, depthwise stride)
MOBILENETV1_BLOCKS = ((64, 1), (128, 2), (128, 1), (256, 2), (256, 1), (512, 2), *((512, 1),) * 5,
                      (1024, 2), (1024, 1))  # fmt: skip


def _mobilenetv1(b: _Builder) -> None:
    x = b.conv("stem", "input", 32, 3, 2, prunable=True)
    for i, (channels, stride) in enumerate(MOBILENETV1_BLOCKS):
        x = b.conv(f"b{i}dw", x, 0, 3, stride, depthwise=True)
        x = b.conv(f"b{i}pw", x, channels, 1, prunable=True)


def _build(family: str, widths: Optional[Sequence[int]], classes: int, resolution: int) -> _Builder:
    b = _Builder(resolution, widths)
    if family == "resnet20":
        _cifar_resnet(b, 3)
    elif family == "resnet56":
        _cifar_resnet(b, 9)
    elif family == "resnet50":
        _resnet50(b)
    elif family == "mobilenetv1":
        _mobilenetv1(b)
    else:
        raise ValueError(f"unknown family {family!r} (known: {', '.join(FAMILIES)})")
    last = b.ops[-1].name
    b.head(last, classes)
    return b


def full_widths(family: str) -> tuple[int, ...]:
    """The full width of every prunable layer, in order.

    >>> len(full_widths("resnet56")), full_widths("resnet20")[:4]
    (27, (16, 16, 16, 32))
    """
    if family not in FAMILIES:
        raise ValueError(f"unknown family {family!r} (known: {', '.join(FAMILIES)})")
    return tuple(_build(family, None, 10, 224 if family in ("resnet50", "mobilenetv1") else 32).full)


def plan(family: str, spec: Union[str, Sequence[int]] = "full", classes: Optional[int] = None,
         resolution: Optional[int] = None) -> Plan:  # fmt: skip
    """The plan of ``family`` at the widths of ``spec``; ValueError says what is wrong."""
    widths = parse_widths(family, spec) if isinstance(spec, str) else check_widths(family, spec)
    default_classes, default_resolution = DEFAULTS[family]
    classes, resolution = classes or default_classes, resolution or default_resolution
    check_options(classes, resolution, family)
    return Plan(family, widths, classes, resolution, tuple(_build(family, widths, classes, resolution).ops))


# -- width specs -------------------------------------------------------------------------------


def parse_widths(family: str, spec: str) -> tuple[int, ...]:
    """The widths a spec names; ValueError says what does not fit the family.

    >>> parse_widths("resnet20", "x0.5")
    (8, 8, 8, 16, 16, 16, 32, 32, 32)
    """
    full = full_widths(family)
    text = spec.strip()
    if text in ("", "full"):
        return full
    if text.startswith("x"):
        try:
            ratio = float(text[1:])
        except ValueError:
            raise ValueError(f"width multiplier {text!r} must read xR with a number R, e.g. x0.5") from None
        if not 0 < ratio <= MAX_WIDEN:
            raise ValueError(f"width multiplier {text!r} must be above 0 and at most {MAX_WIDEN:g}")
        return tuple(max(1, round(w * ratio)) for w in full)
    parts = text.split(",")
    if not all(p.strip().isdigit() for p in parts):
        raise ValueError(
            f"widths {text[:40]!r} must be 'full', a multiplier like x0.5, or {len(full)} channel counts "
            "separated by commas"
        )
    return check_widths(family, [int(p) for p in parts])


def check_widths(family: str, widths: Sequence[int]) -> tuple[int, ...]:
    full = full_widths(family)
    if len(widths) != len(full):
        raise ValueError(f"{family} has {len(full)} prunable layers; the spec gives {len(widths)} widths")
    for i, (w, f) in enumerate(zip(widths, full)):
        if not 1 <= w <= MAX_WIDEN * f:
            raise ValueError(f"width {i + 1} ({w}) must be from 1 to {int(MAX_WIDEN * f)} (full: {f})")
    return tuple(int(w) for w in widths)


def format_widths(widths: Sequence[int]) -> str:
    return ",".join(map(str, widths))


def grid_widths(family: str, percents: Sequence[int]) -> list[tuple[int, ...]]:
    """Each prunable layer's candidate widths at ``percents`` of its full width (distinct, ascending)."""
    return [tuple(sorted({max(1, round(f * p / 100)) for p in percents})) for f in full_widths(family)]


def check_options(classes: int, resolution: int, family: str = "resnet20") -> None:
    """ValueError unless the family makes a network with these outputs and input size."""
    if not 1 <= classes <= 100_000:
        raise ValueError(f"classes must be from 1 to 100000 (got {classes})")
    step, low = (32, 32) if family in ("resnet50", "mobilenetv1") else (4, 8)
    if not low <= resolution <= 1024 or resolution % step:
        raise ValueError(
            f"{family}'s resolution must be a multiple of {step} from {low} to 1024 (got {resolution})"
        )


def sample(family: str, n: int, rng: Any, percents: Optional[Sequence[int]] = None) -> list[str]:
    """``n`` distinct width specs spread from thin to full: each picks an overall level, then
    every layer a width near it (on the grid of ``percents`` when given)."""
    full = full_widths(family)
    grid = grid_widths(family, percents) if percents else None
    seen: dict[str, None] = {}
    tries = 0
    while len(seen) < n:
        tries += 1
        if tries > 100 * n + 1000:
            raise ValueError(f"{family} has fewer than {n} distinct width specs on this grid")
        level = rng.uniform(0.2, 1.0)
        widths = []
        for i, f in enumerate(full):
            ratio = min(1.0, max(0.05, level * rng.uniform(0.6, 1.4)))
            if grid is not None:
                options = grid[i]
                widths.append(min(options, key=lambda w: abs(w - f * ratio)))
            else:
                widths.append(max(1, round(f * ratio)))
        seen.setdefault(format_widths(widths))
    return list(seen)


def cover_specs(family: str, percents: Sequence[int]) -> list[tuple[int, ...]]:
    """Width specs whose layers, together, are every layer of every spec on the grid.

    A layer's cost depends on at most two widths, and they are always neighbours in the
    spec (a convolution's input and output; a bottleneck's first and second), so giving
    the even-numbered layers one grid step and the odd-numbered another, over all pairs
    of steps, meets every combination: len(percents)**2 specs, not len(percents)**layers.
    """
    grid = grid_widths(family, percents)
    steps = max(len(options) for options in grid)
    return [tuple(options[min(a if i % 2 == 0 else b, len(options) - 1)] for i, options in enumerate(grid))
            for a in range(steps) for b in range(steps)]  # fmt: skip


def table_size(family: str, percents: Sequence[int], resolution: Optional[int] = None) -> int:
    """How many distinct layers a width table of ``family`` times (``lut.run_widths``), without
    numpy: the daemon estimates a job's time with it."""
    seen: set[tuple] = set()
    for widths in cover_specs(family, percents):
        for op in plan(family, widths, resolution=resolution).ops:
            if isinstance(op, ConvOp):
                seen.add(("conv", op.depthwise, op.cin, op.cout, op.size, op.kernel, op.stride))
                if op.relu:
                    seen.add(("relu", op.cout, op.out_size))
            elif isinstance(op, AddOp):
                seen.update({("add", op.channels, op.size), ("relu", op.channels, op.size)})
            elif isinstance(op, MaxPoolOp):
                seen.add(("maxpool", op.channels, op.size))
            else:
                seen.add(("head", op.cin, op.classes, op.size))
    return len(seen)
