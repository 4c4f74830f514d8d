"""The rich progress bar of both training stages: env-steps/s, episode return and win rate.

The bar counts env steps out of ``total_steps``; a run with a time budget (``--minutes``) counts
its progress instead (``UpdateLoop.progress``: steps or budget, whichever is further along) as a
percentage, with the env steps in the text.
"""

from __future__ import annotations

from typing import Any, Protocol

from rich.progress import (
    BarColumn,
    MofNCompleteColumn,
    Progress,
    TaskProgressColumn,
    TextColumn,
    TimeElapsedColumn,
    TimeRemainingColumn,
)


class StageSettings(Protocol):
    """What the bar needs of a stage's config."""

    env: str
    total_steps: int
    steps_per_update: int


class TrainProgress:
    """Context manager; ``advance(metrics, progress)`` after each update."""

    def __init__(self, config: StageSettings, start_update: int, enabled: bool = True,
                 budget_s: float | None = None) -> None:
        self.config = config
        self.timed = budget_s is not None
        self.progress = Progress(
            TextColumn(f"[bold]{config.env}[/]"),
            BarColumn(),
            TaskProgressColumn() if self.timed else MofNCompleteColumn(),
            TextColumn("{task.fields[info]}"),
            TimeElapsedColumn(),
            TimeRemainingColumn(),
            disable=not enabled,
        )
        self.task = self.progress.add_task("train", total=1.0 if self.timed else config.total_steps,
                                           completed=0.0 if self.timed else start_update * config.steps_per_update,
                                           info="")
        self.ret: float | None = None
        self.win: float | None = None

    def __enter__(self) -> TrainProgress:
        self.progress.__enter__()
        return self

    def __exit__(self, *exc: object) -> None:
        self.progress.__exit__(*exc)

    def advance(self, m: dict[str, Any], progress: float | None = None) -> None:
        """Show the update just done (``progress``: the run's fraction done, for a timed run)."""
        if m["episode_return"] is not None:
            self.ret = m["episode_return"]
        if m["win_rate"] is not None:
            self.win = m["win_rate"]
        info = f"{m['env_steps_per_s']:,.0f} steps/s"
        if self.timed:
            info = f"{m['env_steps']:,} steps  " + info
        if self.ret is not None:
            info += f"  return {self.ret:.2f}"
        if self.win is not None:
            info += f"  win {self.win:.0%}"
        done = progress if self.timed and progress is not None else m["env_steps"]
        self.progress.update(self.task, completed=done, info=info)
