"""A benchmark under a real CPU quota (a cgroup v1 ``cpu`` group on this machine): samples are
groups of runs long enough for the quota to show, and the result says so."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import uuid

import pytest

CPU = "/sys/fs/cgroup/cpu"


@pytest.fixture
def quota_group():
    """A cgroup limited to 40 % of one core per 5 ms period, removed afterwards."""
    if not os.access(CPU, os.W_OK):
        pytest.skip(f"needs a writable cgroup v1 cpu controller at {CPU} (root)")
    path = os.path.join(CPU, f"fleetbench-test-{uuid.uuid4().hex[:8]}")
    os.mkdir(path)
    try:
        for name, value in (("cpu.cfs_period_us", "5000"), ("cpu.cfs_quota_us", "2000")):
            with open(os.path.join(path, name), "w") as fh:
                fh.write(value)
        yield path
    finally:
        os.rmdir(path)  # the benchmark process has exited, so the group is empty


def bench(model: str, group: str | None) -> dict:
    argv = [sys.executable, "-m", "agent", "bench", model, "--runs", "5", "--warmup", "1",
            "--warmup-time", "0", "--min-time", "0", "--threads", "1", "--format", "json"]  # fmt: skip
    if group:  # the shell joins the group, then becomes the benchmark: every thread is limited
        argv = ["sh", "-c", f'echo $$ > {group}/cgroup.procs && exec "$@"', "sh", *argv]
    out = subprocess.run(argv, capture_output=True, text=True, timeout=120)
    assert out.returncode == 0, out.stderr
    (record,) = json.loads(out.stdout)
    return record


def test_under_a_quota_each_sample_is_a_group_of_runs_and_the_result_says_so(onnx_model, quota_group):
    limited = bench(onnx_model, quota_group)
    assert limited["protocol"]["runs_per_sample"] > 1
    assert limited["stats"]["n"] == 5  # --runs counts samples
    assert any("CPU quota (0.40 cores per 5 ms)" in w for w in limited["warnings"])

    free = bench(onnx_model, None)
    assert free["protocol"]["runs_per_sample"] == 1
    assert not any("CPU quota" in w for w in free["warnings"])
