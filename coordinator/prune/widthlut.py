"""A device's width lookup table (``fleetbench lut --space FAMILY``) as a latency predictor.

A width spec's latency is the sum of its layers' times.  Layers at grid widths are read
from the table; a layer between grid widths (``l1`` and NetAdapt choose any width) is
interpolated linearly in its channels, bilinearly when both its input and output
channels are off the grid, and extrapolated from the two nearest grid widths below the
smallest (never below a tenth of it).
"""

from __future__ import annotations

import bisect
import csv
from collections import defaultdict
from collections.abc import Sequence

from agent.materialize import families as fam
from agent.materialize.lut import COLUMNS, LayerKey, from_rows, plan_keys
from coordinator.errors import CoordinatorError


class LutError(CoordinatorError):
    """A lookup table that cannot be read, or does not cover the network asked about."""


def _line(points: Sequence[tuple[int, float]], x: int) -> float:
    """Piecewise-linear ``y(x)`` through ``points`` (sorted by x), extrapolated at the ends."""
    xs = [p[0] for p in points]
    if len(points) == 1:
        return points[0][1] * x / max(1, xs[0])
    i = min(max(bisect.bisect_left(xs, x), 1), len(points) - 1)
    (x0, y0), (x1, y1) = points[i - 1], points[i]
    y = y0 + (y1 - y0) * (x - x0) / (x1 - x0)
    return max(y, 0.1 * min(y0, y1))


class WidthLut:
    def __init__(self, table: dict[LayerKey, float], source: str = "the table") -> None:
        if not table:
            raise LutError(f"{source} has no layers")
        self.table = table
        self.source = source
        # layers of one shape apart from their channels: (cin, cout) -> ms
        self._groups: dict[tuple, dict[tuple[int, int], float]] = defaultdict(dict)
        for key, ms in table.items():
            self._groups[self._shape(key)][(key.cin, key.cout)] = ms

    @staticmethod
    def _shape(key: LayerKey) -> tuple:
        return key.op, key.size, key.kernel, key.stride, key.pad, key.arity

    @classmethod
    def read(cls, path: str) -> WidthLut:
        try:
            with open(path, newline="") as fh:
                rows = list(csv.DictReader(fh))
        except OSError as err:
            raise LutError(f"cannot read the lookup table {path}: {err.strerror or err}") from None
        missing = [c for c in (*COLUMNS, "p50_ms") if rows and c not in rows[0]]
        if not rows or missing:
            raise LutError(
                f"{path} is not a lookup table written by fleetbench lut (no {', '.join(missing) or 'rows'})"
            )
        try:
            return cls(from_rows(rows), path)
        except (TypeError, ValueError) as err:
            raise LutError(f"{path} has a row that is not a layer: {err}") from None

    def layer_ms(self, key: LayerKey) -> float:
        if key in self.table:
            return self.table[key]
        group = self._groups.get(self._shape(key))
        if not group:
            raise LutError(f"{self.source} has no {key.op} layer of this shape ({key.name}): "
                           "it was built for another family or resolution")  # fmt: skip
        if all(cin == cout for cin, cout in group):  # elementwise or depthwise: one channel count
            return _line(sorted((cin, ms) for (cin, _), ms in group.items()), key.cin)
        same_in = sorted((cout, ms) for (cin, cout), ms in group.items() if cin == key.cin)
        if same_in:
            return _line(same_in, key.cout)
        same_out = sorted((cin, ms) for (cin, cout), ms in group.items() if cout == key.cout)
        if same_out:
            return _line(same_out, key.cin)
        rows: dict[int, list[tuple[int, float]]] = defaultdict(list)
        for (cin, cout), ms in group.items():
            rows[cin].append((cout, ms))
        usable = sorted((cin, _line(sorted(pts), key.cout)) for cin, pts in rows.items() if len(pts) >= 2)
        if not usable:
            raise LutError(f"{self.source} cannot price {key.name}: too few widths of that layer")
        return _line(usable, key.cin)

    def predict_ms(self, plan: fam.Plan) -> float:
        """The plan's latency on the table's device: the sum of its layers."""
        return float(sum(self.layer_ms(key) for key in plan_keys(plan)))
