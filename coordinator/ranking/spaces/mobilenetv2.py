"""The MobileNetV2-style (Once-for-All) space for ranking: encodings and sampling.

The arch-string grammar is the device side's (``agent.materialize.mobilenetv2``).

Encodings (the names the predictors expect):
  onehot        per block slot (4 per stage, 20 in all): one-hot of the kernel (3, 5, 7)
                and of the expansion (3, 4, 6), zero for slots the stage's depth leaves
                out, then the stage depths one-hot
  alive         the same as onehot: every block that is written is executed
  counts        slots left out, then how many blocks have each (kernel, expansion) pair
  alive_counts  the same as counts
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np

from agent.materialize.mobilenetv2 import (
    DEPTHS,
    EXPANSIONS,
    KERNELS,
    MAX_BLOCKS,
    WIDTHS,
    parse_arch,
    sample,
)
from coordinator.ranking.spaces.base import SearchSpace

_SLOT = len(KERNELS) + len(EXPANSIONS)
_PAIRS = [(k, e) for k in KERNELS for e in EXPANSIONS]


class MobileNetV2(SearchSpace):
    name = "mobilenetv2"
    kinds = ("onehot", "alive", "counts", "alive_counts")

    def parse(self, arch: str) -> object:
        return parse_arch(arch)

    def encode(self, archs: Sequence[str], kind: str) -> np.ndarray:
        if kind not in self.kinds:
            raise ValueError(f"unknown encoding {kind!r}; {self.name} has {', '.join(self.kinds)}")
        return self.encode_all(archs)[kind]

    def encode_all(self, archs: Sequence[str]) -> dict[str, np.ndarray]:
        n = len(archs)
        onehot = np.zeros((n, MAX_BLOCKS * _SLOT + len(WIDTHS) * len(DEPTHS)))
        counts = np.zeros((n, 1 + len(_PAIRS)))
        for r, arch in enumerate(archs):
            depths, kernels, expansions = parse_arch(arch)
            i = 0
            for stage, depth in enumerate(depths):
                onehot[r, MAX_BLOCKS * _SLOT + stage * len(DEPTHS) + DEPTHS.index(depth)] = 1.0
                for j in range(depth):
                    base = (stage * 4 + j) * _SLOT
                    onehot[r, base + KERNELS.index(kernels[i])] = 1.0
                    onehot[r, base + len(KERNELS) + EXPANSIONS.index(expansions[i])] = 1.0
                    counts[r, 1 + _PAIRS.index((kernels[i], expansions[i]))] += 1
                    i += 1
            counts[r, 0] = MAX_BLOCKS - i
        return {"onehot": onehot, "alive": onehot.copy(), "counts": counts, "alive_counts": counts.copy()}

    def sample(self, n: int, rng: np.random.Generator) -> list[str]:
        return sample(n, rng)
