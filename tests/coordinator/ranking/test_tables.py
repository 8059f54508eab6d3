from __future__ import annotations

import math

import numpy as np
import pytest

from coordinator.errors import TableError, UnknownNameError
from coordinator.ranking import NB201_LATENCY
from coordinator.ranking.tables import LatencyTable, read_accuracy, read_table, write_wide

pytestmark = pytest.mark.portable  # runs under arm64 emulation too (.ci/arm64)

A = "|nor_conv_3x3~0|+|none~0|skip_connect~1|+|avg_pool_3x3~0|none~1|nor_conv_1x1~2|"
B = "|skip_connect~0|+|none~0|skip_connect~1|+|avg_pool_3x3~0|none~1|nor_conv_1x1~2|"


def _write(tmp_path, text, name="t.csv"):
    p = tmp_path / name
    p.write_text(text)
    return str(p)


def test_public_table_counts_coral_failures_as_missing():
    t = read_table(NB201_LATENCY)
    assert t.ms.shape == (1999, 6)
    assert t.missing_counts()["coral_edgetpu"] == 259
    assert sum(t.missing_counts().values()) == 259
    assert len(t.fully_measured()) == 5


def test_missing_markers(tmp_path):
    c = "|none~0|+|none~0|none~1|+|skip_connect~0|none~1|none~2|"
    p = _write(tmp_path, f"arch,a,b,c\n{A},1.5,,NaN\n{B},-1.0,0,2\n{c},4,3,inf\n")
    t = read_table(p)
    assert t.ms[0, 0] == 1.5 and math.isnan(t.ms[0, 1]) and math.isnan(t.ms[0, 2])
    assert math.isnan(t.ms[1, 0]) and math.isnan(t.ms[1, 1]) and t.ms[1, 2] == 2
    assert t.missing_counts() == {"a": 1, "b": 2, "c": 2}


def test_long_form_equals_wide_form(tmp_path):
    wide = read_table(_write(tmp_path, f"arch,a,b\n{A},1,2\n{B},3,\n", "w.csv"))
    long = read_table(_write(tmp_path, f"device,arch,latency_ms\na,{A},1\nb,{A},2\na,{B},3\n", "l.csv"))
    assert wide.archs == long.archs and wide.devices == long.devices
    np.testing.assert_array_equal(wide.ms, long.ms)


@pytest.mark.parametrize("text,match", [
    (f"arch,a\n{A},12ms\n", r"line 2, column 'a': '12ms' is not a latency"),
    (f"arch,a\n{A},1\n{A},2\n", "already appears on line 2"),
    (f"arch,a,b\n{A},1,\n{B},2,-1\n", r"column\(s\) b have no measurement"),
    ("name,a\nx,1\n", "header must start with 'arch'"),
    (f"arch,a,a\n{A},1,2\n", "appear twice"),
    ("arch,a\n,1\n", "line 2: the arch cell is empty"),
    (f"arch,a\n{A},1,2\n", "2 values for 1 devices"),
    (f"device,arch,latency_ms\na,{A},1\na,{A},2\n", "already given on line 2"),
    ("", "is empty"),
])  # fmt: skip
def test_bad_tables_name_the_problem(tmp_path, text, match):
    with pytest.raises(TableError, match=match):
        read_table(_write(tmp_path, text))


def test_missing_file_and_unknown_device(tmp_path):
    with pytest.raises(TableError, match="does not exist"):
        read_table(str(tmp_path / "nope.csv"))
    t = read_table(_write(tmp_path, f"arch,a\n{A},1\n"))
    with pytest.raises(UnknownNameError, match="its devices are: a"):
        t.column("b")


def test_write_read_round_trip(tmp_path):
    t = LatencyTable((A, B), ("x", "y"), np.array([[1.25, np.nan], [3.0, 4.5]]))
    p = str(tmp_path / "out.csv")
    write_wide(p, t)
    again = read_table(p)
    assert again.archs == t.archs and again.devices == t.devices
    np.testing.assert_array_equal(np.isnan(again.ms), np.isnan(t.ms))
    np.testing.assert_allclose(np.nan_to_num(again.ms), np.nan_to_num(t.ms))


def test_accuracy_table(tmp_path):
    p = _write(tmp_path, f"arch,top1,top5\n{A},91.5,99\n{B},,98\n")
    acc, metrics = read_accuracy(p, "top1")
    assert metrics == ["top1", "top5"] and acc == {A: 91.5}
    with pytest.raises(UnknownNameError, match="columns are: top1, top5"):
        read_accuracy(p, "top3")


def test_fast_reader_agrees_with_the_careful_one(tmp_path):
    import csv as _csv

    from coordinator.ranking import tables

    t = read_table(NB201_LATENCY)  # has -1.0 cells: numbers, so the fast path reads it
    with open(NB201_LATENCY) as fh:
        rows = list(_csv.reader(fh))
    careful = tables._read_wide(NB201_LATENCY, rows, rows[0])
    assert tables._read_wide_fast(NB201_LATENCY) is not None
    assert t.archs == careful.archs and t.devices == careful.devices
    np.testing.assert_array_equal(np.isnan(t.ms), np.isnan(careful.ms))
    np.testing.assert_array_equal(np.nan_to_num(t.ms), np.nan_to_num(careful.ms))


@pytest.mark.parametrize("body", [f"{A},1,\n{B},2,3\n", f'"{A}",1,2\n{B},2,3\n', f"{A},1,2\n{A},2,3\n"])
def test_unusual_files_take_the_careful_path(tmp_path, body):
    from coordinator.ranking import tables

    p = _write(tmp_path, "arch,a,b\n" + body)
    assert tables._read_wide_fast(p) is None
