"""The measurement protocol and its warnings."""

from __future__ import annotations

import pytest

import bench_kernels
from agent.bench.metadata import DeviceSnapshot
from agent.bench.runner import BenchSettings, measure, run_benchmark, run_warnings
from agent.bench.stats import LatencyStats
from agent.common.errors import UsageError


def _spin(ns):
    def fn():
        end = bench_kernels.now_ns() + ns
        while bench_kernels.now_ns() < end:
            pass

    return fn


def test_runs_and_warmup_counts_are_met():
    calls = []
    s = BenchSettings(runs=25, warmup_runs=4, warmup_time_s=0, min_time_s=0, max_time_s=30)
    warm, batches, _ = measure(lambda: calls.append(1), s)
    n = sum(len(b) for b in batches)
    assert warm == 4
    assert n >= 25
    assert len(calls) == warm + n


def test_min_time_is_met():
    # Each call takes >= 1 ms of clock time, so 50 ms of measuring needs >= 50 calls
    # beyond the 2 asked for.
    s = BenchSettings(runs=2, warmup_runs=0, warmup_time_s=0, min_time_s=0.05, max_time_s=30)
    _, batches, seconds = measure(_spin(1_000_000), s)
    assert seconds >= 0.05
    assert sum(len(b) for b in batches) >= 2


def test_max_time_caps_the_runs():
    # 5 ms per call and a 50 ms cap: nowhere near 1000 runs.
    s = BenchSettings(runs=1000, warmup_runs=0, warmup_time_s=0, min_time_s=0, max_time_s=0.05)
    _, batches, _ = measure(_spin(5_000_000), s)
    n = sum(len(b) for b in batches)
    assert 1 <= n < 1000


def test_run_count_is_capped(monkeypatch):
    from agent.bench import runner

    monkeypatch.setattr(runner, "MAX_RUNS", 500)
    s = BenchSettings(runs=10, warmup_runs=0, warmup_time_s=0, min_time_s=60, max_time_s=120)
    _, batches, seconds = measure(lambda: None, s)
    assert sum(len(b) for b in batches) == 500
    stats = LatencyStats.from_ns([int(v) for b in batches for v in b])
    text = "\n".join(run_warnings(stats, s, _snap(), _snap(), seconds))
    assert "500-run cap" in text and "--min-time 60 s" in text


@pytest.mark.parametrize("kw,match", [
    ({"runs": 0}, "--runs"),
    ({"max_time_s": 0}, "--max-time"),
    ({"min_time_s": 5, "max_time_s": 2}, "shorter than --min-time"),
    ({"threads": 0}, "--threads"),
    ({"warmup_runs": -1}, "--warmup"),
    ({"seed": -1}, "--seed"),
    ({"max_time_s": float("inf")}, "finite"),
])  # fmt: skip
def test_settings_validation(kw, match):
    with pytest.raises(UsageError, match=match):
        BenchSettings(**kw).validate()


def _snap(**kw):
    base = dict(
        hostname="h", system="Linux", kernel="6", machine="aarch64", python="3.11", board=None,
        cpu_model=None, cores_logical=4, cores_physical=4, freq_policies=(), temperatures_c=(),
        rpi_throttled=None, battery_percent=None, battery_plugged=None, load_1m=None,
    )  # fmt: skip
    base.update(kw)
    return DeviceSnapshot(**base)


def test_warnings_flag_noise_and_short_runs():
    noisy = LatencyStats.from_ns([1_000_000, 3_000_000, 1_000_000, 5_000_000, 1_000_000])
    w = run_warnings(noisy, BenchSettings(runs=50, max_time_s=2), _snap(), _snap())
    text = "\n".join(w)
    assert "only 5 of 50 runs fit in --max-time 2 s" in text
    assert "only 5 samples" in text
    assert "CV" in text


def test_steady_run_has_no_warnings():
    steady = LatencyStats.from_ns([1_000_000 + i for i in range(100)])
    if bench_kernels.IMPL != "native":
        pytest.skip("the python-timer warning applies")
    assert run_warnings(steady, BenchSettings(runs=100), _snap(), _snap()) == []


def test_python_timer_is_flagged(monkeypatch):
    monkeypatch.setattr(bench_kernels, "IMPL", "python")
    monkeypatch.setattr(bench_kernels, "FALLBACK_REASON", "FLEETBENCH_TIMER=python")
    steady = LatencyStats.from_ns([1_000_000] * 20)
    w = run_warnings(steady, BenchSettings(runs=20), _snap(), _snap())
    assert any("pure-Python timer" in x for x in w)


def test_record_carries_protocol_and_timer(onnx_model):
    s = BenchSettings(runs=7, warmup_runs=2, warmup_time_s=0, min_time_s=0, threads=1, seed=3)
    r = run_benchmark(onnx_model, s)
    assert r.protocol.runs == 7 and r.protocol.warmup_done == 2 and r.protocol.seed == 3
    assert r.stats.n == len(r.samples_ns) >= 7
    assert r.timer.impl == bench_kernels.IMPL and r.timer.clock == bench_kernels.CLOCK
    assert r.backend.threads == 1
    assert r.device.cores_logical
    assert r.protocol.load_ms > 0 and r.protocol.first_run_ms > 0
