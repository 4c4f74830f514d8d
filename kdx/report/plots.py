"""The report's plots as PNG bytes (matplotlib, Agg backend: no display needed).

Each function returns ``None`` when the run has nothing to draw for it; the caller says so.
"""

from __future__ import annotations

import io
from typing import Any

from kdx.report.collect import ReportData

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


def retention_vs_macs(data: ReportData) -> bytes | None:
    """Per agent: the teacher at (its MACs, 100%) and the student at (its MACs, team retention
    in each action mode); the frontier over all points."""
    students = (data.eval or {}).get("students") or {}
    per_mode = {m: v for m, v in (students.get("per_mode") or {}).items() if isinstance(v, (int, float))}
    costs = [c for c in data.costs.values() if c.teacher is not None and c.student is not None]
    if not per_mode or not costs:
        return None
    plt = _pyplot()
    fig, ax = plt.subplots(figsize=(7, 4.5))
    points = []
    markers = {"greedy": "o", "sampled": "s"}
    for i, cost in enumerate(costs):
        color = f"C{i % 10}"
        ax.scatter([cost.teacher.macs], [1.0], marker="*", s=160, color=color, edgecolor="black",
                   label=f"{cost.agent} teacher")
        points.append((cost.teacher.macs, 1.0))
        for mode, value in per_mode.items():
            ax.scatter([cost.student.macs], [value], marker=markers.get(mode, "o"), s=60, color=color,
                       label=f"{cost.agent} student ({mode})")
            points.append((cost.student.macs, value))
    front = pareto_front(points)
    ax.step([p[0] for p in front], [p[1] for p in front], where="post", color="grey", linestyle="--",
            label="frontier")
    ys = [p[1] for p in points]
    ax.set_ylim(min(0.0, min(ys)) - 0.05, max(1.0, max(ys)) + 0.05)  # 0..1 always in view: no zoomed-in noise
    ax.set_xscale("log")
    ax.set_xlabel("MACs per decision (log scale)")
    ax.set_ylabel("performance retained (team, student / teacher)")
    ax.set_title(f"retention vs cost ({students.get('measure', '')})", fontsize=9)
    ax.grid(True, alpha=0.3)
    ax.legend(fontsize=7, loc="best")
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


PLOTS = {
    "retention_vs_macs": ("Performance retained vs MACs (Pareto view)", retention_vs_macs),
    "latency_host": ("Latency distributions, teacher vs students (this host)", latency_distributions),
    "learning_curves": ("Learning curves: teacher and distillation", learning_curves),
}
