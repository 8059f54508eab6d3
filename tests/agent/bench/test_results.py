from __future__ import annotations

import contextlib
import json

import pytest
from hypothesis import given
from hypothesis import strategies as st

from agent.bench.results import BenchResult, ResultFormatError
from agent.bench.runner import BenchSettings, run_benchmark


@pytest.fixture(scope="module")
def result(tflite_model):
    s = BenchSettings(
        runs=5,
        warmup_runs=1,
        warmup_time_s=0,
        min_time_s=0,
        threads=1,
        profile=True,
        profile_runs=2,
    )
    return run_benchmark(tflite_model, s)


def test_json_round_trip_is_exact(result):
    again = BenchResult.from_json(result.to_json())
    assert again == result
    assert isinstance(again.samples_ns, tuple) and isinstance(again.device.freq_policies, tuple)


def test_record_is_immutable(result):
    with pytest.raises(AttributeError):
        result.stats = None  # type: ignore[misc]


def test_without_samples_is_still_a_record(result):
    data = result.to_dict(samples=False)
    assert "samples_ns" not in data
    summary = BenchResult.from_dict(data)
    assert summary.samples_ns == () and summary.stats == result.stats


def test_missing_required_field_is_named(result):
    data = result.to_dict()
    del data["stats"]["p50_ms"]
    with pytest.raises(ResultFormatError, match=r"LatencyStats\.p50_ms"):
        BenchResult.from_dict(data)


def test_future_schema_is_refused(result):
    data = result.to_dict()
    data["schema_version"] = 99
    with pytest.raises(ResultFormatError, match="schema_version 99"):
        BenchResult.from_dict(data)


def test_unknown_fields_are_ignored(result):
    data = result.to_dict()
    data["added_later"] = {"x": 1}
    assert BenchResult.from_dict(data) == result


@pytest.mark.parametrize("text", ["", "[1, 2]", "{not json", '{"schema_version": 1}'])
def test_bad_json(text):
    with pytest.raises(ResultFormatError):
        BenchResult.from_json(text)


JSON = st.recursive(
    st.none() | st.booleans() | st.integers() | st.text(max_size=5),
    lambda c: st.lists(c, max_size=3) | st.dictionaries(st.text(max_size=8), c, max_size=4),
    max_leaves=20,
)


@given(JSON)
def test_random_json_never_crashes_the_reader(value):
    with contextlib.suppress(ResultFormatError):
        BenchResult.from_json(json.dumps(value))
