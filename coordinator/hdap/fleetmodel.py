"""The latency of one width spec on every device of a fleet, from a few tables.

Devices are in groups; each group has one width table (a representative's, measured), and each
device multiplies that table's layers of each kind by its own factor (``agent.materialize.lut.KINDS``).
HDAP's surrogate is such a model (groups: clusters; factors: each device's profile against its
representative's), and so is the truth of a simulated fleet (groups: conditions; factors: each
board's own variation).  A device's latency is then ``sum over kinds of factor * the group table's
sum over that kind's layers``: a width spec costs one table lookup per layer and group, however
many devices there are.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np

from agent.materialize import families as fam
from agent.materialize.lut import KINDS, LayerKey, kind, plan_keys


class FleetModel:
    def __init__(self, tables: Sequence[object], groups: np.ndarray, factors: np.ndarray) -> None:
        """``tables``: one per group, each with ``layer_ms(LayerKey)`` (a ``WidthLut``);
        ``groups``: (devices,) the group of each; ``factors``: (devices, len(KINDS))."""
        self.tables = list(tables)
        self.groups = np.asarray(groups, int)
        self.factors = np.asarray(factors, float)
        if self.factors.shape != (len(self.groups), len(KINDS)):
            raise ValueError(f"factors must be (devices, {len(KINDS)}), got {self.factors.shape}")
        n = len(self.groups)
        # the mean device: per group, the sum of its devices' factors, over all devices
        self._mean_weights = np.zeros((len(self.tables), len(KINDS)))
        np.add.at(self._mean_weights, self.groups, self.factors / n)
        self._cost: list[dict[LayerKey, float]] = [{} for _ in self.tables]
        self._kind_index = {k: i for i, k in enumerate(KINDS)}

    @property
    def devices(self) -> int:
        return len(self.groups)

    def kind_sums(self, plan: fam.Plan) -> np.ndarray:
        """(groups, kinds) each group table's time for the plan's layers of each kind."""
        keys = plan_keys(plan)
        out = np.zeros((len(self.tables), len(KINDS)))
        for g, table in enumerate(self.tables):
            cache = self._cost[g]
            for key in keys:
                ms = cache.get(key)
                if ms is None:
                    ms = cache[key] = float(table.layer_ms(key))  # type: ignore[attr-defined]
                out[g, self._kind_index[kind(key)]] += ms
        return out

    def device_ms(self, plan: fam.Plan) -> np.ndarray:
        """(devices,) every device's latency for the plan."""
        return (self.factors * self.kind_sums(plan)[self.groups]).sum(axis=1)

    def mean_ms(self, plan: fam.Plan) -> float:
        return float((self._mean_weights * self.kind_sums(plan)).sum())

    def quantile_ms(self, plan: fam.Plan, q: float = 0.9) -> float:
        return float(np.quantile(self.device_ms(plan), q))
