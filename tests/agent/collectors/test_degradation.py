"""The degradation index: baseline on disk, idle-and-cool gating, re-baselining after upgrades."""

from __future__ import annotations

import json

import boards
import pytest
from sysfs_tree import make_tree

from agent.bench.worker import call_in_worker
from agent.collectors.degradation import DegradationTracker, reference_workload
from agent.collectors.health import HealthMonitor

pytestmark = pytest.mark.portable  # runs under arm64 emulation too (.ci/arm64)

FP = {"workload": 1, "python": "3.11.7", "numpy": "2.4.6", "machine": "aarch64", "timer": "native"}


def tracker(tmp_path, **kw):
    args = {"interval_s": 3600, "max_load_per_core": 0.3, "max_temperature_c": 65.0, **kw}
    return DegradationTracker(str(tmp_path / "degradation.json"), **args)


def test_baseline_then_index_kept_on_disk(tmp_path):
    t = tracker(tmp_path)
    assert t.due(now=0) and t.state().index is None
    assert t.record({"median_ns": 400_000, "fingerprint": FP}, now=100).index == 1.0
    assert not t.due(now=200) and t.due(now=100 + 3600)
    again = tracker(tmp_path)  # a restart reads the baseline back
    state = again.record({"median_ns": 460_000, "fingerprint": FP}, now=4000)
    assert (state.index, state.baseline_ms, state.last_ms, state.measurements) == (1.15, 0.4, 0.46, 2)


def test_an_upgrade_takes_a_new_baseline_instead_of_a_false_alarm(tmp_path):
    t = tracker(tmp_path)
    t.record({"median_ns": 400_000, "fingerprint": FP}, now=1)
    state = t.record({"median_ns": 300_000, "fingerprint": {**FP, "numpy": "2.5.0"}}, now=2)
    assert (state.index, state.baseline_ms, state.measurements) == (1.0, 0.3, 1)


def test_a_damaged_state_file_costs_a_baseline_not_the_agent(tmp_path, caplog):
    (tmp_path / "degradation.json").write_text("{truncated")
    t = tracker(tmp_path)
    assert t.due(now=0) and "unreadable" in caplog.text
    t.record({"median_ns": 1e6, "fingerprint": FP}, now=1)
    assert json.loads((tmp_path / "degradation.json").read_text())["baseline"]["median_ns"] == 1e6


def test_probe_waits_for_idle_and_cool(tmp_path):
    busy = {**boards.JETSON_NANO, "/proc/loadavg": "3.90 2.00 1.00 1/1 1\n"}
    hot = {**boards.RPI4, "/sys/class/thermal/thermal_zone0/temp": "71000\n"}
    t = tracker(tmp_path)
    sample = HealthMonitor(make_tree(tmp_path / "busy", busy), run=lambda a: None).sample()
    assert t.blocked_by(sample, 4) == "busy (load 0.97 per core > 0.3)"
    sample = HealthMonitor(make_tree(tmp_path / "hot", hot), run=lambda a: None).sample()
    assert t.blocked_by(sample, 4) == "warm (71.0 C > 65 C)"
    sample = HealthMonitor(make_tree(tmp_path / "ok", boards.RPI4), run=lambda a: None).sample()
    assert t.blocked_by(sample, 4) is None


def test_the_reference_workload_runs_in_a_worker():
    out = call_in_worker(reference_workload, {"runs": 20}, 120.0, "the reference workload")
    assert out["runs"] == 20 and out["median_ns"] > 0
    assert out["fingerprint"]["workload"] == 1 and out["fingerprint"]["numpy"]
