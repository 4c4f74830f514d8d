"""The bookkeeping around each update, the same for both stages.

Before an update: which update comes next (a resume starts after its checkpoint; tests stop a
process early with ``stop_after_updates``). After it: count env steps and episodes, time the run,
write the metrics line (every ``log_every`` updates and at the end), advance the progress bar,
ask the caller whether to stop, and checkpoint (every ``checkpoint_every`` updates, at the end,
and before stopping). What an update *does* stays in each stage's loop.

It also owns how far the run has come, :meth:`UpdateLoop.progress`: the fraction of
``total_steps`` done or, with a time budget (``--minutes``), of the budget spent, whichever is
larger. The learning-rate decay follows it, and the run ends when it reaches 1, so a run given
10 minutes is annealed at 10 minutes on a fast machine and on a loaded one. Training time counts
across resumes (the checkpoint's ``time_s``). Under torchrun every rank uses the largest clock
(``sync_time``), so all ranks set the same learning rate and stop together.

Ctrl-C (SIGINT) or SIGTERM (a scheduler's or ``timeout``'s polite kill) asks the loop to stop
after the update in progress: that update is logged and checkpointed as any last one, and
``last`` carries ``"interrupted": SIGNUM`` so that the command can say how to resume and exit
with ``128 + SIGNUM``, as a process ended by that signal does. A second
signal aborts at once (the run then resumes from its previous checkpoint). The stop request goes
through ``agree``, so the ranks of a data-parallel run stop at the same update.

    with UpdateLoop(config, start, checkpoint, folder=paths, tag="teacher", bar=bar) as loop:
        for update in loop:
            ...  # rollout, advantages, losses
            metrics = loop.metrics(len(buf.episode_returns), {"episode_return": ..., **losses})
            if loop.end_update(metrics, should_stop=lambda metrics: False):
                break  # asked to stop, or the time budget is spent
    return loop.last
"""

from __future__ import annotations

import signal
import sys
import threading
import time
from collections.abc import Callable, Iterator
from dataclasses import asdict, dataclass, replace
from typing import Any, Protocol

import torch

from kdx.layout import StageFolder
from kdx.trainer.common.metrics_log import append_metrics, open_tensorboard, truncate_metrics
from kdx.trainer.common.progress import TrainProgress
from kdx.trainer.common.threads import ThreadGovernor

#: Metrics that depend on wall-clock time; every other metric is reproducible from the seed.
#: ``torch_threads`` is what ``--threads 0`` chose during the update (``trainer.common.threads``).
TIMING_METRICS = ("torch_threads", "env_steps_per_s", "time_s")


def signal_exit_code(last: dict[str, Any]) -> int:
    """The exit code of a command whose loop ended with ``last``: ``128 + SIGNUM`` after a stop
    signal (130 for Ctrl-C, as a shell reports a process that signal ended), else 0."""
    return 128 + int(last["interrupted"]) if last.get("interrupted") else 0


def stopped_by_signal_message(last: dict[str, Any], how_to_continue: str) -> str:
    """What a command prints after a stop signal ended its loop at ``last``."""
    return (f"stopped by a signal at update {last['update']} (env steps {last['env_steps']:,}); the checkpoint "
            f"is written: continue with {how_to_continue}")


class LoopSettings(Protocol):
    """What the loop needs of a stage's config."""

    num_updates: int
    steps_per_update: int
    log_every: int
    checkpoint_every: int
    budget_s: float | None


@dataclass(frozen=True)
class Counters:
    """How far a stage has come: the ``progress`` of its checkpoints, restored on resume."""

    update: int = 0
    env_steps: int = 0
    episodes: int = 0
    time_s: float = 0.0

    @classmethod
    def from_progress(cls, progress: dict[str, Any]) -> Counters:
        """The counters a checkpoint's ``progress`` saved (extra keys are ignored)."""
        return cls(int(progress["update"]), int(progress["env_steps"]), int(progress["episodes"]),
                   float(progress["time_s"]))

    def to_progress(self) -> dict[str, Any]:
        return asdict(self)


class UpdateLoop:
    """Counts, times, logs, checkpoints and stops a stage's updates (see the module docstring).

    Args:
        settings: the stage's config (``num_updates``, ``steps_per_update``, ``log_every``,
            ``checkpoint_every``), for this process.
        start: the counters to start from (``Counters()`` for a new run).
        checkpoint: ``checkpoint(counters)`` writes a resumable checkpoint at ``counters``.
        folder: the stage's run folder; ``metrics.jsonl`` and ``tb/`` are written there.
        tag: the TensorBoard prefix (``"teacher"``, ``"distill"``).
        bar: the progress bar, entered and left with the loop.
        writes_metrics: False in a process that must not write (a data-parallel rank > 0).
        stop_after_updates: end this process's loop after that many updates (the run stays
            resumable from its last checkpoint).
        threads: the stage's torch thread setting, re-checked after each update.
        sync_time: makes the ranks of a data-parallel run agree on the training time (the
            largest); the identity in one process.
        agree: makes the ranks agree on a stop request (True when any rank asks); the identity
            in one process.
    """

    STOP_SIGNALS = (signal.SIGINT, signal.SIGTERM)

    def __init__(self, settings: LoopSettings, start: Counters, checkpoint: Callable[[Counters], None], *,
                 folder: StageFolder, tag: str, bar: TrainProgress, writes_metrics: bool = True,
                 stop_after_updates: int | None = None, threads: ThreadGovernor | None = None,
                 sync_time: Callable[[float], float] = float, agree: Callable[[bool], bool] = bool) -> None:
        self.settings, self.start, self.now = settings, start, start
        self.checkpoint, self.folder, self.tag, self.bar = checkpoint, folder, tag, bar
        self.writes_metrics = writes_metrics
        self.stop_after_updates = stop_after_updates
        self.threads = threads
        self.sync_time = sync_time
        self.agree = agree
        self.interrupted = 0  # the stop signal that arrived (0: none); the loop ends after the current update
        self._previous_handlers: dict[int, Any] = {}
        self._time_s = start.time_s  # training time at the end of the last update, agreed by all ranks
        self.last: dict[str, Any] = {}
        self._tb = None
        self._t0 = time.perf_counter()

    def __enter__(self) -> UpdateLoop:
        if self.writes_metrics:
            truncate_metrics(self.folder.metrics, self.start.update)  # a resume redoes later updates
            self._tb = open_tensorboard(self.folder.tensorboard, purge_step=self.start.env_steps + 1)
        self.bar.__enter__()
        self._catch_stop_signals()
        self._t0 = time.perf_counter()
        return self

    def __exit__(self, *exc: object) -> None:
        self._restore_signal_handlers()
        self.bar.__exit__(*exc)
        if self._tb is not None:
            self._tb.close()

    def _catch_stop_signals(self) -> None:
        if threading.current_thread() is not threading.main_thread():
            return  # signal handlers can only be set from the main thread; stop signals act as before
        for signum in self.STOP_SIGNALS:
            self._previous_handlers[signum] = signal.signal(signum, self._ask_to_stop)

    def _restore_signal_handlers(self) -> None:
        for signum, handler in self._previous_handlers.items():
            signal.signal(signum, handler)
        self._previous_handlers.clear()

    def _ask_to_stop(self, signum: int, frame: object) -> None:
        self.interrupted = signum
        self._restore_signal_handlers()  # a second signal acts as it would without this loop
        if self.writes_metrics:
            print(f"{signal.Signals(signum).name}: stopping after this update and checkpointing it "
                  "(send it again to abort now)", file=sys.stderr, flush=True)

    def __iter__(self) -> Iterator[int]:
        """The 0-based index of each update this process runs."""
        for update in range(self.start.update, self.settings.num_updates):
            if self.stop_after_updates is not None and update - self.start.update >= self.stop_after_updates:
                return
            yield update

    def progress(self, update: int) -> float:
        """How far the run is before ``update`` (0-based), in [0, 1]: the larger of the step
        fraction and the time-budget fraction. Linear decays use ``1 - progress``."""
        fraction = update / self.settings.num_updates
        if self.settings.budget_s is not None:
            fraction = max(fraction, self._time_s / self.settings.budget_s)
        return min(1.0, fraction)

    def budget_spent(self) -> bool:
        """True once the run's training time has reached its ``--minutes`` budget."""
        return self.settings.budget_s is not None and self._time_s >= self.settings.budget_s

    def metrics(self, episodes_ended: int, stage_metrics: dict[str, Any]) -> dict[str, Any]:
        """Count the update just done; its metrics line: ``update``, ``env_steps``, ``episodes``,
        then ``stage_metrics``, then :data:`TIMING_METRICS`."""
        elapsed = self.start.time_s + time.perf_counter() - self._t0
        self.now = replace(self.now, update=self.now.update + 1,
                           env_steps=self.now.env_steps + self.settings.steps_per_update,
                           episodes=self.now.episodes + episodes_ended, time_s=elapsed)
        steps_per_s = (self.now.env_steps - self.start.env_steps) / max(elapsed - self.start.time_s, 1e-9)
        return {"update": self.now.update, "env_steps": self.now.env_steps, "episodes": self.now.episodes,
                **stage_metrics, "torch_threads": torch.get_num_threads(),
                "env_steps_per_s": steps_per_s, "time_s": elapsed}

    def end_update(self, metrics: dict[str, Any], should_stop: Callable[[dict[str, Any]], bool]) -> bool:
        """Log ``metrics``, advance the bar, ask ``should_stop(metrics)``, checkpoint when due;
        True: stop now (after that checkpoint), also when the time budget is spent or a stop
        signal arrived (then ``last`` has ``"interrupted": SIGNUM``)."""
        done, s = self.now.update, self.settings
        self.last = metrics
        if s.budget_s is not None:
            self._time_s = self.sync_time(self.now.time_s)
        asked = self.agree(bool(should_stop(metrics)) or bool(self.interrupted))
        if self.interrupted:
            self.last = {**metrics, "interrupted": int(self.interrupted)}
        last = done == s.num_updates or self.budget_spent() or asked
        if self.writes_metrics and (done % s.log_every == 0 or last):
            append_metrics(self.folder.metrics, self._tb, metrics, self.tag)
        self.bar.advance(metrics, self.progress(done))
        if self.threads is not None:
            self.threads.tick()
        if last or done % s.checkpoint_every == 0:
            self.checkpoint(self.now)
        return last
