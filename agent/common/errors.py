"""One exception hierarchy for the agent package.

Every error a person can cause (a wrong path, a bad flag, a missing extra)
is a :class:`FleetbenchError` whose message is one sentence naming the input
and what is wrong with it; ``cli.main`` prints it and exits non-zero, with no
traceback.  Anything else is a bug and keeps its traceback.
"""

from __future__ import annotations


class FleetbenchError(Exception):
    """Base class: the message is meant for the person at the terminal."""

    #: process exit code the CLI uses for this kind of error
    exit_code = 1


class UsageError(FleetbenchError):
    """A flag or argument is malformed (bad ``--shape``, unknown backend...)."""

    exit_code = 2


class ModelError(FleetbenchError):
    """The model file is missing, unreadable or not a model this tool knows."""


class UnsupportedModelError(ModelError):
    """The runtime cannot execute the model (unsupported operator or type)."""


class BackendUnavailableError(FleetbenchError):
    """A runtime (or a delegate such as the Edge TPU) is not installed here."""


class BenchmarkError(FleetbenchError):
    """The model loaded but failed while being run."""


class WorkerCrashedError(BenchmarkError):
    """The isolated worker process died (signal, abort, out of memory)."""


class WorkerTimeoutError(BenchmarkError):
    """The isolated worker process did not finish in time and was killed."""


class WorkerCancelledError(BenchmarkError):
    """The isolated worker was stopped on purpose (the daemon is shutting down)."""
