"""Zeroconf on 127.0.0.1 only: agents find each other, and find a broker when none is configured."""

from __future__ import annotations

import asyncio
import json
import os
import socket
import subprocess
import sys

import pytest
from broker import Receiver
from daemon_proc import REPO, AgentProcess, eventually, fleetbench, write_config

from agent.transport import discovery

LOOPBACK = ["127.0.0.1"]


def service(kind: str, name: str, port: int, properties=None):
    """A service announced from 127.0.0.1, as another agent or a broker on the LAN would."""
    from zeroconf import ServiceInfo

    return ServiceInfo(kind, f"{name}.{kind}", port=port, addresses=[socket.inet_aton("127.0.0.1")],
                       server=f"{name}.local.", properties=properties or {})  # fmt: skip


def test_an_advertised_agent_is_found_with_its_txt_records():
    async def scenario():
        adv = discovery.Advertiser(
            "shed-pi-3",
            {
                "id": "shed-pi-3",
                "sku": "Raspberry Pi 4 Model B Rev 1.4",
                "platform": "raspberry-pi",
                "version": "0.1.0",
                "backends": "litert,onnxruntime",
            },
            LOOPBACK,
        )
        await adv.start()
        try:
            return await discovery.browse(
                (discovery.FLEETBENCH,), timeout_s=10, interfaces=LOOPBACK, first=True
            )
        finally:
            await adv.stop()

    (peer,) = asyncio.run(scenario())
    assert peer.name == "shed-pi-3" and "127.0.0.1" in peer.addresses
    assert peer.properties["sku"] == "Raspberry Pi 4 Model B Rev 1.4"
    assert peer.properties["backends"] == "litert,onnxruntime"


def test_fleetbench_discover_lists_agents_and_brokers():
    from zeroconf import Zeroconf

    zc = Zeroconf(interfaces=LOOPBACK)
    infos = [
        service(discovery.FLEETBENCH, "jetson-7", 0, {"sku": "NVIDIA Jetson Nano Developer Kit",
                "platform": "jetson", "version": "0.1.0", "backends": "onnxruntime"}),
        service(discovery.MQTT, "shed-broker", 1883),
    ]  # fmt: skip
    for info in infos:
        zc.register_service(info)
    try:
        out = subprocess.run(
            [
                sys.executable,
                "-m",
                "agent",
                "discover",
                "--interface",
                "127.0.0.1",
                "--timeout",
                "4",
                "--format",
                "json",
            ],
            capture_output=True,
            text=True,
            env={**os.environ, "PYTHONPATH": REPO},
            timeout=60,
        )
    finally:
        zc.unregister_all_services()
        zc.close()
    assert out.returncode == 0, out.stderr
    found = {(p["service"], p["name"]): p for p in json.loads(out.stdout)}
    assert found[(discovery.FLEETBENCH, "jetson-7")]["properties"]["platform"] == "jetson"
    assert found[(discovery.MQTT, "shed-broker")]["port"] == 1883


def test_nothing_found_is_said_not_failed():
    out = fleetbench("discover", "--interface", "127.0.0.1", "--timeout", "0.5")
    assert out.returncode == 0 and "nothing answered within 0.5 s" in out.stderr


def test_agent_without_a_broker_finds_one_on_the_lan_and_advertises_itself(tmp_path, mosquitto):
    from zeroconf import Zeroconf

    zc = Zeroconf(interfaces=LOOPBACK)
    zc.register_service(service(discovery.MQTT, "test-broker", mosquitto.port))
    rx = Receiver(mosquitto, "fleetbench/v1/devices/found-it/#")
    rx.wait_subscribed()
    config = write_config(str(tmp_path / "agent.toml"), None)
    # Anyone on a LAN can announce a broker: a plain one is not used unless the operator allows it.
    wary = AgentProcess(str(tmp_path / "wary"), config, "found-it")
    os.makedirs(wary.workdir)
    wary.start()
    try:
        wary.wait_note("READY=1")
        eventually(lambda: "a discovered one is used only over TLS" in wary.read_log(), 30)
        assert wary.status()["broker"] is None and not wary.status()["connected"]
    finally:
        wary.close()
    with open(config) as fh:
        text = fh.read().replace(
            'interfaces = ["127.0.0.1"]\n', 'interfaces = ["127.0.0.1"]\nallow_plain = true\n'
        )
    with open(config, "w") as fh:
        fh.write(text)
    agent = AgentProcess(str(tmp_path), config, "found-it")
    agent.start()
    try:
        agent.wait_note("READY=1")
        rx.wait_for(
            lambda p: any(
                t.endswith("/status") and json.loads(b)["data"]["state"] == "online" for t, b, _ in p
            )
        )
        peers = asyncio.run(discovery.browse((discovery.FLEETBENCH,), 10, LOOPBACK, first=True))
        assert [p.name for p in peers] == ["found-it"] and peers[0].properties["id"] == "found-it"
        assert f"mqtt://127.0.0.1:{mosquitto.port}" in agent.read_log()
    finally:
        agent.close()
        rx.close()
        zc.unregister_all_services()
        zc.close()


@pytest.mark.parametrize("bad", ["not-an-ip"])
def test_bad_interface_is_a_usage_error(bad):
    out = fleetbench("discover", "--interface", bad, "--timeout", "0.2")
    assert out.returncode == 2 and "Traceback" not in out.stderr, out.stderr
    assert bad in out.stderr
