"""Which k architectures to measure on a new device, so the adaptation learns most.

random    uniform without replacement (the baseline)
spread    k-means over the reference devices' standardized log-latencies and the
          op counts; the architecture nearest each centre.  Covers fast, slow and
          in-between architectures as every reference device sees them.
doptimal  greedy D-optimal design on [references, op counts, 1]: each pick
          maximizes the gain in log det of the information matrix.
"""

from __future__ import annotations

import numpy as np

from coordinator.errors import NotEnoughDataError, UnknownNameError
from coordinator.ranking.predictors import Design

PLANNERS = ("random", "spread", "doptimal")
DEFAULT_PLANNER = "doptimal"


def _space(design: Design) -> np.ndarray:
    z = np.c_[design.refs, design.count_features()]
    sd = z.std(axis=0)
    keep = sd > 0
    return (z[:, keep] - z[:, keep].mean(axis=0)) / sd[keep]


def plan(design: Design, k: int, method: str = DEFAULT_PLANNER, seed: int = 0,
         candidates: np.ndarray | None = None) -> np.ndarray:  # fmt: skip
    """Row indices of the ``k`` architectures to measure, chosen among ``candidates``."""
    if method not in PLANNERS:
        raise UnknownNameError(f"planner {method!r} is not one of: {', '.join(PLANNERS)}")
    cand = np.arange(design.n) if candidates is None else np.asarray(candidates)
    if k < 1 or k > len(cand):
        raise NotEnoughDataError(f"cannot choose {k} architectures out of {len(cand)}")
    rng = np.random.default_rng(seed)
    if method == "random":
        return np.sort(rng.choice(cand, size=k, replace=False))
    if method == "spread":
        return _kmeans_medoids(_space(design)[cand], k, rng, cand)
    return _d_optimal(np.c_[_space(design), np.ones(design.n)][cand], k, rng, cand)


def _kmeans_medoids(z: np.ndarray, k: int, rng: np.random.Generator, cand: np.ndarray,
                    iters: int = 25) -> np.ndarray:  # fmt: skip
    # k-means++ seeding, then Lloyd iterations, then the real architecture nearest each centre.
    centres = [z[rng.integers(len(z))]]
    d2 = ((z - centres[0]) ** 2).sum(axis=1)
    for _ in range(1, k):
        probs = d2 / d2.sum() if d2.sum() > 0 else np.full(len(z), 1 / len(z))
        centres.append(z[rng.choice(len(z), p=probs)])
        d2 = np.minimum(d2, ((z - centres[-1]) ** 2).sum(axis=1))
    c = np.array(centres)
    for _ in range(iters):
        assign = ((z[:, None, :] - c[None]) ** 2).sum(axis=2).argmin(axis=1)
        new = np.array([z[assign == j].mean(axis=0) if (assign == j).any() else c[j] for j in range(k)])
        if np.allclose(new, c):
            break
        c = new
    chosen: list[int] = []
    for j in range(k):
        dist = ((z - c[j]) ** 2).sum(axis=1)
        dist[chosen] = np.inf
        chosen.append(int(dist.argmin()))
    return np.sort(cand[chosen])


def _d_optimal(x: np.ndarray, k: int, rng: np.random.Generator, cand: np.ndarray) -> np.ndarray:
    p = x.shape[1]
    m_inv = np.eye(p) / 1e-3  # start from a weak ridge prior
    chosen: list[int] = []
    first = int(rng.integers(len(x)))
    for step in range(k):
        if step == 0:
            i = first
        else:
            lev = np.einsum("ij,jk,ik->i", x, m_inv, x)
            lev[chosen] = -np.inf
            i = int(lev.argmax())
        chosen.append(i)
        v = m_inv @ x[i]
        m_inv -= np.outer(v, v) / (1.0 + x[i] @ v)  # Sherman-Morrison
    return np.sort(cand[chosen])
