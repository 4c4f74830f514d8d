"""The rich progress bar of both training stages: env-steps/s, episode return and win rate."""

from __future__ import annotations

from typing import Any, Protocol

from rich.progress import (
    BarColumn,
    MofNCompleteColumn,
    Progress,
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
    """Context manager; ``advance(metrics)`` after each update."""

    def __init__(self, config: StageSettings, start_update: int, enabled: bool = True) -> None:
        self.config = config
        self.progress = Progress(
            TextColumn(f"[bold]{config.env}[/]"),
            BarColumn(),
            MofNCompleteColumn(),
            TextColumn("{task.fields[info]}"),
            TimeElapsedColumn(),
            TimeRemainingColumn(),
            disable=not enabled,
        )
        self.task = self.progress.add_task("train", total=config.total_steps,
                                           completed=start_update * config.steps_per_update, info="")
        self.ret: float | None = None
        self.win: float | None = None

    def __enter__(self) -> TrainProgress:
        self.progress.__enter__()
        return self

    def __exit__(self, *exc: object) -> None:
        self.progress.__exit__(*exc)

    def advance(self, m: dict[str, Any]) -> None:
        if m["episode_return"] is not None:
            self.ret = m["episode_return"]
        if m["win_rate"] is not None:
            self.win = m["win_rate"]
        info = f"{m['env_steps_per_s']:,.0f} steps/s"
        if self.ret is not None:
            info += f"  return {self.ret:.2f}"
        if self.win is not None:
            info += f"  win {self.win:.0%}"
        self.progress.update(self.task, completed=m["env_steps"], info=info)
