"""`fleetbench hdap --sku` end to end: a real mosquitto, a real coordinator and three real agents of one
SKU; profile jobs, the representatives' width tables, the search, the model and its plan written, and the
model rolled out to the SKU, signed, and installed on every board (short settings); then
`fleetbench hdap --explain` of the plan, predicted against measured, and `--recheck` before and
after one board is put under a real CPU quota."""

from __future__ import annotations

import json

import cgroups
import pytest
from daemon_proc import AgentProcess, eventually, fleetbench, start_configured_coordinator, write_config
from test_loop import coordinator_config, keygen, rollouts, stop

pytest.importorskip("onnxruntime")
pytest.importorskip("sklearn")

from agent.materialize import families as fam
from agent.materialize.weights import load, save, seeded

DEVICES = ("shed-a", "shed-b", "shed-c")


def test_hdap_plans_for_a_real_sku_and_rolls_the_model_out(tmp_path, mosquitto):
    config = coordinator_config(tmp_path, mosquitto, "[rerank]\nenabled = false\n[push]\nsmoke_runs = 3\n")
    public = keygen(config)
    coord = start_configured_coordinator(config)
    agents = []
    plan = fam.plan("resnet20")
    save(str(tmp_path / "w.npz"), plan, seeded(plan, 4))
    try:
        for name in DEVICES:
            work = tmp_path / name
            work.mkdir()
            cfg = write_config(
                str(work / "agent.toml"), mosquitto.url, f'[models]\npublic_key = "{public}"\n'
            )
            agent = AgentProcess(str(work), cfg, name)
            agent.start()
            agents.append(agent)
        for agent in agents:
            agent.wait_note("READY=1")

        def fleet():
            out = fleetbench("fleet", "--config", config, "--format", "json")
            return {d["device_id"]: d for d in json.loads(out.stdout)} if out.returncode == 0 else {}

        def all_registered():
            found = fleet()
            return found if set(DEVICES) <= set(found) else None

        devices = eventually(all_registered, 60)
        (sku,) = {devices[d]["sku"] for d in DEVICES}
        out = fleetbench(
            "hdap",
            "--sku",
            sku,
            "--space",
            "resnet20",
            "--weights",
            str(tmp_path / "w.npz"),
            "--flops",
            "0.5",
            "--config",
            config,
            "-o",
            str(tmp_path / "hdap.npz"),
            "--onnx",
            str(tmp_path / "hdap.onnx"),
            "--widths",
            "50,100",
            "--sample",
            "3",
            "--runs",
            "3",
            "--min-time",
            "0",
            "--timeout",
            "150",
            "--push",
            "--format",
            "json",
            timeout_s=400,
        )
        assert out.returncode == 0, out.stderr
        report = json.loads(out.stdout)
        assert "profiling 3 device(s)" in out.stderr and "full width tables from" in out.stderr
        members = sorted(d for c in report["clusters"] for d in c["devices"])
        assert members == sorted(DEVICES) and report["left_out"] == {}
        assert 1 <= report["full_luts"] == len(report["clusters"]) <= 3
        assert set(report["predicted_ms"]) == set(DEVICES) and report["predicted_fleet_ms"] > 0
        assert 0.45 <= report["flops_ratio"] <= 0.5
        small, _, info = load(str(tmp_path / "hdap.npz"))
        assert small.spec == report["widths"] and info["method"] == "hdap"
        assert json.loads((tmp_path / "hdap.plan.json").read_text())["widths"] == report["widths"]
        # rolled out to the SKU with the existing rules: signed, installed on every board
        rollout = eventually(
            lambda: [
                r
                for r in rollouts(config)
                if r["rollout_id"] == report["rollout"] and r["state"] in ("done", "halted")
            ],
            240,
        )
        (r,) = rollout
        assert r["state"] == "done", r
        assert sorted(d["device_id"] for d in r["deployments"] if d["state"] == "installed") == sorted(
            DEVICES
        )
        # explain: the clusters, and each board's predicted latency against its smoke run
        plan_file = str(tmp_path / "hdap.plan.json")
        out = fleetbench("hdap", "--explain", plan_file, "--config", config, "--format", "json")
        assert out.returncode == 0, out.stderr
        explained = json.loads(out.stdout)
        assert explained["clusters"] == report["clusters"] and explained["rollout"] == report["rollout"]
        smoke = {d["device_id"]: d["p50_ms"] for d in r["deployments"]}
        for d in DEVICES:
            row = explained["devices"][d]
            assert row["measured_ms"] == smoke[d] and row["predicted_ms"] == report["predicted_ms"][d]
            assert d in report["clusters"][row["cluster"]]["devices"]
        assert explained["measured_fleet_ms"] == pytest.approx(sum(smoke.values()) / 3, abs=1e-6)
        out = fleetbench("hdap", "--explain", plan_file, "--config", config)
        assert out.returncode == 0 and "fleet average" in out.stdout and "shed-b" in out.stdout, out.stderr

        # recheck: every board profiled again and compared (whether they still match is noise here:
        # three boards measuring at once on two shared cores differ by up to 3x, so that verdict is
        # tested on known profiles in test_hdap_planning); then one board under a real CPU quota (10 %
        # of one core: its layers 10x slower, log 2.3) has drifted beyond that noise
        def recheck():
            out = fleetbench("hdap", "--recheck", plan_file, "--config", config, "--tol", "0.9",
                             "--runs", "10", "--min-time", "0", "--timeout", "150", "--format", "json",
                             timeout_s=300)  # fmt: skip
            return out.returncode, json.loads(out.stdout) if out.stdout else out.stderr

        code, found = recheck()
        assert code in (0, 4) and found["holds"] == (code == 0) and found["gone"] == [], found
        assert set(found["devices"]) == set(DEVICES)
        assert all(r["distance"] is not None and r["change"] is not None for r in found["devices"].values())
        with cgroups.quota_group(10000, 1000) as group:
            cgroups.join(group, agents[2].proc.pid)
            code, found = recheck()
        assert code == 4 and not found["holds"], found
        assert (
            found["devices"]["shed-c"]["status"] == "drifted" and found["devices"]["shed-c"]["change"] > 0.9
        )
    finally:
        for agent in agents:
            agent.close()
        stop(coord)
