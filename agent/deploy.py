"""The device side of a model push: messages in, the model store, the smoke run, acks out.

    manifest -> signed for this device by the pinned key, unexpired, not a replay, a newer
                release, within limits?  no: ack "rejected" (nothing written)
                                         yes: ack "receiving" with the missing chunk ranges
    chunks   -> checked against the manifest's digests and written as they come (one that
                is not the signed one is dropped: the push goes on); the last starts the install
    install  -> size and sha256 are the signed ones?  no: ack "rejected" (current model kept)
             -> installed; smoke benchmark in a worker process
             -> it loads, runs and meets max_latency_ms (beyond the run's noise)?
                yes: ack "installed" with its median and the median's 95 % interval
                no: roll back, ack "rolled_back" (with the latency, when it ran but was too slow)

A manifest sent again (the coordinator's retry, or after either side restarted) is
answered with what is still missing, so a transfer resumes; a manifest of a push that
already ended is answered with its ending again.  A refusal of a manifest is not an
ending: a forged manifest carrying a genuine push's id cannot spoil the genuine one.
"""

from __future__ import annotations

import asyncio
import json
import logging
import os
from collections.abc import Awaitable
from typing import Any, Callable, NamedTuple, Optional

from agent.common.errors import FleetbenchError, WorkerCancelledError
from agent.common.files import write_text_atomic
from agent.common.logs import WarnOnce
from agent.device.publisher import Publisher
from agent.device.trust import Trust
from agent.modelstore import ModelStore
from agent.protocol.errors import ProtocolError
from agent.protocol.messages import Envelope, PushAckMessage, PushChunkMessage, PushManifestMessage
from agent.protocol.push import Chunk, Manifest, PushAck, PushError, ranges
from agent.protocol.signing import TrustError
from agent.protocol.types import clip

logger = logging.getLogger(__name__)

ENDED_KEPT = 200


class SmokeResult(NamedTuple):
    p50_ms: float
    backend: str
    #: the 95 % confidence interval of the median (``agent.bench.stats.median_interval``)
    interval_ms: Optional[tuple[float, float]] = None


def over_limit(result: SmokeResult, limit_ms: Optional[float]) -> Optional[str]:
    """Why a smoke run breaks a manifest's ``max_latency_ms``, or None: its median is over the
    limit beyond the run's own noise (the low end of the median's 95 % interval is above it).
    A median over the limit but within the noise passes; the ack carries both for the
    coordinator to show.

    >>> over_limit(SmokeResult(1.03, "cpu", (1.01, 1.05)), 0.92)
    "the smoke run's median 1.030 ms (95 % interval 1.010-1.050) is over the limit of 0.92 ms"
    >>> over_limit(SmokeResult(0.93, "cpu", (0.90, 0.96)), 0.92) is None
    True
    """
    if limit_ms is None:
        return None
    low, high = result.interval_ms or (result.p50_ms, result.p50_ms)
    if low <= limit_ms:
        return None
    return (f"the smoke run's median {result.p50_ms:.3f} ms (95 % interval {low:.3f}-{high:.3f}) is over "
            f"the limit of {limit_ms:g} ms")  # fmt: skip


#: runs the smoke benchmark of a model file (``runs`` times) on the device
SmokeRunner = Callable[[str, int], Awaitable[SmokeResult]]


class PushReceiver:
    def __init__(
        self,
        store: ModelStore,
        publisher: Publisher,
        smoke: SmokeRunner,
        state_dir: str,
        trust: Trust,
        device_id: Callable[[], Optional[str]],
    ) -> None:
        self.store = store
        self.trust = trust
        self._device_id = device_id
        self.publisher = publisher
        self._smoke = smoke
        self._ended_path = os.path.join(state_dir, "pushes.json")
        self._ended: dict[str, dict[str, Any]] = self._load_ended()
        self._installing: set[str] = set()
        self._tasks: set[asyncio.Task] = set()
        self._warn = WarnOnce(logger)

    def handle(self, msg: Envelope) -> None:
        """One decoded message from the ``models`` topic (called in the event loop's thread)."""
        if isinstance(msg, PushManifestMessage):
            self._on_manifest(msg.data)
        elif isinstance(msg, PushChunkMessage):
            self._on_chunk(msg.data)

    async def wait_idle(self) -> None:
        """Until installs in progress finish (tests, and a graceful stop)."""
        while self._tasks:
            await asyncio.gather(*self._tasks, return_exceptions=True)

    # -- messages -------------------------------------------------------------------

    def _on_manifest(self, manifest: Manifest) -> None:
        push_id = manifest.push_id
        what = f"push {push_id}"
        try:
            self.trust.check(manifest, self._device_id(), what)
            if self.trust.key is not None and manifest.release is None:
                raise TrustError(f"{what} has no release number; its coordinator is older than this "
                                 "device (upgrade the coordinator)")  # fmt: skip
        except TrustError as err:
            logger.warning("refused %s", err)
            self._ack(push_id, "rejected", error=str(err))
            return
        if push_id in self._ended:
            # Our ending was lost to the coordinator (or it restarted): say it again.
            ended = self._ended[push_id]
            self._ack(push_id, ended["state"], again=True, **ended["fields"])
            return
        if push_id in self._installing:  # complete and being installed: nothing is missing
            self._ack(push_id, "installing")
            return
        try:
            if not self.store.known(manifest):  # a new push: its sequence number is taken now
                self.trust.consume(manifest.seq, what)
            missing = self.store.offer(manifest)
        except (PushError, TrustError) as err:
            logger.warning("refused push %s: %s", push_id, err)
            self._ack(push_id, "rejected", error=str(err))
            return
        except OSError as err:
            self._ack(push_id, "rejected", error=f"the device cannot store the push: {err.strerror}")
            return
        if not missing:
            self._start_install(manifest)
            return
        logger.info("receiving push %s: %s %s, %d of %d chunks to come", manifest.push_id, manifest.name,
                    manifest.version, len(missing), manifest.chunks)  # fmt: skip
        self._ack(manifest.push_id, "receiving", name=manifest.name, version=manifest.version,
                  missing=tuple(tuple(r) for r in ranges(missing)), chunks=manifest.chunks)  # fmt: skip

    def _on_chunk(self, chunk: Chunk) -> None:
        push_id, index = chunk.push_id, chunk.index
        if push_id in self._ended or push_id in self._installing:
            return  # a QoS 1 redelivery after the push was complete
        try:
            manifest = self.store.add_chunk(push_id, index, chunk.data)
        except PushError as err:
            # Not a chunk of the signed push (forged, or of a push whose manifest never came):
            # dropped, and the push goes on; the genuine chunk is still wanted, and the
            # coordinator's retry asks for what is missing.
            self._warn("chunk", "dropped a chunk (said once; then at debug level): %s", err)
            return
        except OSError as err:
            self.store.discard(push_id)
            self._end(push_id, "rejected", error=f"the device cannot store the push: {err.strerror}")
            return
        if manifest is not None:
            self._start_install(manifest)

    # -- install and smoke run ------------------------------------------------------

    def _start_install(self, manifest: Manifest) -> None:
        if manifest.push_id in self._installing:
            return
        self._installing.add(manifest.push_id)
        task = asyncio.ensure_future(self._install(manifest))
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)

    async def _install(self, manifest: Manifest) -> None:
        loop = asyncio.get_running_loop()
        push_id, name = manifest.push_id, manifest.name
        try:
            try:
                installed = await loop.run_in_executor(None, self.store.install, push_id)
            except PushError as err:
                logger.warning("refused push %s: %s", push_id, err)
                self._end(push_id, "rejected", error=str(err))
                return
            except OSError as err:
                self.store.discard(push_id)
                self._end(push_id, "rejected", error=f"installing failed: {err.strerror}")
                return
            try:
                result = await self._smoke(installed.path, manifest.smoke_runs)
            except WorkerCancelledError:
                # Stopping mid-smoke: an untested model must not stay current.  No ending is
                # sent; the coordinator's retry sends the push again after the restart.
                self.store.rollback(name)
                return
            except FleetbenchError as err:
                back_to = self.store.rollback(name)
                self._end(push_id, "rolled_back", name=name, version=manifest.version,
                          error=f"smoke run failed: {err}", current=back_to)  # fmt: skip
                return
            measured: dict[str, Any] = {
                "p50_ms": round(result.p50_ms, 4),
                "runs": manifest.smoke_runs,
                "backend": result.backend,
            }
            if result.interval_ms is not None:
                measured["p50_interval_ms"] = tuple(round(v, 4) for v in result.interval_ms)
            over = over_limit(result, manifest.max_latency_ms)
            if over:
                back_to = self.store.rollback(name)
                logger.warning("push %s: %s; rolled back", push_id, over)
                self._end(push_id, "rolled_back", name=name, version=manifest.version, error=over,
                          current=back_to, **measured)  # fmt: skip
                return
            self._end(push_id, "installed", name=name, version=manifest.version, previous=installed.previous,
                      **measured)  # fmt: skip
        finally:
            self._installing.discard(push_id)

    # -- acks -----------------------------------------------------------------------

    def _ack(self, push_id: str, state: str, **fields: Any) -> None:
        self._send(push_id, state, fields, None)

    def _send(self, push_id: str, state: str, fields: dict[str, Any], msg_id: Optional[str]) -> None:
        """Say ``state`` about a push.  Never raises: an answer that cannot be sent is logged."""
        if isinstance(fields.get("error"), str):
            fields = {**fields, "error": clip(fields["error"])}
        try:
            self.publisher.send(PushAckMessage, PushAck(push_id=push_id, state=state, **fields), msg_id)  # type: ignore[arg-type]
        except ProtocolError as err:
            logger.error("the %s ack of push %s cannot be sent: %s", state, push_id, err)

    def _end(self, push_id: str, state: str, **fields: Any) -> None:
        """A push's last word: kept on disk, sent with an id made from the push."""
        self._ended[push_id] = {"state": state, "fields": fields}
        while len(self._ended) > ENDED_KEPT:
            self._ended.pop(next(iter(self._ended)))
        try:
            write_text_atomic(self._ended_path, json.dumps(self._ended), what="push record")
        except FleetbenchError as err:
            logger.warning("%s", err)
        self._send(push_id, state, fields, f"ack:{push_id}:{state}")

    def _load_ended(self) -> dict[str, dict[str, Any]]:
        try:
            with open(self._ended_path, encoding="utf-8") as fh:
                ended = json.load(fh)
        except (OSError, ValueError):
            return {}
        return ended if isinstance(ended, dict) else {}
