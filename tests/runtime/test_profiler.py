"""Latency statistics against hand-computed values, and the timing loop's bookkeeping."""

from __future__ import annotations

import numpy as np
import pytest

from kdx.runtime.policy import Deadline
from kdx.runtime.profiler import (
    LatencyStats,
    current_rss_mib,
    device_info,
    peak_rss_mib,
    time_calls,
)


def test_stats_from_samples_by_hand() -> None:
    s = LatencyStats.from_samples_ns(np.array([4000, 1000, 3000, 2000], dtype=np.int64))
    assert s.n == 4
    assert s.p50_us == pytest.approx(2.5)  # linear interpolation between 2 and 3 µs
    assert s.p90_us == pytest.approx(3.7)  # 1 + 0.9 * 3 = 3.7th position -> 3.7 µs
    assert s.min_us == 1.0 and s.max_us == 4.0
    assert s.mean_us == pytest.approx(2.5)
    assert s.std_us == pytest.approx(np.sqrt(((1.5**2) * 2 + (0.5**2) * 2) / 4))
    assert s.decisions_per_s == pytest.approx(400_000.0)
    assert all(isinstance(v, float) for k, v in s.to_dict().items() if k != "n")


def test_stats_refuse_no_samples() -> None:
    with pytest.raises(ValueError):
        LatencyStats.from_samples_ns(np.array([], dtype=np.int64))


def test_time_calls_warms_up_then_times_each_call() -> None:
    seen = []
    samples = time_calls(seen.append, iters=50, warmup=7)
    assert seen == list(range(7)) + list(range(50))
    assert samples.shape == (50,) and samples.dtype == np.int64 and (samples > 0).all()


def test_memory_and_device_readings_are_plausible() -> None:
    assert 1.0 < current_rss_mib() <= peak_rss_mib() + 1.0
    info = device_info()
    assert info["numpy"] == np.__version__ and info["machine"] and info["cpu_model"]


def test_deadline_counts_and_replaces_late_decisions() -> None:
    deadline = Deadline(budget_us=10.0, fallback_action=0)
    assert deadline.record(3, 9_000) == (3, 9_000, False)
    assert deadline.record(3, 11_000) == (0, 11_000, True)
    summary = deadline.summary()
    assert (summary["decisions"], summary["late"], summary["fallbacks_used"]) == (2, 1, 1)
    assert summary["worst_late_us"] == pytest.approx(11.0)
    counting_only = Deadline(budget_us=10.0)
    assert counting_only.record(3, 11_000) == (3, 11_000, True)
