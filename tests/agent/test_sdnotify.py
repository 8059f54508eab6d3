"""sd_notify by hand, against a real unix datagram socket."""

from __future__ import annotations

import os
import socket

from agent.common.sdnotify import Notifier


def test_messages_reach_the_socket(tmp_path):
    path = str(tmp_path / "notify")
    with socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM) as sock:
        sock.bind(path)
        n = Notifier({"NOTIFY_SOCKET": path, "WATCHDOG_USEC": "3000000", "WATCHDOG_PID": str(os.getpid())})
        assert n.enabled and n.watchdog_s == 3.0
        assert n.ready("up") and n.watchdog() and n.stopping()
        got = [sock.recv(4096).decode() for _ in range(3)]
        n.close()
    assert got == ["READY=1\nSTATUS=up", "WATCHDOG=1", "STOPPING=1"]


def test_abstract_socket_address():
    name = f"fleetbench-test-{os.getpid()}"
    with socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM) as sock:
        sock.bind("\0" + name)
        n = Notifier({"NOTIFY_SOCKET": "@" + name})
        assert n.ready()
        assert sock.recv(100) == b"READY=1"
        n.close()


def test_outside_systemd_nothing_happens():
    n = Notifier({})
    assert not n.enabled and not n.ready() and n.watchdog_s is None


def test_watchdog_meant_for_another_process_is_ignored():
    assert Notifier({"WATCHDOG_USEC": "1000000", "WATCHDOG_PID": "1"}).watchdog_s is None
    assert Notifier({"WATCHDOG_USEC": "0"}).watchdog_s is None


def test_a_notify_socket_nobody_reads_never_blocks_the_daemon(tmp_path):
    """A supervisor that stopped reading: its queue fills, and notify must return (False), not
    block the event loop (an agent froze mid-job this way under a test harness)."""
    path = str(tmp_path / "full.sock")
    with socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM) as server:
        server.bind(path)
        n = Notifier({"NOTIFY_SOCKET": path})
        sent = [n.watchdog() for _ in range(5000)]  # far more than any queue holds
        assert sent[0] and not sent[-1]
        n.close()
