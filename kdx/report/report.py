"""``write_report(run)``: RUN/report.md (+ its PNGs in RUN/report_files/) and a self-contained
RUN/report.html; ``benchmark_table(data)``: the same comparison as a rich console table."""

from __future__ import annotations

import time
from dataclasses import dataclass, field
from pathlib import Path

from kdx.fileio import atomic_write_bytes
from kdx.layout import RunLayout
from kdx.report.collect import ReportData, collect
from kdx.report.content import BENCH_HEADERS, benchmark_rows, build_blocks
from kdx.report.document import Figure, to_html, to_markdown
from kdx.report.estimates import ProfileEstimate, estimate_profiles
from kdx.report.plots import CAPTIONS, PLOTS

DEFAULT_ITERS = 2000

_ABSENT = {
    "retention_vs_macs": "needs RUN/eval.json with a students section and both teacher and students",
    "retention_vs_budget": "needs RUN/eval.json with a students section and the students' config",
    "latency_host": "no host measurement (no bundle, or --no-measure)",
    "learning_curves": "no teacher/metrics.jsonl or students/metrics.jsonl",
}


@dataclass
class ReportPaths:
    """What ``write_report`` wrote, and the data it showed."""

    markdown: Path
    html: Path
    images: list[Path]
    data: ReportData
    estimates: list[ProfileEstimate] = field(default_factory=list)
    seconds: float = 0.0

    @property
    def missing(self) -> list[str]:
        return self.data.missing

    @property
    def problems(self) -> list[str]:
        return self.data.problems


def _atomic_write(path: Path, content: str | bytes) -> None:
    atomic_write_bytes(path, content.encode("utf-8") if isinstance(content, str) else content)


def make_figures(data: ReportData) -> list[Figure]:
    """Every plot of ``PLOTS`` (PNG bytes, or why it is absent)."""
    figures = []
    for name, (title, draw) in PLOTS.items():
        png = draw(data)
        notes = [CAPTIONS[name]] if png and name in CAPTIONS else []
        figures.append(Figure(name, title, png, "" if png else _ABSENT[name], notes))
    return figures


def write_report(run_dir: str | Path, iters: int = DEFAULT_ITERS, measure: bool = True,
                 warmup: int | None = None, profiles: dict | None = None, backend: str = "auto") -> ReportPaths:
    """Gather the run (measuring host latency of every bundle unless ``measure`` is False),
    then write ``RUN/report.md``, ``RUN/report_files/*.png`` and ``RUN/report.html``.

    Parts the run lacks are listed in the report (``ReportPaths.missing``), unreadable inputs
    are skipped and listed (``ReportPaths.problems``). KdxError only when ``run_dir`` is not a folder.
    """
    start = time.perf_counter()
    run_dir = Path(run_dir)
    layout = RunLayout(run_dir)
    data = collect(run_dir, measure=measure, iters=iters, warmup=warmup, backend=backend)
    estimates = estimate_profiles(data, profiles)
    figures = make_figures(data)
    blocks = build_blocks(data, estimates, figures)
    images = []
    for figure in figures:
        if figure.png is not None:
            path = layout.report_images / f"{figure.name}.png"
            _atomic_write(path, figure.png)
            images.append(path)
    markdown, page = layout.report_md, layout.report_html
    _atomic_write(markdown, to_markdown(blocks, layout.report_images.name))
    _atomic_write(page, to_html(blocks, f"kdx report: {run_dir.name}"))
    return ReportPaths(markdown, page, images, data, estimates, time.perf_counter() - start)


def benchmark_table(data: ReportData):
    """The Ultralytics-benchmark-style comparison as a rich ``Table``."""
    from rich.table import Table

    table = Table(title=f"kdx report: {data.run_dir.name} ({data.env or '?'})")
    for header in BENCH_HEADERS:
        table.add_column(header, justify="left" if header in ("machine", "model", "agent", "status", "backend")
                         else "right")
    status = BENCH_HEADERS.index("status")
    marks = {"measured": "✅ measured", "failed": "❌ failed"}
    for row in benchmark_rows(data):
        row[status] = marks.get(row[status], row[status])
        table.add_row(*row)
    return table


def print_benchmark_table(data_or_run: ReportData | str | Path, console=None, measure: bool = True,
                          iters: int = DEFAULT_ITERS) -> ReportData:
    """Print the console table on its own (collecting the run first when given a path)."""
    from rich.console import Console

    data = data_or_run if isinstance(data_or_run, ReportData) else collect(data_or_run, measure, iters)
    console = console or Console()
    console.print(benchmark_table(data))
    return data
