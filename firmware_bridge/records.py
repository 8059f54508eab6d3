"""A board's run as the project's result record, and the board as a fleet device.

The record is the same ``BenchResult`` a Raspberry Pi's agent sends, so the coordinator,
``fleetbench fleet`` and the ranking code read a microcontroller's numbers like any
other.  What differs is said in the record: the timer is the MCU's own (``impl`` "mcu",
its frequency in ``clock``), the model is a firmware id (``board:ID``, format "mcu"),
and the device snapshot is the board's HELLO and last HEALTH.
"""

from __future__ import annotations

import math
import re
import socket
from typing import Any, Optional

from agent import __version__
from agent.bench.metadata import DeviceSnapshot
from agent.bench.results import BackendInfo, BenchResult, ModelInfo, ProtocolInfo, TimerInfo
from agent.bench.stats import LatencyStats
from agent.collectors.cpu import FreqPolicy
from agent.collectors.health import BoardHealth, HealthSample, Thermal
from agent.common.errors import UsageError
from agent.protocol.messages import VERSION
from agent.protocol.reports import BoardInfo, BridgeHost, Conditions, HealthData, StatusData, UsbIds
from agent.protocol.topics import check_device_id
from firmware_bridge import codec
from firmware_bridge.board import BoardRun

PLATFORM = "mcu"


def device_id_for(hello: codec.Hello) -> str:
    """The fleet's name for a board: its name and factory id, safe for MQTT topics.

    >>> device_id_for(codec.Hello(1, 64_000_000, 0, 1, "E0A1B2C3", "Nano 33 BLE", "nRF52840", "", ""))
    'nano-33-ble-e0a1b2c3'
    """
    name = re.sub(r"[^a-z0-9]+", "-", hello.board.lower()).strip("-")[:40] or "board"
    uid = re.sub(r"[^a-z0-9]+", "", hello.uid.lower())[-20:]
    if not uid:
        raise UsageError(f"the board {hello.board!r} reports no unique id in its HELLO; give --device-id")
    return check_device_id(f"{name}-{uid}")


def sku_of(hello: codec.Hello) -> str:
    """Boards of one model number share this (the coordinator groups budgets and rollouts by it)."""
    return f"{hello.board} ({hello.mcu})"


def birth(hello: codec.Hello, port: str, usb: Optional[dict[str, Any]] = None) -> StatusData:
    """What the retained status says about the board: its HELLO, and where it hangs."""
    board = BoardInfo(
        board=hello.board,
        mcu=hello.mcu,
        uid=hello.uid,
        clock_hz=hello.clock_hz,
        arena_bytes=hello.arena_bytes,
        firmware=hello.firmware,
        runtime=hello.runtime,
        models=tuple(hello.models),
        reset_cause=hello.reset_cause_text,
        protocol=codec.VERSION,
        bridge=BridgeHost(host=socket.gethostname(), port=port, usb=UsbIds(**usb) if usb else None),
    )
    return StatusData(
        state="online",
        protocol=VERSION,
        platform=PLATFORM,
        sku=sku_of(hello),
        version=__version__,
        board=board,
        collectors=("board",),
    )


def health_data(health: Optional[codec.Health], counters: dict[str, Any]) -> HealthData:
    """The health of a board in the agent's shape (thermal.temperatures_c, ...), plus the link."""
    sample = HealthSample()
    if health is not None:
        thermal = Thermal({"mcu_die": health.die_temp_c}) if health.die_temp_c is not None else None
        board = BoardHealth(supply_v=health.supply_v, uptime_s=round(health.uptime_ms / 1000.0, 1),
                            free_bytes=health.free_bytes)  # fmt: skip
        sample = HealthSample(thermal=thermal, board=board)
    return HealthData(health=sample, link=counters, collectors=("board",))


def conditions(run: BoardRun, health: Optional[codec.Health]) -> Conditions:
    """The board's state when a run was made: die temperature, supply, clock, boot."""
    return Conditions(
        die_temp_c=health.die_temp_c if health else None,
        supply_v=health.supply_v if health else None,
        clock_hz=run.clock_hz,
        boot_id=run.hello.boot_id,
    )


def to_result(run: BoardRun, health: Optional[codec.Health] = None) -> BenchResult:
    """The result record of one run; warnings say what a reader must know about it."""
    hello = run.hello
    warnings = []
    if run.missing:
        warnings.append(
            f"{run.missing} of {run.runs} samples were lost to corrupted frames on the serial line"
        )
    if any(c != hello.clock_hz for c in run.clocks_hz):
        clocks = ", ".join(f"{c / 1e6:g}" for c in run.clocks_hz)
        warnings.append(f"the core clock was {clocks} MHz during the run, not the {hello.clock_hz / 1e6:g} "
                        "MHz the board announced")  # fmt: skip
    mhz = run.clock_hz / 1e6
    temps: tuple[tuple[str, float], ...] = ()
    if health is not None and health.die_temp_c is not None:
        temps = (("mcu_die", health.die_temp_c),)
    return BenchResult(
        model=ModelInfo(
            path=f"board:{run.model}", name=run.model, format=PLATFORM, size_bytes=0, sha256="", inputs=()
        ),
        backend=BackendInfo(name=PLATFORM, version=hello.firmware, threads=1, runtime=hello.runtime),
        timer=TimerInfo(
            impl="mcu",
            clock=f"{'cycle counter' if run.timer_hz == run.clock_hz else 'timer'} at {run.timer_hz} Hz",
            resolution_ns=max(1, math.ceil(1e9 / run.timer_hz)),
        ),
        protocol=ProtocolInfo(
            warmup_runs=run.warmup,
            warmup_time_s=0.0,
            runs=run.runs,
            min_time_s=0.0,
            max_time_s=0.0,
            seed=0,
            isolated=True,
            warmup_done=run.warmup,
            measure_time_s=round(sum(run.samples_ns) / 1e9, 6),
            load_ms=0.0,
            first_run_ms=run.samples_ns[0] / 1e6,
        ),
        stats=LatencyStats.from_ns(run.samples_ns),
        device=DeviceSnapshot(
            hostname=socket.gethostname(),
            system="firmware",
            kernel=hello.firmware,
            machine=hello.mcu,
            python="",
            board=hello.board,
            cpu_model=hello.mcu,
            cores_logical=1,
            cores_physical=1,
            freq_policies=(FreqPolicy("0", None, mhz, None, hello.clock_hz / 1e6),),
            temperatures_c=temps,
            rpi_throttled=None,
            battery_percent=None,
            battery_plugged=None,
            load_1m=None,
        ),
        samples_ns=run.samples_ns,
        warnings=tuple(warnings),
    )
