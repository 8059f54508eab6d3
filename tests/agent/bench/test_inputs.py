from __future__ import annotations

import numpy as np
import pytest
from hypothesis import given
from hypothesis import strategies as st

from agent.bench.inputs import (
    TensorSpec,
    make_inputs,
    parse_shape_arg,
    parse_shape_args,
    resolve_shapes,
)
from agent.common.errors import UsageError


def test_parse_shape():
    assert parse_shape_arg("data=1x3x224x224") == ("data", (1, 3, 224, 224))
    assert parse_shape_arg("a=b=2X3") == ("a=b", (2, 3))  # names may contain '='
    assert parse_shape_arg("x=7") == ("x", (7,))


@pytest.mark.parametrize("text", ["data", "=1x2", "data=", "data=1xAx3", "data=0x3", "data=1x-2", "d=1xx2"])
def test_bad_shapes_name_the_argument(text):
    with pytest.raises(UsageError, match="--shape"):
        parse_shape_arg(text)


def test_duplicate_shape_names():
    with pytest.raises(UsageError, match="twice"):
        parse_shape_args(["x=1x2", "x=1x3"])


@given(st.text(max_size=40))
def test_shape_parser_never_crashes(text):
    try:
        name, shape = parse_shape_arg(text)
    except UsageError:
        return
    assert name and all(d > 0 for d in shape)


SPECS = (TensorSpec("x", ("N", 3, 8, 8), "float32"), TensorSpec("ids", (1, 5), "int64"))


def test_dynamic_dims_need_a_shape():
    with pytest.raises(UsageError, match=r"--shape x=1x3x8x8"):
        resolve_shapes(SPECS, {}, "'m.onnx'")


def test_resolve_with_override():
    shapes = resolve_shapes(SPECS, {"x": (4, 3, 8, 8)}, "m")
    assert shapes == {"x": (4, 3, 8, 8), "ids": (1, 5)}


@pytest.mark.parametrize("override,match", [
    ({"y": (1,)}, "inputs are: x"),
    ({"x": (1, 3, 8)}, "3 dimensions"),
    ({"x": (1, 4, 8, 8)}, "does not match"),
])  # fmt: skip
def test_bad_overrides(override, match):
    with pytest.raises(UsageError, match=match):
        resolve_shapes(SPECS, override, "m")


def test_inputs_are_seeded_and_typed():
    specs = [
        TensorSpec("f", (2, 3), "float32"),
        TensorSpec("i", (4,), "int64"),
        TensorSpec("q", (8,), "uint8"),
        TensorSpec("b", (3,), "bool"),
    ]
    shapes = {s.name: s.shape for s in specs}
    a = make_inputs(specs, shapes, seed=7)
    b = make_inputs(specs, shapes, seed=7)
    c = make_inputs(specs, shapes, seed=8)
    for s in specs:
        assert a[s.name].dtype == np.dtype(s.dtype)
        assert a[s.name].shape == s.shape
        np.testing.assert_array_equal(a[s.name], b[s.name])
    assert not np.array_equal(a["f"], c["f"])
    assert ((a["i"] >= 0) & (a["i"] < 10)).all()


def test_unsupported_input_type():
    with pytest.raises(UsageError, match="cannot generate"):
        make_inputs([TensorSpec("s", (1,), "complex64")], {"s": (1,)})
