from __future__ import annotations

import numpy as np
import pytest
from hypothesis import given
from hypothesis import strategies as st

from coordinator.errors import NotEnoughDataError, UnknownNameError
from coordinator.ranking import NB201_LATENCY, planning
from coordinator.ranking.pareto import best_under_budget, pareto_front, pareto_front_slow
from coordinator.ranking.predictors import Design
from coordinator.ranking.spaces import get_space
from coordinator.ranking.tables import read_table

pytestmark = pytest.mark.portable  # runs under arm64 emulation too (.ci/arm64)


@pytest.fixture(scope="module")
def design():
    t = read_table(NB201_LATENCY)
    return Design.build(get_space("nas-bench-201"), t.archs, np.log(t.ms[:, [0, 2, 3, 4]]))


@pytest.mark.parametrize("method", planning.PLANNERS)
def test_plans_are_distinct_candidates_and_repeatable(design, method):
    cand = np.arange(0, design.n, 3)
    a = planning.plan(design, 12, method, seed=4, candidates=cand)
    b = planning.plan(design, 12, method, seed=4, candidates=cand)
    assert len(set(a.tolist())) == 12 and set(a.tolist()) <= set(cand.tolist())
    np.testing.assert_array_equal(a, b)


def test_spread_covers_the_latency_range(design):
    # The planned samples span more of a reference device's latency range than the
    # middle half of it: they are spread, not clustered.
    ref = design.refs[:, 3]
    chosen = planning.plan(design, 10, "spread", seed=0)
    lo, hi = np.quantile(ref, [0.25, 0.75])
    assert ref[chosen].min() < lo and ref[chosen].max() > hi


def test_planner_errors(design):
    with pytest.raises(NotEnoughDataError):
        planning.plan(design, 0)
    with pytest.raises(NotEnoughDataError):
        planning.plan(design, 5, candidates=np.arange(3))
    with pytest.raises(UnknownNameError):
        planning.plan(design, 5, "greedy")


points = st.lists(st.tuples(st.integers(1, 20), st.integers(0, 20)), min_size=1, max_size=40)


@given(points)
def test_fast_pareto_front_matches_the_slow_reference(pts):
    lat = np.array([p[0] for p in pts], float)
    acc = np.array([p[1] for p in pts], float)
    fast = pareto_front(lat, acc)
    slow = pareto_front_slow(lat, acc)
    assert [(lat[i], acc[i]) for i in fast] == [(lat[i], acc[i]) for i in slow]


def test_best_under_budget():
    lat = np.array([5.0, 10.0, 10.0, 20.0])
    acc = np.array([90.0, 93.0, 93.0, 95.0])
    assert best_under_budget(lat, acc, 12) == 1
    assert best_under_budget(lat, acc, 25) == 3
    assert best_under_budget(lat, acc, 4) is None
