"""Hand-dropped latency files: whatever JSON lies in RUN/devices/, the report reads it or skips it
with a reason (ValueError inside, a listed problem outside), never a crash."""

from __future__ import annotations

import json

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from kdx.layout import RunLayout
from kdx.report.collect import parse_bench_json, probe_times, read_devices

json_values = st.recursive(
    st.none() | st.booleans() | st.integers() | st.floats(allow_nan=True) | st.text(max_size=8),
    lambda inner: st.lists(inner, max_size=4) | st.dictionaries(st.text(max_size=8), inner, max_size=4),
    max_leaves=20,
)
row = st.fixed_dictionaries({"agent": st.text(max_size=5) | st.integers(), "role": st.sampled_from(["student", "teacher", "x"]),
                             "p50_us": json_values, "p99_us": json_values},
                            optional={"macs": json_values, "samples_ns": json_values, "backend": json_values})
bench_like = st.fixed_dictionaries({"results": st.lists(row, max_size=3) | json_values},
                                   optional={"device": json_values, "bundle": json_values})


@settings(max_examples=300, deadline=None)
@given(st.one_of(json_values, bench_like))
def test_any_json_parses_or_is_a_value_error(doc):
    try:
        parsed = parse_bench_json(doc, "x", "x.json")
    except ValueError:
        return
    assert parsed.results and all(r.role in ("student", "teacher") for r in parsed.results)


def test_malformed_device_files_are_listed_and_skipped(tmp_path):
    devices = RunLayout(tmp_path).devices
    devices.mkdir()
    (devices / "broken.json").write_text("{not json")
    (devices / "list.json").write_text(json.dumps([1, 2]))
    (devices / "binary.json").write_bytes(b"\xff\xfe\x00")
    problems: list[str] = []
    assert read_devices(tmp_path, problems) == []
    assert len(problems) == 3 and all("skipped" in p or "not" in p for p in problems)


@pytest.mark.parametrize("p50", [10**400, -(10**400), float("inf"), True, "1"])
def test_a_latency_beyond_float_range_is_a_value_error_not_a_crash(p50):
    doc = {"results": [{"agent": "a", "role": "student", "p50_us": p50, "p99_us": 1.0}]}
    with pytest.raises(ValueError, match="p50_us must be a finite number"):
        parse_bench_json(doc, "x", "x.json")
    assert probe_times({"numpy": p50, "onnxruntime": 2.5}) == {"onnxruntime": 2.5}


def test_an_integer_beyond_int64_is_read_as_the_float_it_is():
    # numpy's isfinite raised TypeError on it (found by the hypothesis test above)
    big = -9_223_372_036_854_775_809
    assert probe_times({"numpy": -big}) == {"numpy": float(-big)}
    doc = {"results": [{"agent": "a", "role": "student", "p50_us": -big, "p99_us": -big}]}
    try:
        parse_bench_json(doc, "x", "x.json")
    except ValueError as exc:  # a later check may refuse it, but with a message, not a TypeError
        assert "p50_us" in str(exc) or "p99_us" in str(exc)
