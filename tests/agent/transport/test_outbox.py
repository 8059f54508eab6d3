from __future__ import annotations

import os
import signal
import sqlite3
import subprocess
import sys

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from agent.transport import outbox
from agent.transport.outbox import Outbox, OutboxError

pytestmark = pytest.mark.portable  # runs under arm64 emulation too (.ci/arm64)


@pytest.fixture(
    autouse=True, params=["returning", "select-then-delete"] if outbox.RETURNING else ["select-then-delete"]
)
def sqlite_dialect(request, monkeypatch):
    """Every test on both ways of deleting where this SQLite has both: DELETE ... RETURNING
    (SQLite 3.35+) and the SELECT before a DELETE that SQLite 3.34 (Raspberry Pi OS bullseye) needs."""
    monkeypatch.setattr(outbox, "RETURNING", request.param == "returning")


@pytest.fixture
def box(tmp_path):
    with Outbox(str(tmp_path / "outbox.sqlite")) as b:
        yield b


def test_fifo_peek_and_ack(box):
    for i in range(5):
        assert box.put(f"id{i}", "t/results", f"p{i}".encode())
    assert len(box) == 5
    first = box.peek(2)
    assert [p.id for p in first] == ["id0", "id1"] and first[0].payload == b"p0" and first[0].qos == 1
    assert [p.id for p in box.peek(2, exclude={"id0"})] == ["id1", "id2"]
    assert box.ack(["id0", "id1", "nope"]) == 2
    assert [p.id for p in box.peek(10)] == ["id2", "id3", "id4"]


def test_put_is_idempotent_on_the_id(box):
    assert box.put("same", "t", b"a")
    assert not box.put("same", "t", b"b")
    assert len(box) == 1 and box.peek(1)[0].payload == b"a"


def test_count_bound_drops_the_oldest_and_counts(tmp_path, caplog):
    with Outbox(str(tmp_path / "o.sqlite"), max_messages=3) as b:
        for i in range(5):
            b.put(f"m{i}", "t", b"x")
        assert [p.id for p in b.peek(10)] == ["m2", "m3", "m4"]
        assert b.dropped_total == 2
    assert "dropped 1 message(s)" in caplog.text
    with Outbox(str(tmp_path / "o.sqlite"), max_messages=3) as again:
        assert again.dropped_total == 2  # the count is on disk, for health reports


def test_age_bound(tmp_path):
    path = str(tmp_path / "o.sqlite")
    with Outbox(path, max_age_s=3600) as b:
        b.put("old", "t", b"x")
        b.put("new", "t", b"y")
    db = sqlite3.connect(path)
    db.execute("UPDATE messages SET created_at = created_at - 7200 WHERE id = 'old'")
    db.commit()
    db.close()
    with Outbox(path, max_age_s=3600) as b:
        assert b.enforce_bounds() == 1
        assert [p.id for p in b.peek(5)] == ["new"] and b.dropped_total == 1


def test_survives_kill_9(tmp_path):
    path = str(tmp_path / "o.sqlite")
    code = (
        "import os, signal, sys\n"
        f"sys.path.insert(0, {os.getcwd()!r})\n"
        "from agent.transport.outbox import Outbox\n"
        f"b = Outbox({path!r})\n"
        "for i in range(200):\n"
        "    b.put(f'k{i}', 't', b'payload')\n"
        "os.kill(os.getpid(), signal.SIGKILL)\n"
    )
    proc = subprocess.run([sys.executable, "-c", code], capture_output=True)
    assert proc.returncode == -signal.SIGKILL
    with Outbox(path) as b:
        assert len(b) == 200
        assert {p.id for p in b.peek(500)} == {f"k{i}" for i in range(200)}


def test_unopenable_path_is_a_clear_error(tmp_path):
    blocker = tmp_path / "file"
    blocker.write_text("not a directory")
    with pytest.raises(OutboxError, match="cannot be opened"):
        Outbox(str(blocker / "sub" / "outbox.sqlite"))


@settings(max_examples=30, deadline=None)
@given(st.lists(st.tuples(st.sampled_from(["put", "ack"]), st.integers(0, 15)), max_size=60))
def test_model_based(tmp_path_factory, ops):
    """The outbox behaves like an ordered dict of ids, whatever the order of puts and acks."""
    path = str(tmp_path_factory.mktemp("mb") / "o.sqlite")
    model: dict[str, None] = {}
    with Outbox(path) as b:
        for op, k in ops:
            key = f"k{k}"
            if op == "put":
                assert b.put(key, "t", b"x") == (key not in model)
                model.setdefault(key, None)
            else:
                assert b.ack([key]) == (1 if key in model else 0)
                model.pop(key, None)
        assert [p.id for p in b.peek(100)] == list(model)


def test_byte_bound_drops_health_samples_before_results(tmp_path):
    """Over its bytes, the outbox gives up the oldest health samples (the next one says the
    same, newer) before any result; the running totals match what is on disk."""
    with Outbox(str(tmp_path / "o.sqlite"), max_bytes=10_000) as b:
        b.put("r0", "results", b"r" * 3000)
        for i in range(4):
            b.put(f"h{i}", "health", b"h" * 1000, droppable=True)
        b.put("r1", "results", b"r" * 3000)
        b.put("r2", "results", b"r" * 3000)  # 13,000 bytes queued: 3,000 must go
        assert [p.id for p in b.peek(10)] == ["r0", "h3", "r1", "r2"]
        assert b.dropped_total == 3 and len(b) == 4 and b.bytes == 10_000
        b.put("r3", "results", b"r" * 3000)  # no health left to give: the oldest result goes
        assert [p.id for p in b.peek(10)] == ["r1", "r2", "r3"]
    with Outbox(str(tmp_path / "o.sqlite"), max_bytes=10_000) as again:
        assert len(again) == 3 and again.bytes == 9000  # the totals are read again at open
        assert again.ack(["r1", "nope"]) == 1 and len(again) == 2 and again.bytes == 6000


def test_an_outbox_of_the_previous_release_opens_and_keeps_its_messages(tmp_path):
    import sqlite3

    path = str(tmp_path / "old.sqlite")
    db = sqlite3.connect(path)
    db.executescript(
        "CREATE TABLE messages (seq INTEGER PRIMARY KEY AUTOINCREMENT, id TEXT NOT NULL UNIQUE, "
        "topic TEXT NOT NULL, payload BLOB NOT NULL, qos INTEGER NOT NULL, retain INTEGER NOT NULL, "
        "created_at REAL NOT NULL); CREATE TABLE meta (key TEXT PRIMARY KEY, value INTEGER NOT NULL);"
        "INSERT INTO messages (id, topic, payload, qos, retain, created_at) "
        "VALUES ('old', 't', x'00', 1, 0, 1e12);"
    )
    db.commit()
    db.close()
    with Outbox(path) as b:
        assert [p.id for p in b.peek(5)] == ["old"] and len(b) == 1
        b.put("new", "health", b"h", droppable=True)
        assert len(b) == 2


def test_an_outbox_held_at_its_bound_warns_once_not_on_every_put(tmp_path, caplog):
    with Outbox(str(tmp_path / "o.sqlite"), max_messages=5) as b:
        for i in range(100):
            b.put(f"m{i}", "results", b"r")
        assert len(b) == 5 and b.dropped_total == 95
    assert len([r for r in caplog.records if "dropped" in r.getMessage()]) == 1


def test_a_drop_that_fails_is_rolled_back_and_the_counts_stay_true(tmp_path):
    """Another process broke the file (its meta table gone): dropping beyond the bound fails as
    one clear error, nothing is lost, and the outbox's counts are the file's again."""
    path = str(tmp_path / "outbox.sqlite")
    with Outbox(path, max_messages=3) as box:
        for i in range(3):
            box.put(f"m{i}", "t", b"x" * 10)
        other = sqlite3.connect(path)
        other.execute("DROP TABLE meta")
        other.commit()
        other.close()
        with pytest.raises(OutboxError, match="cannot drop messages beyond its bounds: no such table: meta"):
            box.put("m3", "t", b"x" * 10)
        assert len(box) == 4 and box.bytes == 40
        assert [p.id for p in box.peek(10)] == ["m0", "m1", "m2", "m3"]
        assert box.ack(["m0"]) == 1 and len(box) == 3, "and it still works"
