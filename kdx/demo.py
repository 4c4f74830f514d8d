"""``kdx demo``: the whole pipeline end to end on a small setting, as a user would type it.

Every stage runs the real command (``kdx train``, ``kdx distill``, ..., ``kdx-runtime bench``)
in this process and prints the command line first, so the demo doubles as a tutorial:

1. ``kdx train``     a MAPPO teacher on ``mpe/simple_speaker_listener``
2. ``kdx distill``   per-agent students sized for a Raspberry Pi 5
3. ``kdx evaluate``  teacher vs students on the same seeds
4. ``kdx export``    a bundle for the profile's target and precision (``rpi``, int8: export's
                     default for students distilled for ``rpi5``), then one for ``x86`` (fp32)
5. ``kdx-runtime bench`` and ``kdx-runtime run``  (torch-free runtime, latency and closed loop)
6. ``kdx report``    report.md + report.html

A stage whose command is not in this version of kdx is reported as skipped; a stage that fails
stops the demo with its error. ``make demo`` calls ``kdx demo``.
"""

from __future__ import annotations

import shlex
import signal
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Optional

import typer
from rich.console import Console
from rich.rule import Rule
from rich.table import Table

from kdx.envs.twins import pettingzoo_twin
from kdx.errors import KdxError
from kdx.fileio import remove_path
from kdx.layout import RunLayout

console = Console()


@dataclass(frozen=True)
class DemoConfig:
    """Settings of the end-to-end demo (sized to finish in minutes on a 2-core CPU)."""

    out: Path = Path("runs/demo")
    # speaker_listener: two heterogeneous agents (the speaker sees only the goal's colour, the
    # listener its velocity, the landmarks and the speaker's message), so the students differ in
    # input and size as KD-MARL intends, and its teacher converges on 2 CPU cores within the demo
    # (~1.0 normalised after ~500k steps). simple_spread needs ~10 minutes to pass 0.85.
    env: str = "mpe/simple_speaker_listener"
    seed: int = 0
    # The teacher trains by its env's recipe with the demo's time budget: the lr decays over
    # those minutes (or over teacher_steps, when given and reached first), so the teacher the
    # report shows has finished learning, on a fast machine and on a slow one alike. A fixed
    # step count would make a slow machine's demo long, and a short horizon decays the lr before
    # the curve flattens (500k steps: still visibly climbing at its end).
    teacher_minutes: float = 2.5
    teacher_steps: int | None = None
    distill_steps: int = 300_000
    profile: str = "rpi5"
    extra_targets: tuple[str, ...] = ("x86",)  # bundles beyond the one for the profile's own target
    eval_episodes: int = 100
    bench_iters: int = 5_000
    run_episodes: int = 20
    fresh: bool = False
    # More `kdx train` flags (tests shrink the run with them). None by default: the teacher is
    # trained by the env's recipe (kdx/trainer/recipes/mpe.toml, tuned for 2 CPU cores).
    extra_train_args: tuple[str, ...] = ()

    @property
    def profile_target(self) -> str:
        """The export target of the device profile (where ``kdx export`` puts the first bundle)."""
        from kdx.devices.registry import get_profile

        return get_profile(self.profile).target

    @property
    def targets(self) -> tuple[str, ...]:
        """Every target the demo exports to: the profile's, then the extra ones."""
        return tuple(dict.fromkeys((self.profile_target, *self.extra_targets)))


class StageUnavailable(Exception):
    """A pipeline stage whose command this version of kdx does not ship."""


def _invoke(program: str, args: list[str]) -> None:
    """Run ``program args`` (``kdx`` or ``kdx-runtime``) in this process, echoing the command."""
    from kdx.cli_common import exit_types

    if program == "kdx":
        from kdx.cli import app
    else:
        from kdx.runtime.cli import app
    command = typer.main.get_command(app)
    if args[0] not in getattr(command, "commands", {}):
        raise StageUnavailable(f"`{program} {args[0]}` is not part of this version")
    console.print(f"[bold cyan]$ {program} {shlex.join(args)}[/]")
    try:
        rc = command.main(args=args, prog_name=program, standalone_mode=False)
    except exit_types() as exc:
        rc = exc.exit_code
    if rc in (128 + signal.SIGINT, 128 + signal.SIGTERM):
        raise KdxError(f"`{program} {shlex.join(args)}` was stopped by a signal after checkpointing; "
                       "run `kdx demo` again (without --fresh) to continue from there")
    if isinstance(rc, int) and rc != 0:
        raise KdxError(f"`{program} {shlex.join(args)}` exited with code {rc}")


def _budget_args(cfg: DemoConfig) -> list[str]:
    steps = ["--steps", str(cfg.teacher_steps)] if cfg.teacher_steps is not None else []
    return ["--minutes", f"{cfg.teacher_minutes:g}", *steps]


def train_args(cfg: DemoConfig) -> list[str]:
    """The demo's `kdx train` command line for a new teacher."""
    return ["train", "--env", cfg.env, *_budget_args(cfg), "--seed", str(cfg.seed),
            "--out", str(cfg.out), *cfg.extra_train_args]


def stage_train(cfg: DemoConfig) -> None:
    teacher = RunLayout(cfg.out).teacher.weights
    if teacher.exists():
        _invoke("kdx", ["train", "--resume", str(cfg.out), *_budget_args(cfg)])
        return
    _invoke("kdx", train_args(cfg))


def stage_distill(cfg: DemoConfig) -> None:
    args = ["distill", str(cfg.out), "--steps", str(cfg.distill_steps)]
    if RunLayout(cfg.out).students.config.exists():
        args.append("--resume")  # the saved config (and its profile) carries on
    else:
        args += ["--profile", cfg.profile]
    _invoke("kdx", args)


def stage_evaluate(cfg: DemoConfig) -> None:
    _invoke("kdx", ["evaluate", str(cfg.out), "--episodes", str(cfg.eval_episodes)])


def stage_export(cfg: DemoConfig) -> None:
    _invoke("kdx", ["export", str(cfg.out), "--force"])  # the profile's target and precision
    for target in cfg.targets[1:]:
        _invoke("kdx", ["export", str(cfg.out), "--target", target, "--force"])


def stage_runtime(cfg: DemoConfig) -> None:
    bundle = RunLayout(cfg.out).bundle(cfg.profile_target)
    devices = RunLayout(cfg.out).devices
    devices.mkdir(parents=True, exist_ok=True)
    _invoke("kdx-runtime", ["info", str(bundle)])
    _invoke("kdx-runtime", ["bench", str(bundle), "--iters", str(cfg.bench_iters),
                            "--json", str(devices / "this-host.json")])
    # The bundle's env, from its manifest: torch-free in its PettingZoo twin, else in kdx's own env.
    program = "kdx-runtime" if pettingzoo_twin(cfg.env) else "kdx"
    _invoke(program, ["run", str(bundle), "--episodes", str(cfg.run_episodes)])


def stage_report(cfg: DemoConfig) -> None:
    _invoke("kdx", ["report", str(cfg.out)])


STAGES: dict[str, Callable[[DemoConfig], None]] = {
    "1. train the teacher (MAPPO)": stage_train,
    "2. distil students for the device": stage_distill,
    "3. evaluate teacher vs students": stage_evaluate,
    "4. export bundles": stage_export,
    "5. on-device runtime: bench + closed loop": stage_runtime,
    "6. report": stage_report,
}


def check_demo_config(cfg: DemoConfig) -> None:
    """Every argument, before anything is written or deleted; ``KdxError`` naming the bad one."""
    from kdx.devices.registry import get_profile

    if not cfg.teacher_minutes > 0:
        raise KdxError(f"--teacher-minutes must be positive (got {cfg.teacher_minutes})")
    for name in ("teacher_steps", "distill_steps", "eval_episodes", "bench_iters", "run_episodes"):
        if getattr(cfg, name) is not None and getattr(cfg, name) < 1:
            raise KdxError(f"--{name.replace('_', '-')} must be a positive integer (got {getattr(cfg, name)})")
    get_profile(cfg.profile)  # an unknown profile names the choices
    layout = RunLayout(cfg.out)
    if cfg.out.exists() and not cfg.out.is_dir():
        raise KdxError(f"--out {cfg.out} is a file, not a folder; choose another --out")
    if cfg.fresh and cfg.out.is_dir() and any(cfg.out.iterdir()) and not layout.is_kdx_run():
        raise KdxError(f"--fresh would delete {cfg.out}, which is not a kdx run (no teacher/config.json, "
                       "students/, eval.json or bundles/ in it); choose another --out")


def _empty_run_folder(layout: RunLayout) -> None:
    """Delete what a run folder holds, keeping the writer lock this process holds."""
    for path in layout.run.iterdir():
        if path != layout.lock:
            remove_path(path)


def run_demo(cfg: DemoConfig) -> dict[str, dict]:
    """Run every stage in order; returns each stage's outcome and wall time in seconds.

    Every argument is checked first; ``--fresh`` empties the folder only when it holds a kdx run.
    The demo holds the run's writer lock throughout (its stages take it again).
    """
    check_demo_config(cfg)
    layout = RunLayout(cfg.out)
    with layout.writing("kdx demo", create=True):
        if cfg.fresh:
            _empty_run_folder(layout)
        return _run_stages(cfg)


def _run_stages(cfg: DemoConfig) -> dict[str, dict]:
    outcomes: dict[str, dict] = {}
    start = time.perf_counter()
    for title, stage in STAGES.items():
        console.print(Rule(f"[bold]{title}"))
        t0 = time.perf_counter()
        try:
            stage(cfg)
            outcome = "ok"
        except StageUnavailable as exc:
            console.print(f"[yellow]skipped:[/] {exc}")
            outcome = f"skipped ({exc})"
        outcomes[title] = {"outcome": outcome, "seconds": time.perf_counter() - t0}
    total = time.perf_counter() - start
    table = Table(title=f"kdx demo: {cfg.env}, students for {cfg.profile}")
    table.add_column("stage")
    table.add_column("outcome")
    table.add_column("wall time", justify="right")
    for title, o in outcomes.items():
        table.add_row(title, o["outcome"], f"{o['seconds']:.1f} s")
    table.add_row("total", "", f"{total:.1f} s")
    console.print(table)
    report = RunLayout(cfg.out).report_html
    console.print(f"Run folder: [bold]{cfg.out}/[/]" + (f"  report: [bold]{report}[/]" if report.exists() else ""))
    return outcomes


def register(app: typer.Typer) -> None:
    @app.command("demo")
    def demo(
        out: Path = typer.Option(DemoConfig.out, help="Run folder for the demo's outputs."),
        env: str = typer.Option(DemoConfig.env, help="Environment (see `kdx envs list`)."),
        seed: int = typer.Option(DemoConfig.seed, help="Random seed."),
        teacher_minutes: float = typer.Option(DemoConfig.teacher_minutes, help="Teacher training-time budget in minutes."),
        teacher_steps: Optional[int] = typer.Option(None, help="Teacher env steps, if fewer than the recipe's bound."),  # noqa: UP045
        distill_steps: int = typer.Option(DemoConfig.distill_steps, help="Distillation env steps."),
        profile: str = typer.Option(DemoConfig.profile, "--profile", help="Device profile for the students."),
        fresh: bool = typer.Option(False, "--fresh", help="Delete the demo run folder first (otherwise finished stages resume)."),
    ) -> None:
        """Run the whole pipeline end to end on speaker_listener (what `make demo` runs)."""
        run_demo(DemoConfig(out=out, env=env, seed=seed, teacher_minutes=teacher_minutes, teacher_steps=teacher_steps,
                            distill_steps=distill_steps,
                            profile=profile, fresh=fresh))
