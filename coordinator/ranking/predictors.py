"""Latency predictors for a target device, from a few of its measurements.

All work in log-latency (a device twice as fast is a shift, not a new shape) and
follow the scikit-learn contract: hyper-parameters in ``__init__``, ``fit`` returns
``self``, learned attributes end in ``_``.  ``fit(design, y)`` takes a ``Design``
(reference devices' log-latencies and the search space's encodings for *every*
architecture) and ``y``, the target's log-latencies with NaN where not measured;
``predict(design)`` returns log-latency for every row.

  none       no adaptation: the proxy's ranking, scaled to the target (a*proxy + c)
  lut        additive lookup table fitted on the target's samples alone
  adaproxy   reproduction of AdaProxy (Lu et al. 2022): y = X (w_p * (a + b)) + c,
             w_p the proxy's lookup-table weights, ||b||^2 penalised, penalty by GCV
  multiref   ridge on every reference device's log-latency plus the encodings
  hier       hierarchical Bayes: the target's per-operation costs are drawn from the
             distribution of the reference devices' costs; hyper-parameters by
             marginal likelihood
  fleet      the mean of hier and multiref (see benchmarks/RESULTS.md)
  crossdevice  the predictor trained across many devices (``crossdevice.py``), adapted
             from the target's probes and samples; the default for a column that has
             every probe measured
"""

from __future__ import annotations

import copy
import dataclasses
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Optional

import numpy as np

from coordinator.errors import NotEnoughDataError, UnknownNameError

LAMBDAS = np.logspace(-4, 4, 33)


@dataclass(frozen=True)
class Design:
    """Everything predictors may use about the architectures (rows)."""

    refs: np.ndarray  # (n, r) reference devices' log-latency, complete; r may be 0
    onehot: np.ndarray  # (n, p) per-edge op one-hot, as written
    alive: np.ndarray  # (n, p) the same, dead edges zeroed
    counts: np.ndarray  # (n, q) op counts
    alive_counts: np.ndarray  # (n, q)

    @classmethod
    def build(cls, space, archs: Sequence[str], refs_log: Optional[np.ndarray]) -> Design:
        enc = space.encode_all(archs)
        base = cls(np.zeros((len(archs), 0)), enc["onehot"], enc["alive"], enc["counts"],
                   enc["alive_counts"])  # fmt: skip
        return base if refs_log is None else base.with_refs(refs_log)

    def with_refs(self, refs_log: np.ndarray) -> Design:
        """The same architectures with other reference columns (encodings are reused)."""
        refs = np.asarray(refs_log, float).reshape(self.n, -1)
        return dataclasses.replace(self, refs=refs)

    @property
    def n(self) -> int:
        return self.onehot.shape[0]

    def lut_features(self) -> np.ndarray:
        return np.c_[self.onehot, self.alive]

    def count_features(self) -> np.ndarray:
        # The first op is "none": counts sum to a constant, so drop it.
        return np.c_[self.counts[:, 1:], self.alive_counts[:, 1:]]


def ridge_gcv(
    a: np.ndarray, y: np.ndarray, penalty: np.ndarray, lambdas: np.ndarray = LAMBDAS
) -> tuple[np.ndarray, float]:
    """Ridge regression, min |y - a w|^2 + lam * sum(penalty * w^2), lam by GCV.

    ``penalty`` is per column (0 leaves a column unpenalised).  Works in feature
    space, so cost grows with the number of rows only linearly.

    >>> a = np.c_[np.arange(5.0), np.ones(5)]
    >>> w, lam = ridge_gcv(a, 2 * np.arange(5.0) + 1, np.array([1.0, 0.0]))
    >>> np.round(w, 2).tolist()
    [2.0, 1.0]
    """
    n, p = a.shape
    ata, aty = a.T @ a, a.T @ y
    jitter = 1e-9 * np.eye(p)
    best: Optional[tuple[float, float, np.ndarray]] = None
    for lam in lambdas:
        m = ata + np.diag(penalty * lam) + jitter
        try:
            w = np.linalg.solve(m, aty)
            df = float(np.trace(np.linalg.solve(m, ata)))
        except np.linalg.LinAlgError:
            continue
        r = y - a @ w
        if n - df <= 1e-6:
            continue
        gcv = n * float(r @ r) / (n - df) ** 2
        if best is None or gcv < best[0]:
            best = (gcv, float(lam), w)
    if best is None:  # fewer rows than free parameters at every lambda: take the largest
        lam = float(lambdas[-1])
        w = np.linalg.lstsq(a.T @ a + np.diag(penalty * lam) + jitter, aty, rcond=None)[0]
        return w, lam
    return best[2], best[1]


def _samples(y: np.ndarray) -> np.ndarray:
    idx = np.flatnonzero(~np.isnan(y))
    if len(idx) < 2:
        raise NotEnoughDataError(f"{len(idx)} measured architecture(s); a predictor needs 2 or more")
    return idx


class LatencyPredictor:
    """Base: subclasses set ``coef_`` over their ``_design_matrix`` columns."""

    name = "?"
    needs_refs = 0
    coef_: np.ndarray

    def _design_matrix(self, design: Design) -> np.ndarray:
        raise NotImplementedError

    def fit(self, design: Design, y: np.ndarray) -> LatencyPredictor:
        raise NotImplementedError

    def predict(self, design: Design) -> np.ndarray:
        return self._design_matrix(design) @ self.coef_

    def pinned(self) -> LatencyPredictor:
        """An unfitted copy whose hyper-parameter search is pinned to what this fit chose
        (for cross-validation: refit the weights per fold, not the whole search)."""
        return type(self)()

    def _check_refs(self, design: Design) -> None:
        if design.refs.shape[1] < self.needs_refs:
            got = design.refs.shape[1]
            raise NotEnoughDataError(
                f"method {self.name!r} needs {self.needs_refs} reference device(s), got {got}"
            )


class NoAdaptation(LatencyPredictor):
    """The proxy's (first reference's) ranking, only scaled: a * proxy + c, a >= 0."""

    name = "none"
    needs_refs = 1

    def _design_matrix(self, design: Design) -> np.ndarray:
        return np.c_[design.refs[:, 0], np.ones(design.n)]

    def fit(self, design: Design, y: np.ndarray) -> NoAdaptation:
        self._check_refs(design)
        idx = _samples(y)
        a = self._design_matrix(design)[idx]
        w = np.linalg.lstsq(a, y[idx], rcond=None)[0]
        if not w[0] > 0:  # keep the proxy's order whatever the few samples say
            w = np.array([1.0, float(np.mean(y[idx] - a[:, 0]))])
        self.coef_ = w
        return self


class LookupTable(LatencyPredictor):
    """Additive per-operation costs fitted on the target's own samples (ridge, GCV)."""

    name = "lut"

    def __init__(self, lambdas: Sequence[float] = tuple(LAMBDAS)) -> None:
        self.lambdas = lambdas

    def _design_matrix(self, design: Design) -> np.ndarray:
        return np.c_[design.lut_features(), np.ones(design.n)]

    def fit(self, design: Design, y: np.ndarray) -> LookupTable:
        idx = _samples(y)
        a = self._design_matrix(design)
        pen = np.r_[np.ones(a.shape[1] - 1), 0.0]
        self.coef_, self.alpha_ = ridge_gcv(a[idx], y[idx], pen, np.asarray(self.lambdas))
        return self

    def pinned(self) -> LookupTable:
        return LookupTable(lambdas=(self.alpha_,))


class AdaProxy(LatencyPredictor):
    """AdaProxy reproduction: y = X (w_p * (a + b)) + c; ||b||^2 penalised, penalty by GCV.

    ``w_p`` is the proxy's lookup table, fitted on all of the proxy's rows.
    """

    name = "adaproxy"
    needs_refs = 1

    def __init__(self, lambdas: Sequence[float] = tuple(LAMBDAS)) -> None:
        self.lambdas = lambdas

    def pinned(self) -> AdaProxy:
        return AdaProxy(lambdas=(self.alpha_,))

    def _design_matrix(self, design: Design) -> np.ndarray:
        x = design.lut_features()
        return np.c_[x @ self.proxy_weights_, x * self.proxy_weights_, np.ones(design.n)]

    def fit(self, design: Design, y: np.ndarray) -> AdaProxy:
        self._check_refs(design)
        idx = _samples(y)
        x = design.lut_features()
        xp = np.c_[x, np.ones(design.n)]
        wp = np.linalg.lstsq(xp, design.refs[:, 0], rcond=None)[0]
        self.proxy_weights_ = wp[:-1]
        a = self._design_matrix(design)
        pen = np.r_[0.0, np.ones(x.shape[1]), 0.0]
        self.coef_, self.alpha_ = ridge_gcv(a[idx], y[idx], pen, np.asarray(self.lambdas))
        return self


class MultiReference(LatencyPredictor):
    """Ridge on the reference devices' log-latencies (lightly penalised) and the encodings."""

    name = "multiref"
    needs_refs = 1

    def __init__(self, ref_penalty: float = 0.01, lambdas: Sequence[float] = tuple(LAMBDAS)) -> None:
        self.ref_penalty = ref_penalty
        self.lambdas = lambdas

    def pinned(self) -> MultiReference:
        return MultiReference(self.ref_penalty, lambdas=(self.alpha_,))

    def _design_matrix(self, design: Design) -> np.ndarray:
        return np.c_[
            design.refs, design.counts, design.alive_counts, design.lut_features(), np.ones(design.n)
        ]

    def fit(self, design: Design, y: np.ndarray) -> MultiReference:
        self._check_refs(design)
        idx = _samples(y)
        a = self._design_matrix(design)
        r = design.refs.shape[1]
        pen = np.r_[np.full(r, self.ref_penalty), np.ones(a.shape[1] - r - 1), 0.0]
        self.coef_, self.alpha_ = ridge_gcv(a[idx], y[idx], pen, np.asarray(self.lambdas))
        return self


class Hierarchical(LatencyPredictor):
    """Hierarchical Bayes over operation-count costs.

    Each reference device's log-latency is fitted as costs over op counts (all and
    alive edges); the target's costs get a Gaussian prior with the references' mean
    and ``scale * covariance + jitter * I`` (the intercept nearly free).  ``scale``,
    ``jitter`` and the noise variance are chosen by the marginal likelihood of the
    target's samples; the prediction is the posterior mean.
    """

    name = "hier"
    needs_refs = 1

    def __init__(
        self,
        scales: Sequence[float] = tuple(np.logspace(-2, 2, 9)),
        jitters: Sequence[float] = tuple(np.logspace(-5, -1, 5)),
        noises: Sequence[float] = tuple(np.logspace(-4, -1, 7)),
    ) -> None:
        self.scales = scales
        self.jitters = jitters
        self.noises = noises

    def _design_matrix(self, design: Design) -> np.ndarray:
        return np.c_[design.count_features(), np.ones(design.n)]

    def pinned(self) -> Hierarchical:
        return Hierarchical(scales=(self.scale_,), jitters=(self.jitter_,), noises=(self.noise_,))

    def fit(self, design: Design, y: np.ndarray) -> Hierarchical:
        self._check_refs(design)
        idx = _samples(y)
        f = self._design_matrix(design)
        p = f.shape[1]
        g = f.T @ f + 1e-2 * np.diag(np.r_[np.ones(p - 1), 0.0])
        w_refs = np.linalg.solve(g, f.T @ design.refs).T  # (r, p)
        mu = w_refs.mean(axis=0)
        cov_refs = np.cov(w_refs.T) if len(w_refs) > 1 else np.zeros((p, p))
        a = f[idx]
        r0 = y[idx] - a @ mu
        ata, atr, rr, k = a.T @ a, a.T @ r0, float(r0 @ r0), len(idx)
        best: Optional[tuple] = None
        for scale in self.scales:
            for jitter in self.jitters:
                c = scale * cov_refs + jitter * np.eye(p)
                c[-1, -1] += 100.0  # the device's overall speed is not predicted by others
                c_inv = np.linalg.inv(c)
                logdet_c = np.linalg.slogdet(c)[1]
                for s2 in self.noises:
                    # Woodbury: S = s2 I + A C A^T, evaluated through p x p matrices.
                    m = c_inv + ata / s2
                    m_inv_atr = np.linalg.solve(m, atr)
                    quad = (rr - atr @ m_inv_atr / s2) / s2
                    logdet = k * np.log(s2) + logdet_c + np.linalg.slogdet(m)[1]
                    ll = -0.5 * quad - 0.5 * logdet
                    if best is None or ll > best[0]:
                        best = (ll, mu + m_inv_atr / s2, scale, jitter, s2)
        assert best is not None  # the grids are never empty
        _, self.coef_, self.scale_, self.jitter_, self.noise_ = best
        return self


class Fleet(LatencyPredictor):
    """Mean of ``Hierarchical`` and ``MultiReference`` log-latency predictions."""

    name = "fleet"
    needs_refs = 1

    def __init__(self, members: Optional[Sequence[LatencyPredictor]] = None) -> None:
        self.members = members

    def fit(self, design: Design, y: np.ndarray) -> Fleet:
        self._check_refs(design)
        members = self.members or (Hierarchical(), MultiReference())
        # Fit copies, as scikit-learn clones: estimators given as hyper-parameters stay unfitted.
        self.members_ = [copy.deepcopy(m).fit(design, y) for m in members]
        return self

    def pinned(self) -> Fleet:
        return Fleet(members=[m.pinned() for m in self.members_])

    def predict(self, design: Design) -> np.ndarray:
        return np.mean([m.predict(design) for m in self.members_], axis=0)


METHODS: dict[str, type] = {
    cls.name: cls for cls in (NoAdaptation, LookupTable, AdaProxy, MultiReference, Hierarchical, Fleet)
}
DEFAULT_METHOD = "fleet"


#: lives in crossdevice.py (it imports this module), made by ``make``
CROSS_DEVICE = "crossdevice"
METHOD_NAMES = (*METHODS, CROSS_DEVICE)


def make(name: str) -> LatencyPredictor:
    if name == CROSS_DEVICE:
        from coordinator.ranking.crossdevice import CrossDevice

        return CrossDevice()
    try:
        return METHODS[name]()
    except KeyError:
        raise UnknownNameError(f"--method {name!r} is not one of: {', '.join(METHOD_NAMES)}") from None
