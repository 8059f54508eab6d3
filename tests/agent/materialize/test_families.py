"""The prunable families: structure, the residual rule, FLOPs and parameters, width specs, and the
width lookup table's coverage of the grid.  No runtime needed: arm64 CI runs these too."""

from __future__ import annotations

import numpy as np
import pytest

from agent.materialize import families as fam
from agent.materialize import lut
from agent.materialize.weights import seeded, to_network

GRID = (25, 50, 75, 100)
pytestmark = pytest.mark.portable


@pytest.mark.parametrize(
    "family, prunable, macs_m, params_m",
    [  # the published figures: He et al. 2016 (CIFAR ResNets, with 1x1 projections here), torchvision's
        # resnet50 (4.09 GMACs, 25.56 M), MobileNetV1 (Howard et al. 2017: 569 M mult-adds, 4.2 M)
        ("resnet20", 9, 40.8, 0.27),
        ("resnet56", 27, 125.7, 0.86),
        ("resnet50", 32, 4089.2, 25.56),
        ("mobilenetv1", 14, 568.7, 4.23),
    ],
)
def test_each_family_has_its_published_size(family, prunable, macs_m, params_m):
    plan = fam.plan(family)
    assert len(plan.widths) == len(fam.full_widths(family)) == prunable
    assert plan.macs / 1e6 == pytest.approx(macs_m, abs=0.1)
    assert plan.params / 1e6 == pytest.approx(params_m, abs=0.01)
    weights = seeded(plan)  # the parameters counted are the arrays there are
    assert (
        sum(v.size for k, v in weights.items() if k.endswith((":w", ":gamma", ":beta", ":b"))) == plan.params
    )


def test_the_residual_rule_never_narrows_channels_an_addition_ties():
    """Narrowing every prunable layer changes no block output, no shortcut and no addition."""
    for family in ("resnet20", "resnet56", "resnet50"):
        full, thin = fam.plan(family), fam.plan(family, "x0.25")
        fixed_full = {op.name: op.cout for op in full.ops if isinstance(op, fam.ConvOp) and op.width is None}
        fixed_thin = {op.name: op.cout for op in thin.ops if isinstance(op, fam.ConvOp) and op.width is None}
        assert fixed_full == fixed_thin
        adds = [(op.name, op.channels) for op in full.ops if isinstance(op, fam.AddOp)]
        assert adds == [(op.name, op.channels) for op in thin.ops if isinstance(op, fam.AddOp)]
        # what is prunable: the first convolution of a basic block, the first two of a bottleneck
        names = [op.name[-2:] for op in full.ops if isinstance(op, fam.ConvOp) and op.width is not None]
        assert set(names) == ({"c1"} if family != "resnet50" else {"c1", "c2"})
    # MobileNetV1: the stem and the pointwise convolutions; each depthwise one keeps its input's channels
    plan = fam.plan("mobilenetv1", ",".join(str(3 + i) for i in range(14)))
    dws = [op for op in plan.ops if isinstance(op, fam.ConvOp) and op.depthwise]
    assert [op.cout for op in dws] == [op.cin for op in dws] == list(range(3, 16))[:13]
    assert plan.ops[-1].cin == 16  # the classifier reads the last pointwise layer's channels


@pytest.mark.parametrize(
    "spec, widths",
    [
        ("full", (16, 16, 16, 32, 32, 32, 64, 64, 64)),
        ("", (16, 16, 16, 32, 32, 32, 64, 64, 64)),
        ("x0.5", (8, 8, 8, 16, 16, 16, 32, 32, 32)),
        ("x0.01", (1,) * 9),
        ("x2", (32, 32, 32, 64, 64, 64, 128, 128, 128)),
        ("1, 2,3,4,5,6,7,8,9", tuple(range(1, 10))),
    ],
)
def test_width_specs(spec, widths):
    assert fam.parse_widths("resnet20", spec) == widths
    assert fam.parse_widths("resnet20", fam.format_widths(widths)) == widths


@pytest.mark.parametrize(
    "spec, error",
    [
        ("1,2,3", "resnet20 has 9 prunable layers; the spec gives 3 widths"),
        ("0,16,16,32,32,32,64,64,64", "width 1 (0) must be from 1 to 32 (full: 16)"),
        ("16,16,16,32,32,32,64,64,129", "width 9 (129) must be from 1 to 128 (full: 64)"),
        ("x0", "must be above 0 and at most 2"),
        ("x3", "must be above 0 and at most 2"),
        ("xhalf", "must read xR with a number R"),
        ("half", "must be 'full', a multiplier like x0.5, or 9 channel counts"),
        ("16;16", "must be 'full'"),
    ],
)
def test_a_width_spec_that_does_not_fit_the_family_says_why(spec, error):
    with pytest.raises(ValueError, match=error.replace("(", r"\(").replace(")", r"\)")):
        fam.parse_widths("resnet20", spec)


def test_options_each_family_takes():
    fam.plan("resnet20", resolution=8)
    fam.plan("mobilenetv1", resolution=128, classes=5)
    with pytest.raises(ValueError, match="resnet56's resolution must be a multiple of 4 from 8"):
        fam.plan("resnet56", resolution=30)
    with pytest.raises(ValueError, match="mobilenetv1's resolution must be a multiple of 32"):
        fam.plan("mobilenetv1", resolution=100)
    with pytest.raises(ValueError, match="unknown family 'vgg16'"):
        fam.full_widths("vgg16")


@pytest.mark.parametrize("family", fam.FAMILIES)
def test_the_keys_of_a_plan_are_the_layers_of_its_network(family):
    plan = fam.plan(family, "x0.5", resolution=64 if family in ("resnet50", "mobilenetv1") else 16)
    assert lut.plan_keys(plan) == lut.decompose(to_network(plan, seeded(plan)))


@pytest.mark.parametrize("family", fam.FAMILIES)
def test_the_cover_specs_meet_every_layer_of_every_spec_on_the_grid(family):
    uses: set = set()
    for widths in fam.cover_specs(family, GRID):
        uses |= set(lut.plan_keys(fam.plan(family, widths)))
    assert len(uses) == fam.table_size(family, GRID)
    for spec in fam.sample(family, 40, np.random.default_rng(5), GRID):
        assert set(lut.plan_keys(fam.plan(family, spec))) <= uses, spec
    # ... which a spec off the grid is not (that is what interpolation is for)
    off = fam.plan(family, ",".join(str(max(1, w - 1)) for w in fam.full_widths(family)))
    assert not set(lut.plan_keys(off)) <= uses


def test_sampled_width_specs_are_spread_from_thin_to_full_and_on_the_grid():
    specs = fam.sample("resnet56", 30, np.random.default_rng(0), GRID)
    grid = fam.grid_widths("resnet56", GRID)
    ratios = [fam.plan("resnet56", s).macs / fam.plan("resnet56").macs for s in specs]
    assert len(set(specs)) == 30 and min(ratios) < 0.4 and max(ratios) > 0.7
    assert all(w in grid[i] for s in specs for i, w in enumerate(fam.parse_widths("resnet56", s)))


def test_a_family_builds_without_any_runtime():
    """What the agent does on a board to time a width spec: plan and network, numpy only."""
    plan = fam.plan("mobilenetv1", "x0.25", resolution=64)
    net = to_network(plan, seeded(plan))
    assert net.output == "fc" and len(lut.decompose(net)) == len(lut.plan_keys(plan))
