"""Three single-device pruning baselines under a FLOPs target, with inherited weights.

- ``uniform``: every prunable layer narrowed by one ratio, the largest that meets the
  target.
- ``l1``: filters removed across all layers by their L1 norm, smallest first, until the
  target is met (Li et al., ICLR 2017, ranked globally).  A norm is compared with the
  mean norm of its own layer, since raw norms grow with a layer's fan-in; every layer
  keeps at least a tenth of its filters.  Device-agnostic.
- ``netadapt``: NetAdapt (Yang et al., ECCV 2018) for one device (without data, as in a simulated
  fleet, its candidates are compared by the filter importance they remove instead).  Each step lowers a
  latency budget by ``step`` of the starting latency (priced by the device's width
  lookup table); for every layer alone it makes the candidate that narrows that layer
  just enough to meet the budget, fine-tunes it briefly and measures it on a holdout
  carved from the training split; the most accurate candidate is kept.  It stops when
  the FLOPs target is met.

All three keep, in each layer, the filters of largest L1 norm: the methods differ in
how many each layer keeps, not in which.  Fine-tuning afterwards is the caller's
(``prune``), the same for every method so their accuracies compare.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any, Optional

from agent.materialize import families as fam
from agent.materialize.weights import Params
from coordinator.errors import CoordinatorError
from coordinator.prune.slicing import Importance, narrow_to, relative_norms

METHODS = ("uniform", "l1", "netadapt")
#: the smallest share of its filters a layer keeps under ``l1`` and ``netadapt``
FLOOR = 0.1

Say = Callable[[str], None]


class PruneError(CoordinatorError):
    """A pruning that cannot be done as asked."""


def quiet(text: str) -> None:
    pass


def floor_widths(plan: fam.Plan) -> tuple[int, ...]:
    return tuple(max(1, math.ceil(FLOOR * w)) for w in plan.widths)


def macs_at(plan: fam.Plan, widths: tuple[int, ...]) -> int:
    return plan.at(widths).macs


def _unreachable(plan: fam.Plan, ratio: float, best: int, how: str) -> PruneError:
    return PruneError(
        f"{plan.family} cannot get to {ratio:g} of its FLOPs {how}: the layers that are not pruned "
        f"leave at least {best / plan.macs:.3f}"
    )


def uniform_widths(plan: fam.Plan, ratio: float) -> tuple[int, ...]:
    """The widths of the largest single multiplier whose FLOPs are at most ``ratio`` of ``plan``'s."""
    target = ratio * plan.macs

    def at(m: float) -> tuple[int, ...]:
        return tuple(max(1, round(w * m)) for w in plan.widths)

    if macs_at(plan, at(0.0)) > target:
        raise _unreachable(plan, ratio, macs_at(plan, at(0.0)), "by narrowing every layer alike")
    low, high = 0.0, 1.0
    for _ in range(40):
        mid = (low + high) / 2
        low, high = (mid, high) if macs_at(plan, at(mid)) <= target else (low, mid)
    return at(low)


def l1_widths(plan: fam.Plan, params: Params, ratio: float) -> tuple[int, ...]:
    """The widths left after removing the globally least important filters until the target is met."""
    target = ratio * plan.macs
    floors = floor_widths(plan)
    candidates = []  # (relative norm, layer) of every filter that may go
    for i, relative in relative_norms(plan, params).items():
        candidates += [(float(r), i) for r in relative[: len(relative) - floors[i]]]
    candidates.sort()

    def widths_after(k: int) -> tuple[int, ...]:
        widths = list(plan.widths)
        for _, i in candidates[:k]:
            widths[i] -= 1
        return tuple(widths)

    if macs_at(plan, widths_after(len(candidates))) > target:
        raise _unreachable(plan, ratio, macs_at(plan, widths_after(len(candidates))),
                           f"keeping {FLOOR:.0%} of every layer")  # fmt: skip
    low, high = 0, len(candidates)  # the fewest removals that meet the target
    while low < high:
        mid = (low + high) // 2
        low, high = (low, mid) if macs_at(plan, widths_after(mid)) <= target else (mid + 1, high)
    return widths_after(low)


@dataclass(frozen=True)
class NetAdaptSettings:
    #: the latency budget drops by this share of the starting latency each step
    step: float = 0.04
    #: mini-batches of the short fine-tune each candidate gets
    short_batches: int = 10
    #: share of the training split held out to choose among candidates
    holdout: float = 0.1
    seed: int = 0


def netadapt(plan: fam.Plan, params: Params, ratio: float, lut: Any, data: Any,
             settings: Optional[NetAdaptSettings] = None,
             say: Say = quiet) -> tuple[fam.Plan, Params]:  # fmt: skip
    """NetAdapt's loop, stopped at the FLOPs target; returns the plan and its (briefly tuned) weights."""
    settings = settings or NetAdaptSettings()
    if data is not None:
        from coordinator.prune.torchnet import PlanNet
        from coordinator.prune.train import accuracy, fine_tune
    target = ratio * plan.macs
    pick = data.holdout(settings.holdout, settings.seed) if data is not None else None
    drop_ms = settings.step * lut.predict_ms(plan)
    floors = floor_widths(plan)
    step = 0
    while plan.macs > target:
        step += 1
        # the budget is the last network's latency less the step; when no layer alone can meet
        # it (the cheap cuts are gone), the step is halved rather than the search given up
        for _ in range(8):
            budget = lut.predict_ms(plan) - drop_ms
            widths_of = {i: w for i in range(len(plan.widths))
                         if (w := _widest_under(plan, i, budget, floors[i], lut)) is not None}  # fmt: skip
            if widths_of:
                break
            drop_ms /= 2
        else:
            raise PruneError(
                f"netadapt cannot make {plan.family} faster by narrowing any one layer (FLOPs at "
                f"{plan.macs / target * ratio:.3f} of the original, every layer at or near its floor); "
                "ask for a larger --flops"
            )
        best: Optional[tuple[float, float, fam.Plan, Params]] = None
        for i, width in widths_of.items():
            # the last step: a candidate that reaches the FLOPs target stops there, not below it
            width = max(width, _widest_within(plan, i, target, width))
            say(f"netadapt step {step}: budget {budget:.3f} ms, layer {i + 1}/{len(plan.widths)} "
                f"{plan.widths[i]} -> {width} filters")  # fmt: skip
            widths = (*plan.widths[:i], width, *plan.widths[i + 1 :])
            small, small_params = narrow_to(plan, params, widths)
            if pick is None:  # no data: the candidate that removes the least filter importance
                score = -Importance(plan, params).lost(widths)
            else:
                net = PlanNet(small).load_params(small_params)
                fine_tune(net, pick, 1, max_batches=settings.short_batches, seed=settings.seed + step)
                score, small_params = accuracy(net, pick.x_test, pick.y_test), net.params()
            ms = lut.predict_ms(small)
            if best is None or (score, -ms) > (best[0], -best[1]):
                best = (score, ms, small, small_params)
        assert best is not None
        plan, params = best[2], best[3]
        how = f"holdout accuracy {best[0]:.3f}" if pick is not None else f"importance removed {-best[0]:.3f}"
        say(f"netadapt step {step}: kept widths {plan.spec}, {how}")
    return plan, params


def _widest_within(plan: fam.Plan, i: int, target_macs: float, floor: int) -> int:
    """The most filters layer ``i`` may keep for the plan to meet the FLOPs target (``floor`` if none)."""
    low, high = floor, plan.widths[i] - 1
    if macs_at(plan, (*plan.widths[:i], high, *plan.widths[i + 1 :])) <= target_macs:
        return high
    while low < high:
        mid = (low + high + 1) // 2
        low, high = (
            (mid, high)
            if macs_at(plan, (*plan.widths[:i], mid, *plan.widths[i + 1 :])) <= target_macs
            else (low, mid - 1)
        )
    return low


def _widest_under(plan: fam.Plan, i: int, budget_ms: float, floor: int, lut: Any) -> Optional[int]:
    """The most filters layer ``i`` may keep (fewer than now) for the plan to fit ``budget_ms``."""
    current = plan.widths[i]
    if current <= floor:
        return None

    def fits(width: int) -> bool:
        widths = (*plan.widths[:i], width, *plan.widths[i + 1 :])
        return bool(lut.predict_ms(plan.at(widths)) <= budget_ms)

    if not fits(floor):
        return None
    low, high = floor, current - 1  # latency grows with width: the largest that fits
    while low < high:
        mid = (low + high + 1) // 2
        low, high = (mid, high) if fits(mid) else (low, mid - 1)
    return low
