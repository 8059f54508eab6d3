from __future__ import annotations

import math

import numpy as np
import pytest

from coordinator.ranking import NB201_LATENCY
from coordinator.ranking.predictors import Design, make
from coordinator.ranking.spaces import get_space
from coordinator.ranking.tables import read_table
from coordinator.ranking.uncertainty import FALLBACK_MARGIN, Z_95, cv_log_error, margin_factor

pytestmark = pytest.mark.portable  # runs under arm64 emulation too (.ci/arm64)


def test_cv_error_is_small_for_an_easy_target_and_none_for_too_few():
    t = read_table(NB201_LATENCY)
    logs = np.log(t.ms)
    design = Design.build(get_space("nas-bench-201"), t.archs, logs[:, [4]])
    easy = logs[:, 4] * 1.1 + 0.2  # an exact function of the reference
    y = np.full(len(t.archs), np.nan)
    y[::200] = easy[::200]
    hard = np.full(len(t.archs), np.nan)
    hard[::200] = logs[::200, 0]  # the Jetson GPU from a phone CPU alone: much harder
    easy_err = cv_log_error(make("multiref").fit(design, y), design, y)
    hard_err = cv_log_error(make("multiref").fit(design, hard), design, hard)
    assert 0 < easy_err < 0.5 * hard_err
    two = np.full(len(t.archs), np.nan)
    two[:2] = 1.0
    assert cv_log_error(make("lut").fit(design, two), design, two) is None


def test_margin_factor():
    assert margin_factor(0.0) == 1.0
    assert math.isclose(margin_factor(0.2), math.exp(Z_95 * 0.2))
    assert margin_factor(None) == 1.0 + FALLBACK_MARGIN
