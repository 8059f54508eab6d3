"""Commands the coordinator sends besides re-ranking jobs and pushes: operators' jobs, new keys.

    operators' jobs   ``fleetbench job`` queues them in the database; each tick sends the
                      queued ones of online devices, sealed for each device, and gives up on
                      one whose device stayed away longer than ``command_ttl_s``
    key rotation      a device whose status names a retired key gets the current key, signed
                      by the retired one, at most every ``push.retry_s``, until its status
                      names the current key

Like the other loops: ``tick()`` in an executor (it blocks on the database), a paho
client to publish with, an injectable clock.
"""

from __future__ import annotations

import logging
import time
from typing import Any, Callable, Optional

import msgspec

from agent.protocol.jobs import JobSpec
from agent.protocol.messages import JobMessage, KeyMessage, encode, make
from agent.protocol.signing import fingerprint
from agent.protocol.topics import DeviceTopics
from coordinator.config import CoordinatorConfig
from coordinator.errors import CoordinatorError
from coordinator.keys import Signer
from coordinator.store import Store
from coordinator.store.records import OnlineDevice, OutgoingJob

logger = logging.getLogger(__name__)


class Commands:
    def __init__(
        self,
        store: Store,
        config: CoordinatorConfig,
        client: Any,
        signer: Signer,
        clock: Callable[[], float] = time.time,
    ) -> None:
        self.store, self.config, self.client, self.signer, self.clock = store, config, client, signer, clock
        self._granted: dict[str, float] = {}  # device -> when it was last sent the new key

    def tick(self, now: Optional[float] = None, online: Optional[list[OnlineDevice]] = None) -> None:
        """``online``: the online devices, if the caller has read them already this pass."""
        now = self.clock() if now is None else now
        queued = self.store.queued_jobs()
        if online is None:
            online = self.store.online()
        by_id = {d.device_id: d for d in online}
        for job in queued:
            device = by_id.get(job.device_id)
            if device is not None:
                self._send_job(job, device, now)
            elif now - job.created_at > self.config.command_ttl_s:
                self.store.job_sent(job, now, "failed", "its device stayed offline")
        self._rotate(online, now)

    def _send_job(self, job: OutgoingJob, device: OnlineDevice, now: float) -> None:
        try:
            spec = self.signer.job(msgspec.json.decode(job.spec, type=JobSpec), device)
        except CoordinatorError as err:
            self.store.job_sent(job, now, "failed", str(err))
            logger.error("job %s for %s cannot be signed: %s", job.job_id, job.device_id, err)
            return
        msg = make(JobMessage, device.device_id, spec, msg_id=job.job_id)
        self.client.publish(DeviceTopics(device.device_id).jobs, encode(msg, device.protocol), qos=1)
        self.store.job_sent(job, now)
        logger.info("job %s sent to %s", job.job_id, device.device_id)

    def _rotate(self, online: list[OnlineDevice], now: float) -> None:
        behind = [d for d in online if d.key is not None]
        if not behind:
            return
        try:
            current = self.signer.fingerprint
        except CoordinatorError:
            return  # no key yet: nothing to rotate to
        for device in behind:
            if device.key == current:
                self._granted.pop(device.device_id, None)
                continue
            if now - self._granted.get(device.device_id, -1e18) < self.config.push.retry_s:
                continue
            grant = self.signer.grant(device)
            if grant is None:
                self._granted[device.device_id] = now  # a key we do not hold: say so once a while
                logger.warning("%s pins key %s, which this coordinator does not hold: it refuses every "
                               "command (pin %s there)", device.device_id, device.key, current)  # fmt: skip
                continue
            msg = make(KeyMessage, device.device_id, grant)
            self.client.publish(DeviceTopics(device.device_id).jobs, encode(msg, device.protocol), qos=1)
            self._granted[device.device_id] = now
            logger.info("sent key %s to %s (it pins %s)", fingerprint(grant.key), device.device_id,
                        device.key)  # fmt: skip
