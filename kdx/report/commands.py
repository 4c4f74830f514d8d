"""``kdx report RUN``: report.md + self-contained report.html, and the comparison table printed."""

from __future__ import annotations

from pathlib import Path

import typer


def register(app: typer.Typer) -> None:
    @app.command("report")
    def report(
        run: Path = typer.Argument(..., help="Run folder (teacher/, students/, eval.json, bundles/, devices/)."),
        iters: int = typer.Option(2000, "--iters", min=10, help="Timed decisions per model for the host latency."),
        measure: bool = typer.Option(True, "--measure/--no-measure", help="Measure host latency of every bundle through the runtime."),
        backend: str = typer.Option("auto", "--backend", help="Runtime backend for the host latency: auto (fastest measured), onnxruntime or numpy."),
    ) -> None:
        """Teacher vs students: params, MACs/FLOPs, ONNX sizes, latency (host, devices, estimates), retention, plots."""
        from rich.console import Console
        from rich.markup import escape

        from kdx.report.report import benchmark_table, write_report

        console = Console()
        if not console.is_terminal:
            console = Console(width=200)
        paths = write_report(run, iters=iters, measure=measure, backend=backend)
        console.print(benchmark_table(paths.data))
        for line in paths.missing:
            console.print(f"[yellow]missing:[/] {escape(line)}", highlight=False)
        for line in paths.problems:
            console.print(f"[red]skipped:[/] {escape(line)}", highlight=False)
        console.print(f"wrote {paths.markdown} and {paths.html} ({len(paths.images)} plots) in {paths.seconds:.1f} s",
                      highlight=False)
