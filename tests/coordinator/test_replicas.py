"""Several coordinators on one PostgreSQL database and one broker: each ingests its share, the
loops run in exactly one (the lease holder), and killing that one with -9 hands them over."""

from __future__ import annotations

import signal
import time

from daemon_proc import eventually, fleetbench, start_configured_coordinator
from test_loop import keygen, stop

from coordinator.store import open_store


def replica_config(tmp_path, mosquitto, url, name) -> str:
    path = tmp_path / f"{name}.toml"
    path.write_text(
        f'db = "{url}"\nstate_dir = "{tmp_path / "coord"}"\nclient_id = "{name}"\ntick_s = 0.2\n'
        f'lease_s = 2\n[broker]\nurl = "{mosquitto.url}"\n[rerank]\nenabled = false\n'
    )
    return str(path)


def holder(store):
    """The live lease on the loops: (replica, token), or None."""
    now = time.time()
    found = [(lease.holder.split("@")[0], lease.token) for lease in store.leases() if lease.expires_at >= now]
    return found[0] if found else None


def test_the_loops_run_in_one_replica_and_move_when_it_is_killed(tmp_path, mosquitto, postgres):
    url = postgres.new_database()
    configs = [replica_config(tmp_path, mosquitto, url, f"replica-{i}") for i in (1, 2)]
    keygen(configs[0])  # one key for both, in their shared state_dir
    first = start_configured_coordinator(configs[0])
    second = None
    try:
        store = eventually(lambda: _opened(url))
        assert eventually(lambda: holder(store)) == ("replica-1", 1)
        second = start_configured_coordinator(configs[1])
        # the second replica is up (it ingests: its MQTT session exists) but does not lead
        eventually(lambda: "replica-2" in _clients(mosquitto))
        assert holder(store) == ("replica-1", 1)

        first.send_signal(signal.SIGKILL)
        first.wait(10)
        assert eventually(lambda: holder(store) == ("replica-2", 2), 30)  # once the 2 s lease ran out

        out = fleetbench("fleet", "--config", configs[1])
        assert out.returncode == 0 and "loops: run by replica-2@" in out.stdout, out.stderr
        stop(second)  # a clean stop gives the lease up at once
        second = None
        assert holder(store) is None
    finally:
        for proc in (first, second):
            if proc is not None and proc.poll() is None:
                proc.kill()
                proc.wait(10)


def _opened(url):
    store = open_store(url, migrate=False)
    return store if store.version() else None


def _clients(mosquitto) -> str:
    with open(f"{mosquitto.dir}/mosquitto.log") as fh:
        return fh.read()


def test_the_coordinator_running_the_loops_thins_old_health(tmp_path, mosquitto, postgres):
    from test_store import health

    from coordinator.store import ingest_all

    url = postgres.new_database()
    config = replica_config(tmp_path, mosquitto, url, "replica-1")
    with open(config, "a") as fh:
        fh.write("[retention]\nhealth_days = 1\nevery_s = 3600\n")
    store = open_store(url)
    old = time.time() // 3600 * 3600 - 3 * 86400  # three days ago, on the hour: 2 hours of samples
    ingest_all(store, [health("pi-1", 1.0, ts=old + i * 600, msg_id=f"h{i}") for i in range(12)])
    ingest_all(store, [health("pi-1", 1.0, ts=time.time(), msg_id="now")])
    keygen(config)
    coordinator = start_configured_coordinator(config)
    try:
        assert eventually(lambda: store.count("health") == 3)  # one per old hour, and today's
    finally:
        stop(coordinator)
