"""``kdx demo``: the whole pipeline end to end on a small setting, in the order a user runs it.

Each stage is a function in ``STAGES``; a stage whose feature is not installed in this version
says so and the demo goes on with the rest. ``make demo`` calls ``kdx demo``.
"""

from __future__ import annotations

import importlib
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import typer
from rich.console import Console
from rich.rule import Rule

console = Console()


@dataclass(frozen=True)
class DemoConfig:
    """Settings of the end-to-end demo."""

    out: Path = Path("runs/demo")
    env: str = "mpe/simple_spread"
    seed: int = 0
    rollout_envs: int = 1024
    rollout_steps: int = 100


class StageUnavailable(Exception):
    """A pipeline stage that this version of kdx does not ship yet."""


def _require(module: str) -> None:
    try:
        importlib.import_module(module)
    except ModuleNotFoundError as exc:
        if exc.name == module:
            raise StageUnavailable(f"{module} is not part of this version") from None
        raise


def stage_rollout(cfg: DemoConfig) -> None:
    """A random-policy rollout of the batched environment, to show the simulator runs."""
    from kdx.envs.registry import available
    from kdx.envs.rollout import print_rollout_summary, random_rollout

    env = cfg.env if cfg.env in available() else "pettingzoo:mpe2.simple_spread_v3"
    num_envs = cfg.rollout_envs if env == cfg.env else 8
    summary = random_rollout(env, num_envs=num_envs, steps=cfg.rollout_steps, seed=cfg.seed)
    print_rollout_summary(summary, console)


STAGES: dict[str, Callable[[DemoConfig], None]] = {
    "environment rollout": stage_rollout,
}


def run_demo(cfg: DemoConfig) -> dict[str, str]:
    """Run every stage in order; returns each stage's outcome ("ok", "skipped: ...")."""
    outcomes: dict[str, str] = {}
    start = time.perf_counter()
    for title, stage in STAGES.items():
        console.print(Rule(f"[bold]{title}"))
        try:
            stage(cfg)
            outcomes[title] = "ok"
        except StageUnavailable as exc:
            console.print(f"[yellow]skipped:[/] {exc}")
            outcomes[title] = f"skipped: {exc}"
    console.print(Rule("[bold]demo finished"))
    for title, outcome in outcomes.items():
        console.print(f"  {title:<28} {outcome}")
    console.print(f"  wall time {time.perf_counter() - start:.1f} s; outputs under {cfg.out}/")
    return outcomes


def register(app: typer.Typer) -> None:
    @app.command("demo")
    def demo(
        out: Path = typer.Option(DemoConfig.out, help="Run folder for the demo's outputs."),
        seed: int = typer.Option(DemoConfig.seed, help="Random seed."),
    ) -> None:
        """Run the whole pipeline end to end on a small setting (what `make demo` runs)."""
        run_demo(DemoConfig(out=out, seed=seed))
