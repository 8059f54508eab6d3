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

import hashlib
import json
import logging
import math
import os
import queue
import re
import threading
import time
import uuid
from collections.abc import Iterable
from typing import Any, Optional

import sqlalchemy as sa

from agent.errors import UsageError
from agent.files import write_bytes_atomic
from agent.transport import messages
from agent.transport.push import Manifest, chunk_message, expand, manifest_message, sign
from agent.transport.topics import DeviceTopics
from coordinator.config import CoordinatorConfig
from coordinator.errors import CoordinatorError
from coordinator.store import Store, acks, deployments, devices, rollouts

logger = logging.getLogger(__name__)

ACTIVE_ROLLOUT = ("new", "canary", "rolling")
ACTIVE_DEPLOYMENT = ("pending", "sending")
FAILED = ("rolled_back", "rejected", "failed")
TERMINAL = ("installed", *FAILED, "cancelled")
_SAFE = re.compile(r"[^A-Za-z0-9._-]+")


class SigningKeyError(CoordinatorError):
    """The signing key is missing or unreadable."""


# -- keys --------------------------------------------------------------------------


def generate_key(path: str) -> str:
    """Write a new Ed25519 private key (PEM, mode 0600) to ``path``; its public key text."""
    from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey
    from cryptography.hazmat.primitives.serialization import Encoding, NoEncryption, PrivateFormat

    if os.path.exists(path):
        raise UsageError(f"key file {path!r} already exists; refusing to overwrite a signing key")
    key = Ed25519PrivateKey.generate()
    pem = key.private_bytes(Encoding.PEM, PrivateFormat.PKCS8, NoEncryption())
    try:
        os.makedirs(os.path.dirname(os.path.abspath(path)), exist_ok=True)
        fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
        with os.fdopen(fd, "wb") as fh:
            fh.write(pem)
    except OSError as err:
        raise UsageError(f"key file {path!r} cannot be written: {err.strerror}") from None
    return public_key_of(key)


def load_key(path: str) -> Any:
    from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey
    from cryptography.hazmat.primitives.serialization import load_pem_private_key

    try:
        with open(path, "rb") as fh:
            key = load_pem_private_key(fh.read(), password=None)
    except FileNotFoundError:
        raise SigningKeyError(
            f"signing key {path!r} does not exist; make one with `fleetbench keygen`"
        ) from None
    except (OSError, ValueError, TypeError) as err:
        raise SigningKeyError(f"signing key {path!r} cannot be read: {err}") from None
    if not isinstance(key, Ed25519PrivateKey):
        raise SigningKeyError(f"signing key {path!r} is not an Ed25519 key")
    return key


def public_key_of(key: Any) -> str:
    from cryptography.hazmat.primitives.serialization import Encoding, PublicFormat

    from agent.transport.push import public_key_text

    return public_key_text(key.public_key().public_bytes(Encoding.Raw, PublicFormat.Raw))


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
) -> dict[str, Any]:
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
        if not re.match(r"^[A-Za-z0-9][A-Za-z0-9._-]{0,63}$", value):
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
    now = time.time()
    row = {
        "rollout_id": uuid.uuid4().hex[:12],
        "name": name,
        "version": version,
        "format": fmt,
        "size": len(data),
        "sha256": digest,
        "blob": blob,
        "target_kind": "device" if device else "sku",
        "target": device or sku,
        "state": "new",
        "canary_fraction": config.push.canary_fraction,
        "max_failure_share": config.push.max_failure_share,
        "max_latency_ms": max_latency_ms,
        "created_at": now,
        "updated_at": now,
        "detail": None,
    }
    with store.engine.begin() as conn:
        conn.execute(rollouts.insert().values(**row))
    return row


def rollout_report(store: Store, rollout_id: Optional[str] = None) -> list[dict[str, Any]]:
    """Rollouts (newest first) with their deployments."""
    with store.engine.connect() as conn:
        q = sa.select(rollouts).order_by(rollouts.c.created_at.desc())
        if rollout_id:
            q = q.where(rollouts.c.rollout_id == rollout_id)
        out = [dict(r) for r in conn.execute(q).mappings()]
        for r in out:
            deps = conn.execute(
                sa.select(deployments).where(deployments.c.rollout_id == r["rollout_id"])
            ).mappings()
            r["deployments"] = [dict(d) for d in deps]
    return out


class Deployer:
    """Drives the active rollouts: call ``tick()`` every second or so (it blocks on the
    database: run it in an executor), and ``close()`` at the end."""

    def __init__(self, store: Store, config: CoordinatorConfig, client: Any) -> None:
        self.store, self.config, self.client = store, config, client
        self._key: Any = None
        self._resume = True  # first tick: every transfer in progress gets its manifest again
        self._queue: queue.Queue = queue.Queue()
        self._queued: set[tuple[str, int]] = set()
        self._lock = threading.Lock()
        self._stop = threading.Event()
        self._sender = threading.Thread(target=self._send_loop, name="fleetbench-push", daemon=True)
        self._sender.start()
        self.chunks_sent = 0

    def close(self) -> None:
        self._stop.set()
        self._queue.put(None)
        self._sender.join(5)

    @property
    def key(self) -> Any:
        if self._key is None:
            self._key = load_key(self.config.key_file)
        return self._key

    def tick(self, now: Optional[float] = None) -> None:
        now = time.time() if now is None else now
        with self.store.engine.connect() as conn:
            active = [dict(r) for r in conn.execute(
                sa.select(rollouts).where(rollouts.c.state.in_(ACTIVE_ROLLOUT))).mappings()]  # fmt: skip
        online = {d["device_id"] for d in self.store.online()} if active else set()
        for rollout in active:
            try:
                self._advance(rollout, online, now)
            except SigningKeyError as err:
                self._set_rollout(rollout["rollout_id"], "halted", str(err), now)
                logger.error("rollout %s halted: %s", rollout["rollout_id"], err)
        self._resume = False

    # -- one rollout ----------------------------------------------------------------

    def _advance(self, rollout: dict[str, Any], online: set[str], now: float) -> None:
        rid = rollout["rollout_id"]
        if rollout["state"] == "new":
            targets = self._targets(rollout)
            if not targets:
                self._set_rollout(
                    rid, "halted", f"no device with {rollout['target_kind']} {rollout['target']!r}", now
                )
                return
            canary = targets if rollout["target_kind"] == "device" else targets[
                : max(1, math.ceil(len(targets) * rollout["canary_fraction"]))]  # fmt: skip
            self._add_deployments(rid, canary, "canary", now)
            rollout["state"] = "canary"
            self._set_rollout(rid, "canary", f"{len(canary)} of {len(targets)} device(s) first", now)
        deps = self._deployments(rid)
        self._read_acks(rollout, [d for d in deps if d["state"] in ACTIVE_DEPLOYMENT], now)
        deps = self._deployments(rid)
        finished = [d for d in deps if d["state"] in TERMINAL and d["state"] != "cancelled"]
        failed = [d for d in finished if d["state"] in FAILED]
        share = len(failed) / len(finished) if finished else 0.0
        if rollout["state"] == "canary" and all(d["state"] in TERMINAL for d in deps):
            if share > rollout["max_failure_share"]:
                self._halt(rollout, f"canary: {len(failed)} of {len(finished)} failed", now)
                return
            rest = [t for t in self._targets(rollout) if t not in {d["device_id"] for d in deps}]
            self._add_deployments(rid, rest, "rest", now)
            rollout["state"] = "rolling"
            self._set_rollout(rid, "rolling", f"canary passed; {len(rest)} device(s) to go", now)
            deps = self._deployments(rid)
        if rollout["state"] == "rolling" and finished and share > rollout["max_failure_share"]:
            self._halt(rollout, f"{len(failed)} of {len(finished)} finished deployments failed", now)
            return
        if all(d["state"] in TERMINAL for d in deps):
            installed = sum(d["state"] == "installed" for d in deps)
            self._set_rollout(rid, "done", f"{installed} of {len(deps)} installed", now)
            logger.info("rollout %s done: %d of %d installed", rid, installed, len(deps))
            return
        sending = sum(d["state"] == "sending" for d in deps)
        for d in deps:
            if d["state"] == "pending" and d["device_id"] in online and sending < self.config.push.parallel:
                self._send_manifest(rollout, d, now)
                sending += 1
            elif d["state"] == "sending" and d["device_id"] in online and self._due(d, now):
                if d["attempts"] >= self.config.push.attempts and not self._resume:
                    why = f"no answer after {d['attempts']} attempt(s)"
                    self._set_deployment(d["push_id"], now, state="failed", detail=why)
                else:
                    self._send_manifest(rollout, d, now)

    def _due(self, d: dict[str, Any], now: float) -> bool:
        """Send the manifest again?  After a restart, or after retry_s of silence (measured on
        this clock, updated_at, never against the device's)."""
        return self._resume or now - d["updated_at"] > self.config.push.retry_s

    def _halt(self, rollout: dict[str, Any], why: str, now: float) -> None:
        with self.store.engine.begin() as conn:
            conn.execute(
                deployments.update()
                .where(deployments.c.rollout_id == rollout["rollout_id"], deployments.c.state == "pending")
                .values(state="cancelled", updated_at=now, detail="the rollout was halted")
            )
        self._set_rollout(rollout["rollout_id"], "halted", why, now)
        logger.warning("rollout %s halted: %s", rollout["rollout_id"], why)

    def _targets(self, rollout: dict[str, Any]) -> list[str]:
        if rollout["target_kind"] == "device":
            return [rollout["target"]]
        with self.store.engine.connect() as conn:
            q = sa.select(devices.c.device_id).where(devices.c.sku == rollout["target"])
            return sorted(d for (d,) in conn.execute(q.order_by(devices.c.device_id)))

    def _add_deployments(self, rid: str, targets: Iterable[str], stage: str, now: float) -> None:
        rows = [{"push_id": f"{rid}:{t}", "rollout_id": rid, "device_id": t, "stage": stage,
                 "state": "pending", "attempts": 0, "updated_at": now} for t in targets]  # fmt: skip
        if rows:
            with self.store.engine.begin() as conn:
                conn.execute(deployments.insert(), rows)

    def _deployments(self, rid: str) -> list[dict[str, Any]]:
        with self.store.engine.connect() as conn:
            q = (
                sa.select(deployments)
                .where(deployments.c.rollout_id == rid)
                .order_by(deployments.c.device_id)
            )
            return [dict(r) for r in conn.execute(q).mappings()]

    def _set_rollout(self, rid: str, state: str, detail: str, now: float) -> None:
        with self.store.engine.begin() as conn:
            conn.execute(rollouts.update().where(rollouts.c.rollout_id == rid)
                         .values(state=state, detail=detail, updated_at=now))  # fmt: skip

    def _set_deployment(self, push_id: str, now: float, **values: Any) -> None:
        with self.store.engine.begin() as conn:
            conn.execute(deployments.update().where(deployments.c.push_id == push_id)
                         .values(updated_at=now, **values))  # fmt: skip

    # -- the device's answers -------------------------------------------------------

    def _read_acks(self, rollout: dict[str, Any], active: list[dict[str, Any]], now: float) -> None:
        if not active:
            return
        by_push = {d["push_id"]: d for d in active}
        with self.store.engine.connect() as conn:
            rows = conn.execute(
                sa.select(acks.c.job_id, acks.c.ts, acks.c.state, acks.c.data)
                .where(acks.c.job_id.in_(list(by_push)))
                .order_by(acks.c.ts)
            ).all()
        for push_id, ts, state, raw in rows:
            d = by_push[push_id]
            if d["state"] not in ACTIVE_DEPLOYMENT or ts <= (d["last_ack_ts"] or 0):
                continue
            d["last_ack_ts"] = ts
            try:
                data = json.loads(raw).get("data") or {}
            except (ValueError, AttributeError):
                data = {}
            if state == "receiving":
                self._queue_chunks(rollout, d, expand(data.get("missing") or []))
                self._set_deployment(push_id, now, last_ack_ts=ts, state="sending")
            elif state in ("installed", "rolled_back", "rejected"):
                d["state"] = state
                detail = data.get("error") or (
                    f"smoke run p50 {data.get('p50_ms')} ms" if state == "installed" else None
                )
                self._set_deployment(push_id, now, last_ack_ts=ts, state=state, detail=detail,
                                     p50_ms=data.get("p50_ms"))  # fmt: skip
                log = logger.info if state == "installed" else logger.warning
                log("push %s: %s%s", push_id, state, f" ({detail})" if detail else "")
            else:
                self._set_deployment(push_id, now, last_ack_ts=ts)

    # -- sending --------------------------------------------------------------------

    def manifest_for(self, rollout: dict[str, Any], push_id: str) -> Manifest:
        manifest = Manifest(
            push_id=push_id,
            name=rollout["name"],
            version=rollout["version"],
            format=rollout["format"],
            size=rollout["size"],
            sha256=rollout["sha256"],
            chunk_bytes=self.config.push.chunk_bytes,
            smoke_runs=self.config.push.smoke_runs,
            max_latency_ms=rollout["max_latency_ms"],
        ).checked()
        return sign(manifest, self.key)

    def _send_manifest(self, rollout: dict[str, Any], d: dict[str, Any], now: float) -> None:
        manifest = self.manifest_for(rollout, d["push_id"])
        attempts = d["attempts"] + 1
        topic = DeviceTopics(d["device_id"]).models
        env = messages.make("models", d["device_id"], manifest_message(manifest),
                            f"manifest:{d['push_id']}:{attempts}")  # fmt: skip
        self._queue.put((topic, env.encode()))
        d.update(state="sending", attempts=attempts, sent_at=now)
        self._set_deployment(d["push_id"], now, state="sending", attempts=attempts, sent_at=now)
        logger.info("push %s: manifest sent (attempt %d)", d["push_id"], attempts)

    def _queue_chunks(self, rollout: dict[str, Any], d: dict[str, Any], indices: list[int]) -> None:
        topic = DeviceTopics(d["device_id"]).models
        for i in indices:
            key = (d["push_id"], i)
            with self._lock:
                if key in self._queued:
                    continue
                self._queued.add(key)
            self._queue.put((topic, (rollout["blob"], d["push_id"], d["device_id"], i)))

    def _send_loop(self) -> None:
        inflight: list[Any] = []
        chunk_bytes = self.config.push.chunk_bytes
        while not self._stop.is_set():
            item = self._queue.get()
            if item is None:
                return
            topic, payload = item
            if isinstance(payload, tuple):  # a chunk: read it now, not when queued
                blob, push_id, device_id, index = payload
                with self._lock:
                    self._queued.discard((push_id, index))
                try:
                    with open(blob, "rb") as fh:
                        fh.seek(index * chunk_bytes)
                        data = fh.read(chunk_bytes)
                except OSError as err:
                    logger.error("push %s: the model file %s cannot be read: %s", push_id, blob, err)
                    continue
                msg = chunk_message(push_id, index, data)
                payload = messages.make("models", device_id, msg, f"chunk:{push_id}:{index}").encode()
            while len(inflight) >= self.config.push.window and not self._stop.is_set():
                inflight = [i for i in inflight if not i.is_published()]
                if len(inflight) >= self.config.push.window:
                    try:
                        inflight[0].wait_for_publish(0.5)
                    except (RuntimeError, ValueError):  # not connected: paho keeps it queued
                        inflight.pop(0)
            inflight.append(self.client.publish(topic, payload, qos=1))
            self.chunks_sent += 1
