"""What the store hands out: typed, frozen records, one per thing the coordinator keeps.

The loops (``Deployer``, ``Reranker``), the command line and the report read and change
the coordinator's state only through these and the store's methods; none of them knows
a table or a column.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Optional

from agent.protocol.push import PushAck

#: rollout states: new -> canary -> rolling -> done | halted
ACTIVE_ROLLOUT = ("new", "canary", "rolling")
#: deployment states: pending -> sending -> installed | rolled_back | rejected | failed | cancelled
ACTIVE_DEPLOYMENT = ("pending", "sending")
FAILED = ("rolled_back", "rejected", "failed")
TERMINAL = ("installed", *FAILED, "cancelled")


@dataclass(frozen=True)
class Device:
    """A device of the fleet, from its status, health and what it sent."""

    device_id: str
    state: str  # online / offline
    state_at: float
    first_seen: float
    last_seen: float
    platform: Optional[str] = None
    sku: Optional[str] = None
    version: Optional[str] = None
    protocol: Optional[int] = None
    key: Optional[str] = None
    capabilities: Optional[dict[str, Any]] = None
    health: Optional[dict[str, Any]] = None
    health_at: Optional[float] = None
    degradation_index: Optional[float] = None
    results: int = 0
    dead_letters: int = 0

    @property
    def kind(self) -> str:
        """How `fleetbench fleet` marks it: simulated, a microcontroller, or an agent's device."""
        if self.platform == "simulated":
            return "simulated"
        return "mcu" if self.platform == "mcu" else ""


@dataclass(frozen=True)
class OnlineDevice:
    """What the loops look at every tick: cheap to read for a whole fleet."""

    device_id: str
    sku: Optional[str]
    degradation_index: Optional[float]
    #: the message version to write to it (1 for a device whose status said none)
    protocol: int = 1
    #: the fingerprint of the coordinator key it checks commands by; None: it takes them unsealed
    key: Optional[str] = None


@dataclass(frozen=True)
class ResultRow:
    device_id: str
    msg_id: str
    ts: float
    job_id: Optional[str]
    model: Optional[str]
    space: Optional[str]
    arch: Optional[str]
    p50_ms: Optional[float]


@dataclass(frozen=True)
class Rollout:
    rollout_id: str
    name: str
    version: str
    format: str
    size: int
    sha256: str
    blob: str  # the model file the coordinator keeps and sends from
    target_kind: str  # device / sku
    target: str
    state: str
    canary_fraction: float
    max_failure_share: float
    max_latency_ms: Optional[float]
    created_at: float
    updated_at: float
    detail: Optional[str] = None


@dataclass(frozen=True)
class Deployment:
    """One push of a rollout to one device."""

    push_id: str  # {rollout_id}:{device_id}
    rollout_id: str
    device_id: str
    stage: str  # canary / rest
    state: str
    attempts: int
    updated_at: float
    sent_at: Optional[float] = None
    last_ack_ts: Optional[float] = None
    p50_ms: Optional[float] = None
    #: the 95 % confidence interval of the smoke run's median (None from devices before 0.3)
    p50_lo_ms: Optional[float] = None
    p50_hi_ms: Optional[float] = None
    detail: Optional[str] = None


@dataclass(frozen=True)
class RolloutReport:
    rollout: Rollout
    deployments: tuple[Deployment, ...]


@dataclass(frozen=True)
class ReceivedPushAck:
    """A device's answer about a push, as stored: when it was sent, and what it says."""

    device_id: str
    ts: float
    ack: PushAck


@dataclass(frozen=True)
class RerankState:
    """Where a device's re-ranking round is: idle -> probing -> sampling -> decided | failed | no_budget."""

    device_id: str
    state: str
    updated_at: float
    rounds: int = 0
    job_id: Optional[str] = None
    space: Optional[str] = None
    started_at: Optional[float] = None
    degradation_index: Optional[float] = None
    detail: Optional[str] = None


@dataclass(frozen=True)
class JobEnding:
    """How a job ended on its device: done, failed or rejected (with the device's reason)."""

    state: str
    error: Optional[str] = None


@dataclass(frozen=True)
class OutgoingJob:
    """A job an operator asked for (``fleetbench job``), to be signed and sent by the coordinator."""

    job_id: str
    device_id: str
    spec: str  # JSON of the JobSpec, unsealed
    state: str  # queued -> sent | failed
    created_at: float
    sent_at: Optional[float] = None
    detail: Optional[str] = None


@dataclass(frozen=True)
class JobReport:
    """What a device said about a job: an ack (``state`` and its fields) or a result."""

    device_id: str
    ts: float
    kind: str  # job_ack / result
    data: dict[str, Any]


@dataclass(frozen=True)
class DecisionRecord:
    """A re-ranking decision with everything it rested on, and what became of its push."""

    id: int
    device_id: str
    at: float
    space: str
    arch: Optional[str]
    budget_ms: float
    predicted_ms: Optional[float]
    accuracy: Optional[float]
    rollout_id: Optional[str]
    inputs: dict[str, Any] = field(default_factory=dict)
    deployment: Optional[Deployment] = None


@dataclass(frozen=True)
class DeadLetter:
    """A message that could not be read or stored: where it came from, why, and its start."""

    id: int
    at: float
    topic: str
    device_id: Optional[str]
    kind: Optional[str]
    reason: str
    size: int
    payload: bytes


@dataclass(frozen=True)
class Lease:
    """Who runs a loop when several coordinators share one database (``Store.acquire``)."""

    name: str
    holder: str
    token: int  # grows at every change of holder: a stale token means "no longer yours"
    expires_at: float
    acquired_at: float
