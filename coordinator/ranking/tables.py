"""Latency tables: architectures x devices, in ms, with missing cells as NaN.

Two file forms are read (and told apart by their header):
  wide  ``arch,<device>,<device>,...``      one row per architecture
  long  ``device,arch,latency_ms``          one row per measurement
Empty, NaN, zero or negative cells (the Coral column's ``-1.0`` failures) are
*missing*: counted per device, reported, never used as data.  Text that is not a
number at all (``12ms``, ``abc``) is an error naming the row and column, because
silently dropping it would lose a measurement someone meant to give.
"""

from __future__ import annotations

import csv
import io
import math
import os
import warnings
from dataclasses import dataclass
from typing import Any, Optional

import numpy as np

from agent.common.files import write_text_atomic
from coordinator.errors import TableError, UnknownNameError

# Cells read as "not measured" without complaint.
MISSING_MARKERS = {"", "nan", "na", "n/a", "null", "none", "-"}


@dataclass(frozen=True)
class LatencyTable:
    archs: tuple[str, ...]
    devices: tuple[str, ...]
    ms: np.ndarray  # (len(archs), len(devices)) float64, NaN where missing
    source: str = "table"  # for messages: the file it came from
    lines: tuple[int, ...] = ()  # file line of each arch's (first) row, for messages

    def __post_init__(self) -> None:
        if self.ms.shape != (len(self.archs), len(self.devices)):
            raise ValueError("latency matrix shape does not match archs x devices")

    @property
    def measured(self) -> np.ndarray:
        return ~np.isnan(self.ms)

    def missing_counts(self) -> dict[str, int]:
        return {d: int(n) for d, n in zip(self.devices, (~self.measured).sum(axis=0))}

    def validate_archs(self, space: Any) -> None:
        """Check every arch string against ``space``; errors name the file and line."""
        space.validate(self.archs, source=self.source, lines=self.lines or None)

    def column(self, device: str) -> np.ndarray:
        return self.ms[:, self.device_index(device)]

    def device_index(self, device: str) -> int:
        try:
            return self.devices.index(device)
        except ValueError:
            raise UnknownNameError(
                f"device {device!r} is not in the table; its devices are: {', '.join(self.devices)}"
            ) from None

    def fully_measured(self) -> list[int]:
        return [j for j in range(len(self.devices)) if self.measured[:, j].all()]


def _cell(text: str, where: str) -> float:
    t = text.strip()
    if t.lower() in MISSING_MARKERS:
        return math.nan
    try:
        value = float(t)
    except ValueError:
        raise TableError(f"{where}: {t!r} is not a latency in ms") from None
    if not math.isfinite(value) or value <= 0:
        return math.nan  # failed measurement (-1.0), zero or infinite: missing
    return value


def _read_wide_fast(path: str) -> Optional[LatencyTable]:
    """A wide table of plain numbers, parsed row by row in C (a 150 MB table: ~5 s, not ~10).

    Returns None (so the careful csv-module reader runs) for anything unusual: quotes,
    a long-form header, a row with gaps or text, duplicate names, blank lines.
    """
    try:
        with open(path, encoding="utf-8-sig") as fh:
            text = fh.read()
    except (OSError, UnicodeDecodeError):
        return None
    if '"' in text or "\r" in text:
        return None
    lines = text.split("\n")
    while lines and not lines[-1]:
        lines.pop()
    if len(lines) < 2:
        return None
    header = [h.strip() for h in lines[0].split(",")]
    if header[0].lower() != "arch" or len(header) < 2 or len(set(header)) != len(header):
        return None
    width = len(header) - 1
    values = np.empty((len(lines) - 1, width))
    archs: list[str] = []
    for i, line in enumerate(lines[1:]):
        arch, sep, rest = line.partition(",")
        arr = _fast_row(rest, width) if sep else None
        if arr is None or not arch.strip():
            return None
        values[i] = arr
        archs.append(arch.strip())
    if len(set(archs)) != len(archs):
        return None
    values[~np.isfinite(values) | (values <= 0)] = np.nan
    table = LatencyTable(tuple(archs), tuple(header[1:]), values, repr(path), tuple(range(2, len(archs) + 2)))
    if any(n == len(archs) for n in table.missing_counts().values()):
        return None  # let the careful reader name the empty column
    return table


def _open_rows(path: str) -> list[list[str]]:
    if not os.path.exists(path):
        raise TableError(f"table {path!r} does not exist")
    try:
        with open(path, newline="", encoding="utf-8-sig") as fh:
            rows = [r for r in csv.reader(fh) if any(c.strip() for c in r)]
    except (OSError, UnicodeDecodeError, csv.Error) as err:
        raise TableError(f"table {path!r} cannot be read as CSV: {err}") from err
    if not rows:
        raise TableError(f"table {path!r} is empty")
    return rows


def read_table(path: str) -> LatencyTable:
    """Read a wide or long latency table; raise TableError naming the bad row."""
    fast = _read_wide_fast(path)
    if fast is not None:
        return fast
    rows = _open_rows(path)
    header = [h.strip() for h in rows[0]]
    if [h.lower() for h in header[:3]] == ["device", "arch", "latency_ms"]:
        table = _read_long(path, rows)
    elif header and header[0].lower() == "arch":
        table = _read_wide(path, rows, header)
    else:
        raise TableError(
            f"table {path!r}: header must start with 'arch' (wide form: arch,<device>,...) or be "
            f"'device,arch,latency_ms' (long form), not {','.join(header[:4])!r}"
        )
    empty = [d for d, n in table.missing_counts().items() if n == len(table.archs)]
    if empty:
        raise TableError(f"table {path!r}: device column(s) {', '.join(empty)} have no measurement at all")
    return table


def _fast_row(rest: str, width: int) -> Optional[np.ndarray]:
    """Parse a row's numbers in C, or None if the row needs the careful path (gaps, text)."""
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # numpy warns, not raises, when it stops early
        try:
            arr = np.fromstring(rest, sep=",")  # text mode: not the deprecated binary one
        except (ValueError, DeprecationWarning):
            return None
    return arr if len(arr) == width else None


def _read_wide(path: str, rows: list[list[str]], header: list[str]) -> LatencyTable:
    devices = header[1:]
    if not devices:
        raise TableError(f"table {path!r} has an arch column but no device columns")
    dup = sorted({d for d in devices if devices.count(d) > 1})
    if dup:
        raise TableError(f"table {path!r}: device column(s) {', '.join(dup)} appear twice")
    archs: list[str] = []
    seen: dict[str, int] = {}
    values = np.full((len(rows) - 1, len(devices)), np.nan)
    for i, row in enumerate(rows[1:]):
        line = i + 2
        arch = row[0].strip() if row else ""
        if not arch:
            raise TableError(f"table {path!r}, line {line}: the arch cell is empty")
        if arch in seen:
            raise TableError(
                f"table {path!r}, line {line}: architecture {arch!r} already appears on line {seen[arch]}"
            )
        seen[arch] = line
        if len(row) - 1 > len(devices):
            raise TableError(f"table {path!r}, line {line}: {len(row) - 1} values for {len(devices)} devices")
        try:
            # Fast path: numpy parses a clean row in C (a 15,625 x 1,000 table in seconds, not
            # minutes); a row with gaps or text takes the checked cell-by-cell path below.
            values[i, : len(row) - 1] = np.array(row[1:], dtype=float)
        except ValueError:
            for j, text in enumerate(row[1:]):
                values[i, j] = _cell(text, f"table {path!r}, line {line}, column {devices[j]!r}")
        archs.append(arch)
    values[~np.isfinite(values) | (values <= 0)] = np.nan  # failed (-1.0), zero, inf: missing
    return LatencyTable(tuple(archs), tuple(devices), values, repr(path), tuple(seen.values()))


def _read_long(path: str, rows: list[list[str]]) -> LatencyTable:
    devices: dict[str, int] = {}
    archs: dict[str, int] = {}
    cells: dict[tuple[int, int], tuple[float, int]] = {}
    first_line: dict[str, int] = {}
    for i, row in enumerate(rows[1:]):
        line = i + 2
        if len(row) < 3:
            raise TableError(f"table {path!r}, line {line}: expected device,arch,latency_ms")
        dev, arch = row[0].strip(), row[1].strip()
        if not dev or not arch:
            raise TableError(f"table {path!r}, line {line}: empty device or arch")
        d = devices.setdefault(dev, len(devices))
        if arch not in archs:
            first_line[arch] = line
        a = archs.setdefault(arch, len(archs))
        if (a, d) in cells:
            raise TableError(
                f"table {path!r}, line {line}: {arch!r} on {dev!r} was already given on line "
                f"{cells[(a, d)][1]}"
            )
        cells[(a, d)] = (_cell(row[2], f"table {path!r}, line {line}"), line)
    values = np.full((len(archs), len(devices)), np.nan)
    for (a, d), (v, _) in cells.items():
        values[a, d] = v
    return LatencyTable(tuple(archs), tuple(devices), values, repr(path), tuple(first_line.values()))


def write_wide(path: str, table: LatencyTable, digits: int = 6) -> None:
    """Write ``table`` as a wide CSV, atomically (missing cells empty)."""
    buf = io.StringIO()
    w = csv.writer(buf, lineterminator="\n")
    w.writerow(["arch", *table.devices])
    for arch, row in zip(table.archs, table.ms):
        w.writerow([arch, *("" if math.isnan(v) else f"{v:.{digits}g}" for v in row)])
    write_text_atomic(path, buf.getvalue(), what="output table")


def read_accuracy(path: str, metric: Optional[str] = None) -> tuple[dict[str, float], list[str]]:
    """(arch -> accuracy for ``metric``, all metric columns).  Missing cells are skipped."""
    rows = _open_rows(path)
    header = [h.strip() for h in rows[0]]
    if not header or header[0].lower() != "arch" or len(header) < 2:
        raise TableError(f"accuracy table {path!r}: header must be arch,<metric>,...")
    metrics = header[1:]
    if metric is None:
        return {}, metrics
    if metric not in metrics:
        raise UnknownNameError(
            f"--metric {metric!r} is not a column of {path!r}; its columns are: {', '.join(metrics)}"
        )
    j = metrics.index(metric) + 1
    acc: dict[str, float] = {}
    for i, row in enumerate(rows[1:]):
        if len(row) <= j or row[j].strip().lower() in MISSING_MARKERS:
            continue
        try:
            acc[row[0].strip()] = float(row[j])
        except ValueError:
            raise TableError(f"accuracy table {path!r}, line {i + 2}: {row[j]!r} is not a number") from None
    return acc, metrics
