from __future__ import annotations

import numpy as np
import pytest

from coordinator.errors import NotEnoughDataError, UnknownNameError
from coordinator.ranking import NB201_LATENCY
from coordinator.ranking.fill import fill_table
from coordinator.ranking.monotonicity import spearman
from coordinator.ranking.spaces import get_space
from coordinator.ranking.tables import LatencyTable, read_table

pytestmark = pytest.mark.portable  # runs under arm64 emulation too (.ci/arm64)

SPACE = get_space("nas-bench-201")


@pytest.fixture(scope="module")
def public():
    return read_table(NB201_LATENCY)


def _with_sparse(t, device, keep):
    ms = t.ms.copy()
    j = t.devices.index(device)
    mask = np.ones(len(t.archs), bool)
    mask[keep] = False
    ms[mask, j] = np.nan
    return LatencyTable(t.archs, t.devices, ms), j


def test_fills_everything_and_keeps_measured_cells(public):
    sparse, j = _with_sparse(public, "pixel3", np.arange(0, 1999, 150))
    filled, report = fill_table(sparse, SPACE)
    assert not np.isnan(filled.ms).any()
    measured = sparse.measured
    np.testing.assert_array_equal(filled.ms[measured], sparse.ms[measured])
    assert report.proxy in report.references and "pixel3" not in report.references
    hidden = ~measured[:, j]
    assert spearman(filled.ms[hidden, j], public.ms[hidden, j]) > 0.8


def test_proxy_mode_uses_only_the_proxy(public):
    sparse, _ = _with_sparse(public, "pixel3", np.arange(0, 1999, 100))
    _, report = fill_table(sparse, SPACE, method="adaproxy", proxy="raspberry_pi4")
    assert report.references == ["raspberry_pi4"]
    assert report.method["pixel3"] == "adaproxy from raspberry_pi4"
    assert report.method["coral_edgetpu"] == "adaproxy from raspberry_pi4"


def test_proxy_with_missing_cells_is_completed_first(public):
    _, report = fill_table(public, SPACE, proxy="coral_edgetpu")
    assert any("proxy coral_edgetpu has 259 missing cells" in w for w in report.warnings)


@pytest.mark.parametrize("keep", [[], [7]])
def test_too_few_measurements_fall_back_to_the_proxy_ranking(public, keep):
    sparse, j = _with_sparse(public, "pixel3", keep)
    filled, report = fill_table(sparse, SPACE)
    assert any("pixel3 has" in w and "too few to adapt" in w for w in report.warnings)
    proxy = public.column(report.proxy)
    assert spearman(filled.ms[:, j], proxy) == pytest.approx(1.0)
    if keep:
        assert filled.ms[7, j] == public.ms[7, j]


def test_no_fully_measured_device(public):
    ms = public.ms[:, [1]].copy()  # only the Coral column, which has gaps
    coral = LatencyTable(public.archs, ("coral",), ms)
    filled, report = fill_table(coral, SPACE, method="fleet")
    assert not np.isnan(filled.ms).any()
    assert report.method["coral"].startswith("lut")
    # with the probes measured, the cross-device predictor needs no reference device at all
    filled, report = fill_table(coral, SPACE)
    assert not np.isnan(filled.ms).any()
    assert report.method["coral"] == "crossdevice from 20 probes + 1720 samples"


def test_unknown_proxy_and_method(public):
    with pytest.raises(UnknownNameError, match="'nosuch'"):
        fill_table(public, SPACE, proxy="nosuch")
    with pytest.raises(UnknownNameError, match="--method"):
        fill_table(public, SPACE, method="magic")


def test_sparse_proxy_is_refused(public):
    sparse, _ = _with_sparse(public, "pixel3", [1, 2])
    with pytest.raises(NotEnoughDataError, match="--proxy pixel3 has only 2"):
        fill_table(sparse, SPACE, proxy="pixel3")
