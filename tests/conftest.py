"""Shared fixtures: small real models written once per session; no silent skips in CI."""

from __future__ import annotations

import os
import sys

import pytest

sys.path.insert(0, os.path.dirname(__file__))  # for tests/modelgen.py

import modelgen
from broker import mosquitto  # noqa: F401  (a fixture: a real broker on 127.0.0.1)
from ci_skips import pytest_make_collect_report, pytest_runtest_makereport  # noqa: F401  (hooks)
from tls import profile  # noqa: F401  (a fixture: the shipped broker profile, running)


@pytest.fixture(scope="session")
def conv_weights():
    return modelgen.conv_net_weights()


@pytest.fixture(scope="session")
def model_dir(tmp_path_factory):
    return tmp_path_factory.mktemp("models")


@pytest.fixture(scope="session")
def onnx_model(model_dir, conv_weights) -> str:
    pytest.importorskip("onnxruntime")
    return modelgen.onnx_conv_net(str(model_dir / "conv.onnx"), conv_weights)


@pytest.fixture(scope="session")
def tflite_model(model_dir, conv_weights) -> str:
    pytest.importorskip("ai_edge_litert")
    return modelgen.tflite_conv_net(str(model_dir / "conv.tflite"), conv_weights)


@pytest.fixture(scope="session")
def postgres():
    """A real PostgreSQL server for the session (tests/postgres.py)."""
    from postgres import running

    with running() as server:
        yield server


@pytest.fixture(params=["sqlite", "postgresql"])
def db_url(request, tmp_path):
    """A new, empty database on each engine the coordinator supports: a SQLite file, then a
    database on the session's PostgreSQL server."""
    if request.param == "sqlite":
        return str(tmp_path / "fleet.sqlite")
    return request.getfixturevalue("postgres").new_database()
