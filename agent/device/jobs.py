"""The device's side of the jobs protocol, shared by the agent and the firmware bridge.

- A job message that does not decode, or that the device cannot run (its own checks: model
  files, search spaces, limits), is refused on ``acks`` with the reason and the job id
  when one can be read; it never runs.
- A job id seen before (a QoS 1 redelivery, or a reused id) is answered ``duplicate`` and
  runs once.
- An accepted job is on disk (``STATE_DIR/jobs/``) before it is acknowledged, and leaves
  only when finished: a job interrupted by a reboot, ``kill -9`` or a graceful stop
  resumes with the items it had not finished.
- Acks that end a stage, and results, carry ids made from the job (and item): a job
  resumed after ``kill -9`` that says "done" twice, or measures an item again, says it
  with the same id, and the receiver drops the second.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
from concurrent.futures import Future
from typing import Any, Callable, Optional

import msgspec

from agent.common.errors import FleetbenchError
from agent.common.files import child_path, write_bytes_atomic
from agent.device.publisher import Publisher
from agent.protocol.errors import ProtocolError
from agent.protocol.jobs import JobSpec
from agent.protocol.messages import JobAckMessage, MessageTooLarge, ResultMessage
from agent.protocol.reports import JobAck, ResultData
from agent.protocol.types import clip

logger = logging.getLogger(__name__)


#: the fields of an ack that are sentences for people (cut to fit)
TEXT_FIELDS = ("error", "message", "reason")


class JobError(FleetbenchError):
    """A job is malformed, unsafe or beyond this device; its message goes back on the acks topic."""


class Job(msgspec.Struct, frozen=True):
    """An accepted job: what was asked, and the items already measured (and queued to send)."""

    spec: JobSpec
    done: tuple[str, ...] = ()
    #: device time spent measuring it so far (jobs.max_job_s bounds it)
    spent_s: float = 0.0

    @property
    def job_id(self) -> str:
        return self.spec.job_id

    @property
    def items(self) -> tuple[str, ...]:
        return self.spec.items

    @property
    def remaining(self) -> tuple[str, ...]:
        return tuple(i for i in self.items if i not in self.done)

    def finished(self, item: str, took_s: float = 0.0) -> Job:
        return Job(self.spec, (*self.done, item), self.spent_s + took_s)


class JobStore:
    """Accepted jobs on disk, one JSON file each, oldest first; and the ids of the last
    ``FINISHED_KEPT`` finished ones, so a redelivered or reused job id runs only once."""

    FINISHED_KEPT = 1000

    def __init__(self, directory: str) -> None:
        self.directory = directory
        os.makedirs(directory, exist_ok=True)
        self._finished_path = os.path.join(directory, ".finished")
        try:
            with open(self._finished_path, "rb") as fh:
                self._finished = list(msgspec.json.decode(fh.read(), type=list[str]))
        except (OSError, msgspec.DecodeError):
            self._finished = []

    def seen(self, job_id: str) -> bool:
        """Accepted before: waiting, running or finished."""
        return self.has(job_id) or job_id in self._finished

    def finish(self, job_id: str) -> None:
        """The job is over: forget its file, remember its id."""
        self.remove(job_id)
        self._finished = [*self._finished, job_id][-self.FINISHED_KEPT :]
        write_bytes_atomic(
            self._finished_path, msgspec.json.encode(self._finished), what="finished-jobs file"
        )

    def _path(self, job_id: str) -> str:
        return child_path(self.directory, f"{job_id}.json", "job id")

    def has(self, job_id: str) -> bool:
        return os.path.exists(self._path(job_id))

    def save(self, job: Job) -> None:
        write_bytes_atomic(self._path(job.job_id), msgspec.json.encode(job) + b"\n", what="job file")

    def remove(self, job_id: str) -> None:
        with contextlib.suppress(FileNotFoundError):
            os.unlink(self._path(job_id))

    def pending(self) -> list[Job]:
        jobs = []
        names = [n for n in os.listdir(self.directory) if n.endswith(".json") and not n.startswith(".")]
        for name in sorted(names, key=lambda n: os.path.getmtime(os.path.join(self.directory, n))):
            path = os.path.join(self.directory, name)
            try:
                with open(path, "rb") as fh:
                    jobs.append(_read_job(fh.read()))
            except (OSError, msgspec.DecodeError) as err:
                logger.warning("dropping unreadable job file %s: %s", path, err)
                os.replace(path, path + ".broken")
        return jobs


def _read_job(raw: bytes) -> Job:
    try:
        return msgspec.json.decode(raw, type=Job)
    except msgspec.DecodeError:
        # fleetbench 0.1 kept the job's fields and "done" side by side: a job accepted
        # before an upgrade still resumes after it.
        old = msgspec.json.decode(raw)
        if not isinstance(old, dict) or "job_id" not in old:
            raise
        done = old.pop("done", ())
        old["settings"] = {k: v for k, v in (old.get("settings") or {}).items() if v is not None}
        return Job(msgspec.convert({k: v for k, v in old.items() if v is not None}, JobSpec), tuple(done))


def blocked_by(
    max_temperature_c: Optional[float],
    battery_percent: Optional[float],
    on_battery: Optional[bool],
    max_allowed_c: float,
    min_battery_percent: float,
) -> Optional[str]:
    """Why a job must wait now (too hot, battery low), or None."""
    if max_temperature_c is not None and max_temperature_c > max_allowed_c:
        return f"too hot ({max_temperature_c:.1f} C > jobs.max_temperature_c {max_allowed_c:g} C)"
    if on_battery and battery_percent is not None and battery_percent < min_battery_percent:
        return (
            f"battery low ({battery_percent:.0f} % on battery < jobs.min_battery_percent "
            f"{min_battery_percent:g} %)"
        )
    return None


class JobInbox:
    """Receives job messages for a device, refuses or accepts them, and sends what jobs say."""

    #: the ack states whose message id is made from the job
    STAGES = ("accepted", "done", "failed")

    def __init__(self, store: JobStore, publisher: Publisher) -> None:
        self.store, self.publisher = store, publisher

    def ack(self, job_id: Optional[str], state: str, **fields: Any) -> Optional[Future[str]]:
        """Say ``state`` about a job.  Never raises: an answer that cannot be sent is logged."""
        msg_id = f"ack:{job_id}:{state}" if job_id and state in self.STAGES else None
        fields = {k: clip(v) if isinstance(v, str) and k in TEXT_FIELDS else v for k, v in fields.items()}
        try:
            return self.publisher.send(JobAckMessage, JobAck(job_id=job_id, state=state, **fields), msg_id)  # type: ignore[arg-type]
        except ProtocolError as err:  # a bug if it happens; the job goes on, and the log says why
            logger.error("the %s ack of job %s cannot be sent: %s", state, job_id, err)
            return None

    def refuse(self, job_id: Optional[str], message_id: Optional[str], error: str) -> None:
        logger.warning("refused job %s: %s", job_id or message_id or "(unreadable)", error)
        self.ack(job_id, "rejected", message_id=message_id, error=error)

    def receive(self, spec: JobSpec, message_id: str, check: Callable[[JobSpec], None]) -> Optional[Job]:
        """The job if it is new and this device can run it (saved, then acknowledged), else None.
        A job id seen before is answered ``duplicate`` before ``check`` (which takes the job's
        sequence number: a QoS 1 redelivery is a duplicate, not a replay)."""
        if self.store.seen(spec.job_id):
            logger.info("job %s arrived again; it is already accepted", spec.job_id)
            why = "this job id was already accepted; send new work under a new job_id"
            self.ack(spec.job_id, "duplicate", message_id=message_id, message=why)
            return None
        try:
            check(spec)
        except JobError as err:
            self.refuse(spec.job_id, message_id, str(err))
            return None
        job = Job(spec)
        self.store.save(job)  # on disk before we say so
        self.ack(spec.job_id, "accepted", message_id=message_id, models=len(spec.models),
                 architectures=len(spec.all_architectures))  # fmt: skip
        return job

    def send_result(self, data: ResultData) -> Optional[Future[str]]:
        """One item's result; if its samples make it too big for the hubs' 128 KiB, the summary.
        The future is done once it is on disk."""
        msg_id = f"result:{data.job_id}:{data.model}"
        try:
            return self.publisher.send(ResultMessage, data, msg_id)
        except MessageTooLarge:
            assert data.result is not None
            omitted = len(data.result.samples_ns)
            import dataclasses

            summary = dataclasses.replace(data.result, samples_ns=())
            return self.publisher.send(
                ResultMessage, msgspec.structs.replace(data, result=summary, samples_omitted=omitted), msg_id
            )

    async def finish(self, job: Job, state: str, **fields: Any) -> None:
        """Say how the job ended (on disk first), then forget it."""
        sent = self.ack(job.job_id, state, **fields)
        if sent is not None:
            with contextlib.suppress(Exception):  # (logged by the publisher) the job ends anyway
                await asyncio.wrap_future(sent)
        self.store.finish(job.job_id)
        logger.info("job %s %s", job.job_id, state)
