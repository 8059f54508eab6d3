"""Job messages are checked strictly: every malformed or unsafe job is refused with a reason."""

from __future__ import annotations

import os

import pytest

from agent.config import JobsConfig
from agent.jobs import Job, JobError, JobStore, blocked_by, parse_job

LIMITS = JobsConfig(max_runs=1000, max_time_s=60.0)


@pytest.fixture
def models(tmp_path):
    root = tmp_path / "models"
    (root / "sub").mkdir(parents=True)
    (root / "a.onnx").write_bytes(b"x")
    (root / "sub" / "b.tflite").write_bytes(b"x")
    (tmp_path / "secret.onnx").write_bytes(b"x")
    os.symlink(tmp_path / "secret.onnx", root / "link.onnx")
    return str(root)


def test_a_good_job(models):
    job = parse_job(
        {
            "job_id": "j-1",
            "models": ["a.onnx", "sub/b.tflite"],
            "settings": {"runs": 10, "max_time_s": 5, "backend": "auto"},
        },
        models,
        LIMITS,
    )
    assert job == Job("j-1", ("a.onnx", "sub/b.tflite"), {"runs": 10, "max_time_s": 5.0, "backend": "auto"})


@pytest.mark.parametrize(
    "data, message",
    [
        ([], "a job must be a JSON object"),
        ({"models": ["a.onnx"]}, "job_id must be"),
        ({"job_id": "../x", "models": ["a.onnx"]}, "job_id must be"),
        ({"job_id": "j", "models": ["a.onnx"], "setings": {}}, "unknown field(s) 'setings'"),
        ({"job_id": "j", "models": []}, "models must be a non-empty list"),
        ({"job_id": "j", "models": "a.onnx"}, "models must be a non-empty list"),
        ({"job_id": "j", "models": ["a.onnx", "a.onnx"]}, "the same model twice"),
        ({"job_id": "j", "models": ["../secret.onnx"]}, "outside the model directory"),
        ({"job_id": "j", "models": ["sub/../../secret.onnx"]}, "outside the model directory"),
        ({"job_id": "j", "models": ["link.onnx"]}, "outside the model directory"),
        ({"job_id": "j", "models": ["/etc/passwd"]}, "must be a path relative to the model directory"),
        ({"job_id": "j", "models": ["missing.onnx"]}, "is not in the model directory"),
        ({"job_id": "j", "models": ["sub"]}, "is not in the model directory"),
        ({"job_id": "j", "models": ["a.onnx"], "settings": {"runs": 10**9}}, "jobs.max_runs = 1000"),
        ({"job_id": "j", "models": ["a.onnx"], "settings": {"runs": 0}}, "settings.runs must be at least 1"),
        ({"job_id": "j", "models": ["a.onnx"], "settings": {"runs": "10"}}, "must be a whole number"),
        ({"job_id": "j", "models": ["a.onnx"], "settings": {"runs": True}}, "must be a whole number"),
        ({"job_id": "j", "models": ["a.onnx"], "settings": {"max_time_s": 1e9}}, "jobs.max_time_s = 60"),
        ({"job_id": "j", "models": ["a.onnx"], "settings": {"max_time_s": 0}}, "more than 0"),
        ({"job_id": "j", "models": ["a.onnx"], "settings": {"min_time_s": 5, "max_time_s": 1}}, "shorter"),
        ({"job_id": "j", "models": ["a.onnx"], "settings": {"backend": "tensorrt"}}, "settings.backend"),
        ({"job_id": "j", "models": ["a.onnx"], "settings": {"shell": "rm -rf /"}}, "not a known setting"),
        ({"job_id": "j", "models": ["a.onnx"], "settings": []}, "settings must be a JSON object"),
        ({"job_id": "j", "architectures": [{"space": "nas-bench-201", "arch": "x"}]}, "materializer"),
    ],
)
def test_bad_jobs_are_refused_with_a_reason(models, data, message):
    with pytest.raises(JobError) as info:
        parse_job(data, models, LIMITS)
    assert message in str(info.value)


def test_store_keeps_jobs_in_order_and_survives_a_broken_file(tmp_path):
    store = JobStore(str(tmp_path / "jobs"))
    first, second = Job("j1", ("a", "b")), Job("j2", ("c",))
    store.save(first)
    os.utime(store._path("j1"), (1, 1))  # older
    store.save(second)
    store.save(Job("j1", ("a", "b"), done=("a",)))
    os.utime(store._path("j1"), (1, 1))
    (tmp_path / "jobs" / "j3.json").write_text("{not json")
    pending = store.pending()
    assert [j.job_id for j in pending] == ["j1", "j2"] and pending[0].remaining == ("b",)
    assert (tmp_path / "jobs" / "j3.json.broken").exists()
    store.remove("j1")
    store.remove("j1")  # twice is fine
    assert [j.job_id for j in store.pending()] == ["j2"]


def test_conditions_that_make_a_job_wait():
    limits = JobsConfig(max_temperature_c=80, min_battery_percent=20)
    assert blocked_by(85.0, None, None, limits).startswith("too hot (85.0 C")
    assert blocked_by(50.0, 15.0, True, limits).startswith("battery low (15 %")
    assert blocked_by(50.0, 15.0, False, limits) is None  # charging: fine
    assert blocked_by(None, None, None, limits) is None  # a VM with no sensors
