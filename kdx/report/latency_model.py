"""A rough latency model for tiny MLP policies: ``latency = overhead + MACs / throughput``.

Fitted by least squares on measured ``(MACs, p50 latency)`` points (the teacher and the students
of a run give several), then either used as is (a device whose own ``kdx-runtime bench --json``
is in ``RUN/devices/``) or scaled to a device profile by a relative CPU factor. Everything here
is an **estimate**: the report labels it so. Torch-free, pure functions.

Relative CPU factor (documented, deliberately simple):

    speed(cpu) = clock_ghz x cores_used x core_factor(core)
    latency_on_device = latency_on_host x speed(host) / speed(device)

``cores_used`` is 1 on both sides: a batch-1 decision of a tiny MLP runs on one core (extra
intra-op threads do not help at this size, see shared/REFERENCE.md). ``core_factor`` is the
per-clock throughput of a core relative to a current x86-64 core (1.0) on small dense matrix
work and on the interpreter-bound per-call overhead alike: a rough number from public
per-clock comparisons, not a measurement. The per-call overhead is scaled by the same factor,
which is the roughest part of all (it is Python and memory-latency bound, not MAC bound).
"""

from __future__ import annotations

import math
import re
from collections.abc import Sequence
from dataclasses import asdict, dataclass

# Per-clock throughput relative to a current x86-64 core = 1.0 (rough, see the module docstring).
CORE_FACTORS: dict[str, float] = {
    "generic x86-64": 1.0,
    "Cortex-A78AE": 0.70,
    "Cortex-A76": 0.65,
    "Carmel (ARMv8.2)": 0.50,
    "Cortex-A72": 0.40,
    "Cortex-A57": 0.30,
    # Microcontrollers (target "c"): in-order, no or small caches, plain C loops. Even rougher.
    "Cortex-M7": 0.20,
    "Xtensa LX7": 0.12,
    "Cortex-M4F": 0.10,
}
# When the core is not in CORE_FACTORS: by instruction set.
ARCH_FACTORS: dict[str, float] = {"x86_64": 1.0, "amd64": 1.0, "aarch64": 0.5, "arm64": 0.5, "armv7l": 0.3}
UNKNOWN_FACTOR = 0.5
ASSUMED_HOST_CLOCK_GHZ = 3.0
CORES_USED = 1  # batch-1 decisions of tiny MLPs run on one core

ESTIMATE_NOTE = (
    "ESTIMATE, not a measurement: latency = overhead + MACs x time per MAC, fitted by least "
    "squares on measured (MACs, p50) points (teacher and students, on whichever backend the runtime "
    "chose for each, so the fit mixes backends); for a profile without its own measurements the "
    "host's fit is scaled by speed(host) / speed(device), speed = clock GHz x cores used (1 at "
    "batch 1) x per-clock core factor (rough public figures: "
    + ", ".join(f"{k} {v:g}" for k, v in CORE_FACTORS.items())
    + "). CPU path only: a Jetson's GPU (TensorRT) is not modelled; microcontroller profiles (target c) "
    "are left out (no Python runtime to scale). Expect errors of 2x either way."
)


@dataclass(frozen=True)
class LatencyModel:
    """``p50_us(macs) = overhead_us + us_per_mac * macs``, fitted on ``n_points`` measurements."""

    overhead_us: float
    us_per_mac: float
    n_points: int
    source: str  # where the points came from (for the report)

    def p50_us(self, macs: float) -> float:
        return self.overhead_us + self.us_per_mac * macs

    @property
    def macs_per_us(self) -> float:
        """Throughput of the MAC-proportional part (inf when the fit found no MAC cost)."""
        return 1.0 / self.us_per_mac if self.us_per_mac > 0 else math.inf

    def scaled(self, factor: float, source: str) -> LatencyModel:
        """The same model on a machine ``factor`` times slower (factor > 1) or faster."""
        return LatencyModel(self.overhead_us * factor, self.us_per_mac * factor, self.n_points, source)

    def to_json(self) -> dict:
        return asdict(self)


def fit_latency_model(macs: Sequence[float], latency_us: Sequence[float], source: str = "") -> LatencyModel:
    """Least-squares ``latency = a + b * macs`` with ``a, b >= 0``.

    Ordinary least squares first; if it gives a negative slope (noise dominates: every network
    costs the same), the model is the mean latency with no MAC cost; if it gives a negative
    intercept, the line is forced through the origin (``b = sum(x*y) / sum(x*x)``). One distinct
    MACs value (or one point) gives the mean as overhead and no slope. ValueError when empty or
    when the lengths differ.
    """
    if len(macs) != len(latency_us):
        raise ValueError(f"{len(macs)} MACs values but {len(latency_us)} latencies")
    n = len(macs)
    if n == 0:
        raise ValueError("no (MACs, latency) points to fit")
    xs = [float(x) for x in macs]
    ys = [float(y) for y in latency_us]
    mean_x, mean_y = sum(xs) / n, sum(ys) / n
    sxx = sum((x - mean_x) ** 2 for x in xs)
    if sxx == 0.0:
        return LatencyModel(mean_y, 0.0, n, source)
    slope = sum((x - mean_x) * (y - mean_y) for x, y in zip(xs, ys)) / sxx
    if slope <= 0.0:
        return LatencyModel(mean_y, 0.0, n, source)
    intercept = mean_y - slope * mean_x
    if intercept < 0.0:
        return LatencyModel(0.0, sum(x * y for x, y in zip(xs, ys)) / sum(x * x for x in xs), n, source)
    return LatencyModel(intercept, slope, n, source)


def core_factor(core: str | None, arch: str | None) -> float:
    """Per-clock factor of ``core`` (``CORE_FACTORS``), else of ``arch``, else ``UNKNOWN_FACTOR``."""
    if core in CORE_FACTORS:
        return CORE_FACTORS[core]
    return ARCH_FACTORS.get((arch or "").lower(), UNKNOWN_FACTOR)


def cpu_speed(clock_ghz: float, core: str | None, arch: str | None, cores_used: int = CORES_USED) -> float:
    """Relative speed ``clock x cores_used x core factor`` (unitless; only ratios mean anything)."""
    return clock_ghz * cores_used * core_factor(core, arch)


def clock_from_cpu_model(cpu_model: str) -> float | None:
    """The nominal clock in a CPU model string (``"... @ 2.20GHz"``), or None."""
    match = re.search(r"(\d+(?:\.\d+)?)\s*GHz", cpu_model or "", re.IGNORECASE)
    return float(match.group(1)) if match else None


def host_clock_ghz(device: dict | None = None) -> tuple[float, str]:
    """This host's clock in GHz and where it came from: the CPU model string, /proc/cpuinfo's
    ``cpu MHz`` (the current clock: a rough stand-in), or an assumed value."""
    clock = clock_from_cpu_model(str((device or {}).get("cpu_model", "")))
    if clock:
        return clock, "CPU model string"
    try:
        with open("/proc/cpuinfo", encoding="utf-8", errors="replace") as handle:
            for line in handle:
                key, _, value = line.partition(":")
                if key.strip() == "cpu MHz":
                    return float(value) / 1000.0, "/proc/cpuinfo cpu MHz"
    except (OSError, ValueError):
        pass
    return ASSUMED_HOST_CLOCK_GHZ, "assumed (unknown)"
