"""One re-ranking decision on the public table: a held-out device from 10 measurements."""

from __future__ import annotations

import os

import numpy as np
import pytest

from coordinator.errors import NotEnoughDataError, UnknownNameError
from coordinator.ranking import DATA_DIR as DATA
from coordinator.ranking.decision import decide, plan_samples
from coordinator.ranking.spaces import get_space
from coordinator.ranking.tables import LatencyTable, read_accuracy, read_table

pytestmark = pytest.mark.portable  # runs under arm64 emulation too (.ci/arm64)

SPACE = get_space("nas-bench-201")


@pytest.fixture(scope="module")
def held_out():
    table = read_table(os.path.join(DATA, "nb201_latency_ms.csv"))
    accuracy, _ = read_accuracy(os.path.join(DATA, "nb201_accuracy.csv"), "cifar10_top1")
    j = table.devices.index("raspberry_pi4")
    reference = LatencyTable(
        table.archs, tuple(d for k, d in enumerate(table.devices) if k != j), np.delete(table.ms, j, axis=1)
    )
    truth = dict(zip(table.archs, table.ms[:, j]))
    return reference, truth, accuracy


@pytest.mark.parametrize("budget_ms", [30.0, 45.0, 70.0])  # Pi 4 latencies: 19.5-98.9 ms
def test_a_new_device_gets_an_architecture_that_really_fits(held_out, budget_ms):
    reference, truth, accuracy = held_out
    archs = plan_samples(reference, SPACE, 10, seed=1)
    assert len(set(archs)) == 10
    d = decide(reference, SPACE, "new-pi", {a: truth[a] for a in archs}, accuracy, budget_ms)
    assert d.arch is not None and d.with_margin_ms <= budget_ms
    assert truth[d.arch] <= budget_ms * 1.05  # the margin keeps the true latency inside the budget
    # and it is a good pick: within 1 point of the best that truly fits
    best = max(accuracy[a] for a in reference.archs if truth[a] <= budget_ms and a in accuracy)
    assert d.accuracy >= best - 1.0
    assert len(d.measured) == 10 and d.references and d.log_error is not None


def test_nothing_fits_a_tiny_budget(held_out):
    reference, truth, accuracy = held_out
    archs = plan_samples(reference, SPACE, 10)
    d = decide(reference, SPACE, "new-pi", {a: truth[a] for a in archs}, accuracy, budget_ms=0.001)
    assert d.arch is None and d.predicted_ms is None


def test_bad_inputs(held_out):
    reference, truth, accuracy = held_out
    one = dict(list(truth.items())[:1])
    with pytest.raises(NotEnoughDataError, match="at least 2"):
        decide(reference, SPACE, "new-pi", one, accuracy, 10.0)
    with pytest.raises(UnknownNameError, match="not in the table"):
        decide(reference, SPACE, "new-pi", {"|x|": 1.0, **one}, accuracy, 10.0)
    with pytest.raises(UnknownNameError, match="already a column"):
        decide(reference, SPACE, "pixel3", dict(list(truth.items())[:5]), accuracy, 10.0)
