"""``--threads 0``: the thread count follows the cores other processes leave free."""

from __future__ import annotations

import os
import subprocess
import sys
import time

import pytest
import torch

from kdx.trainer.common.threads import PROC_STAT, ThreadGovernor, parse_busy_seconds, threads_for


@pytest.mark.parametrize(("cores", "other", "expected"), [
    (2, 0.0, 2), (2, 0.1, 2), (2, 0.3, 1), (2, 1.0, 1), (2, 2.5, 1),
    (4, 0.0, 4), (4, 1.0, 3), (4, 1.2, 3), (4, 1.3, 2), (1, 0.0, 1), (8, -0.5, 8),
])
def test_threads_for_counts_free_cores(cores: int, other: float, expected: int) -> None:
    # the same rule as a loop: a core counts while at least 0.75 of it is free
    free, count = cores - max(0.0, other), 0
    while count < cores and free - count >= 0.75:
        count += 1
    assert threads_for(cores, other) == max(1, count) == expected


def test_parse_busy_seconds_sums_busy_fields_only() -> None:
    text = "cpu  100 20 30 4000 50 6 7 8 0 0\ncpu0 1 2 3 4 5 6 7 8 0 0\nintr 1\n"
    assert parse_busy_seconds(text, 100) == pytest.approx((100 + 20 + 30 + 6 + 7 + 8) / 100)
    with pytest.raises(ValueError, match="cpu"):
        parse_busy_seconds("intr 1\n", 100)


def test_fixed_thread_count_is_applied_and_kept() -> None:
    before = torch.get_num_threads()
    try:
        governor = ThreadGovernor(1, interval_s=0.0)
        assert torch.get_num_threads() == 1 and not governor.adaptive and governor.tick() == 1
    finally:
        torch.set_num_threads(before)


@pytest.mark.skipif(not os.path.exists(PROC_STAT), reason="needs Linux /proc/stat")
def test_adaptive_count_leaves_a_core_to_a_busy_process() -> None:
    """A process spinning on one core: the governor's next reading sees it and uses at most
    cores - 1 threads (one when there are two cores)."""
    before = torch.get_num_threads()
    spinner = subprocess.Popen([sys.executable, "-c", "while True: pass"])
    try:
        time.sleep(0.3)  # the spinner is running
        governor = ThreadGovernor(0, interval_s=0.5)
        assert governor.adaptive
        assert 1 <= governor.threads <= max(1, governor.cores - 1)  # the first reading saw it
        time.sleep(0.6)
        threads = governor.tick()
        assert 1 <= threads <= max(1, governor.cores - 1)
        assert torch.get_num_threads() == threads
    finally:
        spinner.kill()
        spinner.wait()
        torch.set_num_threads(before)
