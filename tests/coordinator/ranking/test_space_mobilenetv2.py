"""The MobileNetV2-style space in the ranking core: grammar, encodings, sampling, prediction."""

from __future__ import annotations

import numpy as np
import pytest
from hypothesis import given
from hypothesis import strategies as st

from agent.materialize.mobilenetv2 import DEPTHS, EXPANSIONS, KERNELS, format_arch, parse_arch
from coordinator.errors import ArchError
from coordinator.ranking.fill import fill_table
from coordinator.ranking.monotonicity import spearman
from coordinator.ranking.spaces import get_space
from coordinator.ranking.tables import LatencyTable

pytestmark = pytest.mark.portable  # runs under arm64 emulation too (.ci/arm64)

SPACE = get_space("mobilenetv2")


@st.composite
def archs(draw):
    depths = draw(st.lists(st.sampled_from(DEPTHS), min_size=5, max_size=5))
    n = sum(depths)
    kernels = draw(st.lists(st.sampled_from(KERNELS), min_size=n, max_size=n))
    expansions = draw(st.lists(st.sampled_from(EXPANSIONS), min_size=n, max_size=n))
    return tuple(depths), tuple(kernels), tuple(expansions)


@given(archs())
def test_format_parse_round_trip(arch):
    assert parse_arch(format_arch(*arch)) == arch


def test_encodings():
    arch = format_arch((2, 2, 2, 2, 2), (3,) * 9 + (7,), (6,) * 10)
    enc = SPACE.encode_all([arch])
    assert enc["onehot"].shape == (1, 20 * 6 + 15)
    assert enc["onehot"].sum() == 10 * 2 + 5  # kernel + expansion per block, one depth per stage
    assert enc["counts"][0, 0] == 10  # ten of the twenty slots unused
    assert enc["counts"][0].sum() == 20
    np.testing.assert_array_equal(enc["alive"], enc["onehot"])
    for kind in SPACE.kinds:
        np.testing.assert_array_equal(SPACE.encode([arch], kind), enc[kind])


def test_sample_is_valid_and_distinct():
    archs = SPACE.sample(300, np.random.default_rng(0))
    assert len(set(archs)) == 300
    SPACE.validate(archs)
    with pytest.raises(ArchError, match="line 3"):
        SPACE.validate(["d:22222-k:3333333333-e:3333333333"] * 2 + ["d:9"], lines=[1, 2, 3])


def test_a_new_device_is_predicted_from_a_few_samples():
    """Synthetic devices whose latency is a per-(block, kernel, expansion) cost table: the
    predictors reach a new device from 15 measurements through the encodings."""
    rng = np.random.default_rng(1)
    archs = SPACE.sample(400, rng)
    x = SPACE.encode(archs, "onehot")
    base = rng.uniform(0.5, 2.0, x.shape[1])
    devices = [np.exp(np.log(x @ (base * rng.uniform(0.7, 1.3, x.shape[1])) + 1.0)) for _ in range(4)]
    ms = np.column_stack(devices)
    truth = ms[:, 3].copy()
    known = rng.choice(len(archs), 15, replace=False)
    ms[:, 3] = np.nan
    ms[known, 3] = truth[known]
    filled, _ = fill_table(LatencyTable(tuple(archs), ("a", "b", "c", "new"), ms), SPACE, with_error=False)
    assert spearman(filled.ms[:, 3], truth) > 0.9
