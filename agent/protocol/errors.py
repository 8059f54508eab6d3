"""The protocol's one error: a message that cannot be built or read."""

from __future__ import annotations

from agent.common.errors import FleetbenchError


class ProtocolError(FleetbenchError):
    """A message cannot be built or read; the text says which field and why."""
