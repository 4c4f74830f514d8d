"""The report's plots as PNG bytes (matplotlib, Agg backend: no display needed).

Each function returns ``None`` when the run has nothing to draw for it; the caller says so. The
points come from ``kdx.report.points`` (plain data, tested there); ``CAPTIONS`` say what the axes are.
"""

from __future__ import annotations

import io
from typing import Any

from kdx.devices.targets import PRECISIONS
from kdx.report.collect import ReportData
from kdx.report.points import budget_points, cost_points, latency_points

_DPI = 100


def _pyplot():
    import matplotlib

    matplotlib.use("Agg", force=True)
    import matplotlib.pyplot as plt

    return plt


def _png(fig) -> bytes:
    buffer = io.BytesIO()
    fig.savefig(buffer, format="png", dpi=_DPI, bbox_inches="tight")
    _pyplot().close(fig)
    return buffer.getvalue()


def pareto_front(points: list[tuple[float, float]]) -> list[tuple[float, float]]:
    """Points not dominated by another with fewer-or-equal MACs and higher-or-equal retention
    (one strictly better), sorted by MACs: the cost/quality frontier."""
    front = []
    for x, y in points:
        dominated = any(ox <= x and oy >= y and (ox < x or oy > y) for ox, oy in points)
        if not dominated and (x, y) not in front:
            front.append((x, y))
    return sorted(front)


PAPER_RETENTION = 0.90  # the paper's retention claim, drawn as a line (kdx.report.claims.CLAIMS)
_MODE_MARKERS = {"greedy": "o", "sampled": "s"}
_PRECISION_MARKERS = dict(zip(PRECISIONS, "o^sDv"))  # one marker shape per precision


def _agents_text(agents: list[str]) -> str:
    return ", ".join(agents) if len(agents) <= 3 else f"{len(agents)} agents"


def _grouped(items, key) -> dict:
    """Items sharing ``key(item)`` together (agents with identical networks draw as one point)."""
    groups: dict = {}
    for item in items:
        groups.setdefault(key(item), []).append(item)
    return groups


def _plain_log_ticks(ax) -> None:
    """Log x axis labelled at its decades and 2x/5x steps in plain numbers (no 3x10^0 clutter)."""
    from matplotlib.ticker import LogLocator, NullFormatter, ScalarFormatter

    ax.xaxis.set_major_locator(LogLocator(base=10, subs=(1.0, 2.0, 5.0)))
    ax.xaxis.set_major_formatter(ScalarFormatter())
    ax.xaxis.set_minor_formatter(NullFormatter())


def _retention_axis(ax, ys: list[float]) -> None:
    """Retention from a little under the paper's 90% bar to just above the teacher's 1.0, wider
    when a point lies outside; the bar and the teacher drawn as lines."""
    ax.set_ylim(min(PAPER_RETENTION - 0.05, min(ys) - 0.03), max(1.0, max(ys)) + 0.03)
    ax.axhline(1.0, color="black", linewidth=0.8, alpha=0.5)
    ax.axhline(PAPER_RETENTION, color="#d62728", linewidth=1, linestyle=":", label="paper: > 90% retention")
    ax.set_ylabel("performance retained (team, student / teacher)")
    ax.grid(True, alpha=0.3)


def _students_text(points) -> str:
    """``agent_0 [sight:0.5], agent_2 [full]``; past three agents, the count and the views."""
    if len(points) <= 3:
        return ", ".join(f"{p.agent} [{p.view}]" for p in points)
    return f"{len(points)} agents [" + "; ".join(dict.fromkeys(p.view for p in points)) + "]"


def _cost_panel(ax, data: ReportData) -> None:
    points = cost_points(data)
    for (macs, _), group in _grouped([p for p in points if p.role == "teacher"], lambda p: (p.macs, p.retention)).items():
        ax.scatter([macs], [1.0], marker="*", s=220, color="gold", edgecolor="black", zorder=3,
                   label=f"teacher ({_agents_text([p.agent for p in group])})")
    students = [p for p in points if p.role == "student"]
    colors = {m: f"C{i % 10}" for i, m in enumerate(dict.fromkeys(p.macs for p in students))}
    # students at the same point (same MACs and, agents being scored as a team, same retention) draw
    # as one, labelled with every agent and view; the other action mode hollow, so both stay visible
    for (macs, mode, value), group in _grouped(students, lambda p: (p.macs, p.mode, p.retention)).items():
        headline = mode == data.headline_mode
        teacher = next((p.macs for p in points if p.role == "teacher" and p.agent == group[0].agent), None)
        fewer = f", {teacher / macs:.0f}x fewer MACs" if teacher and headline else ""
        ax.scatter([macs], [value], marker=_MODE_MARKERS.get(mode, "o"), s=70 if headline else 110,
                   facecolor=colors[macs] if headline else "none", edgecolor="black" if headline else colors[macs],
                   linewidth=1 if headline else 1.5, zorder=3 if headline else 2,
                   label=f"student {_students_text(group)} ({mode}{fewer})")
    front = pareto_front([(p.macs, p.retention) for p in points])
    ax.step([p[0] for p in front], [p[1] for p in front], where="post", color="grey", linestyle="--",
            linewidth=1, label="frontier")
    macs = [p.macs for p in points]
    ax.set_xscale("log")
    ax.set_xlim(min(macs) / 2, max(macs) * 2)
    _retention_axis(ax, [p.retention for p in points])
    ax.set_xlabel("MACs per decision (log scale)")
    ax.set_title("cost", fontsize=9)
    _legend_below(ax)


def _legend_below(ax) -> None:
    ax.legend(fontsize=6, loc="upper center", bbox_to_anchor=(0.5, -0.14), ncol=2, frameon=False)


def _latency_panel(ax, data: ReportData) -> None:
    points = latency_points(data)
    series = list(dict.fromkeys((p.machine, p.bundle) for p in points))
    for i, (machine, bundle) in enumerate(series):
        color = f"C{i % 10}"
        mine = [p for p in points if (p.machine, p.bundle) == (machine, bundle)]
        for (role, precision), chosen in _grouped(mine, lambda p: (p.role, p.precision)).items():
            marker, size = ("*", 150) if role == "teacher" else (_PRECISION_MARKERS.get(precision, "o"), 55)
            ax.scatter([p.p50_us for p in chosen], [p.retention for p in chosen], marker=marker, s=size,
                       color=color, edgecolor="black", linewidth=0.5, zorder=3,
                       label=f"{role} {precision}, {machine}, {bundle} bundle")
        for agent in dict.fromkeys(p.agent for p in mine):  # teacher -> student of each agent
            pair = {p.role: p for p in mine if p.agent == agent}
            if len(pair) == 2:
                ax.plot([pair["teacher"].p50_us, pair["student"].p50_us],
                        [pair["teacher"].retention, pair["student"].retention], color=color, alpha=0.3, linewidth=0.8)
    ax.set_xscale("log")
    _plain_log_ticks(ax)
    _retention_axis(ax, [p.retention for p in points])
    ax.set_xlabel("p50 µs per decision (log scale; backend auto per model)")
    ax.set_title("measured latency, per machine and bundle precision", fontsize=9)
    _legend_below(ax)


def retention_vs_macs(data: ReportData) -> bytes | None:
    """Pareto view. Left: every agent's teacher (MACs, 1.0) and student (MACs, team retention per
    action mode), agents with identical networks and views drawn as one labelled point, with the
    frontier. Right (when anything was measured): each teacher and student at its measured p50 on
    every machine and bundle precision."""
    if not cost_points(data):
        return None
    plt = _pyplot()
    with_latency = bool(latency_points(data))
    fig, axes = plt.subplots(1, 2 if with_latency else 1, figsize=(13 if with_latency else 7, 5), squeeze=False)
    _cost_panel(axes[0][0], data)
    if with_latency:
        _latency_panel(axes[0][1], data)
    students = (data.eval or {}).get("students") or {}
    fig.suptitle(f"retention vs cost ({students.get('measure', 'retention')})", fontsize=10)
    return _png(fig)


def retention_vs_budget(data: ReportData) -> bytes | None:
    """One point per student at (share of its agent's full observation its view reads, team
    retention), labelled by agent and view."""
    points = budget_points(data)
    if not points:
        return None
    plt = _pyplot()
    fig, ax = plt.subplots(figsize=(7, 4.5))
    views = list(dict.fromkeys(p.input.view for p in points))
    for i, ((fraction, view, value), group) in enumerate(
            _grouped(points, lambda p: (p.input.fraction, p.input.view, p.retention)).items()):
        ax.scatter([fraction], [value], s=70, color=f"C{views.index(view) % 10}", edgecolor="black", zorder=3)
        first = group[0].input
        ax.annotate(f"{_agents_text([p.input.agent for p in group])}: {view} ({first.input_size}/{first.full_input_size})",
                    (fraction, value), textcoords="offset points", xytext=(-10, 10 + 12 * (i % 4)), ha="right",
                    fontsize=7)
    _retention_axis(ax, [p.retention for p in points])
    ax.set_xlim(0, 1.05)
    ax.set_xlabel("observation budget: input width of the student's view / full observation width")
    ax.set_title(f"retention vs observation budget ({data.headline_mode})", fontsize=9)
    ax.legend(fontsize=7, loc="lower right")
    return _png(fig)


def latency_distributions(data: ReportData) -> bytes | None:
    """Box plots of the raw per-decision samples measured on this host, teacher vs student per
    agent, one panel per bundle."""
    sets = [s for s in data.host if any(r.samples_us is not None for r in s.results)]
    if not sets:
        return None
    plt = _pyplot()
    fig, axes = plt.subplots(1, len(sets), figsize=(max(6, 4.5 * len(sets)), 4.5), squeeze=False)
    for ax, latency in zip(axes[0], sets):
        samples, labels, colors = [], [], []
        for agent in data.agents or sorted({r.agent for r in latency.results}):
            for role, color in (("teacher", "#d62728"), ("student", "#1f77b4")):
                result = latency.result(agent, role)
                if result is not None and result.samples_us is not None:
                    samples.append(result.samples_us)
                    labels.append(f"{agent}\n{role}")
                    colors.append(color)
        boxes = ax.boxplot(samples, showfliers=True, patch_artist=True, whis=(1, 99), flierprops={"markersize": 2})
        for patch, color in zip(boxes["boxes"], colors):
            patch.set_facecolor(color)
            patch.set_alpha(0.5)
        ax.set_xticks(range(1, len(labels) + 1), labels, fontsize=7)
        ax.set_yscale("log")
        ax.set_ylabel("µs per decision (log scale)")
        ax.set_title(latency.label, fontsize=9)
        ax.grid(True, axis="y", alpha=0.3)
    fig.suptitle("decision latency on this host (whiskers p1-p99)", fontsize=10)
    return _png(fig)


def _series(rows: list[dict[str, Any]], key: str) -> tuple[list[float], list[float]]:
    xs, ys = [], []
    for row in rows:
        x, y = row.get("env_steps"), row.get(key)
        if isinstance(x, (int, float)) and isinstance(y, (int, float)):
            xs.append(float(x))
            ys.append(float(y))
    return xs, ys


def learning_curves(data: ReportData) -> bytes | None:
    """Teacher training and distillation: episode return (and win rate where the env has one),
    and the students' agreement with the teacher, against environment steps."""
    panels = []
    for title, rows in (("teacher (MAPPO)", data.teacher_metrics), ("students (distillation)", data.student_metrics)):
        curves = {key: _series(rows, key) for key in ("episode_return", "win_rate", "teacher_agreement")}
        curves = {k: v for k, v in curves.items() if v[0]}
        if curves:
            panels.append((title, curves))
    if not panels:
        return None
    plt = _pyplot()
    fig, axes = plt.subplots(1, len(panels), figsize=(6 * len(panels), 4), squeeze=False)
    for ax, (title, curves) in zip(axes[0], panels):
        if "episode_return" in curves:
            ax.plot(*curves["episode_return"], color="C0", label="episode return")
            ax.set_ylabel("episode return")
        else:  # no finished episode logged (very short runs): only the fractions are drawn
            ax.set_yticks([])
        ax.set_xlabel("environment steps")
        ax.set_title(title, fontsize=10)
        ax.grid(True, alpha=0.3)
        ratios = {k: v for k, v in curves.items() if k != "episode_return"}
        if ratios:
            twin = ax.twinx()
            for i, (key, xy) in enumerate(ratios.items()):
                twin.plot(*xy, color=f"C{i + 1}", linestyle="--", label=key.replace("_", " "))
            twin.set_ylabel("fraction")
            twin.set_ylim(-0.02, 1.02)
            twin.legend(fontsize=7, loc="lower right")
        if "episode_return" in curves:
            ax.legend(fontsize=7, loc="upper left")
    return _png(fig)


BUDGET_CAPTION = (
    "x axis: each student's observation budget, the input width of its view (the features it reads, "
    "after dropping blocks/features; sight range, noise and quantisation keep the width) divided by the "
    "full observation's width of its agent (1.0 = the full observation); labels give view and width. "
    "y axis: team retention, one number per run (agents are scored as a team), so within one run the "
    "points differ only along x; runs with other views (benchmarks/views.py) show how retention moves "
    "with the budget.")
PARETO_CAPTION = (
    "Left: x = MACs per decision (kdx's cost rule), y = team retention; the teacher is the reference "
    "(1.0); agents with identical networks and views share one labelled point. Right: the same "
    "retention against measured p50 latency, one point per agent, role, machine and bundle precision "
    "(faint lines join an agent's teacher and student).")

PLOTS = {
    "retention_vs_macs": ("Performance retained vs MACs and latency (Pareto view)", retention_vs_macs),
    "retention_vs_budget": ("Performance retained vs observation budget", retention_vs_budget),
    "latency_host": ("Latency distributions, teacher vs students (this host)", latency_distributions),
    "learning_curves": ("Learning curves: teacher and distillation", learning_curves),
}

CAPTIONS = {"retention_vs_macs": PARETO_CAPTION, "retention_vs_budget": BUDGET_CAPTION}
