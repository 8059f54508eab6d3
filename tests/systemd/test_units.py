"""The unit files pass `systemd-analyze verify` (with --recursive-errors=no: plain verify
returns 0 on parse errors) and say what the agent relies on."""

from __future__ import annotations

import os
import shutil
import subprocess

import pytest

UNIT_DIR = os.path.join(os.path.dirname(os.path.dirname(os.path.dirname(__file__))), "systemd")
AGENT_UNIT = os.path.join(UNIT_DIR, "fleetbench-agent.service")


def directives(path: str) -> dict[str, list[str]]:
    found: dict[str, list[str]] = {}
    with open(path) as fh:
        for line in fh:
            line = line.strip()
            if line and not line.startswith(("#", ";", "[")):
                key, _, value = line.partition("=")
                found.setdefault(key.strip(), []).append(value.strip())
    return found


def verify(
    tmp_path, unit_text: str, name: str = "fleetbench-agent.service", instance: str = ""
) -> subprocess.CompletedProcess:
    """Verify inside a scratch root that holds stand-ins for the programs the unit runs;
    a template unit (``name@.service``) is verified as its ``instance``."""
    exe = shutil.which("systemd-analyze")
    if exe is None:
        if os.environ.get("CI"):
            pytest.fail("systemd-analyze is missing; .ci/run installs systemd")
        pytest.skip("systemd-analyze is not installed")
    root = tmp_path / "root"
    (root / "etc/systemd/system").mkdir(parents=True)
    (root / "etc/systemd/system" / name).write_text(unit_text)
    for key in ("ExecStart", "ExecReload"):
        for value in directives(str(root / "etc/systemd/system" / name)).get(key, []):
            program = root / value.split()[0].lstrip("-@:+!").lstrip("/")
            program.parent.mkdir(parents=True, exist_ok=True)
            program.write_text("#!/bin/sh\n")
            program.chmod(0o755)
    target = name.replace("@.", f"@{instance}.") if instance else name
    return subprocess.run(
        [exe, "verify", "--recursive-errors=no", f"--root={root}", f"/etc/systemd/system/{target}"],
        capture_output=True,
        text=True,
    )


def test_agent_unit_verifies_without_complaint(tmp_path):
    with open(AGENT_UNIT) as fh:
        out = verify(tmp_path, fh.read())
    assert out.returncode == 0 and out.stdout.strip() == "" and out.stderr.strip() == "", out.stderr


def test_a_broken_unit_is_caught(tmp_path):
    with open(AGENT_UNIT) as fh:
        text = fh.read().replace("WatchdogSec=120", "WatchdogSec=two minutes")
    out = verify(tmp_path, text)
    assert out.returncode != 0 or out.stderr.strip()
    assert "WatchdogSec" in out.stderr or "sec value" in out.stderr


def test_agent_unit_says_what_the_daemon_relies_on():
    d = directives(AGENT_UNIT)
    assert d["Type"] == ["notify"] and d["NotifyAccess"] == ["main"]
    assert int(d["WatchdogSec"][0]) >= 30 and d["Restart"] == ["on-failure"]
    assert d["RestartPreventExitStatus"] == ["2"]  # a config error does not fix itself
    assert d["ExecStart"][0].split()[1:] == ["agent"]
    assert d["StateDirectory"] == ["fleetbench"] and d["ProtectSystem"] == ["strict"]
    assert d["NoNewPrivileges"] == ["yes"] and d["PrivateTmp"] == ["yes"]
    assert d["User"] == ["fleetbench"]
    assert "/dev/apex_0 rw" in d["DeviceAllow"]


def test_coordinator_unit_verifies_and_keeps_its_key_private(tmp_path):
    path = os.path.join(UNIT_DIR, "fleetbench-coordinator.service")
    with open(path) as fh:
        out = verify(tmp_path, fh.read(), "fleetbench-coordinator.service")
    assert out.returncode == 0 and out.stdout.strip() == "" and out.stderr.strip() == "", out.stderr
    found = directives(path)
    assert found["Type"] == ["notify"] and found["RestartPreventExitStatus"] == ["2"]
    assert found["StateDirectoryMode"] == ["0700"] and found["UMask"] == ["0077"]


BRIDGE_UNIT = os.path.join(UNIT_DIR, "fleetbench-bridge@.service")


@pytest.mark.parametrize("instance", ["ttyACM0", r"serial-by\x2did-usb\x2dArduino_Nano_0123\x2dif00"])
def test_bridge_template_verifies_for_a_port_and_a_by_id_name(tmp_path, instance):
    with open(BRIDGE_UNIT) as fh:
        out = verify(tmp_path, fh.read(), "fleetbench-bridge@.service", instance)
    assert out.returncode == 0 and out.stdout.strip() == "" and out.stderr.strip() == "", out.stderr


def test_a_broken_bridge_template_is_caught(tmp_path):
    with open(BRIDGE_UNIT) as fh:
        text = fh.read().replace("RestartSec=10", "RestartSec=ten")
    out = verify(tmp_path, text, "fleetbench-bridge@.service", "ttyACM0")
    assert out.returncode != 0 and "Failed to parse sec value, ignoring: ten" in out.stderr


def test_bridge_unit_runs_one_bridge_per_port_with_its_own_state():
    d = directives(BRIDGE_UNIT)
    assert d["ExecStart"][0].split()[1:] == ["bridge", "--port", "/dev/%I"]
    assert d["Type"] == ["notify"] and d["RestartPreventExitStatus"] == ["2"]
    assert d["StateDirectory"] == ["fleetbench-bridge/%i"]  # never the agent's outbox
    assert d["SupplementaryGroups"] == ["dialout"] and d["DevicePolicy"] == ["closed"]
    assert "/dev/%I rw" in d["DeviceAllow"] and "char-ttyACM rw" in d["DeviceAllow"]


def security(unit_path: str, threshold: int) -> subprocess.CompletedProcess:
    """`systemd-analyze security --offline=true` of a unit file; ``threshold`` on its 0-100
    scale (30 = the 3.0 it prints), above which it exits non-zero."""
    exe = shutil.which("systemd-analyze")
    if exe is None:
        if os.environ.get("CI"):
            pytest.fail("systemd-analyze is missing; .ci/run installs systemd")
        pytest.skip("systemd-analyze is not installed")
    return subprocess.run([exe, "security", "--offline=true", f"--threshold={threshold}", unit_path],
                          capture_output=True, text=True)  # fmt: skip


@pytest.mark.parametrize("unit", sorted(n for n in os.listdir(UNIT_DIR) if n.endswith(".service")))
def test_every_unit_is_hardened_to_an_exposure_of_at_most_3(unit):
    out = security(os.path.join(UNIT_DIR, unit), 30)
    level = out.stdout.strip().splitlines()[-1]
    assert out.returncode == 0, level
    assert float(level.split(": ")[1].split()[0]) <= 3.0, level


def test_the_security_check_catches_a_lax_unit(tmp_path):
    lax = tmp_path / "lax.service"
    lax.write_text("[Service]\nExecStart=/bin/true\n")
    assert security(str(lax), 30).returncode != 0


def test_the_agent_still_reaches_sysfs_and_its_accelerators_and_the_bridge_its_serial_port():
    """Hardening must not take away what the daemons measure with."""
    agent = directives(AGENT_UNIT)
    assert "/dev/apex_0 rw" in agent["DeviceAllow"] and "ProtectKernelTunables" in agent
    assert "PrivateDevices" not in agent, "PrivateDevices hides /dev/apex_0 and the Jetson's GPU nodes"
    assert "ProcSubset" not in agent, "ProcSubset=pid hides /proc/stat and /proc/loadavg from psutil"
    bridge = directives(os.path.join(UNIT_DIR, "fleetbench-bridge@.service"))
    assert "/dev/%I rw" in bridge["DeviceAllow"] and bridge["SupplementaryGroups"] == ["dialout"]
