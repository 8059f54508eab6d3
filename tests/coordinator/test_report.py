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
