"""NAS-Bench-201 as a search space for ranking: encodings and sampling.

The arch-string grammar (``parse_arch``, ``format_arch``, ``alive_edges``) is the
device side's, in ``agent.materialize.nasbench201``.

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

from agent.materialize.nasbench201 import EDGES, OPS, alive_edges, format_arch, parse_arch, sample
from coordinator.ranking.spaces.base import SearchSpace

__all__ = ["EDGES", "OPS", "NasBench201", "alive_edges", "format_arch", "parse_arch"]


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
        return sample(n, rng)
