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

from collections import Counter
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
        # each layer's time in every group's table, and its kind: looked up once, then reused
        self._rows: dict[LayerKey, tuple[int, np.ndarray]] = {}
        self._kind_index = {k: i for i, k in enumerate(KINDS)}

    @property
    def devices(self) -> int:
        return len(self.groups)

    def _row(self, key: LayerKey) -> tuple[int, np.ndarray]:
        row = self._rows.get(key)
        if row is None:
            ms = np.array([table.layer_ms(key) for table in self.tables])  # type: ignore[attr-defined]
            row = self._rows[key] = (self._kind_index[kind(key)], ms)
        return row

    def kind_sums(self, plan: fam.Plan) -> np.ndarray:
        """(groups, kinds) each group table's time for the plan's layers of each kind."""
        out = np.zeros((len(KINDS), len(self.tables)))
        for key, uses in Counter(plan_keys(plan)).items():
            k, ms = self._row(key)
            out[k] += uses * ms
        return out.T

    def device_ms(self, plan: fam.Plan) -> np.ndarray:
        """(devices,) every device's latency for the plan."""
        return (self.factors * self.kind_sums(plan)[self.groups]).sum(axis=1)

    def mean_ms(self, plan: fam.Plan) -> float:
        """The fleet's average latency for the plan."""
        return float(self.device_ms(plan).mean())

    def subset(self, devices: np.ndarray) -> FleetModel:
        """The same tables for only ``devices`` (indexes or a mask): one cluster's own fleet."""
        return FleetModel(self.tables, self.groups[devices], self.factors[devices])
