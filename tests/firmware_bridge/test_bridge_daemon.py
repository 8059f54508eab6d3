"""The bridge as systemd runs it (the template unit's command line, a notify socket),
against a real mosquitto and the real coordinator, with an emulated board on a pty: the
board joins the fleet under its own id with its HELLO, its results are stored, and it
rides out a reset mid-run, unplugging and a bridge restart."""

from __future__ import annotations

import json
import os
import signal
import sqlite3

import pytest
from daemon_proc import (
    REPO,
    AgentProcess,
    eventually,
    fleet,
    fleet_if_ready,
    fleetbench,
    publisher,
    start_coordinator,
    stop,
    unit_command,
    write_config,
)
from wire import command

from firmware_bridge.emulator import BoardSpec, EmulatedBoard

DEVICE = "fleetbench-emulated-board-e0a1b2c3d4e5f601"
UNIT = os.path.join(REPO, "systemd", "fleetbench-bridge@.service")
FAST = "[bridge]\ntimeout_s = 1\nretries = 2\nstall_timeout_s = 3\nreopen_s = 0.1\n"


@pytest.fixture
def setup(tmp_path, mosquitto):
    db = str(tmp_path / "fleet.sqlite")
    coord = start_coordinator(mosquitto, db)
    board = EmulatedBoard(BoardSpec(noise=0.0, per_frame=10), link=str(tmp_path / "ttyACM0")).start()
    config = write_config(str(tmp_path / "agent.toml"), mosquitto.url, FAST)
    bridge = AgentProcess(str(tmp_path), config, argv=unit_command(UNIT, board.port))
    pub = publisher(mosquitto)
    yield db, board, bridge, pub
    bridge.close()
    board.stop()
    pub.loop_stop()
    stop(coord)


def send_job(pub, job: dict) -> None:
    pub.publish(f"fleetbench/v1/devices/{DEVICE}/jobs", command(DEVICE, job), qos=1).wait_for_publish(10)


def acks(db: str, job_id) -> list[dict]:
    with sqlite3.connect(db) as conn:
        rows = conn.execute("SELECT data FROM acks WHERE job_id IS ? ORDER BY ts", (job_id,)).fetchall()
    return [json.loads(r[0])["data"] for r in rows]


def ended(db: str, job_id: str) -> list[dict]:
    return [a for a in acks(db, job_id) if a["state"] in ("done", "failed", "rejected")]


def test_an_emulated_board_joins_the_fleet_and_survives_resets_and_unplugging(setup):
    db, board, bridge, pub = setup
    bridge.start()
    bridge.wait_note("READY=1")
    # the coordinator may not have made its database yet: fleet_if_ready, not fleet
    device = eventually(lambda: (fleet_if_ready(db).get(DEVICE) or {}).get("health") and fleet(db)[DEVICE])
    caps = device["capabilities"]
    assert device["state"] == "online" and device["platform"] == "mcu"
    assert device["sku"] == "fleetbench emulated board (Cortex-M4F (emulated))"
    assert caps["clock_hz"] == 64_000_000 and caps["models"] == ["kws_micro", "person_detect"]
    assert caps["runtime"] == "tflite-micro (emulated)" and caps["bridge"]["port"] == board.port
    assert device["health"]["health"]["thermal"]["temperatures_c"] == {"mcu_die": 41.5}

    send_job(pub, {"job_id": "b1", "models": ["kws_micro", "person_detect"],
                   "settings": {"runs": 40, "warmup_runs": 2}})  # fmt: skip
    eventually(lambda: ended(db, "b1"))
    assert ended(db, "b1")[0]["state"] == "done"
    with sqlite3.connect(db) as conn:
        query = "SELECT model, p50_ms FROM results WHERE device_id = ?"
        rows = dict(conn.execute(query, (DEVICE,)).fetchall())
    assert rows == {"kws_micro": 12.5, "person_detect": 180.0}
    table = fleetbench("fleet", "--db", db).stdout
    line = next(x for x in table.splitlines() if x.startswith(DEVICE))
    assert "(mcu)" in line and "online" in line and "41.5" in line and line.split()[-3:-1] == ["2", "-"]

    board.reset(after_samples=15)  # the firmware crashes mid-run: that run is failed, not half-counted
    send_job(pub, {"job_id": "b2", "models": ["kws_micro"], "settings": {"runs": 40}})
    eventually(lambda: ended(db, "b2"))
    states = {a["state"]: a for a in acks(db, "b2")}
    assert states["failed"]["failed"] == ["kws_micro"]
    assert "restarted during 'kws_micro' after 10 of 40 runs" in states["model_failed"]["error"]
    assert fleet(db)[DEVICE]["results"] == 2

    board.unplug()
    eventually(lambda: fleet(db)[DEVICE]["state"] == "offline")
    board.replug()
    eventually(lambda: fleet(db)[DEVICE]["state"] == "online")
    send_job(pub, {"job_id": "b3", "models": ["kws_micro"], "settings": {"runs": 20}})
    eventually(lambda: fleet(db)[DEVICE]["results"] == 3)
    link = eventually(lambda: (fleet(db)[DEVICE]["health"] or {}).get("link", {}).get("reopens") and
                      fleet(db)[DEVICE]["health"]["link"])  # fmt: skip
    assert link["reopens"] == 1 and link["resets"] >= 2 and link["malformed"] >= 1  # the boot banner

    bridge.signal(signal.SIGTERM)
    assert bridge.wait() == 0, bridge.read_log()
    assert "Traceback" not in bridge.read_log()


def test_jobs_it_cannot_run_are_refused_and_an_accepted_job_outlives_a_restart(setup):
    db, board, bridge, pub = setup
    bridge.start()
    bridge.wait_note("READY=1")
    eventually(lambda: fleet_if_ready(db).get(DEVICE, {}).get("state") == "online")
    # a deeply nested message on the board's jobs topic: refused, and the bridge keeps listening
    pub.publish(f"fleetbench/v1/devices/{DEVICE}/jobs", b"[" * 100_000, qos=1).wait_for_publish(10)
    eventually(lambda: any("not a valid job message" in a.get("error", "") for a in acks(db, None)))
    send_job(pub, {"job_id": "arch", "architectures": [{"space": "nas-bench-201", "arch": "x"}]})
    send_job(pub, {"job_id": "nope", "models": ["resnet50"]})
    send_job(pub, {"job_id": "threads", "models": ["kws_micro"], "settings": {"threads": 4}})
    eventually(lambda: all(ended(db, j) for j in ("arch", "nope", "threads")))
    assert "runs only the models in its firmware (kws_micro, person_detect)" in ended(db, "arch")[0]["error"]
    assert "'resnet50' are not in the board's firmware" in ended(db, "nope")[0]["error"]
    assert "settings.threads does not apply to a microcontroller" in ended(db, "threads")[0]["error"]

    board.unplug()  # the job is accepted and waits for the board ...
    eventually(lambda: fleet(db)[DEVICE]["state"] == "offline")
    send_job(pub, {"job_id": "later", "models": ["person_detect"], "settings": {"runs": 10}})
    eventually(lambda: any(a["state"] == "accepted" for a in acks(db, "later")))
    bridge.signal(signal.SIGTERM)  # ... through a restart of the bridge
    assert bridge.wait() == 0, bridge.read_log()
    bridge.start()
    bridge.wait_note("READY=1")
    board.replug()
    eventually(lambda: ended(db, "later"))
    assert ended(db, "later")[0]["state"] == "done" and fleet(db)[DEVICE]["results"] == 1
