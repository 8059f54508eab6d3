"""A real, throwaway PostgreSQL server for tests: its own cluster under a temporary directory, a
free port on 127.0.0.1, a fresh database per test, stopped at the end.

``initdb`` refuses to run as root, so under root the cluster belongs to an unprivileged user (the
``postgres`` user Debian's package creates, else ``nobody``).  Needs the ``postgresql`` package
(``initdb``, ``pg_ctl``) and the ``postgres`` extra (psycopg 3); without them the tests skip, which
under CI=true is a failure (.ci/run installs both).
"""

from __future__ import annotations

import contextlib
import glob
import os
import pwd
import shutil
import subprocess
import tempfile
import uuid
from collections.abc import Iterator
from typing import Any, Optional

import pytest
from broker import free_port

USER = "fleetbench"


def _tool(name: str) -> Optional[str]:
    found = shutil.which(name) or sorted(glob.glob(f"/usr/lib/postgresql/*/bin/{name}"))
    return found if isinstance(found, str) else (found[-1] if found else None)


class Postgres:
    def __init__(self, workdir: str, durable: bool = False) -> None:
        #: fsync on, as a production server runs (benchmarks); tests run without it
        self.durable = durable
        self.initdb, self.pg_ctl = _tool("initdb"), _tool("pg_ctl")
        if not (self.initdb and self.pg_ctl):
            pytest.skip("needs PostgreSQL's initdb and pg_ctl (apt install postgresql)")
        pytest.importorskip("psycopg", reason="needs psycopg 3 (pip install 'fleetbench[postgres]')")
        self.dir, self.port = workdir, free_port()
        self.data = os.path.join(workdir, "data")
        self.owner: Optional[pwd.struct_passwd] = None
        if os.geteuid() == 0:
            for name in ("postgres", "nobody"):
                try:
                    self.owner = pwd.getpwnam(name)
                    break
                except KeyError:
                    continue
            os.chown(workdir, self.owner.pw_uid, self.owner.pw_gid)  # type: ignore[union-attr]

    def _run(self, *argv: str) -> None:
        kw: dict[str, Any] = {}
        if self.owner is not None:
            kw = {"user": self.owner.pw_uid, "group": self.owner.pw_gid, "extra_groups": []}
        out = subprocess.run(argv, capture_output=True, text=True, cwd=self.dir, timeout=120, **kw)
        if out.returncode:
            raise RuntimeError(
                f"{os.path.basename(argv[0])} failed: {out.stderr.strip() or out.stdout.strip()}"
            )

    def start(self) -> None:
        self._run(self.initdb, "-D", self.data, "-U", USER, "--auth=trust", "-E", "UTF8", "--no-sync")
        options = f"-p {self.port} -k {self.dir} -c listen_addresses=127.0.0.1 -c max_connections=200" + (
            "" if self.durable else " -c fsync=off"
        )
        self._run(
            self.pg_ctl,
            "-D",
            self.data,
            "-l",
            os.path.join(self.dir, "server.log"),
            "-o",
            options,
            "-w",
            "start",
        )

    def stop(self) -> None:
        self._run(self.pg_ctl, "-D", self.data, "-m", "immediate", "-w", "stop")

    def url(self, database: str = "postgres") -> str:
        return f"postgresql+psycopg://{USER}@127.0.0.1:{self.port}/{database}"

    def new_database(self) -> str:
        """A fresh, empty database; its SQLAlchemy URL."""
        import psycopg

        name = f"t_{uuid.uuid4().hex[:12]}"
        with psycopg.connect(
            f"host=127.0.0.1 port={self.port} user={USER} dbname=postgres", autocommit=True
        ) as c:
            c.execute(f'CREATE DATABASE "{name}"')
        return self.url(name)


@contextlib.contextmanager
def running(durable: bool = False) -> Iterator[Postgres]:
    """A started server in its own temporary directory; stopped and removed afterwards.  Not under
    pytest's temporary directory: that one is private to this user, and the server runs as
    another when the tests run as root.  ``durable``: fsync on, as in production."""
    work = tempfile.mkdtemp(prefix="fleetbench-pg-")
    try:
        server = Postgres(work, durable)
        server.start()
        try:
            yield server
        finally:
            server.stop()
    finally:
        shutil.rmtree(work, ignore_errors=True)
