"""``kdx sweep RUN --profiles rpi5,jetson-orin-nano --seeds 3 --workers K [--ablations full,no-rel]``."""

from __future__ import annotations

from typing import Optional

import typer

from kdx.errors import KdxError

# DistillConfig fields every job gets from the sweep itself (not from --set).
SWEEP_FIELDS = ("profile", "seed", "torch_device")


def _split(text: str) -> tuple[str, ...]:
    return tuple(part.strip() for part in text.split(",") if part.strip())


def parse_settings(settings: list[str] | None) -> dict:
    """``["num_envs=32", "lr_decay=false"]`` -> typed ``DistillConfig`` overrides."""
    import typing
    from dataclasses import fields

    from kdx.trainer.distill.config import DistillConfig

    hints = typing.get_type_hints(DistillConfig)
    names = {f.name for f in fields(DistillConfig)}
    out: dict = {}
    for item in settings or []:
        key, sep, value = item.partition("=")
        key = key.strip().lstrip("-").replace("-", "_")
        if not sep or key not in names or key in SWEEP_FIELDS:
            raise KdxError(f"--set {item!r}: expected FIELD=VALUE with a DistillConfig field other than "
                           f"{'/'.join(SWEEP_FIELDS)}, which the sweep sets (see `kdx distill --help`)")
        kind = hints[key]
        try:
            if kind is bool:
                if value.lower() not in ("true", "false", "1", "0", "yes", "no"):
                    raise ValueError(value)
                out[key] = value.lower() in ("true", "1", "yes")
            elif kind in (int, float, str):
                out[key] = kind(value)
            else:  # students: AGENT=WxW;AGENT=W
                out[key] = tuple(v for v in value.split(";") if v)
        except ValueError:
            raise KdxError(f"--set {item!r}: {value!r} is not a valid {getattr(kind, '__name__', kind)}") from None
    return out


def register(app: typer.Typer) -> None:
    @app.command("sweep")
    def sweep(
        run: str = typer.Argument(..., help="Run folder holding a trained teacher."),
        profiles: str = typer.Option(..., "--profiles", help="Device profiles, comma-separated (`kdx devices list`)."),
        seeds: int = typer.Option(1, "--seeds", help="Seeds per (profile, ablation): first-seed, first-seed+1, ..."),
        first_seed: int = typer.Option(1, "--first-seed", help="First distillation seed."),
        ablations: str = typer.Option("full", "--ablations", help="Loss ablations, comma-separated: "
                                      "full, no-pg, no-kl, no-ce, no-rel, no-role, no-structure, actions-only."),
        workers: int = typer.Option(1, "--workers", help="Jobs run at once (each its own process; torch threads = cores / workers)."),
        steps: Optional[int] = typer.Option(None, "--steps", help="Distillation env steps per job (default: DistillConfig's total_steps)."),  # noqa: UP045
        episodes: int = typer.Option(100, "--episodes", help="Evaluation episodes per policy and job."),
        torch_device: str = typer.Option("cpu", "--torch-device", help="torch device of every job (cpu or cuda)."),
        settings: Optional[list[str]] = typer.Option(None, "--set", help="Any other distill option for every job: FIELD=VALUE (repeatable)."),  # noqa: UP045
        out: Optional[str] = typer.Option(None, "--out", help="Sweep folder (default: RUN/sweep); finished jobs there are reused."),  # noqa: UP045
    ) -> None:
        """Distil + evaluate students for several device profiles x seeds x loss ablations in parallel; write sweep.json/.md."""
        from rich.console import Console

        from kdx.trainer.sweep import SweepConfig, run_sweep

        console = Console()
        distill = parse_settings(settings)
        if steps is not None:
            distill["total_steps"] = steps
        config = SweepConfig(profiles=_split(profiles), seeds=seeds, first_seed=first_seed, ablations=_split(ablations),
                             workers=workers, episodes=episodes, torch_device=torch_device, distill=distill)

        def report(row: dict) -> None:
            if row["status"] == "ok":
                ret = row["retention"]
                console.print(f"  {row['job']}: retention {'-' if ret is None else f'{ret:.1%}'}, "
                              f"{row['mac_ratio']:.1f}x fewer MACs ({row['wall_s']:.0f} s)")
            else:
                console.print(f"  [red]{row['job']}: failed[/] ({row['error']})")

        summary = run_sweep(run, out, config, on_done=report)
        failed = [r["job"] for r in summary["rows"] if r["status"] != "ok"]
        where = out or f"{run}/sweep"
        console.print(f"sweep: {len(summary['rows']) - len(failed)}/{len(summary['rows'])} jobs ok; "
                      f"summary in {where}/sweep.md and sweep.json")
        if failed:
            raise KdxError(f"{len(failed)} job(s) failed: {', '.join(failed)}; see their log.txt in {where}")
