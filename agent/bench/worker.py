"""Run a benchmark in a worker process, so a crashing runtime cannot take the caller down.

A segfault inside a runtime's native code (a bad delegate, a corrupt model that
passes verification) would otherwise kill the agent daemon or the whole CLI run.
The worker is started with "spawn" (a fresh interpreter: no inherited runtime
threads or locks), reports progress and its result over a pipe, and is killed if
it outlives its deadline.
"""

from __future__ import annotations

import logging
import multiprocessing
import signal
import threading
import time
import traceback
from typing import TYPE_CHECKING, Any, Callable, Optional

from agent.common import errors

if TYPE_CHECKING:  # the daemon imports this module; numpy and the runtimes load only in workers
    from agent.bench.results import BenchResult
    from agent.bench.runner import Progress
    from agent.bench.settings import BenchSettings

logger = logging.getLogger(__name__)

#: seconds a worker gets beyond its own time caps: loading a big model on a Pi is slow
LOAD_GRACE_S = 300.0

WorkerTarget = Callable[[Any, Callable[..., None]], Any]


def _child_main(conn: Any, target: WorkerTarget, payload: Any) -> None:
    def send_progress(*args: Any) -> None:
        conn.send(("progress", args))

    try:
        value = target(payload, send_progress)
    except errors.FleetbenchError as err:
        conn.send(("error", type(err).__name__, str(err), ""))
    except BaseException as err:  # isolate everything: the parent decides what to say
        conn.send(("error", "BenchmarkError", f"{type(err).__name__}: {err}", traceback.format_exc()))
    else:
        conn.send(("result", value))
    finally:
        conn.close()


def _signal_name(code: int) -> str:
    try:
        return signal.Signals(code).name
    except ValueError:
        return f"signal {code}"


def call_in_worker(
    target: WorkerTarget,
    payload: Any,
    timeout_s: float,
    what: str,
    on_progress: Optional[Callable[..., None]] = None,
    cancel: Optional[threading.Event] = None,
) -> Any:
    """Run ``target(payload, send_progress)`` in a fresh process and return its value.

    ``target`` must be a module-level function; ``what`` names the work in errors.
    Raises WorkerCrashedError if the process dies, WorkerTimeoutError after
    ``timeout_s``, WorkerCancelledError soon after ``cancel`` is set (the worker is
    killed: the daemon is stopping), or the FleetbenchError the target raised.
    """
    ctx = multiprocessing.get_context("spawn")
    parent_conn, child_conn = ctx.Pipe(duplex=False)
    proc = ctx.Process(target=_child_main, args=(child_conn, target, payload), daemon=True)
    proc.start()
    child_conn.close()
    deadline = time.monotonic() + timeout_s
    try:
        while True:
            if cancel is not None and cancel.is_set():
                raise errors.WorkerCancelledError(f"{what} was cancelled; the worker was stopped")
            remaining = deadline - time.monotonic()
            if remaining <= 0:
                raise errors.WorkerTimeoutError(
                    f"{what} did not finish within {timeout_s:.0f} s; the worker was killed"
                )
            try:
                ready = parent_conn.poll(min(remaining, 0.5))
                msg = parent_conn.recv() if ready else None
            except (EOFError, OSError):
                msg = ("eof",)
            if msg is None:
                continue
            if msg[0] == "progress":
                if on_progress:
                    on_progress(*msg[1])
                continue
            if msg[0] == "result":
                return msg[1]
            if msg[0] == "error":
                _, kind, text, tb = msg
                if tb:
                    logger.debug("worker traceback for %s:\n%s", what, tb)
                cls = getattr(errors, kind, errors.BenchmarkError)
                if not (isinstance(cls, type) and issubclass(cls, errors.FleetbenchError)):
                    cls = errors.BenchmarkError
                raise cls(text)
            # EOF without a message: the process died.
            proc.join(5)
            code = proc.exitcode
            if code is not None and code < 0:
                how = f"was killed by {_signal_name(-code)}"
            else:
                how = f"exited with code {code}"
            raise errors.WorkerCrashedError(
                f"the worker process running {what} {how}; the runtime likely crashed on it"
            )
    finally:
        if proc.is_alive():
            proc.kill()
        proc.join(5)
        parent_conn.close()


def _bench_target(payload: Any, send_progress: Callable[..., None]) -> Any:
    from agent.bench.runner import run_benchmark

    path, settings = payload
    return run_benchmark(path, settings, progress=send_progress).to_dict()


def run_isolated(path: str, settings: BenchSettings, progress: Optional[Progress] = None) -> BenchResult:
    """``run_benchmark`` in a worker process; same result, same errors, crash-proof."""
    from agent.bench.results import BenchResult

    settings.validate()
    timeout = LOAD_GRACE_S + 2 * settings.max_time_s + (120.0 if settings.profile else 0.0)
    data = call_in_worker(_bench_target, (path, settings), timeout, repr(path), progress)
    return BenchResult.from_dict(data)
