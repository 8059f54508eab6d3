from __future__ import annotations

import numpy as np
import pytest
from hypothesis import given
from hypothesis import strategies as st

from coordinator.ranking import NB201_LATENCY
from coordinator.ranking.monotonicity import REUSE_SRCC, monotonicity, rankdata
from coordinator.ranking.tables import LatencyTable, read_table

pytestmark = pytest.mark.portable  # runs under arm64 emulation too (.ci/arm64)

scipy_stats = pytest.importorskip("scipy.stats")


@given(st.lists(st.integers(0, 6), min_size=1, max_size=40))
def test_rankdata_matches_scipy_with_ties(values):
    a = np.array(values, dtype=float)
    np.testing.assert_allclose(rankdata(a), scipy_stats.rankdata(a, method="average"))


def test_public_matrix_matches_scipy_pairwise():
    t = read_table(NB201_LATENCY)
    m = monotonicity(t, kendall=True)
    for i in range(6):
        for j in range(6):
            both = t.measured[:, i] & t.measured[:, j]
            assert m.counts[i, j] == both.sum()
            want = scipy_stats.spearmanr(t.ms[both, i], t.ms[both, j]).statistic
            assert m.srcc[i, j] == pytest.approx(want, abs=1e-9)
            tau = scipy_stats.kendalltau(t.ms[both, i], t.ms[both, j]).statistic
            assert m.kendall[i, j] == pytest.approx(tau, abs=1e-9)
    assert m.counts[1, 1] == 1740


def test_proxy_and_reuse_rule():
    t = read_table(NB201_LATENCY)
    m = monotonicity(t)
    agree = m.mean_agreement
    assert m.proxy == t.devices[int(np.argmax(agree))]
    reuse = m.reuse("raspberry_pi4")
    assert reuse["zc706_fpga"] and reuse["pixel3"]  # 0.921 >= 0.9
    assert not reuse["jetson_tx2_edgegpu"]
    assert REUSE_SRCC == 0.9


def test_tiny_and_degenerate_tables():
    archs = ("a", "b", "c")
    t = LatencyTable(archs, ("x", "y", "z"), np.array([[1, 3, np.nan], [2, 2, np.nan], [3, 1, 5.0]]))
    m = monotonicity(t)
    assert m.srcc[0, 1] == pytest.approx(-1.0)
    assert np.isnan(m.srcc[0, 2]) and m.counts[0, 2] == 1  # one shared row: no correlation
    d = m.to_dict()
    assert d["srcc"][0][2] is None and d["proxy"] in ("x", "y")


@given(st.lists(st.lists(st.integers(0, 4), min_size=3, max_size=3), min_size=1, max_size=30))
def test_column_ranks_match_scipy(rows):
    from coordinator.ranking.monotonicity import rankdata_columns

    a = np.array(rows, dtype=float)
    np.testing.assert_allclose(rankdata_columns(a), scipy_stats.rankdata(a, axis=0, method="average"))
