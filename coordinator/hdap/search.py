"""Fleet-aware width search: the per-layer widths that make a fleet fastest on average, under a FLOPs
target, losing no more filter importance than ``l1`` does (so accuracy stays comparable).

The constraints, and why: FLOPs at most ``ratio`` of the network's and at least ``1 - USE`` of
that (the target every method shares, used, so methods compare at equal FLOPs); and the filters
removed, scored by the ``l1`` baseline's own criterion (L1 norm over its layer's mean), may add up
to at most ``1 + slack`` times what ``l1`` removes at the same target.  Without the last, the
fastest network would put all the pruning where it is cheapest, whatever it costs in accuracy;
with it, the search may move pruning between layers, toward those the fleet pays most for, but
not toward filters that matter more.  The kept filters are, as in every method here, each
layer's largest by L1 norm.

With data, accuracy is also checked directly: ``judge`` gives a width spec's accuracy before
fine-tuning, batch norms re-estimated (``coordinator.prune.pipeline.accuracy_judge``), and a
result must be within ``JUDGE_TOL`` of ``l1``'s.  The importance bound is a proxy (its sum does
not see that cutting one early layer to a third hurts more than the same norm spread over ten
layers); the judge sees it.  The search runs in rounds: first free, then with every layer kept at
least ``1 - margin`` of ``l1``'s width for the shrinking ``MARGINS``, until one of a round's
``JUDGED`` best passes; if none ever does, the result is ``l1``'s widths.  A handful of judge
calls, not one per candidate: each is a pass over a thousand images.

The method: a greedy start (repeatedly narrow the layer whose next step saves the most fleet
latency and FLOPs per importance lost, until the FLOPs target is met), then an evolutionary
search (tournament selection, uniform crossover, small width moves, repair to the FLOPs target,
elitism) seeded with that start, ``l1`` and ``uniform``.  Evolution because the objective is not
additive in general (a MobileNetV1 pointwise layer's cost depends on two widths, a tail
objective on every device), and a population explores what greedy steps cannot; the greedy seed
makes it start near the additive optimum.  Each candidate costs one table lookup per layer and
device group (``FleetModel``), so thousands are evaluated in seconds, for any number of devices.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import dataclass
from typing import Optional

import numpy as np

from agent.materialize import families as fam
from agent.materialize.weights import Params
from coordinator.hdap.fleetmodel import FleetModel
from coordinator.prune.methods import floor_widths, l1_widths, uniform_widths
from coordinator.prune.slicing import Importance

#: how finely a layer's width moves: steps of a sixteenth of it
STEPS = 16
#: a result uses the FLOPs target to within this share (every method is compared at the target)
USE = 0.03
#: a judged candidate may be this much less accurate than ``l1`` (a fraction: half a point)
JUDGE_TOL = 0.005
#: with a judge: how far below ``l1``'s width each layer may go, round after round (1: anywhere)
MARGINS = (1.0, 0.5, 0.25, 0.1)
#: with a judge: the best candidates of a round that are judged
JUDGED = 3


@dataclass(frozen=True)
class SearchResult:
    widths: tuple[int, ...]
    objective_ms: float
    mean_ms: float
    p90_ms: float
    flops_ratio: float
    importance_lost: float
    importance_bound: float
    evaluated: int
    #: the judge's accuracy of the result and of l1's widths (None without a judge)
    judged: Optional[float] = None
    judged_l1: Optional[float] = None


def search(
    plan: fam.Plan,
    params: Params,
    ratio: float,
    model: FleetModel,
    objective: str = "mean",
    slack: float = 0.1,
    generations: int = 40,
    population: int = 32,
    seed: int = 0,
    say: Optional[Callable[[str], None]] = None,
    judge: Optional[Callable[[tuple[int, ...]], float]] = None,
    start: Optional[tuple[int, ...]] = None,
) -> SearchResult:
    """The widths minimizing ``objective`` ("mean": the fleet average; "p90": the 90th percentile
    device; "mean+p90": their sum) under the two constraints (and ``judge``'s, when given);
    ``start`` joins the seeds (a cluster's own search starts from the fleet's answer, and elitism
    keeps it unless something better is found)."""
    rng = np.random.default_rng(seed)
    say = say or (lambda text: None)
    target = ratio * plan.macs
    importance = Importance(plan, params)
    l1 = l1_widths(plan, params, ratio)
    bound = importance.lost(l1) * (1 + slack) + 1e-9
    values: dict[tuple[int, ...], float] = {}
    macs_of: dict[tuple[int, ...], int] = {plan.widths: plan.macs}

    def at(widths: tuple[int, ...]) -> fam.Plan:
        return plan.at(widths)

    def macs(widths: tuple[int, ...]) -> int:
        """A width spec's FLOPs: all that repairing needs, so no latency is computed for it."""
        hit = macs_of.get(widths)
        if hit is None:
            hit = macs_of[widths] = at(widths).macs
        return hit

    def value(widths: tuple[int, ...]) -> float:
        """The objective of a width spec (the 90th percentile only when it is asked for)."""
        hit = values.get(widths)
        if hit is None:
            p = at(widths)
            macs_of[widths] = p.macs
            if objective == "mean":
                hit = model.mean_ms(p)
            else:
                per_device = model.device_ms(p)
                p90 = float(np.quantile(per_device, 0.9))
                hit = p90 if objective == "p90" else float(per_device.mean()) + p90
            values[widths] = hit
        return hit

    def violation(widths: tuple[int, ...]) -> float:
        f = macs(widths) / target
        over_flops = max(0.0, f - 1.0) + max(0.0, 1.0 - USE - f)
        return over_flops + max(0.0, importance.lost(widths) / bound - 1.0)

    def fitness(widths: tuple[int, ...]) -> float:
        return value(widths) * (1.0 + 10.0 * violation(widths))

    def evolve(lows: tuple[int, ...]) -> list[tuple[int, ...]]:
        """The final population, best first, of a search where layer i keeps at least lows[i]."""
        options = [
            sorted({max(lo, round(f * s / STEPS)) for s in range(1, STEPS + 1)} | {f, lo})
            for f, lo in zip(plan.widths, lows)
        ]

        def narrow_until_target(
            widths: tuple[int, ...], gain: Callable[[tuple[int, ...], tuple[int, ...]], float]
        ) -> tuple[int, ...]:
            """Step one layer a notch narrower at a time, the step of most ``gain`` per importance
            lost, until the FLOPs target is met (or no layer can step)."""
            while macs(widths) > target:
                best, best_score = None, -1.0
                for i, options_i in enumerate(options):
                    lower = [w for w in options_i if w < widths[i]]
                    if not lower:
                        continue
                    cand = (*widths[:i], lower[-1], *widths[i + 1 :])
                    score = gain(widths, cand) / (importance.lost(cand) - importance.lost(widths) + 1e-6)
                    if score > best_score:
                        best, best_score = cand, score
                if best is None:
                    break
                widths = best
            return widths

        def repair(widths: tuple[int, ...]) -> tuple[int, ...]:
            """Narrow, least important FLOPs first, until the FLOPs target is met."""
            return narrow_until_target(widths, lambda w, c: macs(w) - macs(c))

        # the greedy start: the step saving the most (latency + FLOPs, relative) per importance lost
        full_value, full_macs = value(plan.widths), plan.macs
        greedy = narrow_until_target(
            plan.widths, lambda w, c: (value(w) - value(c)) / full_value + (macs(w) - macs(c)) / full_macs
        )
        say(f"hdap search: greedy start {value(greedy):.3f} ms")
        uniform = repair(tuple(max(u, lo) for u, lo in zip(uniform_widths(plan, ratio), lows)))
        seeds = [greedy, tuple(l1), uniform]
        if start is not None:
            seeds.append(repair(tuple(max(w, lo) for w, lo in zip(start, lows))))
        pop = list(dict.fromkeys(seeds))
        while len(pop) < population:
            pop.append(repair(_mutate(seeds[len(pop) % len(seeds)], options, rng, 3)))
        for g in range(generations):
            scored = sorted(pop, key=fitness)
            children = scored[:4]  # the elite
            while len(children) < population:
                a, b = (min(rng.choice(len(scored), 3, replace=False)) for _ in range(2))
                pa, pb = scored[a], scored[b]
                mask = rng.random(len(pa)) < 0.5
                child = tuple(int(x if m else y) for x, y, m in zip(pa, pb, mask))
                children.append(repair(_mutate(child, options, rng, int(rng.integers(1, 4)))))
            pop = children
            if g % 10 == 9:
                best_ms = fitness(min(pop, key=fitness))
                say(f"hdap search: generation {g + 1}/{generations}, best {best_ms:.3f} ms")
        return sorted(dict.fromkeys(pop), key=fitness)

    floors = floor_widths(plan)
    if judge is None:
        best = evolve(floors)[0]
        judged = judged_l1 = None
    else:
        judged_l1 = judge(l1)
        best = tuple(l1)  # when nothing else passes
        for margin in MARGINS:
            lows = tuple(max(fl, math.ceil(w * (1 - margin))) for fl, w in zip(floors, l1))
            ranked = [w for w in evolve(lows) if violation(w) == 0][:JUDGED]
            passed = [w for w in ranked if judge(w) >= judged_l1 - JUDGE_TOL]
            say(
                f"hdap search: each layer at least {1 - margin:.0%} of l1's width: {len(passed)} of "
                f"{len(ranked)} best candidates within {JUDGE_TOL:.1%} of l1's accuracy {judged_l1:.1%}"
            )
            if passed:
                best = passed[0]
                break
        judged = judge(best)
    per_device = model.device_ms(at(best))
    mean, p90 = float(per_device.mean()), float(np.quantile(per_device, 0.9))
    return SearchResult(
        best, value(best), mean, p90, macs(best) / plan.macs, importance.lost(best), bound, len(values),
        judged, judged_l1,
    )  # fmt: skip


def _mutate(
    widths: tuple[int, ...], options: list[list[int]], rng: np.random.Generator, moves: int
) -> tuple[int, ...]:
    out = list(widths)
    for i in rng.choice(len(out), size=min(moves, len(out)), replace=False):
        opts = options[i]
        j = int(np.searchsorted(opts, out[i]))
        j = min(max(j + int(rng.choice([-2, -1, 1, 2])), 0), len(opts) - 1)
        out[i] = opts[j]
    return tuple(out)
