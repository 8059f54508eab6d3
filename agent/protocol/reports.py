"""What devices report: their status (birth and Will), health, results, and answers to jobs.

The records a device already keeps are the wire form: a health sample is the agent's
``HealthSample``, a result carries the ``BenchResult`` that ``fleetbench bench --format
json`` prints (docs/results.md), capabilities are the agent's ``Capabilities``.  Only
what exists nowhere else is defined here.

Reports ignore fields they do not know: a device one release newer may add optional
fields, and an older coordinator must still store what it understands.
"""

from __future__ import annotations

from typing import Annotated, Literal, Optional, Union

import msgspec
from msgspec import Meta

from agent.bench.results import BenchResult
from agent.collectors.degradation import DegradationState
from agent.collectors.health import HealthSample
from agent.collectors.identity import Capabilities
from agent.protocol.jobs import ArchItem, Format
from agent.protocol.types import (
    Count,
    ItemName,
    JobId,
    MessageId,
    Ms,
    NonNegative,
    Positive,
    Seed,
    Short,
    Text,
)

# -- status: the retained birth and Last Will ---------------------------------------------


class UsbIds(msgspec.Struct, frozen=True, omit_defaults=True):
    usb: Optional[Short] = None
    serial_number: Optional[Short] = None
    manufacturer: Optional[Short] = None
    product: Optional[Short] = None


class BridgeHost(msgspec.Struct, frozen=True):
    """Where a microcontroller hangs: the bridge's host and serial port."""

    host: Short
    port: Short
    usb: Optional[UsbIds] = None


class BoardInfo(msgspec.Struct, frozen=True):
    """A microcontroller's HELLO (firmware_bridge/PROTOCOL.md), as its bridge reports it."""

    board: Short
    mcu: Short
    uid: Short
    clock_hz: Count
    arena_bytes: Count
    firmware: Short
    runtime: Short
    models: tuple[Short, ...]
    reset_cause: Short
    protocol: Count
    bridge: BridgeHost


class Simulation(msgspec.Struct, frozen=True):
    """A simulated device (the demo's): where its numbers come from."""

    source: Text
    drift: NonNegative = 1.0


class StatusData(msgspec.Struct, frozen=True, kw_only=True, omit_defaults=True):
    state: Literal["online", "offline"]
    #: the newest message version the device reads: the coordinator writes to it in that one
    protocol: Positive
    platform: Short = ""
    sku: Short = ""
    #: the fleetbench release the device runs
    version: Short = ""
    #: what the device can run: an agent's capabilities, a board's HELLO, or a simulation
    capabilities: Optional[Capabilities] = None
    board: Optional[BoardInfo] = None
    simulation: Optional[Simulation] = None
    #: the health collectors the device has (the sensors it reports)
    collectors: tuple[Short, ...] = ()
    #: the fingerprint of the coordinator key the device checks commands against (fleetbench
    #: 0.3+); none: it checks no seal (an older release, or a lab's jobs.allow_unsigned), and
    #: the coordinator writes its commands without one
    key: Optional[Annotated[str, Meta(pattern=r"^[0-9a-f]{16}$")]] = None


# -- health ----------------------------------------------------------------------------


class OutboxState(msgspec.Struct, frozen=True):
    pending: Count
    dropped_total: Count = 0


class CurrentJob(msgspec.Struct, frozen=True):
    job_id: JobId
    model: ItemName
    index: Positive
    total: Positive


class HealthData(msgspec.Struct, frozen=True, omit_defaults=True):
    health: HealthSample = HealthSample()
    degradation: Optional[DegradationState] = None
    outbox: Optional[OutboxState] = None
    uptime_s: Optional[NonNegative] = None
    #: the job being measured now
    job: Optional[CurrentJob] = None
    collectors: tuple[Short, ...] = ()
    #: a board's serial line: frames, CRC errors, retries, stalls, resets, reopens, connected
    link: Optional[dict[Short, Union[int, bool]]] = None


# -- results -----------------------------------------------------------------------------


class Conditions(msgspec.Struct, frozen=True):
    """What the device waited for before measuring, and its state when it began."""

    waited_s: NonNegative = 0.0
    waited_for: tuple[Text, ...] = ()
    max_temperature_c: Optional[float] = None
    battery_percent: Optional[float] = None
    on_battery: Optional[bool] = None
    #: a microcontroller's die temperature, supply, clock and boot
    die_temp_c: Optional[float] = None
    supply_v: Optional[float] = None
    clock_hz: Optional[Count] = None
    boot_id: Optional[Count] = None


class LutRow(msgspec.Struct, frozen=True, kw_only=True):
    """One layer of a lookup table (``agent.materialize.lut.LayerKey``) and its median time."""

    op: Short
    cin: Count
    cout: Count
    size: Count
    kernel: Count = 0
    stride: Count = 1
    pad: Count = 0
    arity: Count = 1
    name: Short = ""
    p50_ms: Ms
    uses: Count = 0


class LutTable(msgspec.Struct, frozen=True, kw_only=True):
    """A layer lookup table built on the device, with the whole models it was checked against."""

    space: Short
    sample: Count
    seed: Seed
    format: Format
    #: a width table's grid, in percent of each prunable layer's full width
    grid: Optional[tuple[Count, ...]] = None
    #: how well the sums of layers rank the whole models (None with fewer than 3)
    srcc: Optional[Annotated[float, Meta(ge=-1, le=1)]] = None
    archs: tuple[Annotated[str, Meta(max_length=400)], ...] = ()
    measured_ms: tuple[Ms, ...] = ()
    predicted_ms: tuple[Ms, ...] = ()
    rows: tuple[LutRow, ...] = ()


class ResultData(msgspec.Struct, frozen=True, kw_only=True, omit_defaults=True):
    """One item of a job, measured: a benchmark result, or a lookup table."""

    job_id: JobId
    #: the item's name in the job: a model path, an architecture's key, a lookup table's key
    model: ItemName
    result: Optional[BenchResult] = None
    lut: Optional[LutTable] = None
    #: the architecture the model was built from, when the item was one
    architecture: Optional[ArchItem] = None
    conditions: Conditions
    #: samples left out to keep the message under the hubs' 128 KiB (the statistics remain)
    samples_omitted: Count = 0
    #: the item was one of the job's probe architectures (the device's features)
    probe: bool = False

    def __post_init__(self) -> None:
        if (self.result is None) == (self.lut is None):
            raise ValueError("a result carries exactly one of result and lut")
        if self.result is not None:
            stats = self.result.stats
            if min(stats.n, stats.min_ms, stats.p50_ms, stats.max_ms) < 0:
                raise ValueError("result.stats must not be negative")
            if self.result.samples_ns and min(self.result.samples_ns) < 0:
                raise ValueError("result.samples_ns must not be negative")

    @property
    def p50_ms(self) -> Optional[float]:
        return self.result.stats.p50_ms if self.result is not None else None


# -- answers to jobs ---------------------------------------------------------------------

JobState = Literal[
    "accepted",  # on the device's disk; it will run
    "rejected",  # malformed, unsafe or beyond the device's limits: never runs (error says why)
    "duplicate",  # a job id seen before: it runs once
    "waiting",  # too hot, or low on battery (reason)
    "running",  # measuring item ``index`` of ``total``
    "progress",  # still measuring (phase, runs, elapsed_s)
    "model_failed",  # one item failed (error); the others go on
    "interrupted",  # the device is stopping; the job resumes when it starts again
    "done",  # finished: ``measured`` items, ``failed`` the ones that failed
    "failed",  # finished with nothing measured (error)
]
#: the states that end a job
JOB_ENDINGS = ("rejected", "done", "failed")


class JobAck(msgspec.Struct, frozen=True, omit_defaults=True):
    #: None only when the job's id could not be read at all
    job_id: Optional[JobId]
    state: JobState
    #: the message the answer is about (a refused job's envelope id)
    message_id: Optional[MessageId] = None
    error: Optional[Text] = None
    message: Optional[Text] = None
    reason: Optional[Text] = None
    model: Optional[ItemName] = None
    index: Optional[Positive] = None
    total: Optional[Positive] = None
    phase: Optional[Short] = None
    runs: Optional[Count] = None
    elapsed_s: Optional[NonNegative] = None
    measured: Optional[Count] = None
    #: "done" and "failed": the items that failed (an empty list when none did)
    failed: Optional[tuple[ItemName, ...]] = None
    models: Optional[Count] = None
    architectures: Optional[Count] = None
