"""Run the daemons the way systemd does (the unit's ExecStart, its environment, a notify socket),
and the coordinator they report to."""

from __future__ import annotations

import json
import os
import shlex
import signal
import socket
import subprocess
import sys
import time
from typing import Optional

from keys import FLEET_PUBLIC

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
UNIT = os.path.join(REPO, "systemd", "fleetbench-agent.service")


def fleetbench(
    *args: str, env: Optional[dict] = None, timeout_s: float = 120.0
) -> subprocess.CompletedProcess:
    """Run the ``fleetbench`` command line of this checkout, as a user would, and capture it."""
    return subprocess.run(
        [sys.executable, "-m", "agent", *args],
        capture_output=True,
        text=True,
        env={**os.environ, "PYTHONPATH": REPO, **(env or {})},
        timeout=timeout_s,
    )


def unit_command(unit: str = UNIT, port: str = "") -> list[str]:
    """ExecStart of a unit, with the installed script replaced by this interpreter; for the
    bridge's template unit, ``/dev/%I`` replaced by ``port``."""
    with open(unit) as fh:
        line = next(x for x in fh if x.startswith("ExecStart="))
    argv = [port if a == "/dev/%I" else a for a in shlex.split(line.split("=", 1)[1])]
    assert os.path.basename(argv[0]) == "fleetbench", argv
    return [sys.executable, "-m", "agent", *argv[1:]]


def write_config(path: str, broker_url: Optional[str], extra: str = "") -> str:
    with open(path, "w") as fh:
        fh.write(
            (f'[broker]\nurl = "{broker_url}"\nkeepalive_s = 5\n' if broker_url else "")
            + '[health]\ninterval_s = 1\n[discovery]\ninterfaces = ["127.0.0.1"]\n'
            + "[degradation]\nenabled = false\n"
            + ("" if "[models]" in extra else f'[models]\npublic_key = "{FLEET_PUBLIC}"\n')
            + extra
        )
    return path


class AgentProcess:
    """One agent process; ``notes`` collects what it told its notify socket."""

    def __init__(
        self,
        workdir: str,
        config_path: str,
        device_id: str = "test-agent",
        watchdog_usec: int = 2_000_000,
        argv: Optional[list[str]] = None,
    ) -> None:
        self.argv = argv or unit_command()  # the agent unit's command, unless another is given
        self.workdir = workdir
        self.state_dir = os.path.join(workdir, "state")
        self.config_path = config_path
        self.device_id = device_id
        self.watchdog_usec = watchdog_usec
        self.notify_path = os.path.join(workdir, "notify.sock")
        self.notes: list[str] = []
        self.proc: Optional[subprocess.Popen] = None
        self.sock: Optional[socket.socket] = None
        self.log_path = os.path.join(workdir, "agent.log")

    def start(self) -> None:
        if self.sock is None:
            if os.path.exists(self.notify_path):
                os.unlink(self.notify_path)
            self.sock = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
            self.sock.bind(self.notify_path)
        env = {
            **os.environ,
            "FLEETBENCH_CONFIG": self.config_path,
            "FLEETBENCH_DEVICE_ID": self.device_id,
            "STATE_DIRECTORY": self.state_dir,  # what StateDirectory= sets
            "NOTIFY_SOCKET": self.notify_path,
            "WATCHDOG_USEC": str(self.watchdog_usec),
            "PYTHONPATH": REPO,
        }
        env.pop("WATCHDOG_PID", None)
        self.log = open(self.log_path, "ab")  # noqa: SIM115 - the process writes it until it ends
        self.proc = subprocess.Popen(
            self.argv, env=env, cwd=self.workdir, stdout=self.log, stderr=subprocess.STDOUT
        )

    def wait_note(self, prefix: str, timeout_s: float = 60.0) -> str:
        """Wait for a notify message starting with ``prefix`` (READY=1, WATCHDOG=1, ...)."""
        assert self.sock is not None
        deadline = time.monotonic() + timeout_s
        while True:
            for note in self.notes:
                if note.startswith(prefix):
                    self.notes.remove(note)
                    return note
            remaining = deadline - time.monotonic()
            exited = self.proc is not None and self.proc.poll() is not None
            if remaining <= 0 or (exited and not self._pending()):
                raise AssertionError(f"no {prefix} from the agent; log:\n{self.read_log()}")
            self.sock.settimeout(min(remaining, 1.0))
            try:
                self.notes.extend(self.sock.recv(4096).decode().split("\n"))
            except socket.timeout:
                continue

    def _pending(self) -> bool:
        assert self.sock is not None
        self.sock.settimeout(0)
        try:
            self.notes.extend(self.sock.recv(4096).decode().split("\n"))
            return True
        except (BlockingIOError, socket.timeout):
            return False

    def read_log(self) -> str:
        with open(self.log_path, errors="replace") as fh:
            return fh.read()

    def status(self) -> dict:
        with open(os.path.join(self.state_dir, "status.json")) as fh:
            return json.load(fh)

    def signal(self, sig: int) -> None:
        assert self.proc is not None
        self.proc.send_signal(sig)

    def wait(self, timeout_s: float = 30.0) -> int:
        assert self.proc is not None
        code = self.proc.wait(timeout_s)
        self.log.close()
        return code

    def kill(self) -> None:
        if self.proc is not None and self.proc.poll() is None:
            self.proc.kill()
            self.proc.wait(10)
        if self.proc is not None and not self.log.closed:
            self.log.close()

    def close(self) -> None:
        self.kill()
        if self.sock is not None:
            self.sock.close()
            self.sock = None


# -- the coordinator, for tests of devices that report to it ------------------------------


def start_coordinator(broker, db, client_id="coord-test"):
    """`fleetbench coordinator` storing into ``db``, as a process."""
    return subprocess.Popen(
        [
            sys.executable,
            "-m",
            "agent",
            "coordinator",
            "--broker",
            broker.url,
            "--db",
            db,
            "--client-id",
            client_id,
        ],
        env={**os.environ, "PYTHONPATH": REPO},
        stdout=subprocess.DEVNULL,
        stderr=subprocess.PIPE,
        text=True,
    )


def start_configured_coordinator(config: str) -> subprocess.Popen:
    """`fleetbench coordinator --config FILE`, as a process."""
    return subprocess.Popen(
        [sys.executable, "-m", "agent", "coordinator", "--config", config],
        env={**os.environ, "PYTHONPATH": REPO},
        stdout=subprocess.DEVNULL,
        stderr=subprocess.PIPE,
        text=True,
    )


def wait_coordinator_subscribed(pub, db: str) -> None:
    """Until the coordinator storing into ``db`` has subscribed: a retained status reaches it
    whenever it subscribes, so once that is stored, nothing published from here on can miss it."""
    from agent.protocol import messages

    probe = messages.make(messages.StatusMessage, "probe", messages.StatusData(state="online", protocol=2))
    pub.publish(
        "fleetbench/v1/devices/probe/status", messages.encode(probe), qos=1, retain=True
    ).wait_for_publish(10)
    eventually(lambda: os.path.exists(db) and "probe" in fleet_if_ready(db))


def fleet_if_ready(db: str) -> dict:
    """``fleet(db)``, or nothing while the coordinator has not made the database yet."""
    out = fleetbench("fleet", "--db", db, "--format", "json")
    return {d["device_id"]: d for d in json.loads(out.stdout)} if out.returncode == 0 else {}


def stop(proc):
    proc.send_signal(signal.SIGTERM)
    assert proc.wait(30) == 0, proc.stderr.read()


def eventually(predicate, timeout_s=60.0):
    """Poll the database the coordinator writes (there is no event to wait on across processes)."""
    deadline = time.monotonic() + timeout_s
    while True:
        value = predicate()
        if value:
            return value
        assert time.monotonic() < deadline, "timed out"
        time.sleep(0.1)


def publisher(broker):
    import paho.mqtt.client as mqtt

    client = mqtt.Client(mqtt.CallbackAPIVersion.VERSION2, client_id="test-publisher")
    client.connect("127.0.0.1", broker.port)
    client.loop_start()
    return client


def fleet(db):
    out = fleetbench("fleet", "--db", db, "--format", "json")
    assert out.returncode == 0, out.stderr
    return {d["device_id"]: d for d in json.loads(out.stdout)}
