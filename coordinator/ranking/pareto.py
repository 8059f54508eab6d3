"""Pareto front of (latency, accuracy) and the best architecture under a latency budget."""

from __future__ import annotations

from typing import Optional

import numpy as np


def pareto_front(latency: np.ndarray, accuracy: np.ndarray) -> np.ndarray:
    """Indices of the non-dominated points (lower latency, higher accuracy), fastest first.

    A point is dominated if another is at least as fast and at least as accurate,
    and strictly better in one.  O(n log n): sort by latency (ties: accuracy
    descending) and keep each point more accurate than every faster one.

    >>> pareto_front(np.array([1.0, 2.0, 3.0, 2.5]), np.array([50.0, 60.0, 55.0, 70.0])).tolist()
    [0, 1, 3]
    """
    order = np.lexsort((-accuracy, latency))
    front, best = [], -np.inf
    for i in order:
        if accuracy[i] > best:
            front.append(int(i))
            best = accuracy[i]
    return np.array(front, dtype=int)


def pareto_front_slow(latency: np.ndarray, accuracy: np.ndarray) -> np.ndarray:
    """Reference implementation, O(n^2), for testing ``pareto_front``."""
    keep = []
    for i in range(len(latency)):
        dominated = any(
            latency[j] <= latency[i] and accuracy[j] >= accuracy[i]
            and (latency[j] < latency[i] or accuracy[j] > accuracy[i])
            for j in range(len(latency))
        )  # fmt: skip
        if not dominated:
            keep.append(i)
    # Exact duplicates are all non-dominated; the fast version keeps one of them.
    seen, unique = set(), []
    for i in sorted(keep, key=lambda i: (latency[i], -accuracy[i], i)):
        key = (latency[i], accuracy[i])
        if key not in seen:
            seen.add(key)
            unique.append(i)
    return np.array(unique, dtype=int)


def best_under_budget(latency: np.ndarray, accuracy: np.ndarray, budget_ms: float) -> Optional[int]:
    """Index of the most accurate architecture with latency <= budget (ties: the faster)."""
    ok = np.flatnonzero(latency <= budget_ms)
    if len(ok) == 0:
        return None
    best = ok[np.lexsort((latency[ok], -accuracy[ok]))[0]]
    return int(best)
