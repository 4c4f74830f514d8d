"""kdx.report: teacher vs students, as tables and plots.

- ``kdx.report.collect``: everything a run folder holds (costs as ``kdx distill`` stored them,
  ``kdx.trainer.distill.costs``; the rule is ``kdx.devices.cost.COST_RULE``), plus host latency measured through the
  runtime (``ReportData``); device bench files from ``RUN/devices/`` (one written on this host is
  this host's, shown once).
- ``kdx.report.claims``: the first screen, each student beside the paper's claims (pass/miss).
- ``kdx.report.points`` / ``plots``: the plots' data and the PNGs.
- ``kdx.report.latency_model`` / ``estimates``: the rough per-profile latency estimate.
- ``kdx.report.report``: ``write_report(run) -> ReportPaths`` (report.md, report.html) and
  ``benchmark_table(data)`` / ``print_benchmark_table(run)`` (the rich console table).

    from kdx.report import write_report
    paths = write_report("runs/spread", iters=2000)   # paths.markdown, paths.html, paths.missing
"""

from __future__ import annotations

from kdx.lazy import lazy_exports

# Lazy: importing kdx.report must not pull in torch or matplotlib.
_LAZY = {
    "write_report": "kdx.report.report",
    "ReportPaths": "kdx.report.report",
    "benchmark_table": "kdx.report.report",
    "print_benchmark_table": "kdx.report.report",
}
__getattr__ = lazy_exports("kdx.report", _LAZY)

__all__ = list(_LAZY)
