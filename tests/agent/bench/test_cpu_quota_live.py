"""A benchmark under a real CPU quota (a cgroup v1 ``cpu`` group on this machine): samples are
groups of runs long enough for the quota to show, and the result says so."""

from __future__ import annotations

import json
import subprocess
import sys

import cgroups
import pytest


@pytest.fixture
def quota_group():
    """40 % of one core per 5 ms period."""
    with cgroups.quota_group(5000, 2000) as path:
        yield path


def bench(model: str, group: str | None, *more: str) -> dict:
    argv = [sys.executable, "-m", "agent", "bench", model, "--runs", "5", "--warmup", "1",
            "--warmup-time", "0", "--min-time", "0", "--format", "json", *more]  # fmt: skip
    if group:  # the shell joins the group, then becomes the benchmark: every thread is limited
        argv = ["sh", "-c", f'echo $$ > {group}/cgroup.procs && exec "$@"', "sh", *argv]
    out = subprocess.run(argv, capture_output=True, text=True, timeout=120)
    assert out.returncode == 0, out.stderr
    (record,) = json.loads(out.stdout)
    return record


def test_under_a_quota_each_sample_is_a_group_of_runs_and_the_result_says_so(onnx_model, quota_group):
    limited = bench(onnx_model, quota_group, "--threads", "1")
    assert limited["protocol"]["runs_per_sample"] > 1
    assert limited["stats"]["n"] == 5  # --runs counts samples
    assert any("CPU quota (0.40 cores per 5 ms)" in w for w in limited["warnings"])

    free = bench(onnx_model, None, "--threads", "1")
    assert free["protocol"]["runs_per_sample"] == 1
    assert not any("CPU quota" in w for w in free["warnings"])


def test_under_a_quota_the_default_thread_count_is_the_quotas_cores_rounded_up(onnx_model, quota_group):
    assert bench(onnx_model, quota_group)["backend"]["threads"] == 1  # 0.4 cores
    assert bench(onnx_model, quota_group, "--threads", "2")["backend"]["threads"] == 2  # asked for
