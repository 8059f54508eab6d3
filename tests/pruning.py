"""A small network trained for real on digits (seconds on two cores), for the pruning tests."""

from __future__ import annotations

SPEC, RESOLUTION = "x0.5", 16


def trained(epochs: int = 3):
    """(plan, params, data) of resnet20 at half width on 16-pixel digits."""
    from agent.materialize import families as fam
    from coordinator.prune import data as datasets
    from coordinator.prune.torchnet import PlanNet
    from coordinator.prune.train import Schedule, train

    data = datasets.load("digits", RESOLUTION)
    plan = fam.plan("resnet20", SPEC, classes=10, resolution=RESOLUTION)
    net = train(PlanNet(plan), data, Schedule(epochs))
    return plan, net.params(), data


def flops_table(plan, ms_per_mmac: float = 1.0, overhead_ms: float = 0.002):
    """A width table whose layers cost their multiply-accumulates plus a fixed overhead: a device
    on which latency is FLOPs, so what a predictor or NetAdapt should do is known."""
    from agent.materialize import families as fam
    from agent.materialize.lut import plan_keys

    table = {}
    for widths in fam.cover_specs(plan.family, (25, 50, 75, 100)):
        for key in plan_keys(fam.plan(plan.family, widths, plan.classes, plan.resolution)):
            table[key] = cost(key, ms_per_mmac, overhead_ms)
    return table


def cost(key, ms_per_mmac: float = 1.0, overhead_ms: float = 0.002) -> float:
    if key.op in ("conv", "dwconv"):
        out = (key.size + 2 * key.pad - key.kernel) // key.stride + 1
        per = key.kernel**2 * (1 if key.op == "dwconv" else key.cin)
        return key.cout * per * out * out / 1e6 * ms_per_mmac + overhead_ms
    if key.op == "head":
        return key.cin * key.cout / 1e6 * ms_per_mmac + overhead_ms
    return key.cin * key.size * key.size / 1e6 * ms_per_mmac + overhead_ms
