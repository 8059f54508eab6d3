"""Jobs an operator's command sends to devices through the running coordinator, and their answers.

``queue`` puts one job in the database for each device (the running coordinator seals it for
that device and sends it: ``coordinator.commands``); ``follow`` reads what the devices answer,
as the coordinator stores it, until every device has ended the job or the time is up.
``fleetbench job`` and ``fleetbench hdap`` both go this way.
"""

from __future__ import annotations

import time
import uuid
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Any, Optional

from coordinator.store.records import JobReport, OutgoingJob

#: the acks that end a job on a device
ENDINGS = ("done", "failed", "rejected", "duplicate")


def new_job_id(prefix: str = "op") -> str:
    return f"{prefix}-{time.strftime('%Y%m%d-%H%M%S')}-{uuid.uuid4().hex[:6]}"


def queue(store: Any, spec: Any, targets: Sequence[str], now: Optional[float] = None) -> None:
    """Queue the job ``spec`` (a ``JobSpec``, unsealed) for each of ``targets``."""
    import msgspec

    raw = msgspec.json.encode(spec).decode()
    at = time.time() if now is None else now
    store.queue_jobs([OutgoingJob(spec.job_id, d, raw, "queued", at) for d in targets])


@dataclass
class Answer:
    """How a job ended on one device: its last state, its results, why it failed."""

    state: str = "waiting"  # an ending of ENDINGS, "not sent", or "waiting" (no end in time)
    results: list[dict[str, Any]] = field(default_factory=list)
    detail: str = ""
    failed_items: int = 0


def follow(
    store: Any,
    job_id: str,
    targets: Sequence[str],
    timeout_s: float,
    on_report: Optional[Callable[[JobReport], None]] = None,
    on_unsent: Optional[Callable[[str, str], None]] = None,
    poll_s: float = 0.5,
) -> dict[str, Answer]:
    """Every device's answer to ``job_id``; ``on_report`` sees each report as it arrives."""
    deadline = time.monotonic() + timeout_s
    after = 0.0
    answers = {d: Answer() for d in targets}
    ended: set[str] = set()
    while len(ended) < len(targets):
        for row in store.outgoing_jobs(job_id):
            if row.state == "failed" and row.device_id not in ended and row.device_id in answers:
                ended.add(row.device_id)
                answers[row.device_id].state, answers[row.device_id].detail = "not sent", row.detail or ""
                if on_unsent is not None:
                    on_unsent(row.device_id, row.detail or "")
        for report in store.job_reports([job_id], after):
            after = max(after, report.ts)
            answer = answers.get(report.device_id)
            if answer is None:
                continue
            if on_report is not None:
                on_report(report)
            if report.kind == "result":
                answer.results.append(report.data)
                continue
            state = report.data.get("state")
            if state == "model_failed":
                answer.failed_items += 1
            if state in ENDINGS and report.device_id not in ended:
                ended.add(report.device_id)
                answer.state = str(state)
                answer.detail = str(report.data.get("error") or report.data.get("reason") or "")
        if len(ended) >= len(targets) or time.monotonic() > deadline:
            break
        time.sleep(poll_s)  # polling the database the coordinator writes
    return answers
