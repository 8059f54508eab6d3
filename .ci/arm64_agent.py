"""The agent on an emulated arm64 root, against the host's broker: birth, health, a probe.

Run inside the root by .ci/arm64, with the root's own Python and fleetbench:

    python arm64_agent.py mqtt://127.0.0.1:PORT WORKDIR DEVICE_ID

Subscribes to the device's topics, starts `fleetbench agent` (the unit's command), and waits
for its retained birth ("online", with capabilities), a health report, and a health report
carrying a degradation index (the reference workload timed as its baseline).  Exit 0 when all
three arrived, 1 when any did not within the time allowed (emulation is slow: 240 s).
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import threading
import time

import paho.mqtt.client as mqtt


def main() -> int:
    url, workdir, device = sys.argv[1:4]
    host, port = url.removeprefix("mqtt://").rsplit(":", 1)
    os.makedirs(workdir, exist_ok=True)
    config = os.path.join(workdir, "agent.toml")
    with open(config, "w") as fh:
        fh.write(f'device_id = "{device}"\nstate_dir = "{workdir}/state"\n[broker]\nurl = "{url}"\n'
                 '[health]\ninterval_s = 2\n[discovery]\ninterfaces = ["127.0.0.1"]\n'
                 "[degradation]\nmax_load_per_core = 100\nmax_temperature_c = 150\n")  # fmt: skip
    seen: dict[str, dict] = {}
    done = threading.Event()

    def on_message(client, userdata, msg):
        data = json.loads(msg.payload).get("data") or {}
        kind = msg.topic.rsplit("/", 1)[-1]
        if kind == "status" and data.get("state") == "online":
            seen.setdefault("birth", data)
        elif kind == "health":
            seen.setdefault("health", data)
            if (data.get("degradation") or {}).get("index") is not None:
                seen.setdefault("probe", data)
        if {"birth", "health", "probe"} <= set(seen):
            done.set()

    subscribed = threading.Event()
    client = mqtt.Client(mqtt.CallbackAPIVersion.VERSION2, client_id=f"arm64-check-{device}")
    client.on_message = on_message
    client.on_subscribe = lambda *args: subscribed.set()
    client.on_connect = lambda c, *args: c.subscribe(f"fleetbench/v1/devices/{device}/#", qos=1)
    client.connect(host, int(port))
    client.loop_start()
    if not subscribed.wait(60):
        print(f"arm64 agent check: cannot subscribe at {url}", file=sys.stderr)
        return 1
    started = time.monotonic()
    with open(os.path.join(workdir, "agent.log"), "w") as log:
        agent = subprocess.Popen([sys.executable, "-m", "agent", "-v", "agent", "--config", config],
                                 stdout=log, stderr=subprocess.STDOUT)  # fmt: skip
        try:
            ok = done.wait(240)
        finally:
            agent.terminate()
            code = agent.wait(60)
    client.loop_stop()
    took = time.monotonic() - started
    if not ok:
        with open(os.path.join(workdir, "agent.log")) as fh:
            print(fh.read()[-4000:], file=sys.stderr)
        got = ", ".join(sorted(seen)) or "nothing"
        print(f"arm64 agent check: after {took:.0f} s only {got} of birth, health, probe", file=sys.stderr)
        return 1
    caps = seen["birth"].get("capabilities") or {}
    probe = seen["probe"]["degradation"]
    collectors = ", ".join(seen["health"]["collectors"])
    print(
        f"agent on {caps.get('arch', '?')}: birth, health ({collectors}) and a degradation baseline "
        f"(index {probe['index']}) in {took:.0f} s; it stopped with status {code}"
    )
    return 0 if code == 0 else 1


if __name__ == "__main__":
    sys.exit(main())
