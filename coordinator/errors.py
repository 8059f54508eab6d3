"""The coordinator's exceptions.  They derive from the agent's FleetbenchError so the one
``fleetbench`` command line reports them the same way: one line, non-zero exit."""

from __future__ import annotations

from agent.common.errors import FleetbenchError


class RankingError(FleetbenchError):
    """Base for the ranking core's errors about its inputs."""

    exit_code = 2


class TableError(RankingError):
    """A latency or accuracy table cannot be read or is inconsistent."""


class ArchError(RankingError):
    """An architecture string is malformed or not of the search space."""


class UnknownNameError(RankingError):
    """A device, column, search space or method that does not exist."""


class NotEnoughDataError(RankingError):
    """Too few measurements to do what was asked."""


class ModelFileError(RankingError):
    """A saved predictor or optimizer is missing, damaged, of another format, version or space."""


class ExtraMissingError(FleetbenchError):
    """An optional dependency (scipy, matplotlib) is not installed."""


class CoordinatorError(FleetbenchError):
    """Base for the coordinator service's errors (store, broker, configuration)."""

    exit_code = 2
