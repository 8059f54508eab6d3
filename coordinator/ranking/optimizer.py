"""The optimizer network: (device features, latency budget) -> an architecture, with no search.

Approach 2 of "Scaling Up Deep Neural Network Optimization for Edge Inference" (Lu, Yang,
Ren 2020): a network that takes a device's features and the optimization's parameters and
outputs the design, so a million devices (or a budget that changes per request) cost a
forward pass each, not a search each.

**Training** (``train``): supervised on exact labels.  Devices are the cross-device
predictor's reference devices and synthetic ones drawn from its prior over devices, each
seen through simulated probe measurements (so the network learns from what a real device
would show it).  For budgets spread over each device's predicted latencies, the label is the
most accurate architecture (of the accuracy table, for one metric) whose predicted latency,
plus ``MARGIN_Z`` of its own predictive standard deviation, fits the budget: the same pick
predict-then-search makes.  The network (a small MLP, scikit-learn's, exported to plain
arrays) learns a distribution over each edge's operation.

**Deciding** (``decide``): inputs are the probe log-latencies minus their mean and the
budget's log relative to that mean (so a device twice as fast with a budget twice as tight
is the same question).  One forward pass gives per-edge probabilities; the candidate
architectures are scored by their log-likelihood under them, which decodes the output into a
valid architecture of the candidates; the ``SHORTLIST`` most likely are checked against the
budget with the predictor's posterior for this device and the most accurate that fits is the
pick.  If none fits, the decision falls back to predict-then-search over every candidate
(counted: ``Decision.fallback``).
"""

from __future__ import annotations

import hashlib
import json
import time
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Optional, Union

import numpy as np

from coordinator.errors import ModelFileError, NotEnoughDataError
from coordinator.ranking.crossdevice import CrossDevicePredictor, DeviceFit, Progress, TrainedPredictor
from coordinator.ranking.modelfile import read_npz, save_npz

FORMAT = "fleetbench.optimizer"
VERSION = 1
#: a pick's predicted log-latency plus this many predictive standard deviations must fit
MARGIN_Z = 0.5
#: candidates the network's output is decoded into and checked against the budget
SHORTLIST = 256
#: budgets are drawn between these percentiles of a device's predicted latencies
BUDGET_PERCENTILES = (2.0, 98.0)
#: log-latency noise of the simulated probe measurements of synthetic devices (about 3 %)
PROBE_NOISE = 0.03


def accuracy_digest(accuracy: np.ndarray) -> str:
    """A short fingerprint of an accuracy column (to tell whether a model was trained on it)."""
    return hashlib.sha256(np.round(np.asarray(accuracy, float), 4).tobytes()).hexdigest()[:16]


def features(probe_log: np.ndarray, log_budget: Union[float, np.ndarray]) -> np.ndarray:
    """Network inputs: probes minus their mean, and the budget relative to that mean.

    ``probe_log`` (m, p) or (p,); ``log_budget`` (m,) or a scalar.
    """
    probe_log = np.atleast_2d(probe_log)
    centre = probe_log.mean(axis=1, keepdims=True)
    return np.c_[probe_log - centre, np.reshape(log_budget, (-1, 1)) - centre]


@dataclass(frozen=True)
class Decision:
    row: int  # index into the candidates
    predicted_log: float
    fallback: bool  # True: no shortlisted architecture fitted; predict-then-search decided


class OptimizerNet:
    """The trained network and what it needs to decide; see the module docstring."""

    def __init__(
        self,
        weights: Sequence[np.ndarray],
        biases: Sequence[np.ndarray],
        in_mean: np.ndarray,
        in_scale: np.ndarray,
        header: dict,
    ) -> None:
        self.weights = [np.asarray(w, float) for w in weights]
        self.biases = [np.asarray(b, float) for b in biases]
        self.in_mean = in_mean
        self.in_scale = in_scale
        self.header = header

    @property
    def metric(self) -> str:
        return str(self.header["metric"])

    def edge_log_probs(self, x: np.ndarray) -> np.ndarray:
        """(m, outputs) log-probabilities of each (edge, op) for inputs ``x`` (m, inputs)."""
        h = (x - self.in_mean) / self.in_scale
        for w, b in zip(self.weights[:-1], self.biases[:-1]):
            h = np.maximum(h @ w + b, 0.0)
        logits = h @ self.weights[-1] + self.biases[-1]
        return -np.logaddexp(0.0, -logits)  # log sigmoid, as the network was trained

    def shortlist(self, x: np.ndarray, onehot: np.ndarray, k: int = SHORTLIST) -> np.ndarray:
        """The ``k`` candidates (rows of ``onehot``) the output makes most likely, best first,
        for each input row: (m, k)."""
        scores = self.edge_log_probs(x) @ onehot.T
        k = min(k, onehot.shape[0])
        top = np.argpartition(-scores, k - 1, axis=1)[:, :k]
        order = np.argsort(-np.take_along_axis(scores, top, axis=1), axis=1)
        return np.take_along_axis(top, order, axis=1)

    def save(self, path: str) -> None:
        arrays: dict[str, np.ndarray] = {
            "header": np.frombuffer(json.dumps(self.header).encode(), np.uint8),
            "in_mean": self.in_mean,
            "in_scale": self.in_scale,
        }
        for i, (w, b) in enumerate(zip(self.weights, self.biases)):
            arrays[f"w{i}"] = w.astype(np.float32)  # half the size; decisions do not notice
            arrays[f"b{i}"] = b.astype(np.float32)
        save_npz(path, arrays)


def load(path: str, space: Optional[str] = None) -> OptimizerNet:
    header, arrays = read_npz(path, "optimizer model", FORMAT, VERSION, space)
    try:
        layers = int(header["layers"])
        net = OptimizerNet(
            [arrays[f"w{i}"] for i in range(layers)],
            [arrays[f"b{i}"] for i in range(layers)],
            arrays["in_mean"],
            arrays["in_scale"],
            header,
        )
        inputs = len(header["probes"]) + 1  # the probes, centred, and the budget
        if net.in_mean.shape != (inputs,) or net.weights[0].shape[0] != inputs:
            raise ValueError(f"its first layer does not take {inputs} inputs")
        for w, b, after in zip(net.weights, net.biases, [*net.weights[1:], None]):
            if w.shape[1] != b.shape[0] or (after is not None and after.shape[0] != w.shape[1]):
                raise ValueError("layer shapes do not match")
        str(header["metric"])
    except (KeyError, TypeError, ValueError) as err:
        raise ModelFileError(f"optimizer model {path!r} is damaged: {err}") from None
    return net


def shipped_path(space: str, metric: str) -> Optional[str]:
    """The network fleetbench ships for ``space`` and ``metric``, or None."""
    import os

    from coordinator.ranking import SHIPPED_OPTIMIZERS

    path = SHIPPED_OPTIMIZERS.get((space, metric))
    return path if path is not None and os.path.exists(path) else None


def load_for(path: str, trained: TrainedPredictor, metric: str) -> OptimizerNet:
    """The network in ``path``, checked against what it must serve: ``trained``'s space and
    probes, and ``metric``.  ModelFileError (one sentence) for anything else."""
    net = load(path, trained.space)
    if net.metric != metric:
        raise ModelFileError(f"optimizer model {path!r} was trained for {net.metric}, not {metric}")
    if tuple(net.header.get("probes", ())) != trained.probes:
        raise ModelFileError(
            f"optimizer model {path!r} was trained with another predictor's probes than {trained.path!r} "
            "(`fleetbench train-optimizer --predictor` makes one for it)"
        )
    return net


def pick_under_budget(
    log_mean: np.ndarray, log_std: np.ndarray, accuracy: np.ndarray, log_budget: float, z: float = MARGIN_Z
) -> Optional[int]:
    """Predict-then-search: the most accurate row whose ``log_mean + z * log_std`` fits.

    >>> pick_under_budget(np.log([1.0, 2.0, 4.0]), np.zeros(3), np.array([70.0, 80.0, 90.0]), np.log(3.0))
    1
    """
    fits = log_mean + z * log_std <= log_budget
    if not fits.any():
        return None
    rows = np.flatnonzero(fits)
    return int(rows[np.argmax(accuracy[rows])])


def decide(
    net: OptimizerNet,
    trained: TrainedPredictor,
    device: DeviceFit,
    probe_log: np.ndarray,
    log_budget: float,
    basis: np.ndarray,
    onehot: np.ndarray,
    accuracy: np.ndarray,
) -> Optional[Decision]:
    """One decision: the network's shortlist, checked with the device's posterior.

    ``basis``, ``onehot`` and ``accuracy`` describe the candidates (rows).  None when no
    candidate is predicted to fit the budget at all."""
    short = net.shortlist(features(probe_log, log_budget), onehot)[0]
    mean = device.predict(basis[short])
    std = device.log_std(basis[short])
    best = pick_under_budget(mean, std, accuracy[short], log_budget)
    if best is not None:
        return Decision(int(short[best]), float(mean[best]), False)
    mean_all = device.predict(basis)
    row = pick_under_budget(mean_all, device.log_std(basis), accuracy, log_budget)
    return None if row is None else Decision(row, float(mean_all[row]), True)


def train(
    trained: TrainedPredictor,
    basis: np.ndarray,
    onehot: np.ndarray,
    accuracy: np.ndarray,
    metric: str,
    probe_rows: Sequence[int],
    synthetic: int = 2000,
    budgets: int = 24,
    hidden: Sequence[int] = (256, 256),
    epochs: int = 60,
    seed: int = 0,
    progress: Progress = None,
) -> OptimizerNet:
    """Train the network for one accuracy metric over the candidates (rows of ``basis``)."""
    from coordinator.extras import need

    need("sklearn", "training the optimizer network")
    from sklearn.neural_network import MLPClassifier

    model: CrossDevicePredictor = trained.model
    rng = np.random.default_rng(seed)
    probe_basis = basis[np.asarray(probe_rows)]
    reference = [w for w in model.device_weights_]
    draws = rng.multivariate_normal(model.prior_mean_, model.prior_cov_, size=synthetic)
    devices = reference + [np.r_[rng.normal(0.0, 1.0), v] for v in draws]
    inputs, labels = [], []
    for i, w in enumerate(devices):
        y = probe_basis @ w + rng.normal(0.0, PROBE_NOISE, len(probe_basis))
        fit = model.adapt(probe_basis, y)
        mean = fit.predict(basis)
        std = fit.log_std(basis)
        lo, hi = np.percentile(mean, BUDGET_PERCENTILES)
        for log_budget in rng.uniform(lo, hi, budgets):
            row = pick_under_budget(mean, std, accuracy, log_budget)
            if row is None:
                continue
            inputs.append(features(y, log_budget)[0])
            labels.append(onehot[row])
        if progress is not None and (i + 1) % 250 == 0:
            progress(f"labelled {i + 1}/{len(devices)} devices")
    if not labels:
        raise NotEnoughDataError("no budget of any training device fits an architecture")
    x = np.array(inputs)
    target = np.array(labels, dtype=int)
    in_mean = x.mean(axis=0)
    in_scale = x.std(axis=0) + 1e-9
    if progress is not None:
        progress(f"training the network on {len(x)} decisions ({epochs} epochs)")
    started = time.monotonic()
    import warnings

    from sklearn.exceptions import ConvergenceWarning

    clf = MLPClassifier(hidden_layer_sizes=tuple(hidden), max_iter=epochs, random_state=seed)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", ConvergenceWarning)
        clf.fit((x - in_mean) / in_scale, target)
    header = {
        "format": FORMAT,
        "version": VERSION,
        "space": trained.space,
        "metric": metric,
        "accuracy_digest": accuracy_digest(accuracy),
        "probes": list(trained.probes),
        "margin_z": MARGIN_Z,
        "layers": len(clf.coefs_),
        "decisions": len(x),
        "train_s": round(time.monotonic() - started, 1),
        "created": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
    }
    return OptimizerNet(clf.coefs_, clf.intercepts_, in_mean, in_scale, header)
