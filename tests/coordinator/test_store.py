"""The coordinator's store: migrations, idempotent ingest, dead letters, the fleet registry."""

from __future__ import annotations

import json
import os
import sqlite3
import time

import pytest
from wire import bench_result, job_ack, result

from agent.collectors.degradation import DegradationState
from agent.collectors.health import HealthSample, Thermal
from agent.collectors.identity import Capabilities
from agent.protocol import messages as m
from agent.protocol.reports import HealthData, StatusData
from coordinator.store import LATEST, Message, StoreError, ingest_all, open_store

DATA = os.path.join(os.path.dirname(__file__), "data")


def topic(device, kind):
    return f"fleetbench/v1/devices/{device}/{kind}"


def wire(msg, version=m.VERSION, device=None):
    return Message(topic(device or msg.device_id, msg.TOPIC), m.encode(msg, version))


def status(device, state, **birth):
    return wire(m.make(m.StatusMessage, device, StatusData(state=state, protocol=m.VERSION, **birth)))


def health(device, index, ts=None, msg_id=None):
    data = HealthData(health=HealthSample(thermal=Thermal({"cpu-thermal": 48.7})),
                      degradation=DegradationState(index=index))  # fmt: skip
    return wire(m.make(m.HealthMessage, device, data, msg_id, ts=ts))


@pytest.fixture
def store(db_url):
    """A new store on SQLite, then on PostgreSQL (tests/conftest.py ``db_url``)."""
    return open_store(db_url)


def test_a_new_database_starts_at_the_latest_schema(db_url):
    store = open_store(db_url)
    assert store.version() == LATEST
    assert open_store(db_url).migrate() == []  # nothing left to apply


def test_a_database_of_the_previous_release_is_migrated_and_keeps_its_data(tmp_path):
    """A real database made by fleetbench 0.1 (schema 2): its reports are re-keyed by (device, id),
    its push acks told apart from job acks, and everything it held is still there."""
    path = tmp_path / "fleet.sqlite"
    conn = sqlite3.connect(path)
    with open(os.path.join(DATA, "fleet_v2.sql")) as fh:
        conn.executescript(fh.read())
    conn.close()
    store = open_store(str(path))
    assert store.version() == LATEST
    assert store.count("results") == 1 and store.count("acks") == 2 and store.count("health") == 1
    (device,) = store.fleet()
    assert (device.device_id, device.sku, device.results, device.protocol) == (
        "pi-old", "Raspberry Pi 4 Model B Rev 1.4", 1, None)  # fmt: skip
    assert store.job_ending("pi-old", "j1").state == "done"
    cell = "|nor_conv_3x3~0|+|nor_conv_3x3~0|avg_pool_3x3~1|+|skip_connect~0|nor_conv_3x3~1|skip_connect~2|"
    assert store.measured("pi-old", "j1", "nas-bench-201") == {cell: 12.5}
    (ack,) = store.push_acks([("pi-old", "abc123:pi-old")])
    assert ack.ack.state == "installed" and ack.ack.p50_ms == 12.0  # a version-1 ack, read as one
    assert [r.rollout_id for r in store.rollouts()] == ["abc123"]
    assert store.rerank_states()["pi-old"].state == "decided"
    # and it takes new messages, keyed by device
    store.ingest([wire(result("pi-old", msg_id="result:j1:x", p50_ms=3.0))])  # the same id as an old row
    assert store.count("results") == 1


def test_ingest_is_idempotent_on_the_device_and_message_id(store):
    batch = [wire(result("pi-1", "j", f"m{i}", p50_ms=i + 1, msg_id=f"result:j:m{i}")) for i in range(50)]
    assert store.ingest(batch)["results"] == 50
    assert store.ingest(batch + batch[:10])["results"] == 0  # redelivered: stored once
    assert store.count("results") == 50
    assert sorted(r.p50_ms for r in store.results_for("pi-1")) == list(range(1, 51))


def test_the_same_message_id_from_two_devices_is_two_messages(store):
    """Ids are unique per sender: a job sent to two devices stores both devices' results."""
    both = [wire(result(d, "j-shared", "m.onnx", msg_id="result:j-shared:m.onnx")) for d in ("pi-1", "pi-2")]
    assert store.ingest(both)["results"] == 2
    assert [len(store.results_for(d)) for d in ("pi-1", "pi-2")] == [1, 1]


def test_fleet_registry_from_birth_will_and_health(store):
    caps = Capabilities(
        arch="aarch64",
        cpu_model="Cortex-A72",
        cores_logical=4,
        cores_physical=4,
        mem_total_mb=3794.0,
        backends={"litert": "ai-edge-litert 2.3.0"},
        accelerators=(),
    )
    store.ingest([status("pi-1", "online", sku="Raspberry Pi 4 Model B Rev 1.4", platform="raspberry-pi",
                         version="0.1.0", capabilities=caps)])  # fmt: skip
    store.ingest([health("pi-1", 1.07)])
    (device,) = store.fleet()
    assert (device.state, device.sku, device.platform, device.protocol) == (
        "online", "Raspberry Pi 4 Model B Rev 1.4", "raspberry-pi", m.VERSION)  # fmt: skip
    assert device.capabilities["cores_logical"] == 4 and device.degradation_index == 1.07
    assert device.health["health"]["thermal"]["temperatures_c"]["cpu-thermal"] == 48.7
    store.ingest([status("pi-1", "offline")])  # the Last Will
    assert store.fleet()[0].state == "offline" and store.fleet()[0].sku == "Raspberry Pi 4 Model B Rev 1.4"
    # a Will's "ts" is from when the agent connected, before its birth: arrival order decides
    store.ingest([status("pi-1", "online"), status("pi-1", "offline")])
    assert store.fleet()[0].state == "offline"


def test_older_health_does_not_replace_newer(store):
    store.ingest([health("pi-1", 1.2, ts=2000.0)])
    store.ingest([health("pi-1", 1.0, ts=1940.0)])
    assert store.fleet()[0].degradation_index == 1.2 and store.count("health") == 2


BAD = [
    (b"not json", "message is not valid JSON"),
    (b'{"kind": "result", "v": 2, "id": "x", "device_id": "pi-1", "ts": NaN, "data": {}}', "not valid JSON"),
    (
        b'{"kind": "result", "v": 2, "id": "x", "device_id": "pi-1", "ts": 1, "data": [1]}',
        "data: Expected `object`",
    ),
    (b'{"kind": "result", "v": 2, "id": {}, "device_id": "pi-1", "ts": 1, "data": {}}', "id: Expected `str`"),
    (
        b'{"kind": "result", "v": 2, "id": "x", "device_id": "pi-1", "ts": 1, "data": {"job_id": {}}}',
        "job_id",
    ),
    (b'{"kind": "result", "v": 2, "id": "x", "device_id": "pi-1", "ts": 1e999, "data": {}}', "out of range"),
    (
        b'{"kind": "result", "v": 2, "id": "x", "device_id": "pi-1", "ts": 1, "x": '
        + b"[" * 5000
        + b"]" * 5000
        + b', "data": {}}',
        "nested too deeply",
    ),
    (b'{"kind": "result", "v": 7, "id": "x", "device_id": "pi-1", "ts": 1, "data": {}}', "version 7"),
    (b'{"kind": "health", "v": 2, "id": "x", "device_id": "pi-1", "ts": 1, "data": {}}', "health"),
]


@pytest.mark.parametrize("payload, reason", BAD)
def test_a_bad_message_becomes_a_dead_letter_and_the_rest_are_stored(store, payload, reason):
    good = [wire(result("pi-1", "j", f"m{i}")) for i in range(3)] + [wire(job_ack("pi-1", "j", "done"))]
    refused: list = []
    added = store.ingest([*good[:2], Message(topic("pi-1", "results"), payload), *good[2:]], refused)
    assert added["results"] == 3 and added["acks"] == 1 and added["dead"] == 1
    (letter,) = store.dead_letters()
    assert reason in letter.reason, letter.reason
    assert (letter.device_id, letter.kind, letter.topic) == ("pi-1", "results", topic("pi-1", "results"))
    assert letter.payload == payload[:4096] and letter.size == len(payload)
    assert [(r.topic, r.device_id, r.reason) for r in refused] == [(letter.topic, "pi-1", letter.reason)]
    assert store.fleet()[0].dead_letters == 1


def test_a_message_naming_another_device_than_its_topic_is_refused(store):
    forged = wire(result("pi-2", "j", "m"), device="pi-1")  # pi-2's message published on pi-1's topic
    assert store.ingest([forged])["dead"] == 1
    assert "names device 'pi-2' but came on the topic of 'pi-1'" in store.dead_letters()[0].reason
    assert store.count("results") == 0


def test_other_topics_and_commands_are_not_stored(store):
    added = store.ingest([Message("some/other/topic", b"{}"), Message(topic("pi-1", "jobs"), b"{}")])
    assert added["dead"] == 2 and store.count("results") == 0


def test_a_message_the_database_refuses_costs_only_itself(store, monkeypatch):
    """A row the database cannot take (here: a rule a PostgreSQL column would enforce) becomes a
    dead letter; the rest of its batch is stored one by one."""
    import sqlalchemy as sa

    with store.engine.begin() as conn:
        if store.engine.dialect.name == "sqlite":
            conn.execute(sa.text(
                "CREATE TRIGGER refuse BEFORE INSERT ON results WHEN NEW.model = 'poison' "
                "BEGIN SELECT RAISE(ABORT, 'value too long for type character varying(400)'); END"
            ))  # fmt: skip
        else:
            conn.execute(sa.text("ALTER TABLE results ADD CONSTRAINT refuse CHECK (model <> 'poison')"))
    batch = [
        wire(result("pi-1", "j", "a")),
        wire(result("pi-1", "j", "poison")),
        wire(result("pi-1", "j", "b")),
    ]
    added = ingest_all(store, batch)
    assert added["results"] == 2 and added["dead"] == 1
    assert "the database refused it" in store.dead_letters()[0].reason


def test_the_database_being_unusable_stores_and_acknowledges_nothing(store):
    """Not a message's fault (here a table gone; in the field a full disk or a lost server):
    the batch raises and stores nothing, so the caller acknowledges nothing and gets it again."""
    import sqlalchemy as sa

    with store.engine.begin() as conn:
        conn.execute(sa.text("ALTER TABLE devices RENAME TO devices_away"))
    with pytest.raises((sa.exc.OperationalError, sa.exc.ProgrammingError)):  # SQLite, PostgreSQL
        store.ingest([wire(result("pi-1", "j", f"m{i}")) for i in range(5)])
    with store.engine.begin() as conn:
        conn.execute(sa.text("ALTER TABLE devices_away RENAME TO devices"))
    assert store.count("results") == 0 and store.count("dead_letters") == 0


def test_many_in_batches(store):
    msgs = [wire(result(f"d{i % 7}", "j", f"m{i}", msg_id=f"r{i}")) for i in range(1200)]
    assert ingest_all(store, msgs + msgs[:300], batch=250)["results"] == 1200
    assert len(store.fleet()) == 7


def test_version_1_messages_of_the_landed_agent_are_stored(store):
    """The previous release's agent (message version 1) keeps being heard during an upgrade."""
    res = {
        "v": 1,
        "id": "result:j-1:conv.onnx",
        "kind": "results",
        "device_id": "pi-1",
        "ts": 1.0,
        "data": {
            "job_id": "j-1",
            "model": "conv.onnx",
            "conditions": {"waited_s": 0.0, "waited_for": []},
            "result": json.loads(json.dumps(bench_result("conv.onnx", 2.5).__dict__, default=vars)),
        },
    }
    ack = {"v": 1, "id": "ack:j-1:done", "kind": "acks", "device_id": "pi-1", "ts": 2.0,
           "data": {"job_id": "j-1", "state": "done", "measured": 1, "failed": []}}  # fmt: skip
    added = store.ingest([Message(topic("pi-1", "results"), json.dumps(res).encode()),
                          Message(topic("pi-1", "acks"), json.dumps(ack).encode())])  # fmt: skip
    assert (added["results"], added["acks"], added["dead"]) == (1, 1, 0)
    assert store.results_for("pi-1")[0].p50_ms == 2.5 and store.job_ending("pi-1", "j-1").state == "done"


def test_bad_database_arguments(tmp_path):
    with pytest.raises(StoreError, match="does not exist"):
        open_store(str(tmp_path / "missing" / "fleet.sqlite"))
    with pytest.raises(StoreError, match=r"not supported|driver|cannot be opened|not a database"):
        open_store("mysql://nobody@127.0.0.1/fleet")


def test_a_revoked_device_leaves_the_fleet_and_what_it_sends_is_refused(store):
    from coordinator.store.records import OutgoingJob

    store.ingest([status("pi-1", "online", key="0123456789abcdef"), wire(result("pi-1", msg_id="r1"))])
    assert store.device("pi-1").key == "0123456789abcdef" and store.online()[0].key == "0123456789abcdef"
    store.queue_jobs([OutgoingJob("op-1", "pi-1", "{}", "queued", 1.0)])
    assert store.revoke("pi-1", 2.0, "stolen") and not store.revoke("pi-1", 3.0, "again")
    assert store.fleet() == [] and store.queued_jobs() == []
    assert store.outgoing_jobs("op-1")[0].detail == "the device was revoked"
    added = store.ingest([status("pi-1", "online"), wire(result("pi-1", msg_id="r2"))])
    assert added["dead"] == 2 and store.fleet() == []
    assert {d.reason for d in store.dead_letters()} == {"device pi-1 is revoked"}
    assert store.reinstate("pi-1") and not store.reinstate("pi-1")
    store.ingest([status("pi-1", "online")])
    assert [d.device_id for d in store.fleet()] == ["pi-1"] and store.device("pi-1").key is None


def test_a_lease_has_one_holder_and_a_token_that_grows_with_each_new_one(store):
    assert store.acquire("loops", "a", 10, now=100) == 1
    assert store.acquire("loops", "b", 10, now=105) is None  # a's runs until 110
    assert store.acquire("loops", "a", 10, now=108) == 1  # kept: the same token
    assert store.acquire("loops", "b", 10, now=117) is None  # a's now runs until 118
    assert store.acquire("loops", "b", 10, now=119) == 2  # a's expired at 118
    assert store.acquire("loops", "a", 10, now=120) is None  # a, waking up, finds it is no longer its
    store.release("loops", "b")  # a clean stop: nobody waits it out
    assert store.acquire("loops", "a", 10, now=121) == 3
    (lease,) = store.leases()
    assert (lease.name, lease.holder, lease.token, lease.expires_at) == ("loops", "a", 3, 131)


def test_a_loops_write_is_made_only_while_its_lease_is_held(store):
    """A leader paused mid-loop (its lease run out, another replica's now) writes nothing on
    waking: each of the loops' writes checks the lease in its own transaction."""
    from coordinator.store import Fenced

    now = time.time()
    loops = store.for_loops()
    token = loops.acquire("loops", "a", 30, now=now)
    loops.fence = ("loops", "a", token)
    loops.set_rerank("pi-1", now, state="sampling", detail="by a")
    assert store.rerank_states()["pi-1"].detail == "by a"
    assert store.fence is None  # the view is fenced, the store it came from is not
    store.release("loops", "a")  # as if it ran out while a was paused ...
    assert store.acquire("loops", "b", 30, now=now) == token + 1  # ... and b took it
    with pytest.raises(Fenced, match=r"the 'loops' lease \(token 1\) is no longer a's: write not made"):
        loops.set_rerank("pi-1", now, state="deciding", detail="by a, late")
    assert store.rerank_states()["pi-1"].detail == "by a"  # nothing written
    # run out, and nobody else has it yet: not a's either
    stale = store.for_loops()
    stale.fence = ("loops", "b", token + 1)
    store.acquire("loops", "b", 30, now=now - 100)  # b's lease renewed long ago: expired now
    with pytest.raises(Fenced):
        stale.thin_health(before=now)
    store.set_rerank("pi-1", now, state="deciding", detail="unfenced")  # the CLI's and the ingest's
    assert store.rerank_states()["pi-1"].detail == "unfenced"


def test_of_many_coordinators_taking_an_expired_lease_at_once_one_gets_it(store):
    from concurrent.futures import ThreadPoolExecutor

    store.acquire("loops", "gone", 1, now=0)  # expired long ago
    with ThreadPoolExecutor(8) as pool:
        tokens = list(pool.map(lambda i: store.acquire("loops", f"c{i}", 30, now=50), range(8)))
    assert sorted(t for t in tokens if t is not None) == [2] and tokens.count(None) == 7


def test_replicas_started_together_on_a_new_postgresql_database_migrate_one_after_another(postgres):
    from concurrent.futures import ThreadPoolExecutor

    url = postgres.new_database()
    with ThreadPoolExecutor(4) as pool:
        stores = list(pool.map(lambda _: open_store(url), range(4)))
    assert {s.version() for s in stores} == {LATEST} and open_store(url).migrate() == []


def test_old_health_thins_to_the_last_sample_of_each_hour_and_the_rest_is_kept(store):
    hour = 3600.0
    msgs = [
        health(d, 1.0 + i / 100, ts=1000 * hour + i * 600, msg_id=f"h{d}{i}")
        for d in ("a", "b")
        for i in range(30)
    ]
    msgs.append(wire(result("a", "j", "m")))
    ingest_all(store, msgs)  # 30 samples 10 min apart per device: 5 hours
    assert store.count("health") == 60
    # older than hour 1003: hours 1000-1002 thin to their last sample; hours 1003-1004 stay whole
    assert store.thin_health(before=1003 * hour) == 2 * 3 * 5
    assert store.count("health") == 30 and store.count("results") == 1
    assert store.thin_health(before=1003 * hour) == 0  # thinned already
    assert store.thin_health(before=1010 * hour, since=1003 * hour) == 2 * 2 * 5
    import sqlalchemy as sa

    with store.engine.connect() as conn:
        kept = sorted(conn.execute(sa.text("SELECT ts FROM health WHERE device_id = 'a'")).scalars())
    assert kept == [1000 * hour + i * 600 for i in (5, 11, 17, 23, 29)]  # each hour's last


def test_reports_are_counted_by_their_stamp_and_listed_for_reconciling(store):
    msgs = [health("a", 1.0, ts=1000.0 + i * 0.25, msg_id=f"h{i}") for i in range(8)]  # 1000 to 1001.75
    msgs.append(wire(m.make(m.ResultMessage, "b", result("b").data, "r1", ts=1001.1)))
    msgs.append(health("b", 1.0, ts=999.9, msg_id="early"))
    ingest_all(store, msgs)
    assert store.report_counts(since=1000.0, bucket_s=1.0) == {1000.0: 4, 1001.0: 5}
    assert store.report_counts(since=1000.0, bucket_s=0.5) == {1000.0: 2, 1000.5: 2, 1001.0: 3, 1001.5: 2}
    assert store.report_counts(since=2000.0) == {}
    keys = store.report_keys(since=1000.0)
    assert sorted(keys["health"]) == [("a", f"h{i}") for i in range(8)] and keys["results"] == [("b", "r1")]


def test_replicas_ingesting_the_same_devices_at_once_never_deadlock(postgres):
    """Two replicas' batches name the same devices in opposite orders (each gets its share of
    every device's reports): their rows are written in key order, so neither holds a lock the
    other waits for while waiting for one it holds (PostgreSQL would fail one of them)."""
    import threading

    url = postgres.new_database()
    stores = [open_store(url), open_store(url, migrate=False)]
    devices = [f"pi-{i:03d}" for i in range(300)]
    failures: list[BaseException] = []
    rounds = 20
    together = threading.Barrier(2, timeout=60)

    def replica(k: int) -> None:
        order = devices if k == 0 else devices[::-1]
        batches = [[health(d, 1.0, ts=1000.0 + r, msg_id=f"h{k}-{r}") for d in order] for r in range(rounds)]
        try:
            for batch in batches:
                together.wait()  # both batches in the database at once
                stores[k].ingest(batch)
        except BaseException as err:  # reported by the test, not lost in its thread
            failures.append(err)
            together.abort()

    threads = [threading.Thread(target=replica, args=(k,)) for k in (0, 1)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(120)
    assert failures == [], failures[0]
    assert stores[0].count("health") == 2 * rounds * 300
