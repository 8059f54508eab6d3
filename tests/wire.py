"""Real messages for tests, built with the protocol's own classes, and reading what arrived."""

from __future__ import annotations

import json
from types import SimpleNamespace
from typing import Any, Optional

import msgspec
from keys import sealed

from agent.bench.results import BenchResult
from agent.protocol import messages as m
from agent.protocol.jobs import ArchItem, JobSettings, JobSpec, LutItem
from agent.protocol.reports import Conditions, JobAck, ResultData
from coordinator.simulated import simulated_result


def pi4_health() -> Any:
    """A Raspberry Pi 4's health data as its agent sends it: the collectors reading the sysfs
    tree captured from a real board (tests/boards.py), and a degradation state (661 bytes as a
    message)."""
    import shutil
    import tempfile

    from boards import RPI4
    from sysfs_tree import make_tree

    from agent.collectors.degradation import DegradationState
    from agent.collectors.health import HealthMonitor
    from agent.protocol.reports import HealthData

    root = tempfile.mkdtemp(prefix="fleetbench-board-")
    try:
        sample = HealthMonitor(make_tree(root, RPI4)).sample()
    finally:
        shutil.rmtree(root, ignore_errors=True)
    degradation = DegradationState(index=1.07, baseline_ms=0.052, last_ms=0.0556, baseline_at=1.7e9,
                                   last_at=1.7e9 + 86400, measurements=42)  # fmt: skip
    return HealthData(health=sample, degradation=degradation, collectors=("thermal",))


def bench_result(name: str = "m.onnx", p50_ms: float = 1.0, samples: int = 1) -> BenchResult:
    """A result record of ``samples`` runs at ``p50_ms`` each (a simulated device's kind)."""
    return simulated_result(name, p50_ms, samples)


def result_data(job_id: str = "j", model: str = "m.onnx", p50_ms: float = 1.0,
                arch: Optional[ArchItem] = None, samples: int = 1) -> ResultData:  # fmt: skip
    return ResultData(
        job_id=job_id,
        model=model,
        result=bench_result(model, p50_ms, samples),
        architecture=arch,
        conditions=Conditions(),
    )


def result(device: str, job_id: str = "j", model: str = "m.onnx", p50_ms: float = 1.0,
           msg_id: Optional[str] = None, arch: Optional[ArchItem] = None) -> m.ResultMessage:  # fmt: skip
    return m.make(m.ResultMessage, device, result_data(job_id, model, p50_ms, arch), msg_id)


def job(device: str, job_id: str, models: tuple[str, ...] = (), settings: Optional[dict[str, Any]] = None,
        architectures: tuple[ArchItem, ...] = (), lut: Optional[LutItem] = None,
        sign: bool = True) -> m.JobMessage:  # fmt: skip
    """A job for ``device``, sealed and signed by the tests' fleet key unless ``sign`` is False."""
    spec = JobSpec(job_id=job_id, models=models, architectures=architectures, lut=lut,
                   settings=JobSettings(**(settings or {})))  # fmt: skip
    return m.make(m.JobMessage, device, sealed(spec, device) if sign else spec)


def signed_job(device: str, data: dict[str, Any], **seal: Any) -> bytes:
    """The wire bytes of the job ``data`` (a dict, as a person writes it), sealed for ``device``
    and signed by the tests' fleet key, as the coordinator sends it."""
    spec = msgspec.convert(data, JobSpec)
    return m.encode(m.make(m.JobMessage, device, sealed(spec, device, **seal)))


def job_ack(
    device: str, job_id: Optional[str], state: str, msg_id: Optional[str] = None, **fields: Any
) -> m.JobAckMessage:
    return m.make(m.JobAckMessage, device, JobAck(job_id=job_id, state=state, **fields), msg_id)  # type: ignore[arg-type]


def command(device: str, data: Any) -> bytes:
    """A job as a coordinator sends it: sealed and signed when ``data`` is a valid job, and as it
    is (to be refused for what is wrong with it) when it is not."""
    try:
        return signed_job(device, data)
    except (msgspec.ValidationError, ValueError, TypeError):
        return raw_job(device, data)


def raw_job(device: str, data: Any, v: int = 2) -> bytes:
    """A job message with any ``data`` at all (for refusals): the envelope as a device expects it."""
    if v == 1:
        env = {"v": 1, "id": "raw-1", "kind": "jobs", "device_id": "coordinator", "ts": 1.0, "data": data}
    else:
        env = {"kind": "job", "v": 2, "id": "raw-1", "device_id": device, "ts": 1.0, "data": data}
    return json.dumps(env).encode()


def received(payloads: list, kind: str) -> list[SimpleNamespace]:
    """What arrived on ``kind`` topics, as the JSON a subscriber sees (``.data`` a dict, ``.kind``,
    ``.id``); each one is also decoded by the protocol, so nothing off-contract passes."""
    out = []
    for topic, payload, _ in payloads:
        if topic.endswith("/" + kind):
            m.decode(payload, kind)
            out.append(SimpleNamespace(**json.loads(payload)))
    return out


_VALIDATOR: Any = None


def schema_errors(payload: bytes) -> list[str]:
    """What the shipped JSON Schema (``agent/protocol/schema.json``) says is wrong with a message,
    checked by the ``jsonschema`` library, as another implementation would."""
    global _VALIDATOR
    if _VALIDATOR is None:
        import jsonschema

        from agent.protocol.schema import load

        _VALIDATOR = jsonschema.Draft202012Validator(load())
    return [
        f"{'/'.join(map(str, e.absolute_path))}: {e.message}"
        for e in _VALIDATOR.iter_errors(json.loads(payload))
    ]


def examples_of(payloads: list) -> dict[str, Any]:
    """One real message of each kind seen (the smallest: the docs show it), as JSON."""
    found: dict[str, tuple[int, Any]] = {}
    for _topic, payload, _ in payloads:
        obj = json.loads(payload)
        kind = obj.get("kind")
        if kind and (kind not in found or len(payload) < found[kind][0]):
            found[kind] = (len(payload), obj)
    return {k: v for k, (_, v) in sorted(found.items())}
