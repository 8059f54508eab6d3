"""Job messages are checked strictly: every malformed or unsafe job is refused with a reason.

Two layers say no: the protocol (``agent.protocol``: types, ranges, unknown fields, the
same item twice), and the device (``agent.measure.check_job``: model files inside the
model directory, search spaces it can build, its own limits).
"""

from __future__ import annotations

import os

import msgspec
import pytest
from wire import raw_job, result

from agent.config import JobsConfig
from agent.device.jobs import Job, JobError, JobStore, blocked_by
from agent.measure import bench_settings, check_job
from agent.protocol import messages
from agent.protocol.errors import ProtocolError
from agent.protocol.jobs import JobSettings, JobSpec

LIMITS = JobsConfig(max_runs=1000, max_time_s=60.0)
NB = "nas-bench-201"
CELL = "|nor_conv_3x3~0|+|none~0|skip_connect~1|+|avg_pool_3x3~0|none~1|nor_conv_1x1~2|"


def parse_job(data, model_dir, limits):
    """What a device does with a job message: decode it, then check it against itself."""
    msg = messages.decode(raw_job("pi-1", data), "jobs")
    assert isinstance(msg, messages.JobMessage)
    check_job(msg.data, model_dir, limits)
    return Job(msg.data)


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
    assert job.spec == JobSpec(job_id="j-1", models=("a.onnx", "sub/b.tflite"),
                               settings=JobSettings(runs=10, max_time_s=5.0, backend="auto"))  # fmt: skip
    settings = bench_settings(job.spec.settings, LIMITS)
    assert (settings.runs, settings.max_time_s, settings.backend, settings.warmup_runs) == (
        10,
        5.0,
        "auto",
        5,
    )


@pytest.mark.parametrize(
    "data, message",
    [
        ([], "data: Expected `object`, got `array`"),
        ({"models": ["a.onnx"]}, "missing required field `job_id`"),
        ({"job_id": "../x", "models": ["a.onnx"]}, "data.job_id: Expected `str` matching regex"),
        ({"job_id": "j", "models": ["a.onnx"], "setings": {}}, "unknown field `setings`"),
        ({"job_id": "j", "models": []}, "at least one model, architecture, lut, width_lut, layer_profile"),
        ({"job_id": "j"}, "at least one model, architecture, lut, width_lut, layer_profile or probe"),
        ({"job_id": "j", "layer_profile": {"space": NB}}, "layer_profile.space must be one of resnet20"),
        (
            {"job_id": "j", "probe": {"space": NB, "archs": []}},
            "data.probe.archs: Expected `array` of length >= 1",
        ),
        ({"job_id": "j", "probe": {"space": NB, "archs": [CELL] * 65}}, "length <= 64"),
        (
            {"job_id": "j", "probe": {"space": NB, "archs": [CELL, CELL]}},
            "probe.archs names the same architecture twice",
        ),
        ({"job_id": "j", "probe": {"space": "darts", "archs": [CELL]}}, "probe.space must be one of"),
        ({"job_id": "j", "probe": {"space": NB, "archs": [CELL, "|conv~0|"]}}, "probe.archs[1]: "),
        ({"job_id": "j", "probe": {"space": NB, "archs": [CELL], "runs": 3}}, "unknown field `runs`"),
        ({"job_id": "j", "lut": "nas-bench-201"}, "data.lut: Expected `object | null`, got `str`"),
        ({"job_id": "j", "lut": {"space": "darts"}}, "lut.space must be one of"),
        ({"job_id": "j", "lut": {"space": NB, "sample": 10**6}}, "data.lut.sample: Expected `int` <= 500"),
        ({"job_id": "j", "lut": {"space": NB, "samples": 3}}, "unknown field `samples`"),
        ({"job_id": "j", "lut": {"space": NB, "grid": [50]}}, "unknown field `grid`"),
        (
            {"job_id": "j", "lut": {"space": "resnet20"}},
            "resnet20 is a prunable family: ask for its",
        ),
        ({"job_id": "j", "width_lut": {"space": NB}}, "width_lut.space must be one of resnet20, resnet56"),
        (
            {"job_id": "j", "width_lut": {"space": "resnet20", "grid": [0]}},
            "grid[0]: Expected `int` >= 1",
        ),
        ({"job_id": "j", "width_lut": {"space": "resnet20", "grid": [101]}}, "Expected `int` <= 100"),
        ({"job_id": "j", "width_lut": {"space": "resnet20", "grid": []}}, "Expected `array` of length >= 1"),
        (
            {"job_id": "j", "width_lut": {"space": "resnet20", "grid": [5, 5]}},
            "grid names the same width twice",
        ),
        (
            {"job_id": "j", "architectures": [{"space": "resnet20", "arch": "1,2"}]},
            "9 prunable layers; the spec",
        ),
        ({"job_id": "j", "models": "a.onnx"}, "data.models: Expected `array`, got `str`"),
        ({"job_id": "j", "models": ["a.onnx", "a.onnx"]}, "the same model or architecture twice"),
        ({"job_id": "j", "models": ["../secret.onnx"]}, "outside the model directory"),
        ({"job_id": "j", "models": ["sub/../../secret.onnx"]}, "outside the model directory"),
        ({"job_id": "j", "models": ["link.onnx"]}, "outside the model directory"),
        ({"job_id": "j", "models": ["/etc/passwd"]}, "must be a path relative to the model directory"),
        ({"job_id": "j", "models": ["missing.onnx"]}, "is not in the model directory"),
        ({"job_id": "j", "models": ["sub"]}, "is not in the model directory"),
        (
            {"job_id": "j", "models": ["a.onnx"], "settings": {"runs": 10**9}},
            "settings.runs: Expected `int` <= 1000000",
        ),
        ({"job_id": "j", "models": ["a.onnx"], "settings": {"runs": 5000}}, "jobs.max_runs = 1000"),
        (
            {"job_id": "j", "models": ["a.onnx"], "settings": {"runs": 0}},
            "data.settings.runs: Expected `int` >= 1",
        ),
        (
            {"job_id": "j", "models": ["a.onnx"], "settings": {"runs": "10"}},
            "Expected `int | null`, got `str`",
        ),
        (
            {"job_id": "j", "models": ["a.onnx"], "settings": {"runs": True}},
            "Expected `int | null`, got `bool`",
        ),
        ({"job_id": "j", "models": ["a.onnx"], "settings": {"max_time_s": 1e9}}, "Expected `float` <= 86400"),
        ({"job_id": "j", "models": ["a.onnx"], "settings": {"max_time_s": 100}}, "jobs.max_time_s = 60"),
        ({"job_id": "j", "models": ["a.onnx"], "settings": {"max_time_s": 0}}, "Expected `float` > 0"),
        ({"job_id": "j", "models": ["a.onnx"], "settings": {"min_time_s": 5, "max_time_s": 1}}, "shorter"),
        ({"job_id": "j", "models": ["a.onnx"], "settings": {"backend": "tensorrt"}}, "data.settings.backend"),
        ({"job_id": "j", "models": ["a.onnx"], "settings": {"shell": "rm -rf /"}}, "unknown field `shell`"),
        (
            {"job_id": "j", "models": ["a.onnx"], "settings": []},
            "data.settings: Expected `object`, got `array`",
        ),
        (
            {"job_id": "j", "architectures": {"arch": CELL}},
            "data.architectures: Expected `array`, got `object`",
        ),
        ({"job_id": "j", "architectures": ["x"]}, "data.architectures[0]: Expected `object`, got `str`"),
        (
            {"job_id": "j", "architectures": [{"space": "ofa", "arch": CELL}]},
            "architectures[0].space must be",
        ),
        ({"job_id": "j", "architectures": [{"space": NB, "arch": "|x~0|"}]}, "architectures[0]: "),
        ({"job_id": "j", "architectures": [{"space": NB, "arch": CELL, "sed": 1}]}, "unknown field `sed`"),
        (
            {"job_id": "j", "architectures": [{"space": NB, "arch": CELL, "seed": -1}]},
            "seed: Expected `int` >= 0",
        ),
        (
            {"job_id": "j", "architectures": [{"space": NB, "arch": CELL, "classes": 7}]},
            "classes must be one of 10, 100, 120",
        ),
        ({"job_id": "j", "architectures": [{"space": NB, "arch": CELL, "resolution": 10}]}, "multiple of 4"),
        (
            {"job_id": "j", "architectures": [{"space": NB, "arch": CELL, "format": "pt"}]},
            "Invalid enum value 'pt'",
        ),
        ({"job_id": "j", "architectures": [{"space": NB, "arch": CELL}] * 2}, "architecture twice"),
        (
            {"job_id": "j", "architectures": [{"space": NB, "arch": CELL, "seed": i} for i in range(101)]},
            "at most 100",
        ),
    ],
)
def test_bad_jobs_are_refused_with_a_reason(models, data, message):
    with pytest.raises((ProtocolError, JobError)) as info:
        parse_job(data, models, LIMITS)
    assert message in str(info.value)


def test_a_probe_job_measures_its_architectures_like_any_and_says_which_are_probes(models):
    other = CELL.replace("avg_pool_3x3~0", "skip_connect~0")
    job = parse_job({"job_id": "p-1", "architectures": [{"space": NB, "arch": other}],
                     "probe": {"space": NB, "archs": [CELL]}}, models, LIMITS)  # fmt: skip
    spec = job.spec
    keys = [a.key for a in spec.all_architectures]
    assert spec.items == tuple(keys) and len(keys) == 2
    assert spec.architecture(keys[1]).arch == CELL and spec.is_probe(keys[1]) and not spec.is_probe(keys[0])
    # what the agent sends back for a probe item: an ordinary result, flagged
    sent = result("pi-1", "p-1", keys[1], p50_ms=3.0, arch=spec.architecture(keys[1]))
    flagged = msgspec.structs.replace(sent.data, probe=True)
    back = messages.decode(messages.encode(msgspec.structs.replace(sent, data=flagged)), "results")
    assert back.data.probe is True and back.data.architecture.arch == CELL


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
    assert job.spec.architecture(job.items[2]).format == "tflite" and job.spec.architecture("a.onnx") is None
    store = JobStore(str(tmp_path / "jobs"))
    store.save(job)
    assert store.pending() == [job]


def test_store_keeps_jobs_in_order_and_survives_a_broken_file(tmp_path):
    store = JobStore(str(tmp_path / "jobs"))
    first, second = Job(JobSpec(job_id="j1", models=("a", "b"))), Job(JobSpec(job_id="j2", models=("c",)))
    store.save(first)
    os.utime(store._path("j1"), (1, 1))  # older
    store.save(second)
    store.save(first.finished("a"))
    os.utime(store._path("j1"), (1, 1))
    (tmp_path / "jobs" / "j3.json").write_text("{not json")
    pending = store.pending()
    assert [j.job_id for j in pending] == ["j1", "j2"] and pending[0].remaining == ("b",)
    assert (tmp_path / "jobs" / "j3.json.broken").exists()
    store.remove("j1")
    store.remove("j1")  # twice is fine
    assert [j.job_id for j in store.pending()] == ["j2"]


def test_conditions_that_make_a_job_wait():
    limits = (80.0, 20.0)  # jobs.max_temperature_c, jobs.min_battery_percent
    assert blocked_by(85.0, None, None, *limits).startswith("too hot (85.0 C")
    assert blocked_by(50.0, 15.0, True, *limits).startswith("battery low (15 %")
    assert blocked_by(50.0, 15.0, False, *limits) is None  # charging: fine
    assert blocked_by(None, None, None, *limits) is None  # a VM with no sensors


def test_a_job_accepted_by_the_previous_release_resumes_after_the_upgrade(tmp_path):
    """fleetbench 0.1 saved a job's fields and "done" side by side; the store still reads it."""
    store = JobStore(str(tmp_path / "jobs"))
    old = (
        '{"job_id": "j-old", "models": ["a.onnx"], "settings": {"runs": 10}, "done": [], '
        f'"architectures": [{{"space": "nas-bench-201", "arch": "{CELL}", "seed": 0, "classes": null, '
        '"resolution": null, "format": "onnx"}], "lut": null}\n'
    )
    (tmp_path / "jobs" / "j-old.json").write_text(old)
    (job,) = store.pending()
    assert job.job_id == "j-old" and job.spec.settings.runs == 10 and len(job.items) == 2


def test_the_model_cache_keeps_the_newest_within_its_bytes(tmp_path):
    import time

    from agent.measure import prune_cache

    for i in range(5):
        path = tmp_path / f"m{i}.onnx"
        path.write_bytes(b"x" * 1000)
        os.utime(path, (time.time() - 100 + i, time.time() - 100 + i))  # m0 used longest ago
    assert prune_cache(str(tmp_path), 2500, keep=str(tmp_path / "m0.onnx")) == 3000
    assert sorted(p.name for p in tmp_path.iterdir()) == ["m0.onnx", "m4.onnx"]  # the one in use stays
    assert prune_cache(str(tmp_path / "nothing"), 0) == 0
