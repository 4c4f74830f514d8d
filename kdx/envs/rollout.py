"""Random-policy rollouts with a progress bar: the first stage of the demo and a smoke check."""

from __future__ import annotations

import time
from dataclasses import dataclass

import torch
from rich.console import Console
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn
from rich.table import Table

from kdx.envs.registry import make


@dataclass
class RolloutSummary:
    """Episode statistics of a random rollout. Rates are floats; formatting happens at the edge."""

    env: str
    num_envs: int
    steps: int
    episodes: int
    mean_return: float
    mean_length: float
    win_rate: float | None
    env_steps_per_s: float


def random_rollout(env_name: str, num_envs: int, steps: int, seed: int = 0, device: str = "cpu",
                   show_progress: bool = True) -> RolloutSummary:
    """Run ``steps`` batched steps of uniformly random legal actions in ``env_name``."""
    env = make(env_name, num_envs=num_envs, seed=seed, device=device)
    env.reset()
    returns: list[torch.Tensor] = []
    lengths: list[torch.Tensor] = []
    wins: list[torch.Tensor] = []
    progress = Progress(
        TextColumn(f"[bold]{env_name}[/] x{num_envs}"),
        BarColumn(),
        MofNCompleteColumn(),
        TextColumn("{task.fields[rate]}"),
        TimeElapsedColumn(),
        disable=not show_progress,
    )
    start = time.perf_counter()
    with progress:
        task = progress.add_task("rollout", total=steps, rate="")
        for i in range(steps):
            out = env.step(env.sample_random_actions())
            done = out.done
            if bool(done.any()):
                returns.append(out.info["episode_return"][done].cpu())
                lengths.append(out.info["episode_length"][done].cpu())
                wins.append(out.info["won"][done].cpu())
            if i % 10 == 9 or i == steps - 1:
                rate = (i + 1) * num_envs / (time.perf_counter() - start)
                progress.update(task, completed=i + 1, rate=f"{rate:,.0f} env-steps/s")
    elapsed = time.perf_counter() - start
    env.close()
    ret = torch.cat(returns) if returns else torch.zeros(0)
    length = torch.cat(lengths).float() if lengths else torch.zeros(0)
    won = torch.cat(wins).float() if wins else torch.zeros(0)
    return RolloutSummary(
        env=env_name,
        num_envs=num_envs,
        steps=steps,
        episodes=int(ret.numel()),
        mean_return=float(ret.mean()) if ret.numel() else float("nan"),
        mean_length=float(length.mean()) if length.numel() else float("nan"),
        win_rate=float(won.mean()) if (won.numel() and env.spec.has_win_flag) else None,
        env_steps_per_s=steps * num_envs / elapsed,
    )


def print_rollout_summary(summary: RolloutSummary, console: Console | None = None) -> None:
    """Print a rollout summary as a table."""
    table = Table(title=f"random policy on {summary.env}")
    for col in ("envs", "steps", "episodes", "mean return", "mean length", "win rate", "env-steps/s"):
        table.add_column(col, justify="right")
    table.add_row(
        str(summary.num_envs),
        str(summary.steps),
        str(summary.episodes),
        f"{summary.mean_return:.3f}",
        f"{summary.mean_length:.1f}",
        "-" if summary.win_rate is None else f"{summary.win_rate:.1%}",
        f"{summary.env_steps_per_s:,.0f}",
    )
    (console or Console()).print(table)
