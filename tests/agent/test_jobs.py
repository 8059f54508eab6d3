"""Job messages are checked strictly: every malformed or unsafe job is refused with a reason."""

from __future__ import annotations

import os

import pytest

from agent.config import JobsConfig
from agent.jobs import Job, JobError, JobStore, blocked_by, parse_job

LIMITS = JobsConfig(max_runs=1000, max_time_s=60.0)
NB = "nas-bench-201"
CELL = "|nor_conv_3x3~0|+|none~0|skip_connect~1|+|avg_pool_3x3~0|none~1|nor_conv_1x1~2|"


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
        ({"job_id": "j", "models": []}, "at least one model, architecture or lut"),
        ({"job_id": "j"}, "at least one model, architecture or lut"),
        ({"job_id": "j", "lut": "nas-bench-201"}, "lut must be an object"),
        ({"job_id": "j", "lut": {"space": "darts"}}, "lut.space must be one of"),
        ({"job_id": "j", "lut": {"space": NB, "sample": 10**6}}, "lut.sample must be a whole number from 2"),
        ({"job_id": "j", "lut": {"space": NB, "samples": 3}}, "lut has unknown field(s) 'samples'"),
        ({"job_id": "j", "models": "a.onnx"}, "models must be a list of model names"),
        ({"job_id": "j", "models": ["a.onnx", "a.onnx"]}, "the same model or architecture twice"),
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
        ({"job_id": "j", "architectures": {"arch": CELL}}, "architectures must be a list"),
        ({"job_id": "j", "architectures": ["x"]}, "architectures[0] must be an object"),
        (
            {"job_id": "j", "architectures": [{"space": "ofa", "arch": CELL}]},
            "architectures[0].space must be",
        ),
        ({"job_id": "j", "architectures": [{"space": NB, "arch": "|x~0|"}]}, "architectures[0].arch '|x~0|'"),
        ({"job_id": "j", "architectures": [{"space": NB, "arch": CELL, "sed": 1}]}, "unknown field(s) 'sed'"),
        ({"job_id": "j", "architectures": [{"space": NB, "arch": CELL, "seed": -1}]}, "seed must be a whole"),
        (
            {"job_id": "j", "architectures": [{"space": NB, "arch": CELL, "classes": 7}]},
            "classes must be one of 10, 100, 120",
        ),
        ({"job_id": "j", "architectures": [{"space": NB, "arch": CELL, "resolution": 10}]}, "multiple of 4"),
        (
            {"job_id": "j", "architectures": [{"space": NB, "arch": CELL, "format": "pt"}]},
            '"onnx" or "tflite"',
        ),
        ({"job_id": "j", "architectures": [{"space": NB, "arch": CELL}] * 2}, "architecture twice"),
        (
            {"job_id": "j", "architectures": [{"space": NB, "arch": CELL, "seed": i} for i in range(101)]},
            "at most 100",
        ),
    ],
)
def test_bad_jobs_are_refused_with_a_reason(models, data, message):
    with pytest.raises(JobError) as info:
        parse_job(data, models, LIMITS)
    assert message in str(info.value)


def test_architecture_items_have_stable_keys_and_survive_the_store(models, tmp_path):
    job = parse_job(
        {
            "job_id": "j-a",
            "models": ["a.onnx"],
            "architectures": [
                {"space": NB, "arch": CELL},
                {"space": NB, "arch": CELL, "seed": 2, "format": "tflite"},
            ],
        },
        models,
        LIMITS,
    )
    assert job.items == (
        "a.onnx",
        f"{NB}:{CELL}:seed=0:classes=10:32px.onnx",
        f"{NB}:{CELL}:seed=2:classes=10:32px.tflite",
    )
    assert job.architecture(job.items[2]).format == "tflite" and job.architecture("a.onnx") is None
    store = JobStore(str(tmp_path / "jobs"))
    store.save(job)
    assert store.pending() == [job]


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
