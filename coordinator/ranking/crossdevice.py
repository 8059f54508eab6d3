"""A latency predictor learned across devices: (architecture encoding, device features) -> latency.

Approach 2 of "Scaling Up Deep Neural Network Optimization for Edge Inference" (Lu, Yang,
Ren 2020): one model for every device, told apart by *device features*, instead of one
fitted column per device.

The model is low-rank in log-latency::

    log t(a, d) = c_d + f(a) . v_d

``f(a)`` (``rank`` numbers per architecture) is a ridge-regressed function of the
architecture's encoding: the per-edge operation one-hots, their alive versions and every
product of two operations on different edges.  It is learned from the reference devices'
columns: missing cells are imputed by iterated truncated SVD, the device-centred matrix's
leading factors are regressed onto the encoding, and each reference device's ``v_d`` is
refitted on its own measured cells.  The reference devices' ``v_d`` give the prior of a new
device's: Gaussian with their mean and covariance.

A new device is described by its latencies on a fixed set of *probe* architectures (chosen
greedily D-optimal over ``[1, f(a)]`` among the architectures every reference device
measured): its features are their log-latencies minus their mean.  ``adapt`` takes those and
any further samples and returns the posterior mean of ``(c_d, v_d)`` (noise variance by
marginal likelihood), so predicting is one ``(n, rank + 1)`` product, and the posterior
covariance gives every prediction its own error bar.  However many reference devices there
are, a new device has at most ``rank + 1`` parameters, held by a prior the references give:
more references sharpen the prior instead of adding regressors (the landed ``multiref``
regresses on every reference column and got worse with more of them).

Saved as ``.npz`` (arrays only, no pickle) with a JSON header naming the format, version,
search space, units and normalization; ``load`` refuses anything else in one sentence.
"""

from __future__ import annotations

import dataclasses
import json
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Optional

import numpy as np

from coordinator.errors import ModelFileError, NotEnoughDataError
from coordinator.ranking.modelfile import read_npz, save_npz
from coordinator.ranking.predictors import Design, LatencyPredictor

FORMAT = "fleetbench.crossdevice"
VERSION = 1
UNITS = "natural log of milliseconds"
NORMALIZATION = "device features: log latency of each probe minus the mean over the probes"
NOISES = tuple(np.logspace(-4, -1, 7))
#: prior variance of a device's offset c_d: it is set by the data, not by other devices
OFFSET_VARIANCE = 100.0

Progress = Optional[Callable[[str], None]]


def arch_features(onehot: np.ndarray, alive: np.ndarray, ops_per_edge: int) -> np.ndarray:
    """[1, one-hot, alive one-hot, products of two ops on different edges] per architecture.

    >>> oh = np.array([[1, 0, 0, 1.0]])  # two edges of two ops: op 0 then op 1
    >>> arch_features(oh, oh, 2).tolist()
    [[1.0, 1.0, 0.0, 0.0, 1.0, 1.0, 0.0, 0.0, 1.0, 0.0, 1.0, 0.0, 0.0]]
    """
    n, p = onehot.shape
    i, j = np.triu_indices(p, 1)
    keep = i // ops_per_edge != j // ops_per_edge
    pairs = onehot[:, i[keep]] * onehot[:, j[keep]]
    return np.c_[np.ones(n), onehot, alive, pairs]


def impute_lowrank(logs: np.ndarray, rank: int, iters: int = 30, progress: Progress = None) -> np.ndarray:
    """Fill the NaN cells of ``logs`` (archs x devices) by iterated rank-``rank`` SVD of the
    device-centred matrix; measured cells keep their value."""
    mask = ~np.isnan(logs)
    filled = np.where(mask, logs, np.nanmean(logs, axis=0))
    if mask.all():
        return filled
    for it in range(iters):
        mean = filled.mean(axis=0)
        u, s, vt = np.linalg.svd(filled - mean, full_matrices=False)
        low = (u[:, :rank] * s[:rank]) @ vt[:rank] + mean
        filled = np.where(mask, logs, low)
        if progress is not None and (it + 1) % 10 == 0:
            progress(f"imputing missing cells: {it + 1}/{iters}")
    return filled


@dataclass(frozen=True)
class DeviceFit:
    """A device's posterior: ``weights`` over ``[1, f(a)]``, their covariance and the noise."""

    weights: np.ndarray
    covariance: np.ndarray
    noise: float

    def predict(self, basis: np.ndarray) -> np.ndarray:
        return basis @ self.weights

    def log_std(self, basis: np.ndarray) -> np.ndarray:
        """Predictive standard deviation of each row's log-latency (model and noise)."""
        return np.sqrt(np.einsum("ij,jk,ik->i", basis, self.covariance, basis) + self.noise)


class CrossDevicePredictor:
    """Low-rank device x architecture latency model; see the module docstring.

    Follows the scikit-learn contract: hyper-parameters in ``__init__``, ``fit`` returns
    ``self``, learned attributes end in ``_``.
    """

    def __init__(
        self, rank: int = 16, alpha: float = 1.0, n_probes: int = 20, ops_per_edge: int = 5, iters: int = 30
    ) -> None:
        self.rank = rank
        self.alpha = alpha
        self.n_probes = n_probes
        self.ops_per_edge = ops_per_edge
        self.iters = iters

    # -- training -------------------------------------------------------------------------------
    def fit(
        self,
        onehot: np.ndarray,
        alive: np.ndarray,
        logs: np.ndarray,
        progress: Progress = None,
        probe_candidates: Optional[np.ndarray] = None,
    ) -> CrossDevicePredictor:
        """Learn from ``logs`` (archs x reference devices, natural-log ms, NaN = not measured).

        Probes are chosen among the rows every device measured (and, if given, that
        ``probe_candidates``, a boolean row mask, allows)."""
        logs = np.asarray(logs, float)
        d = logs.shape[1]
        if d < 2:
            raise NotEnoughDataError(f"training needs 2 or more devices, got {d}")
        complete = ~np.isnan(logs).any(axis=1)
        if probe_candidates is not None:
            complete &= probe_candidates
        if complete.sum() < self.n_probes:
            raise NotEnoughDataError(
                f"only {int(complete.sum())} architectures are measured on every device; "
                f"{self.n_probes} probes need at least that many"
            )
        k = min(self.rank, d - 1)
        filled = impute_lowrank(logs, k, self.iters, progress)
        mean = filled.mean(axis=0)
        u, s, _ = np.linalg.svd(filled - mean, full_matrices=False)
        factors = u[:, :k] * s[:k]
        feats = arch_features(onehot, alive, self.ops_per_edge)
        if progress is not None:
            progress(f"architecture factors: rank {k} from {feats.shape[1]} encoding features")
        gram = feats.T @ feats + self.alpha * np.eye(feats.shape[1])
        self.feature_weights_ = np.linalg.solve(gram, feats.T @ factors)
        basis = self._basis_from(feats)
        loadings = np.empty((d, k + 1))
        for j in range(d):
            rows = ~np.isnan(logs[:, j])
            loadings[j] = np.linalg.lstsq(basis[rows], logs[rows, j], rcond=None)[0]
        self.device_weights_ = loadings
        self.prior_mean_ = loadings[:, 1:].mean(axis=0)
        cov = np.cov(loadings[:, 1:].T) if d > 2 else np.outer(*(loadings[:, 1:].std(axis=0),) * 2)
        self.prior_cov_ = np.atleast_2d(cov) + 1e-6 * np.eye(k)
        self.rank_ = k
        self.probe_rows_ = self._choose_probes(basis, np.flatnonzero(complete))
        if progress is not None:
            progress(f"{len(self.probe_rows_)} probe architectures chosen")
        return self

    def _choose_probes(self, basis: np.ndarray, candidates: np.ndarray) -> np.ndarray:
        """Greedy D-optimal design over ``basis`` rows among ``candidates``."""
        info = 1e-3 * np.eye(basis.shape[1])
        chosen: list[int] = []
        free = np.ones(len(candidates), bool)
        for _ in range(self.n_probes):
            inv = np.linalg.inv(info)
            rows = basis[candidates]
            gain = np.einsum("ij,jk,ik->i", rows, inv, rows)
            gain[~free] = -np.inf
            best = int(np.argmax(gain))
            free[best] = False
            chosen.append(int(candidates[best]))
            info += np.outer(basis[candidates[best]], basis[candidates[best]])
        return np.array(chosen)

    # -- use -------------------------------------------------------------------------------------
    def _basis_from(self, feats: np.ndarray) -> np.ndarray:
        return np.c_[np.ones(len(feats)), feats @ self.feature_weights_]

    def basis(self, onehot: np.ndarray, alive: np.ndarray) -> np.ndarray:
        """``[1, f(a)]`` for each architecture: predictions are ``basis @ DeviceFit.weights``."""
        return self._basis_from(arch_features(onehot, alive, self.ops_per_edge))

    def adapt(self, basis: np.ndarray, y: np.ndarray, noises: Sequence[float] = NOISES) -> DeviceFit:
        """Posterior of a device from its measured log-latencies ``y`` on the rows of ``basis``
        (the probes, and any further samples); the noise variance by marginal likelihood."""
        y = np.asarray(y, float)
        p = len(y)
        if p < 2:
            raise NotEnoughDataError(f"{p} measured architecture(s); the predictor needs 2 or more")
        k = self.rank_
        prior_mean = np.r_[0.0, self.prior_mean_]
        prior_prec = np.zeros((k + 1, k + 1))
        prior_prec[0, 0] = 1.0 / OFFSET_VARIANCE
        prior_prec[1:, 1:] = np.linalg.inv(self.prior_cov_)
        # The evidence of y is N(basis @ prior_mean, noise I + basis C basis^T), C the prior's
        # covariance; through the Woodbury identity it costs (rank + 1)^3 per noise level, not
        # p^3: a column of 1,999 measured cells adapts as fast as 20 probes.
        prior_var = np.zeros((k + 1, k + 1))
        prior_var[0, 0] = OFFSET_VARIANCE
        prior_var[1:, 1:] = self.prior_cov_
        logdet_c = np.linalg.slogdet(prior_var)[1]
        resid = y - basis @ prior_mean
        btb, btr, rr = basis.T @ basis, basis.T @ resid, float(resid @ resid)
        best: Optional[tuple[float, float]] = None
        for noise in noises:
            m = prior_prec + btb / noise
            quad = (rr - float(btr @ np.linalg.solve(m, btr)) / noise) / noise
            logdet = p * np.log(noise) + logdet_c + np.linalg.slogdet(m)[1]
            ll = -0.5 * quad - 0.5 * logdet
            if best is None or ll > best[0]:
                best = (ll, float(noise))
        assert best is not None
        noise = best[1]
        precision = basis.T @ basis / noise + prior_prec
        cov = np.linalg.inv(precision)
        weights = cov @ (basis.T @ y / noise + prior_prec @ prior_mean)
        return DeviceFit(weights, cov, noise)

    # -- files -----------------------------------------------------------------------------------
    def save(self, path: str, space: str, probes: Sequence[str], devices: Sequence[str]) -> None:
        """Write the model to ``path`` (.npz) with its header; atomic."""
        header = {
            "format": FORMAT,
            "version": VERSION,
            "space": space,
            "units": UNITS,
            "normalization": NORMALIZATION,
            "probes": list(probes),
            "devices": list(devices),
            "rank": self.rank_,
            "alpha": self.alpha,
            "ops_per_edge": self.ops_per_edge,
            "created": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
        }
        arrays = {
            "header": np.frombuffer(json.dumps(header).encode(), np.uint8),
            "feature_weights": self.feature_weights_,
            "prior_mean": self.prior_mean_,
            "prior_cov": self.prior_cov_,
            "device_weights": self.device_weights_,
        }
        save_npz(path, arrays)


@dataclass(frozen=True)
class TrainedPredictor:
    """A predictor loaded from a file, with what its header says."""

    model: CrossDevicePredictor
    space: str
    probes: tuple[str, ...]
    devices: tuple[str, ...]
    path: str

    def with_model(self, model: CrossDevicePredictor) -> TrainedPredictor:
        return dataclasses.replace(self, model=model)


def load(path: str, space: Optional[str] = None) -> TrainedPredictor:
    """Load a predictor saved by ``save``; its format, version and (if given) space are checked."""
    header, arrays = read_npz(path, "predictor model", FORMAT, VERSION, space)
    try:
        model = CrossDevicePredictor(
            rank=int(header["rank"]), alpha=float(header["alpha"]), n_probes=len(header["probes"]),
            ops_per_edge=int(header["ops_per_edge"]),
        )  # fmt: skip
        model.feature_weights_ = arrays["feature_weights"]
        model.prior_mean_ = arrays["prior_mean"]
        model.prior_cov_ = arrays["prior_cov"]
        model.device_weights_ = arrays["device_weights"]
        model.rank_ = int(header["rank"])
        k = model.rank_
        if model.feature_weights_.shape[1] != k or model.prior_cov_.shape != (k, k):
            raise ValueError("array shapes do not match its rank")
        probes = tuple(str(p) for p in header["probes"])
        devices = tuple(str(d) for d in header["devices"])
    except (KeyError, TypeError, ValueError, IndexError) as err:
        raise ModelFileError(f"predictor model {path!r} is damaged: {err}") from None
    return TrainedPredictor(model, str(header["space"]), probes, devices, path)


# -- as one of `fleetbench predict`'s methods ----------------------------------------------------------
_SHIPPED: dict[str, TrainedPredictor] = {}


def shipped(space: str) -> Optional[TrainedPredictor]:
    """The pre-trained predictor fleetbench ships for ``space``, or None (loaded once)."""
    import os

    from coordinator.ranking import SHIPPED_PREDICTORS

    path = SHIPPED_PREDICTORS.get(space)
    if path is None or not os.path.exists(path):
        return None
    if space not in _SHIPPED:
        _SHIPPED[space] = load(path, space)
    return _SHIPPED[space]


def probe_rows(trained: TrainedPredictor, archs: Sequence[str]) -> list[Optional[int]]:
    """Where each of ``trained``'s probes is among ``archs`` (None: not a row)."""
    index = {a: i for i, a in enumerate(archs)}
    return [index.get(p) for p in trained.probes]


def probes_measured(trained: TrainedPredictor, archs: Sequence[str], y: np.ndarray) -> int:
    """How many of the probes ``y`` (one value per arch, NaN = not measured) has measured."""
    return sum(1 for r in probe_rows(trained, archs) if r is not None and not np.isnan(y[r]))


class CrossDevice(LatencyPredictor):
    """``fleetbench predict``'s ``crossdevice`` method: the trained cross-device predictor,
    adapted to the target from every measured cell of its column (the probes and any samples)."""

    name = "crossdevice"
    needs_refs = 0

    def __init__(self, trained: Optional[TrainedPredictor] = None, noises: Sequence[float] = NOISES) -> None:
        self.trained = trained
        self.noises = noises

    def _model(self) -> CrossDevicePredictor:
        trained = self.trained or shipped("nas-bench-201")
        if trained is None:
            raise ModelFileError(
                "no cross-device predictor is installed; train one with `fleetbench train-predictor`"
            )
        return trained.model

    def _design_matrix(self, design: Design) -> np.ndarray:
        model = self._model()
        width = model.feature_weights_.shape[0]
        feats = arch_features(design.onehot, design.alive, model.ops_per_edge)
        if feats.shape[1] != width:
            raise ModelFileError("the cross-device predictor was trained for another search space")
        return model._basis_from(feats)

    def fit(self, design: Design, y: np.ndarray) -> CrossDevice:
        idx = np.flatnonzero(~np.isnan(y))
        basis = self._design_matrix(design)
        self.fit_ = self._model().adapt(basis[idx], y[idx], self.noises)
        self.coef_ = self.fit_.weights
        return self

    def pinned(self) -> CrossDevice:
        return CrossDevice(self.trained, noises=(self.fit_.noise,))
