"""Narrowing keeps the heaviest filters with their trained values, and computes what the full network
computes when the removed channels are silenced (their batch norm set to output zero)."""

from __future__ import annotations

import numpy as np
import pytest

torch = pytest.importorskip("torch")

from agent.materialize import families as fam  # noqa: E402
from agent.materialize.weights import seeded  # noqa: E402
from coordinator.prune.slicing import filter_norms, keep_largest, narrow  # noqa: E402
from coordinator.prune.torchnet import PlanNet  # noqa: E402


def _silenced(plan, params, kept):
    """The full network's weights with every removed channel's batch norm (and, in MobileNetV1, the
    depthwise one reading it) set to output zero: after the ReLU those channels are zero."""
    out = {k: v.copy() for k, v in params.items()}
    for op in plan.ops:
        if isinstance(op, fam.ConvOp) and op.width is not None:
            gone = np.setdiff1d(np.arange(op.cout), kept[op.width])
            out[f"{op.name}:gamma"][gone] = 0.0
            out[f"{op.name}:beta"][gone] = 0.0
    return out


@pytest.mark.parametrize("family, resolution", [("resnet20", 16), ("resnet50", 32), ("mobilenetv1", 32)])
def test_a_narrowed_network_computes_what_the_silenced_full_one_does(family, resolution):
    plan = fam.plan(family, "x0.25", classes=4, resolution=resolution)
    params = seeded(plan, 5)
    rng = np.random.default_rng(0)
    widths = [int(rng.integers(1, w + 1)) for w in plan.widths]
    kept = keep_largest(plan, params, widths)
    small, small_params = narrow(plan, params, kept)
    assert small.widths == tuple(widths)
    x = torch.from_numpy(rng.standard_normal((3, 3, resolution, resolution)).astype(np.float32))
    with torch.no_grad():
        a = PlanNet(small).load_params(small_params).eval()(x).numpy()
        b = PlanNet(plan).load_params(_silenced(plan, params, kept)).eval()(x).numpy()
    assert np.allclose(a, b, rtol=1e-4, atol=1e-5 * float(np.abs(b).max()))


def test_the_heaviest_filters_are_kept_with_their_values():
    plan = fam.plan("resnet20")
    params = seeded(plan, 1)
    norms = filter_norms(plan, params)
    kept = keep_largest(plan, params, (3,) * 9)
    for i, idx in kept.items():
        assert list(idx) == sorted(np.argsort(-norms[i])[:3])
    _, small_params = narrow(plan, params, kept)
    assert np.array_equal(small_params["s0b0c1:w"], params["s0b0c1:w"][kept[0]])
    assert np.array_equal(small_params["s0b0c2:w"], params["s0b0c2:w"][:, kept[0]])
    assert np.array_equal(small_params["s0b0c1:mean"], params["s0b0c1:mean"][kept[0]])
    with pytest.raises(ValueError, match="layer 1 has 16 filters; cannot keep 17"):
        keep_largest(plan, params, (17,) + (3,) * 8)
