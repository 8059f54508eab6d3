"""The contract for machines and people, generated from the message classes (never by hand).

    python -m agent.protocol.schema                the JSON Schema of every message (stdout)
    python -m agent.protocol.schema --asyncapi     the AsyncAPI 3 document of the topics (YAML)
    python -m agent.protocol.schema --write        rewrite the shipped schema.json, and
                                                   docs/asyncapi.yaml and docs/protocol.md

``schema.json`` ships in the package (``agent/protocol/schema.json``); the tests check
that it, docs/asyncapi.yaml and docs/protocol.md are what these classes generate, that
every real message a running agent and coordinator exchange validates against it (with
the ``jsonschema`` library), and that docs/protocol-examples.json, the real messages the
docs show, still decode.  Refresh those examples with a capture run of the loop test:
``FLEETBENCH_CAPTURE_EXAMPLES=docs/protocol-examples.json python -m pytest
tests/coordinator/test_loop.py -k registration``, then ``--write``.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
from typing import Any, Optional

import msgspec

from agent import __version__
from agent.common.errors import UsageError
from agent.protocol import messages
from agent.protocol.messages import CLASSES, MAX_BYTES, READS, VERSION, kind_of
from agent.protocol.topics import COMMANDS, ROOT

SCHEMA_ID = f"urn:fleetbench:messages:{VERSION}"
HERE = os.path.dirname(os.path.abspath(__file__))
SCHEMA_FILE = os.path.join(HERE, "schema.json")

#: what each kind is for, for the docs (the envelope classes say what their data is)
PURPOSE = {
    "status": "retained birth (`online`) on every connect, and the Last Will (`offline`) the broker "
    "publishes when the device dies or loses its network",
    "health": "the device's state every `health.interval_s`: sensors, degradation index, outbox, "
    "the job running",
    "result": "one measured item of a job: a benchmark result record (docs/results.md) or a lookup table",
    "job_ack": "the device's answers to a job: accepted or rejected (with the reason), progress, the end",
    "push_ack": "the device's answers to a model push: what it still misses, installed, rolled back, "
    "rejected",
    "job": "work for one device: models, search-space architectures, a layer lookup table, settings; "
    "sealed for the device (device_id, seq, expires_at) and signed by the coordinator's key",
    "key": "a new coordinator key, sealed for the device and signed by the key it pins now: a key rotation",
    "push_manifest": "a model push: what the coordinator signed (name, version, size, sha256, each "
    "chunk's digest, the release, the device it is for, its expiry)",
    "push_chunk": "a piece of a pushed model file, at most 64 KiB before base64",
}
#: (QoS, retained) per topic kind
DELIVERY = {
    "status": (1, True),
    "health": (1, False),
    "results": (1, False),
    "acks": (1, False),
    "jobs": (1, False),
    "models": (1, False),
}


def _components(ref_template: str) -> tuple[list[dict[str, Any]], dict[str, Any]]:
    schemas, components = msgspec.json.schema_components(CLASSES, ref_template=ref_template)
    # as JSON has it (tuples as lists), so the shipped file compares equal to what is generated
    return _null_last(json.loads(json.dumps(schemas))), _null_last(json.loads(json.dumps(components)))


def _null_last(node: Any) -> Any:
    """``anyOf`` alternatives with ``null`` last, whatever order the Python version gives an
    Optional's arms in (3.9 puts None first): one shipped document for every Python."""
    if isinstance(node, list):
        return [_null_last(v) for v in node]
    if not isinstance(node, dict):
        return node
    out = {k: _null_last(v) for k, v in node.items()}
    if isinstance(out.get("anyOf"), list):
        out["anyOf"] = sorted(out["anyOf"], key=lambda alt: alt == {"type": "null"})
    return out


def document() -> dict[str, Any]:
    """One JSON Schema (draft 2020-12) for every message: ``oneOf`` the kinds, by ``kind``."""
    _, components = _components("#/$defs/{name}")
    return {
        "$schema": "https://json-schema.org/draft/2020-12/schema",
        "$id": SCHEMA_ID,
        "title": f"fleetbench messages, version {VERSION}",
        "description": (
            f"Every message between fleetbench devices and their coordinator (at most {MAX_BYTES} bytes). "
            "Generated from agent/protocol; see docs/protocol.md."
        ),
        "oneOf": [{"$ref": f"#/$defs/{cls.__name__}"} for cls in CLASSES],
        "$defs": components,
    }


def for_kind(kind: str) -> dict[str, Any]:
    """The JSON Schema of one kind of message."""
    doc = document()
    return {
        **{k: v for k, v in doc.items() if k != "oneOf"},
        "$ref": f"#/$defs/{messages.BY_KIND[kind].__name__}",
    }


def load() -> dict[str, Any]:
    """The schema document shipped with the package."""
    with open(SCHEMA_FILE, encoding="utf-8") as fh:
        return dict(json.load(fh))


def asyncapi() -> dict[str, Any]:
    """The AsyncAPI 3.0 document of the topics, from a device's point of view."""
    _, components = _components("#/components/schemas/{name}")
    channels: dict[str, Any] = {}
    operations: dict[str, Any] = {}
    kinds_by_topic: dict[str, list[str]] = {}
    for cls in CLASSES:
        kinds_by_topic.setdefault(cls.TOPIC, []).append(kind_of(cls))
    for topic, kinds in kinds_by_topic.items():
        qos, retain = DELIVERY[topic]
        channels[topic] = {
            "address": f"{ROOT}/devices/{{device_id}}/{topic}",
            "title": topic,
            "parameters": {
                "device_id": {"description": "the device's id: 1-64 letters, digits, '.', '_' or '-'"}
            },
            "messages": {k: {"$ref": f"#/components/messages/{k}"} for k in kinds},
            "bindings": {"mqtt": {"bindingVersion": "0.2.0"}},
        }
        receives = topic in COMMANDS
        operations[("receive_" if receives else "send_") + topic] = {
            "action": "receive" if receives else "send",
            "channel": {"$ref": f"#/channels/{topic}"},
            "summary": (
                "the coordinator sends it; the device subscribes"
                if receives
                else "the device publishes it; the coordinator subscribes (a shared subscription)"
            ),
            "messages": [{"$ref": f"#/channels/{topic}/messages/{k}"} for k in kinds],
            "bindings": {"mqtt": {"qos": qos, "retain": retain, "bindingVersion": "0.2.0"}},
        }
    message_defs = {
        kind_of(cls): {
            "name": kind_of(cls),
            "title": kind_of(cls).replace("_", " "),
            "summary": PURPOSE[kind_of(cls)],
            "contentType": "application/json",
            "payload": {"$ref": f"#/components/schemas/{cls.__name__}"},
        }
        for cls in CLASSES
    }
    return {
        "asyncapi": "3.0.0",
        "info": {
            "title": "fleetbench",
            "version": f"{__version__} (messages version {VERSION})",
            "description": (
                "Devices (the fleetbench agent, or the firmware bridge for a microcontroller) and the "
                "coordinator over MQTT 3.1.1 or 5.  Every message is JSON with an envelope (kind, v, id, "
                "device_id, ts, data); see docs/protocol.md for the rules and examples."
            ),
        },
        "defaultContentType": "application/json",
        "servers": {
            "broker": {
                "host": "hub.local:1883",
                "protocol": "mqtt",
                "protocolVersion": "3.1.1",
                "description": "any MQTT broker the devices and the coordinator share",
            },
        },
        "channels": channels,
        "operations": operations,
        "components": {"messages": message_defs, "schemas": components},
    }


def asyncapi_yaml() -> str:
    try:
        import yaml  # PyYAML (the dev extra): only the docs need it
    except ImportError:
        raise UsageError("the AsyncAPI document is YAML and needs PyYAML: pip install pyyaml") from None

    head = "# Generated by `python -m agent.protocol.schema --write` from agent/protocol; do not edit.\n"
    return head + yaml.safe_dump(asyncapi(), sort_keys=False, allow_unicode=True, width=100)


# -- docs/protocol.md --------------------------------------------------------------------


def _type(prop: dict[str, Any]) -> str:
    """A property's type in words: ``string``, ``integer >= 1``, ``array of ArchItem``, ..."""
    if "$ref" in prop:
        name = prop["$ref"].rsplit("/", 1)[-1]
        return f"[{name}](#{name.lower()})"
    if "anyOf" in prop:
        kinds = [_type(p) for p in prop["anyOf"]]
        return " or ".join(kinds)
    if "enum" in prop:
        return " \\| ".join(json.dumps(v) for v in prop["enum"])
    t = prop.get("type", "any")
    if t == "array":
        items = prop.get("items") or prop.get("prefixItems")
        if isinstance(items, list):
            return "[" + ", ".join(_type(i) for i in items) + "]"
        return f"array of {_type(items or {})}"
    if t == "object" and "additionalProperties" in prop and isinstance(prop["additionalProperties"], dict):
        return f"object of {_type(prop['additionalProperties'])}"
    bounds = []
    for key, op in (
        ("minimum", ">="),
        ("exclusiveMinimum", ">"),
        ("maximum", "<="),
        ("maxLength", "length <="),
    ):
        if key in prop:
            bounds.append(f"{op} {prop[key]:g}" if isinstance(prop[key], float) else f"{op} {prop[key]}")
    if "pattern" in prop:
        bounds.append(f"`{prop['pattern']}`")
    return " ".join([str(t), *bounds])


def _table(name: str, schema: dict[str, Any]) -> list[str]:
    lines = [f"#### {name}", ""]
    if schema.get("description"):
        lines += [schema["description"].replace("``", "`"), ""]
    required = set(schema.get("required", ()))
    lines += ["| field | type | |", "|---|---|---|"]
    for field, prop in schema.get("properties", {}).items():
        need = "required" if field in required else f"default {json.dumps(prop.get('default'))}"
        note = prop.get("description", "")
        lines.append(f"| `{field}` | {_type(prop)} | {need}{'; ' + note if note else ''} |")
    extra = (
        "unknown fields are refused"
        if schema.get("additionalProperties") is False
        else "unknown fields are ignored"
    )
    return [*lines, "", extra + ".", ""]


def render(examples: dict[str, Any]) -> str:
    """docs/protocol.md: the rules, the topics, and each message with a real example and its fields."""
    _, components = _components("#/$defs/{name}")
    rules = (messages.__doc__ or "").split("The rules, in one place:", 1)[1].strip()
    out = [
        f"# The fleetbench wire protocol (messages version {VERSION})",
        "",
        "Generated by `python -m agent.protocol.schema --write` from the message classes in",
        "`agent/protocol/`; do not edit by hand.  The same contract as a JSON Schema ships in the package",
        "(`agent/protocol/schema.json`, `python -m agent.protocol.schema`), and the topics as an",
        "AsyncAPI 3 document ([asyncapi.yaml](asyncapi.yaml)).  The examples are real messages,",
        "captured from a running agent and coordinator.",
        "",
        "## Topics",
        "",
        "| topic | kinds | published by | QoS | retained |",
        "|---|---|---|---|---|",
    ]
    kinds_by_topic: dict[str, list[str]] = {}
    for cls in CLASSES:
        kinds_by_topic.setdefault(cls.TOPIC, []).append(kind_of(cls))
    for topic, kinds in kinds_by_topic.items():
        qos, retain = DELIVERY[topic]
        who = "the coordinator" if topic in COMMANDS else "the device"
        out.append(f"| `{ROOT}/devices/DEVICE_ID/{topic}` | {', '.join(f'[{k}](#{k})' for k in kinds)} | "
                   f"{who} | {qos} | {'yes' if retain else 'no'} |")  # fmt: skip
    out += [
        "",
        "## The envelope and its rules",
        "",
        "```json",
        '{"kind": "result", "v": 2, "id": "result:j-42:mobilenet.tflite", "device_id": "shed-pi-3",',
        ' "ts": 1763790000.0, "data": {...}}',
        "```",
        "",
        "The rules, in one place:",
        "",
        rules,
        "",
        f"Versions this release reads: {', '.join(map(str, READS))}.",
        "",
        "## Signed commands",
        "",
        *_signing_text(),
        "",
        "## Messages",
        "",
    ]
    described: set[str] = set()
    for cls in CLASSES:
        kind = kind_of(cls)
        data_name = components[cls.__name__]["properties"]["data"]["$ref"].rsplit("/", 1)[-1]
        out += [f"### {kind}", "", f"On `{cls.TOPIC}`: {PURPOSE[kind]}.", ""]
        example = examples.get(kind)
        if example is not None:
            out += ["A real one:", "", "```json", _show(example), "```", ""]
        out += _tables(data_name, components, described)
    return "\n".join(out).rstrip() + "\n"


def _signing_text() -> list[str]:
    """How commands are sealed and signed, from ``agent.protocol.signing``'s own words."""
    import inspect

    from agent.protocol import signing
    from agent.protocol.push import Manifest

    intro = (signing.__doc__ or "").split("\n", 1)[1].strip()
    covered = inspect.getdoc(signing.canonical) or ""
    manifest = inspect.getdoc(Manifest.signed_bytes) or ""
    return [intro, "", covered, "", "A push manifest: " + manifest[0].lower() + manifest[1:]]


def _tables(name: str, components: dict[str, Any], described: set[str]) -> list[str]:
    """The field tables of ``name`` and of every record it refers to, each once."""
    if name in described or name not in components:
        return []
    described.add(name)
    lines = _table(name, components[name])
    refs = json.dumps(components[name]).split('"$ref": "#/$defs/')[1:]
    for ref in refs:
        lines += _tables(ref.split('"', 1)[0], components, described)
    return lines


def _show(example: Any) -> str:
    """An example as readable JSON; a long base64 chunk cut to its start."""
    data = example.get("data") if isinstance(example, dict) else None
    if isinstance(data, dict) and isinstance(data.get("data"), str) and len(data["data"]) > 80:
        example = {**example, "data": {**data, "data": data["data"][:76] + "...(base64, cut here)"}}
    text = json.dumps(example, indent=1)
    return text if len(text) < 6000 else text[:6000] + "\n ...(cut here)"


def main(argv: Optional[list[str]] = None) -> int:
    ap = argparse.ArgumentParser(prog="python -m agent.protocol.schema", description=__doc__,
                                 formatter_class=argparse.RawDescriptionHelpFormatter)  # fmt: skip
    ap.add_argument("--asyncapi", action="store_true", help="the AsyncAPI 3 document instead (YAML)")
    ap.add_argument(
        "--write", action="store_true", help="rewrite schema.json, docs/asyncapi.yaml, docs/protocol.md"
    )
    args = ap.parse_args(argv)
    try:
        return _run(args)
    except UsageError as err:
        print(f"python -m agent.protocol.schema: error: {err}", file=sys.stderr)
        return err.exit_code


def _run(args: argparse.Namespace) -> int:
    if args.write:
        docs = os.path.join(os.path.dirname(os.path.dirname(HERE)), "docs")
        with open(SCHEMA_FILE, "w", encoding="utf-8") as fh:
            fh.write(json.dumps(document(), indent=1) + "\n")
        with open(os.path.join(docs, "asyncapi.yaml"), "w", encoding="utf-8") as fh:
            fh.write(asyncapi_yaml())
        with open(os.path.join(docs, "protocol-examples.json"), encoding="utf-8") as fh:
            examples = json.load(fh)
        with open(os.path.join(docs, "protocol.md"), "w", encoding="utf-8") as fh:
            fh.write(render(examples))
        print(f"wrote {SCHEMA_FILE}, {docs}/asyncapi.yaml and {docs}/protocol.md", file=sys.stderr)
        return 0
    print(asyncapi_yaml() if args.asyncapi else json.dumps(document(), indent=1))
    return 0


if __name__ == "__main__":
    sys.exit(main())
