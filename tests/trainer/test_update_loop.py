"""The per-update bookkeeping both stages share: counting, logging and checkpoint cadence, stopping."""

from __future__ import annotations

import signal
from pathlib import Path
from types import SimpleNamespace

import pytest

from kdx.layout import RunLayout
from kdx.trainer.common.metrics_log import read_metrics_file
from kdx.trainer.common.progress import TrainProgress
from kdx.trainer.common.update_loop import TIMING_METRICS, Counters, UpdateLoop

SETTINGS = SimpleNamespace(env="test", num_updates=7, steps_per_update=10, total_steps=70, log_every=2,
                           checkpoint_every=3, budget_s=None)


def _run(folder, start: Counters, stop_at: int | None = None, stop_after_updates: int | None = None,
         settings=SETTINGS, sync_time=float, progress: list | None = None):
    checkpoints: list[Counters] = []
    bar = TrainProgress(settings, start.update, enabled=False)
    with UpdateLoop(settings, start, checkpoints.append, folder=folder, tag="t", bar=bar,
                    stop_after_updates=stop_after_updates, sync_time=sync_time) as loop:
        ran = []
        for update in loop:
            if progress is not None:
                progress.append(loop.progress(update))
            ran.append(update)
            metrics = loop.metrics(update % 2, {"episode_return": None, "win_rate": None, "x": update})
            if loop.end_update(metrics, lambda m: m["update"] == stop_at):
                break
    return ran, checkpoints, loop.last


def test_counts_logs_and_checkpoints_on_schedule(tmp_path: Path):
    folder = RunLayout(tmp_path).teacher
    ran, checkpoints, last = _run(folder, Counters())
    assert ran == list(range(7))
    assert [c.update for c in checkpoints] == [3, 6, 7]  # every 3rd and the last
    assert checkpoints[-1].env_steps == 70 and checkpoints[-1].episodes == 3  # updates 1, 3, 5 ended one
    rows = read_metrics_file(folder.metrics)
    assert [r["update"] for r in rows] == [2, 4, 6, 7]  # every 2nd and the last
    assert list(rows[0])[:3] == ["update", "env_steps", "episodes"] and list(rows[0])[-len(TIMING_METRICS):] == list(TIMING_METRICS)
    assert last["update"] == 7 and last["x"] == 6


def test_a_stop_checkpoints_first_and_a_resume_continues_the_counters(tmp_path: Path):
    folder = RunLayout(tmp_path).teacher
    ran, checkpoints, _ = _run(folder, Counters(), stop_at=5)
    assert ran == list(range(5)) and [c.update for c in checkpoints] == [3, 5]
    saved = checkpoints[-1]
    assert Counters.from_progress({**saved.to_progress(), "world_size": 1}) == saved
    # a resume from update 5: later lines (none here) are dropped, counting goes on from the checkpoint
    ran, checkpoints, last = _run(folder, saved)
    assert ran == [5, 6] and [c.update for c in checkpoints] == [6, 7]
    assert last["env_steps"] == 70 and last["episodes"] == 3
    assert [r["update"] for r in read_metrics_file(folder.metrics)] == [2, 4, 5, 6, 7]  # the stop is logged


def test_resume_drops_metrics_logged_after_its_checkpoint(tmp_path: Path):
    folder = RunLayout(tmp_path).teacher
    _, checkpoints, _ = _run(folder, Counters())
    _run(folder, checkpoints[0], stop_after_updates=0)  # resume from update 3, run nothing
    assert [r["update"] for r in read_metrics_file(folder.metrics)] == [2]


def test_stop_after_updates_ends_the_process_loop_without_a_checkpoint(tmp_path: Path):
    ran, checkpoints, _ = _run(RunLayout(tmp_path).teacher, Counters(), stop_after_updates=2)
    assert ran == [0, 1] and checkpoints == []


def test_progress_is_the_step_fraction_without_a_time_budget(tmp_path: Path):
    progress: list[float] = []
    _run(RunLayout(tmp_path).teacher, Counters(), progress=progress)
    assert progress == [u / 7 for u in range(7)]


def test_progress_counts_training_time_already_spent_against_the_budget(tmp_path: Path):
    # a resume at update 1 after 50 of 100 budget seconds: half the budget beats 1/7 of the steps;
    # the clock only moves by this process's (sub-second) updates, so later steps take over at 4/7
    settings = SimpleNamespace(**{**vars(SETTINGS), "budget_s": 100.0})
    progress: list[float] = []
    ran, _, _ = _run(RunLayout(tmp_path).teacher, Counters(update=1, env_steps=10, time_s=50.0), settings=settings,
                     progress=progress)
    assert ran == list(range(1, 7))
    assert progress[0] == 0.5
    assert all(0.5 <= p < 0.51 for p in progress[1:3])
    assert progress[3:] == [u / 7 for u in range(4, 7)]


def test_a_spent_time_budget_stops_logs_and_checkpoints_that_update(tmp_path: Path):
    settings = SimpleNamespace(**{**vars(SETTINGS), "budget_s": 100.0})
    folder = RunLayout(tmp_path).teacher
    ran, checkpoints, last = _run(folder, Counters(update=4, env_steps=40, time_s=100.0), settings=settings)
    assert ran == [4]  # the update in flight finishes, then the run ends
    assert [c.update for c in checkpoints] == [5]  # not a checkpoint_every multiple: the stop saves it
    assert [r["update"] for r in read_metrics_file(folder.metrics)] == [5]  # nor a log_every one
    assert last["update"] == 5


def test_data_parallel_ranks_stop_on_the_agreed_clock(tmp_path: Path):
    # this rank's clock is far inside the budget, the agreed (largest) one is past it
    settings = SimpleNamespace(**{**vars(SETTINGS), "budget_s": 3600.0})
    progress: list[float] = []
    ran, checkpoints, _ = _run(RunLayout(tmp_path).teacher, Counters(), settings=settings,
                               sync_time=lambda t: t + 3600.0, progress=progress)
    assert ran == [0] and [c.update for c in checkpoints] == [1]
    assert progress == [0.0]


def _run_signalled(folder, signums: list[int], at_update: int, agree=bool):
    """Run SETTINGS' loop, sending this process ``signums`` during update ``at_update``."""
    checkpoints: list[Counters] = []
    ran = []
    with UpdateLoop(SETTINGS, Counters(), checkpoints.append, folder=folder, tag="t",
                    bar=TrainProgress(SETTINGS, 0, enabled=False), agree=agree) as loop:
        for update in loop:
            ran.append(update)
            if update == at_update:
                for signum in signums:
                    # raise() delivers to this (the main) thread before it returns, so each signal is
                    # handled before the next is sent; os.kill may hand it to another thread, and two
                    # pending signals of one kind merge into one
                    signal.raise_signal(signum)
            metrics = loop.metrics(0, {"episode_return": None, "win_rate": None})
            if loop.end_update(metrics, lambda m: False):
                break
    return ran, checkpoints, loop


@pytest.mark.parametrize("signum", [signal.SIGINT, signal.SIGTERM])
def test_a_stop_signal_ends_the_loop_after_the_update_with_a_logged_checkpoint(tmp_path: Path, capsys, signum):
    before = signal.getsignal(signum)
    folder = RunLayout(tmp_path).teacher
    ran, checkpoints, loop = _run_signalled(folder, [signum], at_update=3)
    assert ran == [0, 1, 2, 3]
    assert [c.update for c in checkpoints] == [3, 4]  # the regular one at 3, then the stop's
    assert loop.last["interrupted"] == signum and loop.last["update"] == 4
    assert [r["update"] for r in read_metrics_file(folder.metrics)] == [2, 4]
    assert "interrupted" not in read_metrics_file(folder.metrics)[-1]  # a run state, not a metric
    assert signal.getsignal(signum) is before  # the handler is put back
    assert "stopping after this update" in capsys.readouterr().err


def test_a_second_signal_aborts_at_once_without_a_checkpoint(tmp_path: Path):
    # Python's own SIGINT handler, as in a terminal; a job started in the background by a shell
    # (CI under nohup, `cmd &`) inherits SIGINT ignored, and a second signal then does what it did before
    previous = signal.signal(signal.SIGINT, signal.default_int_handler)
    try:
        with pytest.raises(KeyboardInterrupt):
            _run_signalled(RunLayout(tmp_path).teacher, [signal.SIGINT, signal.SIGINT], at_update=1)
        assert signal.getsignal(signal.SIGINT) is signal.default_int_handler
    finally:
        signal.signal(signal.SIGINT, previous)


def test_a_stop_asked_by_another_rank_stops_this_one_through_agree(tmp_path: Path):
    asked = []

    def agree(flag: bool) -> bool:  # another rank asks to stop at the 2nd update
        asked.append(flag)
        return flag or len(asked) == 2

    ran, checkpoints, loop = _run_signalled(RunLayout(tmp_path).teacher, [], at_update=-1, agree=agree)
    assert ran == [0, 1] and [c.update for c in checkpoints] == [2]
    assert asked == [False, False] and "interrupted" not in loop.last
