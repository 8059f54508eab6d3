from __future__ import annotations

import numpy as np
import pytest

from coordinator.errors import NotEnoughDataError, UnknownNameError
from coordinator.ranking import NB201_LATENCY, predictors
from coordinator.ranking.monotonicity import spearman
from coordinator.ranking.predictors import METHODS, Design, make, ridge_gcv
from coordinator.ranking.spaces import get_space
from coordinator.ranking.tables import read_table

pytestmark = pytest.mark.portable  # runs under arm64 emulation too (.ci/arm64)

SPACE = get_space("nas-bench-201")


@pytest.fixture(scope="module")
def public():
    t = read_table(NB201_LATENCY)
    return t, np.log(t.ms)


def _design(t, logs, refs):
    return Design.build(SPACE, t.archs, logs[:, refs])


def _sampled(y, k, seed):
    avail = np.flatnonzero(~np.isnan(y))
    idx = np.random.default_rng(seed).choice(avail, k, replace=False)
    out = np.full_like(y, np.nan)
    out[idx] = y[idx]
    return out, np.setdiff1d(avail, idx)


@pytest.mark.parametrize("name", list(METHODS))
def test_sklearn_contract(public, name):
    t, logs = public
    design = _design(t, logs, [4, 5])
    y, _ = _sampled(logs[:, 3], 20, 0)
    est = make(name)
    assert est.fit(design, y) is est
    learned = [a for a in vars(est) if a.endswith("_")]
    assert learned, "a fitted predictor exposes learned attributes ending in _"
    pred = est.predict(design)
    assert pred.shape == (len(t.archs),) and np.isfinite(pred).all()


def test_ridge_gcv_recovers_a_line():
    x = np.linspace(0, 1, 30)
    a = np.c_[x, np.ones(30)]
    w, _lam = ridge_gcv(a, 3 * x - 2, np.array([1.0, 0.0]))
    np.testing.assert_allclose(w, [3, -2], atol=1e-3)


def test_multiref_recovers_an_exact_mix(public):
    t, logs = public
    design = _design(t, logs, [2, 3, 4, 5])
    target = 0.6 * logs[:, 4] + 0.4 * logs[:, 5] + 0.3
    y, test = _sampled(target, 30, 1)
    pred = make("multiref").fit(design, y).predict(design)
    assert spearman(pred[test], target[test]) > 0.99


def test_fleet_adapts_better_than_no_adaptation_on_real_data(public):
    # Leave the Raspberry Pi 4 out; 10 random measurements of it.
    t, logs = public
    design = _design(t, logs, [0, 2, 3, 4])
    srcc = {m: [] for m in ("none", "fleet")}
    for seed in range(5):
        y, test = _sampled(logs[:, 5], 10, seed)
        for m in srcc:
            srcc[m].append(spearman(make(m).fit(design, y).predict(design)[test], logs[test, 5]))
    assert np.mean(srcc["fleet"]) > np.mean(srcc["none"])


def test_no_adaptation_keeps_the_proxy_order(public):
    t, logs = public
    design = _design(t, logs, [4])
    y, _ = _sampled(logs[:, 0], 5, 3)
    pred = make("none").fit(design, y).predict(design)
    assert spearman(pred, logs[:, 4]) == pytest.approx(1.0)


def test_errors(public):
    t, logs = public
    design = _design(t, logs, [4])
    one, _ = _sampled(logs[:, 5], 1, 0)
    with pytest.raises(NotEnoughDataError, match="1 measured"):
        make("fleet").fit(design, one)
    no_refs = Design.build(SPACE, t.archs, None)
    y, _ = _sampled(logs[:, 5], 10, 0)
    with pytest.raises(NotEnoughDataError, match="reference device"):
        make("adaproxy").fit(no_refs, y)
    assert make("lut").fit(no_refs, y) is not None
    with pytest.raises(UnknownNameError, match="--method 'magic'"):
        make("magic")
    assert predictors.DEFAULT_METHOD in METHODS
