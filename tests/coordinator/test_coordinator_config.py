"""The coordinator's configuration (the agent's conventions) and its commands' errors."""

from __future__ import annotations

import pytest
from daemon_proc import fleetbench

from agent.common.config import ConfigError
from coordinator.config import load


def write(tmp_path, text: str) -> str:
    path = tmp_path / "coordinator.toml"
    path.write_text(text)
    return str(path)


def test_file_env_and_flags_layer_and_budgets_resolve_device_then_sku(tmp_path):
    path = write(tmp_path, 'state_dir = "/srv/c"\n[broker]\nurl = "mqtt://hub:1883"\n'
                           '[rerank]\ndefault_budget_ms = 50\n[rerank.budgets]\n"pi-3" = 20\n'
                           '"Raspberry Pi 4 Model B" = 40\n')  # fmt: skip
    config = load(path, env={"FLEETBENCH_COORDINATOR_RERANK_SAMPLES": "12"}, flags={"group": ""})
    assert config.rerank.samples == 12 and config.group == "" and config.db_url == "/srv/c/fleet.sqlite"
    assert config.key_file == "/srv/c/coordinator.key"
    assert config.budget_ms("pi-3", "Raspberry Pi 4 Model B") == 20
    assert config.budget_ms("pi-4", "Raspberry Pi 4 Model B") == 40
    assert config.budget_ms("jetson", "Jetson") == 50
    env = {"FLEETBENCH_COORDINATOR_RERANK_BUDGETS": "a=1.5, b=2"}
    assert load(path, env=env).rerank.budgets == {"a": 1.5, "b": 2.0}


@pytest.mark.parametrize(
    "text, message",
    [
        ("[rerank]\nsampels = 3\n", "unknown key 'rerank.sampels'; did you mean 'rerank.samples'"),
        ('[rerank]\nspace = "resnet"\n', "rerank.space must be one of"),
        ("[rerank.budgets]\npi = -1\n", "rerank.budgets must all be above 0 ms"),
        ('[rerank.budgets]\npi = "fast"\n', "rerank.budgets.pi must be a finite number"),
        ("[push]\ncanary_fraction = 0\n", "push.canary_fraction must be above 0"),
        ("[push]\nchunk_bytes = 100000\n", "push.chunk_bytes must be 1-65536"),
        ('[rerank]\nspace = "mobilenetv2"\n', "rerank.reference (a latency table) is needed"),
    ],
)
def test_bad_settings_name_the_file_and_key(tmp_path, text, message):
    path = write(tmp_path, text)
    with pytest.raises(ConfigError, match="config file .*coordinator.toml.*: " + message.replace("(", r"\(")
                       .replace(")", r"\)")):  # fmt: skip
        load(path, env={})


def test_service_commands_fail_clearly(tmp_path):
    config = write(tmp_path, f'state_dir = "{tmp_path}"\n')
    no_broker = fleetbench("coordinator", "--config", config)
    assert no_broker.returncode == 2 and "needs a broker" in no_broker.stderr
    assert "Traceback" not in no_broker.stderr
    missing_db = fleetbench("push", "m.onnx", "--device", "x", "--config", config)
    assert missing_db.returncode == 2 and "does not exist (the coordinator creates it)" in missing_db.stderr
    keygen = fleetbench("keygen", "--config", config)
    assert keygen.returncode == 0 and 'public_key = "ed25519:' in keygen.stdout
    again = fleetbench("keygen", "--config", config)
    assert again.returncode == 2 and "refusing to overwrite" in again.stderr
    from coordinator.store import open_store

    open_store(str(tmp_path / "fleet.sqlite"))
    (tmp_path / "m.bin").write_bytes(b"x")
    wrong = fleetbench("push", str(tmp_path / "m.bin"), "--device", "x", "--config", config)
    assert wrong.returncode == 2 and "must be a .onnx or .tflite file" in wrong.stderr
    nothing = fleetbench("explain", "nobody", "--config", config)
    assert nothing.returncode == 2 and "no decision was made for device 'nobody'" in nothing.stderr
    both = fleetbench("push", "m.onnx", "--device", "x", "--sku", "y", "--config", config)
    assert both.returncode == 2 and "not allowed with argument" in both.stderr


def test_the_trust_commands_fail_clearly(tmp_path):
    """An unreadable CA or key stops the coordinator and the agent at start, in one sentence; the
    trust commands name what is wrong with their input."""
    missing = tmp_path / "nope" / "ca.crt"
    config = write(
        tmp_path, f'state_dir = "{tmp_path}"\n[broker]\nurl = "mqtts://127.0.0.1:1"\nca_file = "{missing}"\n'
    )
    out = fleetbench("coordinator", "--config", config)
    assert out.returncode == 2 and f"broker.ca_file '{missing}' cannot be read" in out.stderr
    agent_config = tmp_path / "agent.toml"
    agent_config.write_text(
        f'[broker]\nurl = "mqtts://127.0.0.1:1"\ncert_file = "{missing}"\nkey_file = "{missing}"\n'
    )
    out = fleetbench("agent", "--config", str(agent_config), "--state-dir", str(tmp_path / "s"))
    assert out.returncode == 2 and f"broker.cert_file '{missing}' cannot be read" in out.stderr
    assert "Traceback" not in out.stderr and len(out.stderr.strip().splitlines()) == 1
    plain = write(tmp_path, f'state_dir = "{tmp_path}"\n')
    out = fleetbench("enroll", "shed-pi-3", "--config", plain)
    assert (
        out.returncode == 2
        and "holds no broker profile; make one with `fleetbench broker-config`" in out.stderr
    )
    out = fleetbench("enroll", "../evil", "--config", plain)
    assert out.returncode == 2 and "Traceback" not in out.stderr
    assert fleetbench("broker-config", "--config", plain, "--host", "127.0.0.1").returncode == 0
    again = fleetbench("broker-config", "--config", plain)
    assert again.returncode == 2 and "already holds a broker profile" in again.stderr
    out = fleetbench("job", "--device", "x", "m.onnx", "--config", plain)
    assert out.returncode == 2 and "does not exist (the coordinator creates it)" in out.stderr
    out = fleetbench("keygen", "--rotate", "--config", plain)
    assert out.returncode == 2 and "does not exist; make one with `fleetbench keygen`" in out.stderr


def test_a_broker_profile_that_cannot_be_written_is_a_sentence(tmp_path):
    blocker = tmp_path / "file"
    blocker.write_text("")
    config = write(tmp_path, f'state_dir = "{tmp_path}"\n')
    out = fleetbench("broker-config", "--config", config, "--dir", str(blocker / "profile"))
    assert out.returncode == 2 and "cannot be made" in out.stderr and "Traceback" not in out.stderr


def test_a_fleet_is_enrolled_at_once_from_a_file_and_every_name_is_checked_first(tmp_path):
    import json
    import os

    from tls import client_files

    config = write(tmp_path, f'state_dir = "{tmp_path}"\n')
    assert fleetbench("broker-config", "--config", config, "--host", "127.0.0.1").returncode == 0
    names = tmp_path / "boards.txt"
    names.write_text("# the shed\nshed-pi-1\n\nshed-pi-2  # by the door\nshed-pi-3\n")
    out = fleetbench("enroll", "--from", str(names), "shed-pi-4", "--config", config)
    assert out.returncode == 0 and "4 identities are enrolled (device)" in out.stderr, out.stderr
    profile = tmp_path / "broker"
    issued = json.loads((profile / "identities.json").read_text())
    assert [i["name"] for i in issued] == ["shed-pi-4", "shed-pi-1", "shed-pi-2", "shed-pi-3"]
    assert len({i["serial"] for i in issued}) == 4
    for name in ("shed-pi-1", "shed-pi-4"):
        _, cert, key = client_files(str(profile), name)
        assert os.path.getsize(cert) and oct(os.stat(key).st_mode & 0o777) == "0o600"
        assert f'device_id = "{name}"' in (profile / "clients" / name / "fleetbench.toml").read_text()
    # one bad name (or one enrolled already, or one named twice) and nothing is issued
    for bad, said in (
        (["shed-pi-5", "../evil"], "'../evil'"),
        (["shed-pi-5", "shed-pi-2"], "'shed-pi-2' is enrolled already; revoke it first"),
        (["shed-pi-5", "shed-pi-6", "shed-pi-5"], "'shed-pi-5' is named twice in the names to enroll"),
    ):
        out = fleetbench("enroll", *bad, "--config", config)
        assert out.returncode == 2 and said in out.stderr and "Traceback" not in out.stderr, out.stderr
    assert not (profile / "clients" / "shed-pi-5").exists()
    assert len(json.loads((profile / "identities.json").read_text())) == 4
    out = fleetbench("enroll", "--from", str(tmp_path / "gone.txt"), "--config", config)
    assert out.returncode == 2 and "--from" in out.stderr and "cannot read the names" in out.stderr
    out = fleetbench("enroll", "--config", config)
    assert out.returncode == 2 and "name at least one identity to enroll" in out.stderr
