"""How far off a device's predicted latencies may be, and the margin a budgeted pick needs.

Picking the most accurate architecture whose *predicted* latency fits a budget
favours architectures whose latency is underestimated (the winner's curse): on the
public table a quarter of such picks break the budget.  The fix is a margin sized to
the prediction's own error, estimated by cross-validation over the device's
measured samples (leave-one-out up to 10 samples, 10-fold beyond), in log-latency.
A predicted cell then counts as fitting only if ``latency * exp(z * sigma)`` does,
with z = 1.645 (one-sided 95 %).
"""

from __future__ import annotations

import math
from typing import Optional

import numpy as np

from coordinator.ranking.predictors import Design, LatencyPredictor

#: one-sided 95 % normal quantile
Z_95 = 1.645
#: margin used for a predicted column whose error could not be estimated
FALLBACK_MARGIN = 0.25


def cv_log_error(
    fitted: LatencyPredictor, design: Design, y: np.ndarray, folds: int = 10, seed: int = 0
) -> Optional[float]:
    """RMS cross-validated error, in log-latency, of the method ``fitted`` was fitted with
    on ``design`` and ``y``; None with fewer than 3 samples."""
    idx = np.flatnonzero(~np.isnan(y))
    if len(idx) < 3:
        return None
    rng = np.random.default_rng(seed)
    order = rng.permutation(idx)
    groups = np.array_split(order, min(folds, len(idx)))
    # Hyper-parameters were chosen once, on all samples, by the caller's fit; each fold
    # refits only the weights.  Slightly optimistic, and 20-30x cheaper than repeating the
    # whole search per fold.
    errors = []
    for held in groups:
        train = y.copy()
        train[held] = np.nan
        if (~np.isnan(train)).sum() < 2:
            continue
        pred = fitted.pinned().fit(design, train).predict(design)
        errors.extend(pred[held] - y[held])
    return float(np.sqrt(np.mean(np.square(errors)))) if errors else None


def margin_factor(sigma: Optional[float], z: float = Z_95) -> float:
    """Multiplier applied to a predicted latency before it is compared with a budget.

    >>> round(margin_factor(0.1), 3)
    1.179
    >>> margin_factor(None) == 1 + FALLBACK_MARGIN
    True
    """
    return 1.0 + FALLBACK_MARGIN if sigma is None else math.exp(z * sigma)
