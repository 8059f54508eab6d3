"""Old Raspberry Pi OS / Coral images: tflite_runtime (numpy < 2) instead of ai-edge-litert.

Needs an interpreter that has tflite-runtime and not ai-edge-litert; .ci/run builds
one and names it in FLEETBENCH_TFLITE_RUNTIME_PYTHON.  It must run the same Python
version as this one, so the source tree's built timer loads in it.
"""

from __future__ import annotations

import json
import os
import subprocess

import pytest

ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__)))))
OLD_PY = os.environ.get("FLEETBENCH_TFLITE_RUNTIME_PYTHON")

pytestmark = pytest.mark.skipif(
    not OLD_PY, reason="FLEETBENCH_TFLITE_RUNTIME_PYTHON not set (.ci/run sets it)"
)


def _fleetbench(*args):
    env = {**os.environ, "PYTHONPATH": ROOT}
    return subprocess.run(
        [OLD_PY, "-m", "agent", *args], capture_output=True, text=True, env=env, timeout=300
    )


def test_interpreter_really_is_an_old_image():
    proc = subprocess.run(
        [OLD_PY, "-c", "import numpy, tflite_runtime; print(numpy.__version__)"],
        capture_output=True, text=True, check=True,
    )  # fmt: skip
    assert int(proc.stdout.split(".")[0]) < 2
    gone = subprocess.run([OLD_PY, "-c", "import ai_edge_litert"], capture_output=True)
    assert gone.returncode != 0


def test_benchmarks_with_tflite_runtime(tflite_model):
    proc = _fleetbench("bench", tflite_model, "--runs", "5", "--min-time", "0", "--format", "json")
    assert proc.returncode == 0, proc.stderr
    (record,) = json.loads(proc.stdout)
    assert record["backend"]["name"] == "litert"
    assert record["backend"]["runtime"] == "tflite_runtime"
    assert record["timer"]["impl"] == "native"
    assert record["stats"]["n"] >= 5


def test_profile_needs_the_schema_and_says_so(tflite_model):
    proc = _fleetbench("bench", tflite_model, "--runs", "2", "--min-time", "0", "--profile")
    assert proc.returncode == 1
    assert "pip install 'fleetbench[litert]'" in proc.stderr
    assert "Traceback" not in proc.stderr
