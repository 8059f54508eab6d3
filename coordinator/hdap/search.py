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

from collections.abc import Callable
from dataclasses import dataclass
from typing import Optional

import numpy as np

from agent.materialize import families as fam
from agent.materialize.weights import Params
from coordinator.hdap.fleetmodel import FleetModel
from coordinator.prune.methods import floor_widths, l1_widths, uniform_widths
from coordinator.prune.slicing import filter_norms

#: how finely a layer's width moves: steps of a sixteenth of it
STEPS = 16
#: a result uses the FLOPs target to within this share (every method is compared at the target)
USE = 0.03


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


class Importance:
    """Filter importance removed by a width spec: each layer loses its smallest relative L1 norms."""

    def __init__(self, plan: fam.Plan, params: Params) -> None:
        self.cum = []
        every = filter_norms(plan, params)
        for i in range(len(plan.widths)):
            norms = every[i]
            rel = np.sort(norms / max(float(norms.mean()), 1e-12))
            self.cum.append(np.concatenate([[0.0], np.cumsum(rel)]))
        self.full = plan.widths

    def lost(self, widths: tuple[int, ...]) -> float:
        return float(sum(c[f - w] for c, f, w in zip(self.cum, self.full, widths)))


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
) -> SearchResult:
    """The widths minimizing ``objective`` ("mean": the fleet average; "p90": the 90th percentile
    device; "mean+p90": their sum) under the two constraints."""
    rng = np.random.default_rng(seed)
    say = say or (lambda text: None)
    target = ratio * plan.macs
    importance = Importance(plan, params)
    floors = floor_widths(plan)
    options = [
        sorted({max(fl, round(f * s / STEPS)) for s in range(1, STEPS + 1)} | {f})
        for f, fl in zip(plan.widths, floors)
    ]
    l1 = l1_widths(plan, params, ratio)
    bound = importance.lost(l1) * (1 + slack) + 1e-9
    cache: dict[tuple[int, ...], tuple[float, float, float, int]] = {}

    def at(widths: tuple[int, ...]) -> fam.Plan:
        return fam.plan(plan.family, widths, plan.classes, plan.resolution)

    def evaluate(widths: tuple[int, ...]) -> tuple[float, float, float, int]:
        """(objective, mean, p90, macs) of a width spec."""
        hit = cache.get(widths)
        if hit is None:
            p = at(widths)
            per_device = model.device_ms(p)
            mean, p90 = float(per_device.mean()), float(np.quantile(per_device, 0.9))
            value = {"mean": mean, "p90": p90, "mean+p90": mean + p90}[objective]
            hit = cache[widths] = (value, mean, p90, p.macs)
        return hit

    def fitness(widths: tuple[int, ...]) -> float:
        value, _, _, macs = evaluate(widths)
        over_flops = max(0.0, macs / target - 1.0) + max(0.0, 1.0 - USE - macs / target)
        over_imp = max(0.0, importance.lost(widths) / bound - 1.0)
        return value * (1.0 + 10.0 * (over_flops + over_imp))

    def step_down(widths: tuple[int, ...], i: int) -> Optional[tuple[int, ...]]:
        lower = [w for w in options[i] if w < widths[i]]
        return (*widths[:i], lower[-1], *widths[i + 1 :]) if lower else None

    def repair(widths: tuple[int, ...]) -> tuple[int, ...]:
        """Narrow, least important FLOPs first, until the FLOPs target is met."""
        while evaluate(widths)[3] > target:
            best, best_score = None, -1.0
            for i in range(len(widths)):
                cand = step_down(widths, i)
                if cand is None:
                    continue
                saved = evaluate(widths)[3] - evaluate(cand)[3]
                score = saved / (importance.lost(cand) - importance.lost(widths) + 1e-6)
                if score > best_score:
                    best, best_score = cand, score
            if best is None:
                break
            widths = best
        return widths

    # the greedy start: the step saving the most (latency + FLOPs, relative) per importance lost
    full_value, _, _, full_macs = evaluate(plan.widths)
    greedy = plan.widths
    while evaluate(greedy)[3] > target:
        value, _, _, macs = evaluate(greedy)
        best, best_score = None, -1.0
        for i in range(len(greedy)):
            cand = step_down(greedy, i)
            if cand is None:
                continue
            c_value, _, _, c_macs = evaluate(cand)
            gain = (value - c_value) / full_value + (macs - c_macs) / full_macs
            score = gain / (importance.lost(cand) - importance.lost(greedy) + 1e-6)
            if score > best_score:
                best, best_score = cand, score
        if best is None:
            break
        greedy = best
    say(f"hdap search: greedy start {evaluate(greedy)[0]:.3f} ms")
    seeds = [greedy, tuple(l1), tuple(uniform_widths(plan, ratio))]
    pop = list(dict.fromkeys(seeds))
    while len(pop) < population:
        pop.append(repair(_mutate(seeds[len(pop) % len(seeds)], options, rng, 3)))
    for g in range(generations):
        scored = sorted(pop, key=fitness)
        elite = scored[:4]
        children = list(elite)
        while len(children) < population:
            a, b = (min(rng.choice(len(scored), 3, replace=False)) for _ in range(2))
            pa, pb = scored[a], scored[b]
            mask = rng.random(len(pa)) < 0.5
            child = tuple(int(x if m else y) for x, y, m in zip(pa, pb, mask))
            children.append(repair(_mutate(child, options, rng, int(rng.integers(1, 4)))))
        pop = children
        if g % 10 == 9:
            say(
                f"hdap search: generation {g + 1}/{generations}, best {fitness(min(pop, key=fitness)):.3f} ms"
            )
    best = min(pop, key=fitness)
    value, mean, p90, macs = evaluate(best)
    return SearchResult(best, value, mean, p90, macs / plan.macs, importance.lost(best), bound, len(cache))


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
