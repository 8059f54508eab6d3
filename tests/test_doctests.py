"""The doctested examples in the package's docstrings are tests too."""

from __future__ import annotations

import doctest
import importlib

import pytest

MODULES = [
    "agent.bench.stats",
    "agent.bench.inputs",
    "agent.bench.backends.onnxruntime",
    "agent.collectors.power",
    "coordinator.ranking.pareto",
    "coordinator.ranking.predictors",
    "coordinator.ranking.uncertainty",
    "agent.materialize.nasbench201",
    "agent.materialize.network",
    "agent.materialize.families",
    "coordinator.prune.slicing",
    "agent.transport.discovery",
    "firmware_bridge.framing",
    "firmware_bridge.codec",
    "firmware_bridge.records",
    "firmware_bridge.cli",
]


@pytest.mark.parametrize("name", MODULES)
def test_docstring_examples(name):
    module = importlib.import_module(name)
    result = doctest.testmod(module, optionflags=doctest.ELLIPSIS)
    assert result.attempted > 0, f"{name} has no doctest examples"
    assert result.failed == 0
