"""Latency profiling: perf_counter_ns around each call, warm-up first, raw samples kept,
statistics as floats with units in their names. Formatting happens only at the CLI edge."""

from __future__ import annotations

import importlib
import os
import platform
import resource
import sys
import time
from collections.abc import Callable
from dataclasses import asdict, dataclass

import numpy as np

from kdx import __version__


@dataclass(frozen=True)
class LatencyStats:
    """Summary of per-call latency samples (nanoseconds in, microseconds out)."""

    n: int
    p50_us: float
    p90_us: float
    p99_us: float
    max_us: float
    min_us: float
    mean_us: float
    std_us: float
    decisions_per_s: float

    @classmethod
    def from_samples_ns(cls, samples_ns: np.ndarray) -> LatencyStats:
        us = np.asarray(samples_ns, dtype=np.float64) / 1e3
        if us.size == 0:
            raise ValueError("no latency samples")
        p50, p90, p99 = np.percentile(us, [50, 90, 99])
        mean = float(us.mean())
        return cls(
            n=int(us.size), p50_us=float(p50), p90_us=float(p90), p99_us=float(p99),
            max_us=float(us.max()), min_us=float(us.min()), mean_us=mean,
            std_us=float(us.std()), decisions_per_s=1e6 / mean if mean > 0 else float("inf"),
        )

    def to_dict(self) -> dict[str, float | int]:
        return asdict(self)


def time_calls(call: Callable[[int], object], iters: int, warmup: int) -> np.ndarray:
    """Run ``call(i)`` ``warmup`` times untimed, then ``iters`` times timed one by one.

    Returns the raw per-call samples in ns (int64 [iters]). The clock reads (~50-80 ns on x86)
    are inside each sample; that is the cost a caller timing its own decisions also sees.
    """
    for i in range(warmup):
        call(i)
    clock = time.perf_counter_ns
    samples = np.empty(iters, dtype=np.int64)
    for i in range(iters):
        start = clock()
        call(i)
        samples[i] = clock() - start
    return samples


def peak_rss_mib() -> float:
    """Peak resident memory of this process so far, MiB (ru_maxrss is KiB on Linux)."""
    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    return peak / (1024.0 * 1024.0) if sys.platform == "darwin" else peak / 1024.0


def current_rss_mib() -> float:
    """Current resident memory from /proc (Linux); falls back to the peak elsewhere."""
    try:
        with open("/proc/self/statm", encoding="ascii") as handle:
            pages = int(handle.read().split()[1])
        return pages * os.sysconf("SC_PAGE_SIZE") / (1024.0 * 1024.0)
    except (OSError, ValueError, IndexError):
        return peak_rss_mib()


def _cpu_model() -> str:
    try:
        with open("/proc/cpuinfo", encoding="utf-8", errors="replace") as handle:
            for line in handle:
                key, _, value = line.partition(":")
                if key.strip() in ("model name", "Model", "Hardware"):
                    return value.strip()
    except OSError:
        pass
    return platform.processor() or "unknown"


def _jetson_model() -> str | None:
    for path in ("/proc/device-tree/model", "/sys/firmware/devicetree/base/model"):
        try:
            with open(path, encoding="utf-8", errors="replace") as handle:
                return handle.read().strip("\x00\n ")
        except OSError:
            continue
    return None


def _version(module: str) -> str | None:
    try:
        return str(importlib.import_module(module).__version__)
    except Exception:  # absent or broken optional library: record it as missing
        return None


def device_info() -> dict[str, object]:
    """Where a measurement was taken: machine, CPU, OS, library versions."""
    return {
        "platform": platform.platform(),
        "machine": platform.machine(),
        "cpu_model": _cpu_model(),
        "board_model": _jetson_model(),
        "cpu_count": os.cpu_count(),
        "affinity_cpus": len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else None,
        "python": platform.python_version(),
        "kdx": __version__,
        "numpy": np.__version__,
        "onnxruntime": _version("onnxruntime"),
        "tensorrt": _version("tensorrt"),
        "onnx": _version("onnx"),
    }
