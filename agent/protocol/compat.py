"""Version 1 of the messages (fleetbench 0.1), read and written for one release.

Version 1 differs from version 2 only in its envelope: ``kind`` was the topic's kind
("results", "acks", "models"...), so a job's ack and a push's ack shared one shape (a
push ack also said ``job_id``), a push message said ``"type": "manifest"`` or ``"chunk"``
inside its data, and the status was a flat object without an envelope.  The data of
each kind is unchanged, so converting is renaming: nothing is guessed.

``from_v1`` turns a version-1 message into the dict of its version-2 form, which the
caller then decodes and checks like any version-2 message.  ``to_v1`` writes a message
for a device that reads only version 1 (one whose status announced no ``protocol``).
"""

from __future__ import annotations

from typing import Any, Optional

import msgspec

from agent.protocol.errors import ProtocolError

#: version 2's kind -> version 1's (the topic kind)
V1_KIND = {
    "status": "status",
    "health": "health",
    "result": "results",
    "job_ack": "acks",
    "push_ack": "acks",
    "job": "jobs",
    "key": "jobs",
    "push_manifest": "models",
    "push_chunk": "models",
}


def from_v1(raw: Any, topic_kind: Optional[str], topic_device: Optional[str]) -> dict[str, Any]:
    """The version-2 form (a dict) of the version-1 message ``raw``; ProtocolError if it is none.

    ``topic_device``: the device whose topic it came on.  A version-1 command named no
    particular device in ``device_id``; it is the topic's device now."""
    try:
        obj = msgspec.json.decode(raw)
    except msgspec.DecodeError as err:
        raise ProtocolError(f"message is not valid JSON: {err}") from None
    if not isinstance(obj, dict):
        raise ProtocolError("version-1 message: not a JSON object")
    kind = obj.get("kind")
    if kind is None and "state" in obj:
        kind = "status"  # the version-1 status had no envelope
    if topic_kind is not None and kind != topic_kind:
        raise ProtocolError(f"version-1 message: a {kind!r} message does not travel on a {topic_kind} topic")
    if kind == "status":
        return _status(obj)
    data = obj.get("data")
    if not isinstance(data, dict):
        raise ProtocolError("version-1 message: data is not a JSON object")
    device_id = obj.get("device_id")
    if kind == "health":
        new_kind = "health"
    elif kind == "results":
        new_kind = "result"
    elif kind == "acks":
        if "push_id" in data:
            new_kind, data = "push_ack", {k: v for k, v in data.items() if k != "job_id"}
        else:
            new_kind = "job_ack"
    elif kind == "jobs":
        new_kind, device_id = "job", topic_device or device_id
    elif kind == "models":
        device_id = topic_device or device_id
        if data.get("type") == "manifest":
            new_kind, data = "push_manifest", data.get("manifest")
        elif data.get("type") == "chunk":
            new_kind, data = "push_chunk", {k: v for k, v in data.items() if k != "type"}
        else:
            raise ProtocolError(f"version-1 message: unknown push message type {data.get('type')!r}")
    else:
        raise ProtocolError(f"version-1 message: unknown kind {kind!r}")
    return {"kind": new_kind, "v": 2, "id": obj.get("id"), "device_id": device_id, "ts": obj.get("ts"),
            "data": data}  # fmt: skip


def _status(obj: dict[str, Any]) -> dict[str, Any]:
    flat = {k: v for k, v in obj.items() if k not in ("v", "device_id", "ts", "kind")}
    caps = flat.pop("capabilities", None)
    data: dict[str, Any] = {
        k: flat[k] for k in ("state", "platform", "sku", "version", "collectors") if k in flat
    }
    data["protocol"] = 1
    if caps is not None:
        if flat.get("platform") == "mcu":
            data["board"] = caps
        elif flat.get("platform") == "simulated" and isinstance(caps, dict):
            data["simulation"] = {"source": caps.get("source", ""), "drift": caps.get("drift", 1.0)}
        else:
            data["capabilities"] = caps
    ts = obj.get("ts")
    return {"kind": "status", "v": 2, "id": f"status-v1-{ts}", "device_id": obj.get("device_id"), "ts": ts,
            "data": data}  # fmt: skip


def to_v1(msg: Any) -> dict[str, Any]:
    """The version-1 form of a version-2 message, for a device that reads only version 1."""
    data = msgspec.to_builtins(msg.data)
    kind = msg.kind
    if kind == "status":
        caps = data.pop("capabilities", None) or data.pop("board", None) or data.pop("simulation", None)
        data.pop("protocol", None)
        return {"v": 1, **data, "capabilities": caps, "device_id": msg.device_id, "ts": msg.ts}
    if kind == "push_ack":
        data = {"job_id": data["push_id"], **data}
    elif kind == "push_manifest":
        data = {"type": "manifest", "manifest": data}
    elif kind == "push_chunk":
        data = {"type": "chunk", **data}
    return {
        "v": 1,
        "id": msg.id,
        "kind": V1_KIND[kind],
        "device_id": msg.device_id,
        "ts": msg.ts,
        "data": data,
    }
