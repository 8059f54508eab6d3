from __future__ import annotations

import contextlib

import numpy as np
import pytest
from hypothesis import given
from hypothesis import strategies as st

from coordinator.errors import ArchError, UnknownNameError
from coordinator.ranking.spaces import get_space
from coordinator.ranking.spaces.nasbench201 import OPS, alive_edges, format_arch, parse_arch

pytestmark = pytest.mark.portable  # runs under arm64 emulation too (.ci/arm64)

SPACE = get_space("nas-bench-201")


@given(st.lists(st.sampled_from(OPS), min_size=6, max_size=6))
def test_format_parse_round_trip(ops):
    assert parse_arch(format_arch(ops)) == tuple(ops)


@given(st.text(max_size=120))
def test_parser_only_raises_value_error(text):
    with contextlib.suppress(ValueError):
        parse_arch(text)


@pytest.mark.parametrize("arch,match", [
    ("nor_conv_3x3~0|+|none~0|none~1|+|none~0|none~1|none~2|", "start and end"),
    ("|nor_conv_3x3~0|+|none~0|none~1|", "2 node groups"),
    ("|conv5x5~0|+|none~0|none~1|+|none~0|none~1|none~2|", "unknown operation 'conv5x5'"),
    ("|nor_conv_3x3~1|+|none~0|none~1|+|none~0|none~1|none~2|", "op~0"),
    ("|nor_conv_3x3~0|+|none~0|+|none~0|none~1|none~2|", "node 2 must have 2"),
])  # fmt: skip
def test_malformed_arch_strings(arch, match):
    with pytest.raises(ValueError, match=match):
        parse_arch(arch)


def test_validate_names_line_and_text():
    good = format_arch(["skip_connect"] * 6)
    with pytest.raises(ArchError, match=r"'t.csv', line 3: '\|bad\|' is not a nas-bench-201"):
        SPACE.validate([good, "|bad|"], source="'t.csv'", lines=[2, 3])


def test_dead_paths():
    # node 1 is reached, but nothing leads from it (or node 2) to the output except skip 0->3
    ops = ("nor_conv_3x3", "none", "nor_conv_1x1", "skip_connect", "none", "none")
    assert alive_edges(ops) == (False, False, False, True, False, False)
    # all paths through convs reach the output
    ops = ("nor_conv_3x3", "none", "nor_conv_1x1", "none", "none", "avg_pool_3x3")
    assert alive_edges(ops) == (True, False, True, False, False, True)
    # an edge from a node the input never reaches is dead even though it reaches the output
    ops = ("none", "none", "nor_conv_3x3", "skip_connect", "none", "nor_conv_1x1")
    assert alive_edges(ops) == (False, False, False, True, False, False)


def test_encodings():
    arch = format_arch(("nor_conv_3x3", "none", "nor_conv_1x1", "skip_connect", "none", "none"))
    enc = SPACE.encode_all([arch])
    assert enc["onehot"].shape == (1, 30) and enc["onehot"].sum() == 6
    assert enc["alive"].sum() == 1 and enc["alive"][0, 3 * 5 + OPS.index("skip_connect")] == 1
    assert enc["counts"].tolist() == [[3, 1, 1, 1, 0]]
    assert enc["alive_counts"].tolist() == [[0, 1, 0, 0, 0]]
    for kind in SPACE.kinds:
        np.testing.assert_array_equal(SPACE.encode([arch], kind), enc[kind])


def test_sample_is_valid_and_distinct():
    archs = SPACE.sample(200, np.random.default_rng(0))
    assert len(set(archs)) == 200
    SPACE.validate(archs)


def test_unknown_space():
    with pytest.raises(UnknownNameError, match="nas-bench-201"):
        get_space("darts")
