"""The dashboard in a real browser (Chromium over DevTools), served by a real coordinator fed
by a real agent and a simulated device: no console errors, every device shown, the table
follows a new result without a reload, and no horizontal scroll at 1,400 px."""

from __future__ import annotations

import urllib.request

from broker import free_port
from browser import Browser, need_chromium
from daemon_proc import AgentProcess, eventually, start_configured_coordinator, stop, write_config
from keys import FLEET_PUBLIC
from wire import result

from agent.protocol import messages as m
from agent.transport.mqtt import BrokerSettings
from coordinator.simulated import SimulatedDevice


def test_the_dashboard_in_a_browser_shows_the_fleet_live_and_fits_1400_px(tmp_path, mosquitto):
    need_chromium()
    port = free_port()
    config = tmp_path / "coordinator.toml"
    config.write_text(
        f'db = "{tmp_path / "fleet.sqlite"}"\nstate_dir = "{tmp_path / "coord"}"\ntick_s = 0.2\n'
        f'[broker]\nurl = "{mosquitto.url}"\n[rerank]\nenabled = false\n[http]\nlisten = "127.0.0.1:{port}"\n'
    )
    url = f"http://127.0.0.1:{port}/"
    coord = start_configured_coordinator(str(config))
    agent = AgentProcess(
        str(tmp_path), write_config(str(tmp_path / "agent.toml"), mosquitto.url), "browser-pi"
    )
    settings = BrokerSettings.from_url(mosquitto.url)
    sim = SimulatedDevice(
        "sim-board", "Simulated Board", {}, "a test", settings, str(tmp_path / "sim"), FLEET_PUBLIC
    )
    try:
        agent.start()
        agent.wait_note("READY=1")
        sim.start()
        assert sim.connected.wait(10)

        def fleet_json() -> str:
            try:
                with urllib.request.urlopen(url + "api/fleet", timeout=10) as r:
                    return r.read().decode()
            except OSError:  # the coordinator is still starting
                return ""

        eventually(lambda: "browser-pi" in fleet_json() and "sim-board" in fleet_json(), 60)
        with Browser(1400, 900) as browser:
            browser.open(url)
            shown = browser.eval(
                "[...document.querySelectorAll('#fleet tr td:first-child')].map(td => td.innerText)"
            )
            assert any("browser-pi" in s for s in shown) and any("sim-board" in s for s in shown), shown
            results_cell = (
                "[...document.querySelectorAll('#fleet tr')].find(tr => tr.innerText.includes('sim-board'))"
                ".children[6].innerText"
            )
            assert browser.eval(results_cell) == "0"
            sim.send(m.ResultMessage, result("sim-board", "j1", "m.onnx").data, "r1")
            eventually(lambda: browser.eval(results_cell) == "1", 30)  # the page refreshed itself
            assert browser.eval("document.documentElement.scrollWidth <= window.innerWidth")
            shot = browser.screenshot(str(tmp_path / "dashboard.png"))
            with open(shot, "rb") as fh:
                assert fh.read(8) == b"\x89PNG\r\n\x1a\n"
            for page in ("decisions", "rollouts", "dead-letters", "devices/sim-board"):
                browser.open(url + page)
                assert browser.eval("document.documentElement.scrollWidth <= window.innerWidth"), page
            assert browser.errors == [], browser.errors
    finally:
        sim.stop()
        agent.close()
        stop(coord)
