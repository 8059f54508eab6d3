"""NAS-Bench-201: a cell of 4 nodes and 6 edges, each edge one of 5 operations.

Arch string: ``|op~0|+|op~0|op~1|+|op~0|op~1|op~2|``: node 1 from node 0; node 2
from nodes 0 and 1; node 3 (the cell output) from nodes 0, 1 and 2.

Encodings:
  onehot        6 edges x 5 ops, as written
  alive         the same, but an edge counts only if it can matter: its op is not
                ``none``, its source is reachable from the input through non-``none``
                edges, and its target reaches the output.  Runtimes that prune dead
                branches (TFLite, ONNX Runtime's graph optimizer, the Edge TPU
                compiler) do not pay for the others; simulators and eager runtimes do.
  counts        how many edges of each op type (none dropped: counts sum to 6)
  alive_counts  the same over alive edges
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np

from coordinator.ranking.spaces.base import SearchSpace

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


class NasBench201(SearchSpace):
    name = "nas-bench-201"
    kinds = ("onehot", "alive", "counts", "alive_counts")

    def parse(self, arch: str) -> tuple[str, ...]:
        return parse_arch(arch)

    def encode(self, archs: Sequence[str], kind: str) -> np.ndarray:
        if kind not in self.kinds:
            raise ValueError(f"unknown encoding {kind!r}; {self.name} has {', '.join(self.kinds)}")
        out = np.zeros((len(archs), 30 if "counts" not in kind else 5))
        for r, arch in enumerate(archs):
            ops = parse_arch(arch)
            live = alive_edges(ops) if kind.startswith("alive") else (True,) * 6
            for e, (op, ok) in enumerate(zip(ops, live)):
                if not ok:
                    continue
                k = OPS.index(op)
                if kind.endswith("counts"):
                    out[r, k] += 1
                else:
                    out[r, e * 5 + k] = 1.0
        return out

    def encode_all(self, archs: Sequence[str]) -> dict[str, np.ndarray]:
        n = len(archs)
        out = {"onehot": np.zeros((n, 30)), "alive": np.zeros((n, 30)),
               "counts": np.zeros((n, 5)), "alive_counts": np.zeros((n, 5))}  # fmt: skip
        for r, arch in enumerate(archs):
            ops = parse_arch(arch)
            for e, (op, live) in enumerate(zip(ops, alive_edges(ops))):
                k = OPS.index(op)
                out["onehot"][r, e * 5 + k] = 1.0
                out["counts"][r, k] += 1
                if live:
                    out["alive"][r, e * 5 + k] = 1.0
                    out["alive_counts"][r, k] += 1
        return out

    def sample(self, n: int, rng: np.random.Generator) -> list[str]:
        total = len(OPS) ** len(EDGES)
        if n > total:
            raise ValueError(f"{self.name} has only {total} architectures")
        codes = rng.choice(total, size=n, replace=False)
        archs = []
        for code in codes:
            ops = []
            for _ in EDGES:
                ops.append(OPS[code % len(OPS)])
                code //= len(OPS)
            archs.append(format_arch(ops))
        return archs
