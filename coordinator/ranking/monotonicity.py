"""Latency monotonicity: how well architecture rankings agree between devices.

SRCC (Spearman) and Kendall tau between every pair of devices, each over the
architectures measured on *both* (pairwise-complete), with the count used.  Fully
measured columns take a fast path (one matrix product over centred ranks); a
pair involving a column with missing cells is re-ranked on its common rows, so
the result is exact either way.

The proxy device is the one whose ranking agrees best with the rest of the fleet
(highest mean SRCC to the others).  Lu et al. (SIGMETRICS 2022): where the SRCC
with the proxy is >= 0.9, architectures chosen on the proxy can be reused as they
are; below it, a few measurements on the target should adapt the proxy's predictor.
"""

from __future__ import annotations

import warnings
from dataclasses import dataclass
from typing import Optional

import numpy as np

from agent.bench.stats import rankdata, spearman
from coordinator.ranking.tables import LatencyTable

__all__ = ["REUSE_SRCC", "Monotonicity", "rankdata", "rankdata_columns", "spearman"]

#: the paper's rule: at or above this SRCC, reuse the proxy's ranking unadapted
REUSE_SRCC = 0.9


def rankdata_columns(values: np.ndarray) -> np.ndarray:
    """``rankdata`` of every column of a 2-D array.

    One column at a time over contiguous rows of the transpose: measured on 15,625 x
    1,000, faster than a fully vectorized 2-D version (whose extra passes over memory
    cost more than the Python loop saves).
    """
    v = np.ascontiguousarray(values.T)
    return np.stack([rankdata(row) for row in v], axis=1)


@dataclass(frozen=True)
class Monotonicity:
    devices: tuple[str, ...]
    srcc: np.ndarray  # (d, d)
    counts: np.ndarray  # (d, d) architectures measured on both
    kendall: Optional[np.ndarray] = None  # (d, d) when asked for

    @property
    def mean_agreement(self) -> np.ndarray:
        """Each device's mean SRCC with the other devices (NaN pairs ignored)."""
        m = self.srcc.copy()
        np.fill_diagonal(m, np.nan)
        if len(self.devices) == 1:
            return np.ones(1)
        with warnings.catch_warnings():  # a device sharing no rows with any other: NaN is the answer
            warnings.simplefilter("ignore", RuntimeWarning)
            return np.nanmean(m, axis=1)

    @property
    def proxy(self) -> str:
        """The device whose ranking agrees best with the fleet."""
        return self.devices[int(np.nanargmax(self.mean_agreement))]

    def reuse(self, proxy: Optional[str] = None) -> dict[str, bool]:
        """Per other device: may the proxy's ranking be reused without adaptation?"""
        p = self.devices.index(proxy or self.proxy)
        return {d: bool(self.srcc[p, j] >= REUSE_SRCC) for j, d in enumerate(self.devices) if j != p}

    def to_dict(self) -> dict:
        out = {
            "devices": list(self.devices),
            "srcc": _jsonable(self.srcc),
            "counts": self.counts.astype(int).tolist(),
            "mean_srcc": _jsonable(self.mean_agreement),
            "proxy": self.proxy,
            "reuse_threshold": REUSE_SRCC,
            "reuse_without_adaptation": self.reuse(),
        }
        if self.kendall is not None:
            out["kendall_tau"] = _jsonable(self.kendall)
        return out


def _jsonable(a: np.ndarray) -> list:
    """Rounded nested lists, NaN as None (JSON has no NaN); fast for 1,000 x 1,000."""
    rounded = np.round(a.astype(float), 6)
    nan = np.isnan(rounded)
    out = rounded.tolist()
    if nan.any():
        for idx in zip(*np.nonzero(nan)):
            target = out
            for k in idx[:-1]:
                target = target[k]
            target[idx[-1]] = None
    return out


def monotonicity(table: LatencyTable, kendall: bool = False) -> Monotonicity:
    """SRCC (and optionally Kendall tau) matrices with pairwise-complete counts."""
    ms = table.ms
    measured = table.measured
    d = ms.shape[1]
    # Counts through a float64 product: numpy has no BLAS for integer matrices, and its
    # naive int64 loop took 150 s on 15,625 x 1,000; float64 is exact far beyond any table.
    m = measured.astype(np.float64)
    counts = np.rint(m.T @ m).astype(np.int64)
    srcc = np.full((d, d), np.nan)
    full = [j for j in range(d) if measured[:, j].all()]
    if full:
        n = ms.shape[0]
        ranks = rankdata_columns(ms[:, full]) - (n + 1) / 2
        norms = np.sqrt((ranks * ranks).sum(axis=0))
        with np.errstate(invalid="ignore", divide="ignore"):
            corr = (ranks.T @ ranks) / np.outer(norms, norms)
        srcc[np.ix_(full, full)] = corr
    partial = [j for j in range(d) if j not in set(full)]
    for j in partial:
        for i in range(d):
            both = measured[:, i] & measured[:, j]
            value = spearman(ms[both, i], ms[both, j]) if both.sum() >= 2 else np.nan
            srcc[i, j] = srcc[j, i] = value
    np.fill_diagonal(srcc, [1.0 if c >= 2 else np.nan for c in np.diag(counts)])
    tau = None
    if kendall:
        from scipy.stats import kendalltau

        tau = np.full((d, d), np.nan)
        for i in range(d):
            for j in range(i, d):
                both = measured[:, i] & measured[:, j]
                if both.sum() >= 2:
                    tau[i, j] = tau[j, i] = kendalltau(ms[both, i], ms[both, j]).statistic
    return Monotonicity(table.devices, np.clip(srcc, -1.0, 1.0), counts, tau)
