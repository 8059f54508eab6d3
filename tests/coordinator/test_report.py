"""The demo report's words about ranking agreement: a fleet device that ranks architectures unlike
every reference device gets a sentence saying so and what it means (issue 15: a Jetson SRCC of
0.64 was shown without a word)."""

from __future__ import annotations

import numpy as np

from coordinator.report import srcc_notes


def test_a_device_ranking_unlike_every_reference_is_explained_and_the_others_are_not():
    names = ["pixel3", "coral_edgetpu", "sim-rpi4-a (sim)", "sim-jetson-tx2 (sim)"]
    srcc = np.array([
        [1.00, 0.90, 0.97, 0.55],
        [0.90, 1.00, 0.93, 0.64],
        [0.97, 0.93, 1.00, 0.60],
        [0.55, 0.64, 0.60, 1.00],
    ])  # fmt: skip
    (note,) = srcc_notes(names, srcc, refs=2, archs=8)
    assert note.startswith("sim-jetson-tx2 (sim) ranks these 8 architectures unlike every reference device "
                           "(best SRCC 0.64, with coral_edgetpu)")  # fmt: skip
    assert "its own samples" in note and "adapt the predictor" in note
    srcc[3, :2] = np.nan  # measured too few architectures in common to say
    assert srcc_notes(names, srcc, refs=2, archs=8) == []


def test_a_decision_says_whether_its_latency_was_measured_or_predicted():
    """Issue 15: a chosen architecture among the device's own samples read "predicted 0.890 ms,
    0.890 ms with the error margin"; it was measured, and no margin was added."""
    from coordinator.cli.format import describe
    from coordinator.store.records import DecisionRecord, Deployment

    inputs = {"round": 1, "reason": "new device", "budget_ms": 0.916, "predicted_ms": 0.89,
              "with_margin_ms": 0.89, "accuracy": 93.5, "metric": "cifar10_top1",
              "measured": {"|a~0|": 0.89, "|b~0|": 2.0}, "method": "fleet", "references": ["pixel3"],
              "log_error": 0.2, "basis": "measured"}  # fmt: skip
    over = Deployment("r1:pi", "r1", "pi", "canary", "rolled_back", 1, 0.0, p50_ms=1.03, p50_lo_ms=1.01,
                      p50_hi_ms=1.05)  # fmt: skip
    record = DecisionRecord(1, "pi", 0.0, "nas-bench-201", "|a~0|", 0.916, 0.89, 93.5, "r1", inputs, over)
    text = describe(record)
    assert (
        "measured 0.890 ms on the device (its own measurement: no margin), under the budget of 0.916 ms"
        in text
    )
    assert "with the error margin" not in text
    assert (
        "smoke run on the device: p50 1.030 ms (95 % interval 1.010-1.050); within budget: NO (+12 %)" in text
    )
    guessed = {**inputs, "basis": "predicted", "predicted_ms": 0.7, "with_margin_ms": 0.85}
    predicted = DecisionRecord(1, "pi", 0.0, "nas-bench-201", "|c~0|", 0.916, 0.7, 93.0, None, guessed)
    assert "predicted 0.700 ms, 0.850 ms with the error margin, under the budget of 0.916 ms" in describe(
        predicted
    )
