"""``kdx export RUN [--target T]``: a deployment bundle (by default for the device profile the
students were distilled for); ``kdx export --list-targets``: what each target offers."""

from __future__ import annotations

from pathlib import Path

import typer
from rich.console import Console
from rich.table import Table

from kdx.devices.targets import PRECISIONS, TARGETS
from kdx.errors import KdxError


def targets_table() -> Table:
    """The capability table of ``--list-targets``."""
    from kdx.export.targets import capability_rows

    table = Table(title="kdx export targets")
    for column in ("target", "default precision", "precisions", "backends", "engine build on device",
                   "TensorRT", "device profiles", "what you get"):
        table.add_column(column)
    for row in capability_rows():
        table.add_row(row["target"], row["default_precision"], ", ".join(row["precisions"]),
                      ", ".join(row["backends"]), "yes" if row["engine_build_on_device"] else "no",
                      ", ".join(row["tensorrt_versions"]) or "-", ", ".join(row["profiles"]) or "-",
                      row["description"])
    return table


def parity_table(result) -> Table:
    """One row per exported model: precision, agreement, max |dlogit|, pass."""
    table = Table(title=f"parity vs torch ({result.parity[0].samples if result.parity else 0} "
                        "recorded observations per agent)")
    for column in ("role", "agent", "model", "run by", "precision", "greedy agreement", "max |Δlogit|", "bar",
                   "passed"):
        table.add_column(column, justify="left" if column in ("role", "agent", "model", "run by") else "right")
    for r in result.parity:
        bar = f">= {r.required_agreement:.1%}"
        if r.required_max_abs_logit_diff is not None:
            bar += f", <= {r.required_max_abs_logit_diff:g}"
        table.add_row(r.role, r.agent, r.model, r.backend, r.precision, f"{r.action_agreement:.2%}",
                      f"{r.max_abs_logit_diff:.2e}", bar, "yes" if r.passed else "[red]no[/]")
    return table


def register(app: typer.Typer) -> None:
    @app.command("export")
    def export(
        run: Path = typer.Argument(None, help="Run folder holding students/ (and teacher/)."),
        target: str = typer.Option(None, "--target", "-t", help=f"Export target: {', '.join(TARGETS)}, or a device profile such as rpi5 "
                                   "(see --list-targets); default: the target of the profile the students were distilled for."),
        precision: str = typer.Option(None, "--precision", "-p", help=f"{', '.join(PRECISIONS)}; default: the profile's default precision "
                                      "(of --target if it names a profile, else of the students' profile), else the target's."),
        force: bool = typer.Option(False, "--force", help="Replace an existing bundle for this target."),
        dynamic_batch: bool = typer.Option(False, "--dynamic-batch", help="Also write a dynamic-batch ONNX per agent."),
        teacher: bool = typer.Option(True, "--teacher/--no-teacher", help="Also export the teacher actor per agent."),
        calib_samples: int = typer.Option(1024, "--calib-samples", help="Observations recorded per agent (>= 1000)."),
        list_targets: bool = typer.Option(False, "--list-targets", help="Print the targets' capability table and exit."),
    ) -> None:
        """Export a run's students (and teacher actor) as ONNX into RUN/bundles/<target>/ + .tar.gz."""
        console = Console()
        if list_targets:
            console.print(targets_table())
            return
        if run is None:
            raise KdxError("kdx export needs a run folder, e.g. `kdx export runs/spread` (for the device profile "
                           "the students were distilled for) or `kdx export runs/spread --target rpi`")
        from kdx.export.bundle import ExportConfig, export_bundle

        config = ExportConfig(run_dir=run, target=target, precision=precision, force=force,
                              dynamic_batch=dynamic_batch, include_teacher=teacher,
                              calib_samples=calib_samples)
        result = export_bundle(config, log=lambda message: console.print(message, highlight=False))
        console.print(parity_table(result))
        for message in result.warnings:
            console.print(f"[yellow]warning:[/] {message}", highlight=False)
        times = ", ".join(f"{k} {v:.2f} s" for k, v in result.seconds.items())
        console.print(f"bundle: {result.bundle_dir}  ({result.tarball.name}); {times}", highlight=False)
