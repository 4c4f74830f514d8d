"""How many intra-op threads torch uses while a stage trains (``--threads``; 0 = adapt).

Why adapt: torch's intra-op pool splits each op over its threads and waits for the slowest one.
When another process holds one of the cores, one of our threads gets only part of a core and the
scheduler's time slices (milliseconds) land inside ops that take microseconds, so every op waits
for a descheduled thread: on a 2-core box, skirmish/8m at 4096 envs fell 6.5x with 2 threads
while one other process ran, and MPE 10-35x (issue 16). One thread per core that nobody else
uses avoids the stall; on a quiet box all cores are used.

``--threads N`` (N > 0) fixes the count. ``--threads 0`` (the default) starts from the cores
other processes used during a short first reading (``START_SAMPLE_S``, before any work: the
1-minute load average would still count processes that just ended), then re-reads the CPU time
of the whole machine and of this process every ``interval_s`` seconds (Linux ``/proc/stat``) and
sets torch's thread count to the cores other processes left free during that interval. Where
``/proc/stat`` cannot be read, the count follows the 1-minute load average once, at the start.
"""

from __future__ import annotations

import math
import os
import time
from dataclasses import dataclass

import torch

PROC_STAT = "/proc/stat"
#: Free-core share that still counts as a whole core (hysteresis against momentary blips).
ROUND_UP_FROM = 0.75
#: Seconds of the first reading of the machine's load, before the stage starts working.
START_SAMPLE_S = 0.25


def usable_cores() -> int:
    """Cores this process may run on (its CPU affinity)."""
    return max(1, len(os.sched_getaffinity(0)))


def threads_for(cores: int, other_busy_cores: float) -> int:
    """Threads to use when other processes keep ``other_busy_cores`` cores busy: the free cores,
    a fraction of at least :data:`ROUND_UP_FROM` counting as one, between 1 and ``cores``."""
    free = cores - max(0.0, other_busy_cores)
    return max(1, min(cores, math.floor(free + 1.0 - ROUND_UP_FROM)))


def parse_busy_seconds(stat_text: str, clock_ticks: int) -> float:
    """CPU-seconds all cores spent busy since boot, from the ``cpu`` line of ``/proc/stat``
    (user, nice, system, irq, softirq and steal; idle and iowait are not busy)."""
    for line in stat_text.splitlines():
        fields = line.split()
        if fields and fields[0] == "cpu":
            ticks = [int(v) for v in fields[1:9]] + [0] * max(0, 9 - len(fields))
            user, nice, system, _idle, _iowait, irq, softirq, steal = ticks[:8]
            return (user + nice + system + irq + softirq + steal) / clock_ticks
    raise ValueError("no aggregate 'cpu' line in /proc/stat")


@dataclass
class _Sample:
    wall_s: float
    machine_busy_s: float
    own_busy_s: float


class ThreadGovernor:
    """Sets torch's intra-op thread count for a training stage (see the module docstring).

    Args:
        requested: ``--threads``: N > 0 fixes N threads; 0 adapts to the free cores.
        interval_s: seconds between re-reads in adaptive mode.
    """

    def __init__(self, requested: int, interval_s: float = 2.0) -> None:
        self.requested, self.interval_s = requested, interval_s
        self.cores = usable_cores()
        self._clock_ticks = os.sysconf("SC_CLK_TCK") if hasattr(os, "sysconf") else 100
        self._last = self._sample() if requested == 0 else None
        if requested > 0:
            self.threads = requested
        elif self._last is not None:
            time.sleep(START_SAMPLE_S)  # this process is idle meanwhile: what is busy is others
            self.threads = threads_for(self.cores, self._others_since_last() or 0.0)
        else:
            try:
                load = os.getloadavg()[0]
            except OSError:
                load = 0.0
            self.threads = threads_for(self.cores, load)
        torch.set_num_threads(self.threads)

    @property
    def adaptive(self) -> bool:
        return self.requested == 0 and self._last is not None

    def _sample(self) -> _Sample | None:
        try:
            with open(PROC_STAT) as f:
                machine = parse_busy_seconds(f.read(), self._clock_ticks)
        except (OSError, ValueError):
            return None
        own = os.times()
        return _Sample(time.monotonic(), machine, own.user + own.system)

    def _others_since_last(self) -> float | None:
        """Cores other processes kept busy since the last reading (None: unreadable); starts the
        next interval."""
        now = self._sample()
        if now is None or self._last is None:
            return None
        span = max(now.wall_s - self._last.wall_s, 1e-6)
        other = ((now.machine_busy_s - self._last.machine_busy_s) - (now.own_busy_s - self._last.own_busy_s)) / span
        self._last = now
        return other

    def tick(self) -> int:
        """Call once per update; re-reads the load when ``interval_s`` has passed. Returns the
        thread count in use."""
        if not self.adaptive or time.monotonic() - self._last.wall_s < self.interval_s:
            return self.threads
        other = self._others_since_last()
        if other is None:
            return self.threads
        threads = threads_for(self.cores, other)
        if threads != self.threads:
            self.threads = threads
            torch.set_num_threads(threads)
        return self.threads
