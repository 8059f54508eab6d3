"""A real CPU quota for a test: a cgroup v1 ``cpu`` group on this machine, removed afterwards."""

from __future__ import annotations

import contextlib
import os
import uuid
from collections.abc import Iterator

import pytest

CPU = "/sys/fs/cgroup/cpu"


@contextlib.contextmanager
def quota_group(period_us: int, quota_us: int) -> Iterator[str]:
    """A group allowed ``quota_us`` of CPU time per ``period_us``; its path.  Processes still in it
    at the end go back to the root group before it is removed."""
    if not os.access(CPU, os.W_OK):
        pytest.skip(f"needs a writable cgroup v1 cpu controller at {CPU} (root)")
    path = os.path.join(CPU, f"fleetbench-test-{uuid.uuid4().hex[:8]}")
    os.mkdir(path)
    try:
        for name, value in (("cpu.cfs_period_us", period_us), ("cpu.cfs_quota_us", quota_us)):
            with open(os.path.join(path, name), "w") as fh:
                fh.write(str(value))
        yield path
    finally:
        with open(os.path.join(path, "cgroup.procs")) as fh:
            left = fh.read().split()
        for pid in left:
            with contextlib.suppress(OSError), open(os.path.join(CPU, "cgroup.procs"), "w") as fh:
                fh.write(pid)  # exited meanwhile
        os.rmdir(path)


def join(path: str, pid: int) -> None:
    """Move process ``pid`` (all its threads) and its children into the group at ``path``."""
    import psutil

    for p in [psutil.Process(pid), *psutil.Process(pid).children(recursive=True)]:
        with contextlib.suppress(OSError), open(os.path.join(path, "cgroup.procs"), "w") as fh:
            fh.write(str(p.pid))  # a child that exited meanwhile
