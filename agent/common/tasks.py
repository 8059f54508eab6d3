"""Supervised asyncio tasks, for every fleetbench daemon.

Background tasks that stop the daemon when one dies, and mark it failed so it exits
non-zero (a half-working daemon is worse than a restart by systemd, whose
``Restart=on-failure`` needs the non-zero exit); and sleeps that end as soon as the
daemon is stopping.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from typing import Any, Optional

logger = logging.getLogger(__name__)


class Supervised:
    """Mixin: set ``_stop`` (an asyncio.Event, made on the loop) before spawning; define ``stop``."""

    name = "daemon"
    _stop: Optional[asyncio.Event] = None

    def __init__(self) -> None:
        self._tasks: list[asyncio.Task] = []
        #: why the daemon failed (a task died, a thread it needs is gone); None while it has not
        self.failure: Optional[str] = None

    def stop(self) -> None:  # pragma: no cover - every daemon has its own
        raise NotImplementedError

    def _spawn(self, coro: Any) -> None:
        task = asyncio.ensure_future(coro)
        task.add_done_callback(self._task_done)
        self._tasks.append(task)

    def _task_done(self, task: asyncio.Task) -> None:
        with contextlib.suppress(ValueError):  # short-lived tasks must not pile up in a long-running daemon
            self._tasks.remove(task)
        if not task.cancelled() and task.exception() is not None:
            # A dead task would leave a half-working daemon: stop, and let systemd restart it.
            logger.error("%s task failed; stopping", self.name, exc_info=task.exception())
            self.fail(f"a background task failed: {task.exception()!r}")

    def fail(self, why: str) -> None:
        """Stop, and exit non-zero: the daemon cannot go on as it should."""
        if self.failure is None:
            self.failure = why
        self.stop()

    async def _cancel_tasks(self) -> None:
        for task in self._tasks:
            task.cancel()
        await asyncio.gather(*self._tasks, return_exceptions=True)

    async def _sleep(self, seconds: float, wake: Optional[asyncio.Event] = None) -> bool:
        """Sleep ``seconds``, or until ``wake`` is set (then cleared); True if stopping."""
        assert self._stop is not None
        waits = [asyncio.ensure_future(self._stop.wait())]
        if wake is not None:
            waits.append(asyncio.ensure_future(wake.wait()))
        _, pending = await asyncio.wait(waits, timeout=seconds, return_when=asyncio.FIRST_COMPLETED)
        for w in pending:
            w.cancel()
        if wake is not None:
            wake.clear()
        return self._stop.is_set()
