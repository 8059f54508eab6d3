"""A MobileNetV2-style space of the Once-for-All family (OFA's ProxylessNAS backbone).

The fixed frame: a 3x3 stride-2 convolution to 32 channels, an inverted-residual
block with expansion 1 to 16 channels, five searchable stages of widths 24, 40, 80,
96, 192 and strides 2, 2, 2, 1, 2, one more inverted-residual block to 320, a 1x1
"feature mix" convolution to 1280, global average pooling and a classifier.  Every
convolution has batch norm (folded) and ReLU6, except each block's linear projection.

What is searched, per stage: depth d in {2, 3, 4}; per block: depthwise kernel k in
{3, 5, 7} and expansion ratio e in {3, 4, 6}.  The first block of a stage has the
stage's stride; the others have stride 1 and a residual connection.

Arch string, compact: ``d:23423-k:35737...-e:34646...`` with the five depths, then one
kernel digit and one expansion digit per block in use (sum of the depths: 10 to 20).
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

WIDTHS = (24, 40, 80, 96, 192)
STRIDES = (2, 2, 2, 1, 2)
DEPTHS = (2, 3, 4)
KERNELS = (3, 5, 7)
EXPANSIONS = (3, 4, 6)
STEM, FIRST_BLOCK, LAST_BLOCK, FEATURE_MIX = 32, 16, 320, 1280
MAX_BLOCKS = 4 * len(WIDTHS)


def parse_arch(arch: str) -> tuple[tuple[int, ...], tuple[int, ...], tuple[int, ...]]:
    """(depths, kernels, expansions) of an arch string; ValueError says what is wrong.

    >>> parse_arch("d:22222-k:3333333333-e:6666666666")[0]
    (2, 2, 2, 2, 2)
    """
    parts = arch.strip().split("-")
    if len(parts) != 3 or [p[:2] for p in parts] != ["d:", "k:", "e:"]:
        raise ValueError(
            "it must read d:DDDDD-k:KKK...-e:EEE... (depths, then a kernel and an expansion per block)"
        )
    fields = []
    for part in parts:
        digits = part[2:]
        if not digits.isdigit():
            raise ValueError(f"{part[0]}: must be digits (got {digits!r})")
        fields.append(tuple(int(c) for c in digits))
    depths, kernels, expansions = fields
    if len(depths) != len(WIDTHS):
        raise ValueError(f"d: needs {len(WIDTHS)} stage depths (got {len(depths)})")
    for name, values, allowed in (
        ("depth", depths, DEPTHS),
        ("kernel", kernels, KERNELS),
        ("expansion", expansions, EXPANSIONS),
    ):
        bad = [v for v in values if v not in allowed]
        if bad:
            raise ValueError(f"{name} {bad[0]} is out of range (choose from {', '.join(map(str, allowed))})")
    blocks = sum(depths)
    for name, values in (("k", kernels), ("e", expansions)):
        if len(values) != blocks:
            raise ValueError(
                f"{name}: needs one digit per block: {blocks} for depths {''.join(map(str, depths))}"
            )
    return depths, kernels, expansions


def format_arch(depths: Sequence[int], kernels: Sequence[int], expansions: Sequence[int]) -> str:
    """Inverse of ``parse_arch``."""
    return f"d:{''.join(map(str, depths))}-k:{''.join(map(str, kernels))}-e:{''.join(map(str, expansions))}"


def check_options(classes: int, resolution: int) -> None:
    """ValueError unless ``classes`` and ``resolution`` make a network of this space."""
    if not 1 <= classes <= 100_000:
        raise ValueError(f"classes must be from 1 to 100000 (got {classes})")
    if not 32 <= resolution <= 1024 or resolution % 32:
        raise ValueError(f"resolution must be a multiple of 32 from 32 to 1024 (got {resolution})")


def sample(n: int, rng: Any) -> list[str]:
    """``n`` distinct architectures: depths uniform per stage, kernel and expansion per block."""
    seen: dict[str, None] = {}
    while len(seen) < n:
        depths = [int(d) for d in rng.choice(DEPTHS, len(WIDTHS))]
        blocks = sum(depths)
        kernels = [int(k) for k in rng.choice(KERNELS, blocks)]
        expansions = [int(e) for e in rng.choice(EXPANSIONS, blocks)]
        seen.setdefault(format_arch(depths, kernels, expansions))
    return list(seen)


def build(arch: str, classes: int = 1000, resolution: int = 224, seed: int = 0) -> Any:
    """The network of ``arch`` as a ``Network`` (random seeded weights, batch norm folded)."""
    import numpy as np

    from agent.materialize import network as nw

    depths, kernels, expansions = parse_arch(arch)
    check_options(classes, resolution)
    weights = nw.SeededWeights(seed)
    layers: list = []

    def conv(
        name: str, src: str, cin: int, cout: int, k: int, stride: int = 1, groups: int = 1, act: bool = True
    ) -> str:
        w, b = weights.conv_bn(cin // groups, cout, k)
        layers.append(
            nw.Conv(f"{name}/conv" if act else name, src, w, b, stride=stride, pad=k // 2, groups=groups)
        )
        if act:
            layers.append(nw.Relu6(name, f"{name}/conv"))
        return name

    def block(name: str, src: str, cin: int, cout: int, k: int, e: int, stride: int) -> str:
        mid = cin * e
        x = conv(f"{name}/expand", src, cin, mid, 1) if e != 1 else src
        x = conv(f"{name}/dw", x, mid, mid, k, stride=stride, groups=mid)
        x = conv(f"{name}/project", x, mid, cout, 1, act=False)
        if stride == 1 and cin == cout:
            layers.append(nw.Add(name, (x, src)))
            return name
        return x

    x = conv("stem", "input", 3, STEM, 3, stride=2)
    x = block("first", x, STEM, FIRST_BLOCK, 3, 1, 1)
    c, i = FIRST_BLOCK, 0
    for stage, (depth, width, stride) in enumerate(zip(depths, WIDTHS, STRIDES)):
        for j in range(depth):
            x = block(
                f"stage{stage}/block{j}", x, c, width, kernels[i], expansions[i], stride if j == 0 else 1
            )
            c, i = width, i + 1
    x = block("last", x, c, LAST_BLOCK, 3, 6, 1)
    x = conv("feature_mix", x, LAST_BLOCK, FEATURE_MIX, 1)
    layers.append(nw.GlobalAvgPool("pool", x))
    w = (weights.rng.standard_normal((classes, FEATURE_MIX)) / FEATURE_MIX**0.5).astype(np.float32)
    layers.append(nw.Dense("logits", "pool", w, np.zeros(classes, np.float32)))
    return nw.Network(
        f"mobilenetv2 {format_arch(depths, kernels, expansions)}", 3, resolution, tuple(layers), "logits"
    )
