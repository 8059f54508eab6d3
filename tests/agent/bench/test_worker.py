"""--isolate: a model that crashes its runtime cannot take the caller down."""

from __future__ import annotations

import os
import signal

import pytest

from agent.bench.runner import BenchSettings
from agent.bench.worker import call_in_worker, run_isolated
from agent.common.errors import ModelError, UsageError, WorkerCrashedError, WorkerTimeoutError


# Targets run in a spawned process, so they must be module-level functions.
def _segfault(payload, send_progress):
    os.kill(os.getpid(), signal.SIGSEGV)


def _exit_hard(payload, send_progress):
    os._exit(3)


def _raise_usage(payload, send_progress):
    raise UsageError("bad flag in the worker")


def _raise_bug(payload, send_progress):
    raise ZeroDivisionError("unexpected")


def _report_then_hang(payload, send_progress):
    send_progress("started")
    while True:
        pass


def _echo(payload, send_progress):
    send_progress("half", 1)
    return {"got": payload}


def test_value_and_progress_come_back():
    seen = []
    assert call_in_worker(_echo, [1, 2], 60, "echo", lambda *a: seen.append(a)) == {"got": [1, 2]}
    assert seen == [("half", 1)]


def test_segfault_is_reported_not_fatal():
    with pytest.raises(WorkerCrashedError, match="SIGSEGV"):
        call_in_worker(_segfault, None, 60, "'crash.onnx'")


def test_hard_exit_is_reported():
    with pytest.raises(WorkerCrashedError, match="exited with code 3"):
        call_in_worker(_exit_hard, None, 60, "x")


def test_errors_keep_their_kind():
    with pytest.raises(UsageError, match="bad flag in the worker"):
        call_in_worker(_raise_usage, None, 60, "x")
    with pytest.raises(Exception, match="ZeroDivisionError: unexpected"):
        call_in_worker(_raise_bug, None, 60, "x")


def test_hung_worker_is_killed():
    seen = []
    with pytest.raises(WorkerTimeoutError, match="did not finish within 5 s"):
        call_in_worker(_report_then_hang, None, 5, "hang", lambda *a: seen.append(a))
    assert seen == [("started",)]


def test_isolated_benchmark_matches_in_process(onnx_model):
    s = BenchSettings(runs=5, warmup_runs=1, warmup_time_s=0, min_time_s=0, threads=1, isolate=True)
    r = run_isolated(onnx_model, s)
    assert r.protocol.isolated and r.stats.n >= 5 and r.backend.name == "onnxruntime"


def test_isolated_model_error_is_the_same_error(tmp_path):
    s = BenchSettings(runs=1, isolate=True)
    with pytest.raises(ModelError, match="does not exist"):
        run_isolated(str(tmp_path / "nope.onnx"), s)
