"""The machine-readable contract is generated from the message classes and shipped as generated:
the JSON Schema in the package, docs/asyncapi.yaml and docs/protocol.md.  Real messages (the
examples the docs show, captured from a running agent and coordinator) decode and validate."""

from __future__ import annotations

import json
import os

import jsonschema
import pytest
import yaml
from hypothesis import given, settings
from hypothesis import strategies as st
from wire import schema_errors

from agent.protocol import messages, schema
from agent.protocol.errors import ProtocolError

pytestmark = pytest.mark.portable  # runs under arm64 emulation too (.ci/arm64)

DOCS = os.path.join(os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__)))), "docs")
REGENERATE = "regenerate with: python -m agent.protocol.schema --write"


def read(name: str) -> str:
    with open(os.path.join(DOCS, name), encoding="utf-8") as fh:
        return fh.read()


def examples() -> dict:
    return json.loads(read("protocol-examples.json"))


def test_the_shipped_schema_is_what_the_classes_generate():
    assert schema.load() == schema.document(), REGENERATE
    jsonschema.Draft202012Validator.check_schema(schema.load())


def test_the_docs_are_what_the_classes_generate():
    assert read("asyncapi.yaml") == schema.asyncapi_yaml(), REGENERATE
    assert read("protocol.md") == schema.render(examples()), REGENERATE


def test_every_kind_has_a_real_example_that_decodes_and_validates():
    found = examples()
    assert set(found) == set(messages.BY_KIND)
    for kind, example in found.items():
        raw = json.dumps(example).encode()
        assert messages.decode(raw, messages.BY_KIND[kind].TOPIC).kind == kind
        assert schema_errors(raw) == []
        jsonschema.validate(example, schema.for_kind(kind))


def test_the_asyncapi_document_names_every_topic_and_resolves_every_reference():
    doc = yaml.safe_load(read("asyncapi.yaml"))
    assert doc["asyncapi"] == "3.0.0" and set(doc["channels"]) == {
        "status",
        "health",
        "results",
        "acks",
        "jobs",
        "models",
    }
    assert doc["channels"]["acks"]["address"] == "fleetbench/v1/devices/{device_id}/acks"
    assert {op["action"] for op in doc["operations"].values()} == {"send", "receive"}

    def resolve(ref: str):
        node = doc
        for part in ref.lstrip("#/").split("/"):
            node = node[part]
        return node

    refs = []

    def walk(node):
        if isinstance(node, dict):
            if "$ref" in node:
                refs.append(node["$ref"])
            for value in node.values():
                walk(value)
        elif isinstance(node, list):
            for value in node:
                walk(value)

    walk(doc)
    assert refs and all(resolve(r) for r in refs)
    # a message's payload schema, taken out of the AsyncAPI document, validates the real example
    payload = {
        **resolve(doc["components"]["messages"]["job"]["payload"]["$ref"]),
        "components": doc["components"],
    }
    jsonschema.validate(examples()["job"], payload)


def test_a_message_the_schema_refuses_is_refused_by_decode_too():
    bad = {**examples()["job"], "data": {**examples()["job"]["data"], "settings": {"runs": 0}}}
    assert schema_errors(json.dumps(bad).encode())
    with pytest.raises(ProtocolError, match="runs"):
        messages.decode(json.dumps(bad).encode(), "jobs")


JSON = st.recursive(
    st.none()
    | st.booleans()
    | st.integers(-(2**70), 2**70)
    | st.floats(allow_nan=False, allow_infinity=False)
    | st.text(max_size=20),
    lambda inner: st.lists(inner, max_size=4) | st.dictionaries(st.text(max_size=10), inner, max_size=4),
    max_leaves=20,
)


@settings(max_examples=200, deadline=None)
@given(kind=st.sampled_from(sorted(messages.BY_KIND)), field=st.text(max_size=12), value=JSON)
def test_what_decode_accepts_the_schema_accepts(kind, field, value):
    """The two readers agree: a message decode takes (here, a real one with a field changed or
    added anywhere in its data) is one the JSON Schema takes."""
    example = json.loads(json.dumps(examples()[kind]))
    example["data"][field] = value
    raw = json.dumps(example).encode()
    try:
        messages.decode(raw, messages.BY_KIND[kind].TOPIC)
    except ProtocolError:
        return
    assert schema_errors(raw) == []
