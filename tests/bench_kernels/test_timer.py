"""The native timer and its pure-Python twin: one suite, run against both."""

from __future__ import annotations

import array
import os
import subprocess
import sys

import numpy as np
import pytest

import bench_kernels

_python = bench_kernels.implementations()["python"]
_native = bench_kernels.implementations().get("native")  # None: the CI test below fails loudly

IMPLS = [pytest.param(_python, id="python")]
IMPLS.append(
    pytest.param(_native, id="native", marks=pytest.mark.skipif(_native is None, reason="not built"))
)


@pytest.fixture(params=IMPLS)
def impl(request):
    return request.param


def test_ci_uses_the_native_timer():
    # A silent fallback would change the measurements themselves, so CI insists.
    if not os.environ.get("CI"):
        pytest.skip("only enforced when CI is set")
    assert bench_kernels.IMPL == "native", bench_kernels.FALLBACK_REASON


def test_impl_constant_names_the_module_in_use():
    in_use = {"native": _native, "python": _python}[bench_kernels.IMPL]
    assert bench_kernels.time_calls is in_use.time_calls


def test_env_var_forces_python_twin():
    out = subprocess.run(
        [sys.executable, "-c", "import bench_kernels as b; print(b.IMPL, b.FALLBACK_REASON)"],
        env={**os.environ, "FLEETBENCH_TIMER": "python"},
        capture_output=True,
        text=True,
        check=True,
    )
    assert out.stdout.split()[0] == "python"
    assert "FLEETBENCH_TIMER" in out.stdout


def test_same_clock_name_in_both():
    if _native is None:
        pytest.skip("native timer not built")
    assert _native.CLOCK == _python.CLOCK


def test_now_ns_is_monotonic(impl):
    values = [impl.now_ns() for _ in range(1000)]
    assert all(b >= a for a, b in zip(values, values[1:]))
    assert isinstance(values[0], int)


def test_both_read_the_same_clock():
    if _native is None:
        pytest.skip("native timer not built")
    a = _python.now_ns()
    b = _native.now_ns()
    c = _python.now_ns()
    assert a <= b <= c


def test_resolution_is_positive(impl):
    res = impl.resolution_ns()
    assert isinstance(res, int) and 1 <= res <= 1_000_000


def _spin_for(impl, ns):
    """A callable that busy-waits on the clock itself: its duration is at least ``ns``."""

    def fn():
        end = impl.now_ns() + ns
        while impl.now_ns() < end:
            pass

    return fn


@pytest.mark.parametrize("make_out", [
    lambda n: array.array("q", [0] * n),
    lambda n: np.zeros(n, dtype=np.int64),
    lambda n: np.zeros(n, dtype="<i8"),
], ids=["array_q", "numpy_int64", "numpy_le_i8"])  # fmt: skip
def test_time_calls_writes_each_duration(impl, make_out):
    calls = []
    out = make_out(5)
    impl.time_calls(lambda: calls.append(1), 3, out)
    assert len(calls) == 3
    assert all(v >= 0 for v in list(out)[:3])
    assert list(out)[3:] == [0, 0]


def test_durations_cover_the_work(impl):
    out = np.zeros(4, dtype=np.int64)
    impl.time_calls(_spin_for(impl, 200_000), 4, out)
    assert (out >= 200_000).all()


def test_n_zero_calls_nothing(impl):
    impl.time_calls(lambda: pytest.fail("called"), 0, array.array("q"))


@pytest.mark.parametrize("out,exc", [
    (array.array("i", [0] * 4), TypeError),          # int32
    (array.array("d", [0.0] * 4), TypeError),        # float64
    (np.zeros(4, dtype=np.uint64), TypeError),       # unsigned
    (bytearray(32), TypeError),                      # bytes
    (b"\0" * 32, TypeError),                         # read-only
    (np.zeros((4, 2), dtype=np.int64)[:, 0], TypeError),  # not contiguous
    (object(), TypeError),
    (array.array("q", [0] * 2), ValueError),         # too short
], ids=["int32", "double", "uint64", "bytes", "readonly", "strided", "obj", "short"])  # fmt: skip
def test_rejects_bad_buffers_alike(impl, out, exc):
    with pytest.raises(exc):
        impl.time_calls(lambda: None, 4, out)


def test_rejects_negative_n_and_non_callable(impl):
    out = array.array("q", [0] * 4)
    with pytest.raises(ValueError):
        impl.time_calls(lambda: None, -1, out)
    with pytest.raises(TypeError):
        impl.time_calls(42, 1, out)


def test_exception_propagates_after_partial_write(impl):
    count = []

    def fn():
        count.append(1)
        if len(count) == 3:
            raise KeyError("boom")

    out = array.array("q", [-1] * 5)
    with pytest.raises(KeyError):
        impl.time_calls(fn, 5, out)
    assert len(count) == 3
    assert out[0] >= 0 and out[1] >= 0 and out[2] == -1


def test_native_and_twin_agree_on_the_same_work():
    if _native is None:
        pytest.skip("native timer not built")
    outs = {}
    for name, mod in (("native", _native), ("python", _python)):
        out = np.zeros(20, dtype=np.int64)
        mod.time_calls(_spin_for(mod, 300_000), 20, out)
        outs[name] = out
    # Both see at least the work the callable does on the shared clock.
    for out in outs.values():
        assert (out >= 300_000).all()


class _CallableInstance:
    """No vectorcall slot: exercises the C loop's PyObject_CallNoArgs path."""

    def __init__(self):
        self.calls = 0

    def __call__(self):
        self.calls += 1


class _Counter:
    def __init__(self):
        self.calls = 0

    def bump(self):
        self.calls += 1


def test_every_kind_of_callable(impl):
    import functools
    import gc

    inst = _CallableInstance()
    counter = _Counter()
    seen = []
    kinds = [
        inst,  # tp_call only
        counter.bump,  # bound method
        functools.partial(seen.append, 1),  # partial over a builtin method
        gc.isenabled,  # C function
        lambda: None,  # plain function
    ]
    out = array.array("q", [0] * 7)
    for fn in kinds:
        impl.time_calls(fn, 7, out)
        assert all(v >= 0 for v in out)
    assert inst.calls == 7 and counter.calls == 7 and len(seen) == 7
