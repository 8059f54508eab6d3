"""Model pushes from the coordinator: rollouts, deployments, signed manifests, chunks.

A rollout is one model file for one device or for every device of a SKU.  It goes to
a canary share of the devices first; when they have all answered and the failure share
is at most ``max_failure_share``, it goes to the rest, ``parallel`` devices at a time,
and stops (the devices not yet started are cancelled) as soon as the failure share of
the finished deployments passes the threshold.

Everything a rollout needs is in the database and the blob directory, so a coordinator
that restarts picks it up: every deployment that was mid-transfer gets its manifest
again, the device answers with the chunks it still misses, and only those are sent.
The device's acks are read from the store (the ingestor wrote them), never from
memory, so an ack that arrived while the coordinator was down still counts.
"""

from __future__ import annotations

import dataclasses
import hashlib
import logging
import math
import os
import queue
import re
import threading
import time
import uuid
from typing import Any, Callable, NamedTuple, Optional

from agent.common.errors import FleetbenchError, UsageError
from agent.common.files import write_bytes_atomic
from agent.common.logs import WarnOnce
from agent.protocol.messages import PushChunkMessage, PushManifestMessage, encode, make
from agent.protocol.push import DIGEST_BYTES, ENDINGS, MAX_CHUNKS, Chunk, Manifest, chunk_digests
from agent.protocol.topics import DeviceTopics
from agent.protocol.types import NAME_PATTERN
from coordinator.config import CoordinatorConfig
from coordinator.errors import CoordinatorError
from coordinator.keys import Signer
from coordinator.store import Store
from coordinator.store.records import ACTIVE_DEPLOYMENT, FAILED, TERMINAL, Deployment, OnlineDevice, Rollout

logger = logging.getLogger(__name__)

_SAFE = re.compile(r"[^A-Za-z0-9._-]+")


# -- rollouts ------------------------------------------------------------------------


def create_rollout(
    store: Store,
    config: CoordinatorConfig,
    model: str,
    *,
    device: Optional[str] = None,
    sku: Optional[str] = None,
    name: Optional[str] = None,
    version: Optional[str] = None,
    max_latency_ms: Optional[float] = None,
    now: Optional[float] = None,
) -> Rollout:
    """Register a rollout of the model file ``model`` (the running coordinator sends it)."""
    if (device is None) == (sku is None):
        raise UsageError("name exactly one target: --device ID or --sku SKU")
    fmt = os.path.splitext(model)[1].lower().lstrip(".")
    if fmt not in ("onnx", "tflite"):
        raise UsageError(f"model {model!r} must be a .onnx or .tflite file")
    try:
        with open(model, "rb") as fh:
            data = fh.read()
    except OSError as err:
        raise UsageError(f"model {model!r} cannot be read: {err.strerror}") from None
    if not data:
        raise UsageError(f"model {model!r} is empty")
    digest = hashlib.sha256(data).hexdigest()
    name = name or _SAFE.sub("-", os.path.splitext(os.path.basename(model))[0]).strip("-.")[:64] or "model"
    version = version or digest[:12]
    for label, value in (("--name", name), ("--version", version)):
        if not re.match(NAME_PATTERN, value):
            raise UsageError(f"{label} {value!r} must be 1-64 letters, digits, '.', '_' or '-'")
    blob = os.path.join(config.blob_dir, f"{digest}.{fmt}")
    if not os.path.exists(blob):  # the coordinator sends from this copy, so a rollout survives restarts
        try:
            os.makedirs(config.blob_dir, exist_ok=True)
        except OSError as err:
            raise UsageError(
                f"state_dir {config.state_dir!r} cannot hold model files: {err.strerror}"
            ) from None
        write_bytes_atomic(blob, data, what="model copy")
    now = time.time() if now is None else now
    rollout = Rollout(
        rollout_id=uuid.uuid4().hex[:12],
        name=name,
        version=version,
        format=fmt,
        size=len(data),
        sha256=digest,
        blob=blob,
        target_kind="device" if device else "sku",
        target=str(device or sku),
        state="new",
        canary_fraction=config.push.canary_fraction,
        max_failure_share=config.push.max_failure_share,
        max_latency_ms=max_latency_ms,
        created_at=now,
        updated_at=now,
    )
    store.add_rollout(rollout)
    return rollout


class _Chunk(NamedTuple):
    """A chunk to send: read from the blob when it goes, not when it is queued."""

    blob: str
    push_id: str
    device_id: str
    number: int  # the chunk's index
    version: int


class Deployer:
    """Drives the active rollouts: call ``tick()`` every second or so (it blocks on the
    database: run it in an executor), and ``close()`` at the end.

    ``client`` publishes (a paho client: ``publish(topic, payload, qos)`` returning a
    message info); ``clock`` tells the time (both injectable, for tests)."""

    def __init__(
        self,
        store: Store,
        config: CoordinatorConfig,
        client: Any,
        clock: Callable[[], float] = time.time,
        signer: Optional[Signer] = None,
    ) -> None:
        self.store, self.config, self.client, self.clock = store, config, client, clock
        self.signer = signer or Signer.of(config, clock)
        self._digests: dict[str, Optional[bytes]] = {}
        self._resume = True  # first tick: every transfer in progress gets its manifest again
        self._queue: queue.Queue = queue.Queue()
        self._queued: set[tuple[str, int]] = set()
        self._lock = threading.Lock()
        self._stop = threading.Event()
        self._warn = WarnOnce(logger)
        self._sender = threading.Thread(target=self._send_loop, name="fleetbench-push", daemon=True)
        self._sender.start()
        self.chunks_sent = 0
        #: bytes of push messages (manifests and chunks) handed to the broker since start
        self.bytes_sent = 0
        #: pushes are handed to the broker only before this time: the end of the coordinator's
        #: lease on the loops (fencing by time: a replica paused past its lease sends nothing when
        #: it wakes, since by then another may lead); no lease, no end (one coordinator)
        self.lease_until = math.inf

    def led(self, until: float, new: bool) -> None:
        """The coordinator holds the loops' lease until ``until``; ``new``: it has just taken it,
        so every transfer in progress gets its manifest again (the last leader may have been
        anywhere in it)."""
        self.lease_until = until
        if new:
            self._resume = True

    def close(self) -> None:
        self._stop.set()
        self._queue.put(None)
        self._sender.join(5)

    def healthy(self) -> bool:
        return self._sender.is_alive()

    def tick(self, now: Optional[float] = None, online: Optional[list[OnlineDevice]] = None) -> None:
        """``online``: the online devices, if the caller has read them already this pass."""
        now = self.clock() if now is None else now
        active = self.store.rollouts(active=True)
        if active and online is None:
            online = self.store.online()
        by_id = {d.device_id: d for d in online or ()} if active else {}
        for rollout in active:
            try:
                self._advance(rollout, by_id, now)
            except FleetbenchError as err:  # no key, or a push that cannot be written: this one halts
                self.store.cancel_pending(rollout.rollout_id, now, "the rollout was halted")
                self.store.update_rollout(rollout.rollout_id, now, "halted", str(err))
                logger.error("rollout %s halted: %s", rollout.rollout_id, err)
        self._resume = False

    # -- one rollout ----------------------------------------------------------------

    def _advance(self, rollout: Rollout, online: dict[str, OnlineDevice], now: float) -> None:
        rid, state = rollout.rollout_id, rollout.state
        if state == "new":
            targets = self._targets(rollout)
            if not targets:
                self.store.update_rollout(
                    rid, now, "halted", f"no device with {rollout.target_kind} {rollout.target!r}"
                )
                return
            canary = targets if rollout.target_kind == "device" else targets[
                : max(1, math.ceil(len(targets) * rollout.canary_fraction))]  # fmt: skip
            self._add_deployments(rid, canary, "canary", now)
            state = "canary"
            self.store.update_rollout(rid, now, "canary", f"{len(canary)} of {len(targets)} device(s) first")
        active = [d for d in self.store.deployments(rid) if d.state in ACTIVE_DEPLOYMENT]
        self._read_acks(rollout, active, online, now)
        deps = self.store.deployments(rid)
        finished = [d for d in deps if d.state in TERMINAL and d.state != "cancelled"]
        failed = [d for d in finished if d.state in FAILED]
        share = len(failed) / len(finished) if finished else 0.0
        if state == "canary" and all(d.state in TERMINAL for d in deps):
            if share > rollout.max_failure_share:
                self._halt(rollout, f"canary: {len(failed)} of {len(finished)} failed", now)
                return
            rest = [t for t in self._targets(rollout) if t not in {d.device_id for d in deps}]
            self._add_deployments(rid, rest, "rest", now)
            state = "rolling"
            self.store.update_rollout(rid, now, "rolling", f"canary passed; {len(rest)} device(s) to go")
            deps = self.store.deployments(rid)
        if state == "rolling" and finished and share > rollout.max_failure_share:
            self._halt(rollout, f"{len(failed)} of {len(finished)} finished deployments failed", now)
            return
        if all(d.state in TERMINAL for d in deps):
            installed = sum(d.state == "installed" for d in deps)
            self.store.update_rollout(rid, now, "done", f"{installed} of {len(deps)} installed")
            logger.info("rollout %s done: %d of %d installed", rid, installed, len(deps))
            return
        sending = sum(d.state == "sending" for d in deps)
        for d in deps:
            device = online.get(d.device_id)
            if device is None:
                continue
            if d.state == "pending" and sending < self.config.push.parallel:
                self._send_manifest(rollout, d, device, now)
                sending += 1
            elif d.state == "sending" and self._due(d, now):
                if d.attempts >= self.config.push.attempts and not self._resume:
                    why = f"no answer after {d.attempts} attempt(s)"
                    self.store.update_deployment(d.push_id, now, state="failed", detail=why)
                else:
                    self._send_manifest(rollout, d, device, now)

    def _due(self, d: Deployment, now: float) -> bool:
        """Send the manifest again?  After a restart, or after retry_s of silence (measured on
        this clock, updated_at, never against the device's)."""
        return self._resume or now - d.updated_at > self.config.push.retry_s

    def _halt(self, rollout: Rollout, why: str, now: float) -> None:
        self.store.cancel_pending(rollout.rollout_id, now, "the rollout was halted")
        self.store.update_rollout(rollout.rollout_id, now, "halted", why)
        logger.warning("rollout %s halted: %s", rollout.rollout_id, why)

    def _targets(self, rollout: Rollout) -> list[str]:
        if rollout.target_kind == "device":
            return [rollout.target]
        return self.store.devices_of_sku(rollout.target)

    def _add_deployments(self, rid: str, targets: list[str], stage: str, now: float) -> None:
        self.store.add_deployments(
            Deployment(
                push_id=f"{rid}:{t}",
                rollout_id=rid,
                device_id=t,
                stage=stage,
                state="pending",
                attempts=0,
                updated_at=now,
            )
            for t in targets
        )

    # -- the devices' answers -------------------------------------------------------

    def _read_acks(
        self, rollout: Rollout, active: list[Deployment], online: dict[str, OnlineDevice], now: float
    ) -> None:
        """Apply the answers of each deployment's own device (acks sent under another device's
        id are that device's, and never reach here)."""
        if not active:
            return
        by_push = {(d.device_id, d.push_id): d for d in active}
        chunks = -(-rollout.size // self.config.push.chunk_bytes)
        for got in self.store.push_acks(list(by_push), after=min(d.last_ack_ts or 0.0 for d in active)):
            d = by_push[(got.device_id, got.ack.push_id)]
            if d.state not in ACTIVE_DEPLOYMENT or got.ts <= (d.last_ack_ts or 0.0):
                continue
            ack = got.ack
            values: dict[str, Any] = {"last_ack_ts": got.ts}
            if ack.state == "receiving":
                try:
                    missing = ack.missing_within(chunks)
                except ValueError as err:
                    self._warn(
                        d.push_id, "push %s: ignoring an answer of %s: %s", d.push_id, d.device_id, err
                    )
                else:
                    device = online.get(d.device_id)
                    self._queue_chunks(rollout, d, missing, device.protocol if device else 1)
                    values["state"] = "sending"
            elif ack.state in ENDINGS:
                detail = ack.error or (f"smoke run p50 {ack.p50_ms} ms" if ack.state == "installed" else None)
                low, high = ack.p50_interval_ms or (None, None)
                values.update(
                    state=ack.state, detail=detail, p50_ms=ack.p50_ms, p50_lo_ms=low, p50_hi_ms=high
                )
                log = logger.info if ack.state == "installed" else logger.warning
                log("push %s: %s%s", d.push_id, ack.state, f" ({detail})" if detail else "")
            self.store.update_deployment(d.push_id, now, **values)
            by_push[(d.device_id, d.push_id)] = dataclasses.replace(d, **values)

    # -- sending --------------------------------------------------------------------

    def manifest_for(self, rollout: Rollout, push_id: str, device: OnlineDevice) -> Manifest:
        """The manifest of ``rollout`` for ``device``, sealed for it.  Its release number is
        the rollout's creation time in microseconds: it grows with every rollout of a name,
        including one that goes back to an older model."""
        manifest = Manifest(
            push_id=push_id, name=rollout.name, version=rollout.version, format=rollout.format,  # type: ignore[arg-type]
            size=rollout.size, sha256=rollout.sha256, chunk_bytes=self.config.push.chunk_bytes,
            smoke_runs=self.config.push.smoke_runs, max_latency_ms=rollout.max_latency_ms,
            release=round(rollout.created_at * 1_000_000), chunk_digests=self._chunk_digests(rollout),
        )  # fmt: skip
        return self.signer.manifest(manifest, device)

    def _chunk_digests(self, rollout: Rollout) -> Optional[bytes]:
        """Each chunk's digest, read once per rollout (None for a push of more than MAX_CHUNKS:
        its device checks the whole file's sha256 only)."""
        if rollout.rollout_id not in self._digests:
            chunk_bytes = self.config.push.chunk_bytes
            digests = None
            if -(-rollout.size // chunk_bytes) <= MAX_CHUNKS:
                try:
                    with open(rollout.blob, "rb") as fh:
                        digests = chunk_digests(fh.read(), chunk_bytes)
                except OSError as err:
                    raise CoordinatorError(
                        f"the model file {rollout.blob} cannot be read: {err.strerror}"
                    ) from None
                assert len(digests) == -(-rollout.size // chunk_bytes) * DIGEST_BYTES
            self._digests[rollout.rollout_id] = digests
        return self._digests[rollout.rollout_id]

    def _send_manifest(self, rollout: Rollout, d: Deployment, device: OnlineDevice, now: float) -> None:
        manifest = self.manifest_for(rollout, d.push_id, device)
        attempts = d.attempts + 1
        msg = make(PushManifestMessage, d.device_id, manifest, f"manifest:{d.push_id}:{attempts}")
        self._queue.put((DeviceTopics(d.device_id).models, encode(msg, device.protocol)))
        self.store.update_deployment(d.push_id, now, state="sending", attempts=attempts, sent_at=now)
        logger.info("push %s: manifest sent (attempt %d)", d.push_id, attempts)

    def _queue_chunks(self, rollout: Rollout, d: Deployment, indices: list[int], version: int) -> None:
        topic = DeviceTopics(d.device_id).models
        for i in indices:
            key = (d.push_id, i)
            with self._lock:
                if key in self._queued:
                    continue
                self._queued.add(key)
            self._queue.put((topic, _Chunk(rollout.blob, d.push_id, d.device_id, i, version)))

    def flush(self) -> None:
        """Wait until everything queued so far has been handed to the broker (or dropped)."""
        self._queue.join()

    def _send_loop(self) -> None:
        inflight: list[Any] = []
        while not self._stop.is_set():
            item = self._queue.get()
            try:
                if item is None:
                    return
                topic, payload = item
                self._send_one(topic, payload, inflight)
            finally:
                self._queue.task_done()

    def _send_one(self, topic: str, payload: Any, inflight: list[Any]) -> None:
        chunk_bytes = self.config.push.chunk_bytes
        if isinstance(payload, _Chunk):
            with self._lock:
                self._queued.discard((payload.push_id, payload.number))
        if self.clock() >= self.lease_until:  # no longer ours to send: the new leader resumes it
            return
        if isinstance(payload, _Chunk):  # read it now, not when queued
            try:
                with open(payload.blob, "rb") as fh:
                    fh.seek(payload.number * chunk_bytes)
                    data = fh.read(chunk_bytes)
            except OSError as err:
                logger.error(
                    "push %s: the model file %s cannot be read: %s", payload.push_id, payload.blob, err
                )
                return
            chunk = Chunk(push_id=payload.push_id, index=payload.number, data=data)
            msg = make(
                PushChunkMessage, payload.device_id, chunk, f"chunk:{payload.push_id}:{payload.number}"
            )
            payload = encode(msg, payload.version)
        while len(inflight) >= self.config.push.window and not self._stop.is_set():
            inflight[:] = [i for i in inflight if not i.is_published()]
            if len(inflight) >= self.config.push.window:
                try:
                    inflight[0].wait_for_publish(0.5)
                except (RuntimeError, ValueError):  # not connected: paho keeps it queued
                    inflight.pop(0)
        inflight.append(self.client.publish(topic, payload, qos=1))
        self.chunks_sent += 1
        self.bytes_sent += len(payload)
