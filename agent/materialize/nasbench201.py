"""NAS-Bench-201 architectures: the arch-string grammar and the network it names.

A cell has 4 nodes and 6 edges, each edge one of 5 operations.  Arch string:
``|op~0|+|op~0|op~1|+|op~0|op~1|op~2|``: node 1 from node 0; node 2 from nodes 0 and
1; node 3 (the cell output) from nodes 0, 1 and 2.  The grammar lives here, on the
device side, because agents materialize architectures they are sent; the
coordinator's search space imports it.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

OPS = ("none", "skip_connect", "nor_conv_1x1", "nor_conv_3x3", "avg_pool_3x3")
# (source node, target node) of the 6 edges, in arch-string order.
EDGES = ((0, 1), (0, 2), (1, 2), (0, 3), (1, 3), (2, 3))

Edge = tuple[int, int, str]


def parse_arch(arch: str) -> tuple[str, ...]:
    """The 6 edge ops of a NAS-Bench-201 arch string, in ``EDGES`` order.

    >>> parse_arch("|nor_conv_3x3~0|+|none~0|skip_connect~1|+|avg_pool_3x3~0|none~1|nor_conv_1x1~2|")
    ('nor_conv_3x3', 'none', 'skip_connect', 'avg_pool_3x3', 'none', 'nor_conv_1x1')
    """
    text = arch.strip()
    if not (text.startswith("|") and text.endswith("|")):
        raise ValueError("it must start and end with '|'")
    nodes = text[1:-1].split("|+|")
    if len(nodes) != 3:
        raise ValueError(f"it has {len(nodes)} node groups separated by '|+|', not 3")
    ops = []
    for j, node in enumerate(nodes, start=1):
        tokens = node.split("|")
        if len(tokens) != j:
            raise ValueError(f"node {j} must have {j} input edge(s), not {len(tokens)}")
        for i, tok in enumerate(tokens):
            op, sep, src = tok.partition("~")
            if not sep or src != str(i):
                raise ValueError(f"edge {tok!r} of node {j} must be written op~{i}")
            if op not in OPS:
                raise ValueError(f"unknown operation {op!r} (known: {', '.join(OPS)})")
            ops.append(op)
    return tuple(ops)


def format_arch(ops: Sequence[str]) -> str:
    """Inverse of ``parse_arch``."""
    groups, k = [], 0
    for j in (1, 2, 3):
        groups.append("|".join(f"{ops[k + i]}~{i}" for i in range(j)))
        k += j
    return "|" + "|+|".join(groups) + "|"


def alive_edges(ops: Sequence[str]) -> tuple[bool, ...]:
    """Which edges can affect the cell output (see module doc).

    >>> alive_edges(("nor_conv_3x3", "none", "none", "none", "none", "skip_connect"))
    (False, False, False, False, False, False)
    >>> alive_edges(("nor_conv_3x3", "none", "skip_connect", "none", "none", "skip_connect"))
    (True, False, True, False, False, True)
    """
    reach_in = {0}
    for (src, dst), op in sorted(zip(EDGES, ops), key=lambda e: e[0][1]):
        if op != "none" and src in reach_in:
            reach_in.add(dst)
    reach_out = {3}
    for (src, dst), op in sorted(zip(EDGES, ops), key=lambda e: -e[0][0]):
        if op != "none" and dst in reach_out:
            reach_out.add(src)
    return tuple(op != "none" and src in reach_in and dst in reach_out for (src, dst), op in zip(EDGES, ops))


def sample(n: int, rng: Any) -> list[str]:
    """``n`` distinct architectures, uniformly from all 15,625 (``rng``: a numpy Generator)."""
    total = len(OPS) ** len(EDGES)
    if n > total:
        raise ValueError(f"nas-bench-201 has only {total} architectures")
    archs = []
    for code in rng.choice(total, size=n, replace=False):
        ops = []
        for _ in EDGES:
            ops.append(OPS[code % len(OPS)])
            code //= len(OPS)
        archs.append(format_arch(ops))
    return archs


# -- the network an arch string names ------------------------------------------------------

STEM_CHANNELS = 16
CELLS_PER_STAGE = 5
CLASSES = (10, 100, 120)


def check_options(classes: int, resolution: int) -> None:
    """ValueError unless the benchmark defines networks with these outputs and this input size."""
    if classes not in CLASSES:
        raise ValueError(f"classes must be one of {', '.join(map(str, CLASSES))} (got {classes})")
    if not 8 <= resolution <= 512 or resolution % 4:
        raise ValueError(f"resolution must be a multiple of 4 from 8 to 512 (got {resolution})")


def build(arch: str, classes: int = 10, resolution: int = 32, seed: int = 0) -> Any:
    """The NAS-Bench-201 network of ``arch`` as a ``Network`` (the benchmark's TinyNetwork).

    3x3 stem convolution (16 channels) with batch norm; three stages of five cells at 16,
    32 and 64 channels, joined by residual reduction blocks (ReLU-conv-BN 3x3 stride 2,
    ReLU-conv-BN 3x3, plus a 2x2 average pool and 1x1 convolution shortcut); then batch
    norm, ReLU, global average pooling and a linear classifier.  Cell edges:
    ``skip_connect`` is identity, ``nor_conv_KxK`` is ReLU-conv-BN, ``avg_pool_3x3``
    averages 3x3 windows without counting the padding, ``none`` contributes nothing.

    Like a graph optimizer, the builder removes edges that cannot affect the cell output
    (``alive_edges``) and computes each node's ReLU once for all convolutions reading it;
    a cell with no path from input to output is a constant zero map.  ``notes`` lists
    what was removed.
    """
    import numpy as np

    from agent.materialize import network as nw

    ops = parse_arch(arch)
    check_options(classes, resolution)
    weights = nw.SeededWeights(seed)
    layers: list = []
    notes: list[str] = []
    alive = alive_edges(ops)
    dead = [f"{op}~{src}->{dst}" for (src, dst), op, ok in zip(EDGES, ops, alive) if op != "none" and not ok]
    if dead:
        notes.append(f"dead edges removed in every cell: {', '.join(dead)}")
    cell_is_constant = not any(alive[e] for e, (_, dst) in enumerate(EDGES) if dst == 3)
    if cell_is_constant:
        notes.append("no path from cell input to output: every cell is a constant zero map")

    c, size = STEM_CHANNELS, resolution
    w, b = weights.conv_bn(3, c, 3)
    layers.append(nw.Conv("stem", "input", w, b, stride=1, pad=1))
    x = "stem"
    for stage in range(3):
        if stage:
            cout = c * 2
            prefix = f"reduce{stage}"
            layers.append(nw.Relu(f"{prefix}/relu_a", x))
            w, b = weights.conv_bn(c, cout, 3)
            layers.append(nw.Conv(f"{prefix}/conv_a", f"{prefix}/relu_a", w, b, stride=2, pad=1))
            layers.append(nw.Relu(f"{prefix}/relu_b", f"{prefix}/conv_a"))
            w, b = weights.conv_bn(cout, cout, 3)
            layers.append(nw.Conv(f"{prefix}/conv_b", f"{prefix}/relu_b", w, b, stride=1, pad=1))
            layers.append(nw.AvgPool(f"{prefix}/pool", x, kernel=2, stride=2))
            shortcut = weights.rng.standard_normal((cout, c, 1, 1)) * (2.0 / c) ** 0.5
            layers.append(
                nw.Conv(
                    f"{prefix}/shortcut",
                    f"{prefix}/pool",
                    shortcut.astype(np.float32),
                    np.zeros(cout, np.float32),
                )
            )
            layers.append(nw.Add(prefix, (f"{prefix}/conv_b", f"{prefix}/shortcut")))
            x, c, size = prefix, cout, size // 2
        if cell_is_constant:  # five constant cells in a row are one constant
            layers.append(nw.Zeros(f"stage{stage}/cells", c, size))
            x = f"stage{stage}/cells"
            continue
        for cell in range(CELLS_PER_STAGE):
            x = _cell(layers, weights, f"stage{stage}/cell{cell}", x, ops, alive, c)
    scale, shift = weights.affine(c)
    layers.append(nw.Affine("lastact/bn", x, scale, shift))
    layers.append(nw.Relu("lastact/relu", "lastact/bn"))
    layers.append(nw.GlobalAvgPool("pool", "lastact/relu"))
    w, b = weights.dense(c, classes)
    layers.append(nw.Dense("logits", "pool", w, b))
    return nw.Network(
        f"nas-bench-201 {format_arch(ops)}", 3, resolution, tuple(layers), "logits", tuple(notes)
    )


def _cell(
    layers: list,
    weights: Any,
    name: str,
    x: str,
    ops: tuple[str, ...],
    alive: tuple[bool, ...],
    channels: int,
) -> str:
    from agent.materialize import network as nw

    nodes = {0: x}
    relus: dict[int, str] = {}
    for dst in (1, 2, 3):
        terms = []
        for e, ((src, d), op) in enumerate(zip(EDGES, ops)):
            if d != dst or not alive[e]:
                continue
            edge = f"{name}/e{src}{dst}_{op}"
            if op == "skip_connect":
                terms.append(nodes[src])
            elif op == "avg_pool_3x3":
                layers.append(nw.AvgPool(edge, nodes[src], kernel=3, stride=1, pad=1))
                terms.append(edge)
            else:  # nor_conv_1x1 / nor_conv_3x3: ReLU-conv-BN, the ReLU shared per source node
                if src not in relus:
                    relus[src] = f"{name}/n{src}_relu"
                    layers.append(nw.Relu(relus[src], nodes[src]))
                k = 1 if op == "nor_conv_1x1" else 3
                w, b = weights.conv_bn(channels, channels, k)
                layers.append(nw.Conv(edge, relus[src], w, b, stride=1, pad=k // 2))
                terms.append(edge)
        if not terms:
            continue  # a node nothing live reads from or writes to
        if len(terms) == 1:
            nodes[dst] = terms[0]
        else:
            layers.append(nw.Add(f"{name}/n{dst}", tuple(terms)))
            nodes[dst] = f"{name}/n{dst}"
    return nodes[3]
