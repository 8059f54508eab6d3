"""NAS-Bench-201 architectures: the arch-string grammar and the network it names.

A cell has 4 nodes and 6 edges, each edge one of 5 operations.  Arch string:
``|op~0|+|op~0|op~1|+|op~0|op~1|op~2|``: node 1 from node 0; node 2 from nodes 0 and
1; node 3 (the cell output) from nodes 0, 1 and 2.  The grammar lives here, on the
device side, because agents materialize architectures they are sent; the
coordinator's search space imports it.
"""

from __future__ import annotations

from collections.abc import Sequence

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
