"""Devices of one SKU grouped by how they have drifted, each group with a representative.

A device's profile is the latency of a few probe layers (``agent.materialize.lut.profile_keys``);
clustering reads it as log slowdowns against the SKU's median device, so two boards that are
both 20 % slower at convolutions and 40 % slower at elementwise layers fall together whatever
their absolute speed.  Extra features (the degradation index) may be appended in the same units.

Method: k-means on those vectors for k = 1, 2, ... and the smallest k whose every device lies
within ``tol`` (root mean square of its log slowdowns, ~relative error) of its cluster's
representative: the member nearest the cluster's centre, a real device that can be asked for a
full width table.  An error bound, not a silhouette, because the bound is what the surrogate
needs (a representative's table corrected by a profile is only as good as the two are alike),
and because k = 1 (a fleet that has not drifted) must be a possible answer.  k is capped by
``max_share`` of the devices.  k-means rather than k-medoids: it scales to 10,000 devices in
well under a second, and the representatives are still real devices.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np

from coordinator.hdap import MAX_SHARE, TOL


@dataclass(frozen=True)
class Clusters:
    labels: np.ndarray  # (devices,) cluster of each device
    representatives: tuple[int, ...]  # (k,) the device standing for each cluster
    error: np.ndarray  # (devices,) RMS log distance to its representative
    tol: float

    @property
    def k(self) -> int:
        return len(self.representatives)

    def members(self, c: int) -> np.ndarray:
        return np.flatnonzero(self.labels == c)

    @property
    def sizes(self) -> np.ndarray:
        return np.bincount(self.labels, minlength=self.k)


def slowdowns(profiles: np.ndarray) -> np.ndarray:
    """(devices, probes) latencies -> log slowdowns against the fleet's median device."""
    logs = np.log(np.asarray(profiles, float))
    return logs - np.median(logs, axis=0)


def _assign(x: np.ndarray, centres: np.ndarray) -> tuple[np.ndarray, tuple[int, ...]]:
    """Labels by nearest centre, and each cluster's member nearest its centre."""
    d2 = ((x[:, None, :] - centres[None, :, :]) ** 2).sum(axis=2)
    labels = d2.argmin(axis=1)
    reps = []
    for c in range(len(centres)):
        members = np.flatnonzero(labels == c)
        reps.append(int(members[d2[members, c].argmin()]))
    return labels, tuple(reps)


def cluster(
    features: np.ndarray, tol: float = TOL, max_share: float = MAX_SHARE, seed: int = 0, max_k: int = 64
) -> Clusters:
    """Cluster devices on ``features`` (devices x dims, log slowdowns) by the error-bound rule."""
    from sklearn.cluster import KMeans

    x = np.asarray(features, float)
    n = len(x)
    if n == 0:
        raise ValueError("no devices to cluster")
    limit = max(1, min(max_k, math.floor(max_share * n), n))
    best = None
    for k in range(1, limit + 1):
        if k == 1:
            centres = x.mean(axis=0, keepdims=True)
        else:
            unique = len(np.unique(np.round(x, 12), axis=0))
            if unique < k:
                break
            km = KMeans(n_clusters=k, n_init=4, random_state=seed).fit(x)
            centres = km.cluster_centers_
        labels, reps = _assign(x, centres)
        # a cluster k-means left empty is merged away: its centre has no member
        keep = [c for c in range(len(reps)) if np.any(labels == c)]
        if len(keep) < len(reps):
            labels, reps = _assign(x, centres[keep])
        rep_of = np.array(reps)[labels]
        error = np.sqrt(((x - x[rep_of]) ** 2).mean(axis=1))
        best = Clusters(labels, reps, error, tol)
        if error.max() <= tol:
            break
    assert best is not None
    return best


def surrogate_ratios(
    profiles: np.ndarray, clusters: Clusters, probe_kinds: Sequence[str], kinds: Sequence[str]
) -> np.ndarray:
    """(devices, kinds) how much slower each device is than its representative at each layer kind,
    from the two profiles: the geometric mean over the probes of that kind (over all probes for a
    kind no probe has).  A device's surrogate table is its representative's times these."""
    logs = np.log(np.asarray(profiles, float))
    rel = logs - logs[np.array(clusters.representatives)[clusters.labels]]
    out = np.empty((len(logs), len(kinds)))
    every = rel.mean(axis=1)
    for j, k in enumerate(kinds):
        cols = [i for i, pk in enumerate(probe_kinds) if pk == k]
        out[:, j] = rel[:, cols].mean(axis=1) if cols else every
    return np.exp(out)
