"""The three baselines meet their FLOPs target with inherited weights; the width table prices specs off
its grid by interpolation; NetAdapt follows a device's table."""

from __future__ import annotations

import numpy as np
import pytest

pytest.importorskip("torch")
pytest.importorskip("sklearn")

from pruning import cost, flops_table, trained

from agent.materialize import families as fam
from agent.materialize.lut import plan_keys, to_rows, write_csv
from agent.materialize.weights import seeded
from coordinator.prune.methods import FLOOR, NetAdaptSettings, PruneError, l1_widths, uniform_widths
from coordinator.prune.pipeline import prune
from coordinator.prune.widthlut import LutError, WidthLut


@pytest.fixture(scope="module")
def net():
    return trained()


@pytest.mark.parametrize("ratio", [0.3, 0.5, 0.8, 1.0])
@pytest.mark.parametrize("family", ["resnet56", "mobilenetv1"])
def test_uniform_takes_the_largest_single_ratio_that_meets_the_target(family, ratio):
    plan = fam.plan(family, resolution=32 if family == "resnet56" else 64)
    widths = uniform_widths(plan, ratio)
    assert len(set(round(w / f, 1) for w, f in zip(widths, plan.widths))) <= 2  # one ratio, rounded
    got = fam.plan(family, widths, plan.classes, plan.resolution).macs / plan.macs
    wider = tuple(w + 1 for w in widths)
    assert got <= ratio and (
        ratio == 1.0 or fam.plan(family, wider, plan.classes, plan.resolution).macs > ratio * plan.macs
    )


def test_l1_removes_the_least_important_filters_of_any_layer_first():
    plan = fam.plan("resnet20")
    params = seeded(plan, 3)
    # layer 5's second half is nearly dead: those filters go first, from that layer alone
    params["s1b1c1:w"][16:] *= 1e-3
    widths = l1_widths(plan, params, 0.97)
    assert widths[4] < 32 and widths[:4] + widths[5:] == plan.widths[:4] + plan.widths[5:]
    # ... and a deep cut keeps every layer at its floor or above
    deep = l1_widths(plan, params, 0.3)
    assert fam.plan("resnet20", deep).macs <= 0.3 * plan.macs
    assert all(w >= max(1, int(np.ceil(FLOOR * f))) for w, f in zip(deep, plan.widths))


def test_a_target_the_fixed_layers_forbid_is_refused_in_one_sentence():
    plan = fam.plan("resnet20")
    for how in (lambda: uniform_widths(plan, 0.01), lambda: l1_widths(plan, seeded(plan), 0.01)):
        with pytest.raises(PruneError, match=r"resnet20 cannot get to 0.01 of its FLOPs .*: the layers that"):
            how()
    with pytest.raises(PruneError, match=r"--flops 1.5 must be a share of the network's FLOPs"):
        prune(plan, seeded(plan), "l1", 1.5)
    with pytest.raises(PruneError, match="netadapt needs the device's width table"):
        prune(plan, seeded(plan), "netadapt", 0.5)


def test_the_width_table_is_exact_on_its_grid_and_interpolates_between(tmp_path):
    plan = fam.plan("resnet20")
    table = flops_table(plan)
    write_csv(str(tmp_path / "lut.csv"), to_rows(table, {}))
    lut = WidthLut.read(str(tmp_path / "lut.csv"))
    on_grid = fam.plan("resnet20", "x0.5")
    assert lut.predict_ms(on_grid) == pytest.approx(sum(cost(k) for k in plan_keys(on_grid)), rel=1e-4)
    # costs linear in each channel count are interpolated exactly off the grid, even deep below it
    for spec in ("13,5,9,30,17,20,40,63,2", "x0.9", "x0.1"):
        off = fam.plan("resnet20", spec)
        assert lut.predict_ms(off) == pytest.approx(sum(cost(k) for k in plan_keys(off)), rel=1e-3), spec


def test_a_width_table_that_does_not_fit_is_refused_in_one_sentence(tmp_path):
    plan = fam.plan("resnet20")
    write_csv(str(tmp_path / "lut.csv"), to_rows(flops_table(plan), {}))
    lut = WidthLut.read(str(tmp_path / "lut.csv"))
    with pytest.raises(LutError, match=r"has no conv layer of this shape .*: it was built for another"):
        lut.predict_ms(fam.plan("resnet20", resolution=64))
    (tmp_path / "bad.csv").write_text("arch,ms\nx,1\n")
    with pytest.raises(LutError, match="is not a lookup table written by fleetbench lut"):
        WidthLut.read(str(tmp_path / "bad.csv"))
    with pytest.raises(LutError, match=r"cannot read the lookup table .*gone.csv"):
        WidthLut.read(str(tmp_path / "gone.csv"))


def test_each_method_prunes_to_the_target_with_inherited_weights(net):
    plan, params, data = net
    lut = WidthLut(flops_table(plan))
    settings = NetAdaptSettings(step=0.1, short_batches=2)
    seen = {}
    for method in ("uniform", "l1", "netadapt"):
        # two epochs: after one, accuracy ranged 0.48-0.89 over seeds and machines; after two 0.88-0.96
        out = prune(plan, params, method, 0.5, lut, data, finetune_epochs=2, settings=settings)
        report = out.report()
        assert 0.4 < report["flops_ratio"] <= 0.5 and 0 < report["params_ratio"] < 1
        assert report["accuracy_before"] > 0.8, report  # a trained network, measured on the test split
        assert 0 <= report["accuracy_pruned"] <= 1 and report["accuracy_finetuned"] > 0.5
        assert report["predicted_ms"] == pytest.approx(lut.predict_ms(out.plan))
        seen[method] = out.plan.widths
    assert len(set(seen.values())) == 3  # three different allocations of the same budget
    # without data nothing is measured, and the pruned network is still the l1 one
    quiet = prune(plan, params, "l1", 0.5).report()
    assert quiet["accuracy_before"] is quiet["accuracy_finetuned"] is quiet["predicted_ms"] is None
    assert quiet["widths"] == ",".join(map(str, seen["l1"]))


def test_netadapt_narrows_where_the_device_pays_most(net):
    """On a device where the first stage is expensive (its convolutions cost 20x), NetAdapt takes more
    from that stage than l1, which cannot see the device."""
    plan, params, data = net
    table = {k: v * (20 if k.size == plan.resolution and k.op == "conv" else 1)
             for k, v in flops_table(plan).items()}  # fmt: skip
    lut = WidthLut(table)
    out = prune(
        plan, params, "netadapt", 0.6, lut, data, settings=NetAdaptSettings(step=0.1, short_batches=2)
    )
    l1 = prune(plan, params, "l1", 0.6, lut)
    assert sum(out.plan.widths[:3]) < sum(l1.plan.widths[:3])
    assert out.predicted_ms < l1.predicted_ms


def test_the_accuracy_judge_sees_deep_cuts_and_never_the_test_split(net):
    import dataclasses

    from coordinator.prune.pipeline import accuracy_judge

    plan, params, data = net
    blind = dataclasses.replace(data, x_test=np.full_like(data.x_test, np.nan))  # judged without it
    judge = accuracy_judge(plan, params, blind)
    full, l1 = judge(plan.widths), judge(l1_widths(plan, params, 0.5))
    floors = judge(tuple(max(1, w // 8) for w in plan.widths))  # an eighth of every layer left
    assert full > 0.8 and full >= l1 > floors  # the trained network, then deeper and deeper cuts
    assert judge(plan.widths) == full  # the same figure when asked again
