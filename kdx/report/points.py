"""What the report's scatter plots draw, as plain points (tested without pixels; ``plots.py`` draws).

Retention is the team's (``eval.json``: students / teacher score on the same seeds), so every
student of a run shares it; the teacher is the reference at 1.0.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING

from kdx.report.collect import ReportData

if TYPE_CHECKING:
    from kdx.trainer.distill.store import StudentInput

TEACHER_RETENTION = 1.0  # the teacher is the reference every retention is measured against


@dataclass(frozen=True)
class CostPoint:
    """One network at (MACs per decision, retention) in one action mode (the teacher: "reference")."""

    role: str
    agent: str
    view: str
    macs: int
    retention: float
    mode: str


@dataclass(frozen=True)
class LatencyPoint:
    """One network measured on one machine and bundle at (p50 µs, retention)."""

    role: str
    agent: str
    machine: str
    bundle: str
    precision: str
    backend: str
    p50_us: float
    retention: float


@dataclass(frozen=True)
class BudgetPoint:
    """One student at (``input.fraction``: the share of the full observation it reads, retention)."""

    input: StudentInput
    retention: float


def _view(data: ReportData, agent: str) -> str:
    given = data.inputs.get(agent)
    return given.view if given else "full"


def cost_points(data: ReportData) -> list[CostPoint]:
    """Per agent: its teacher at (teacher MACs, 1.0) and its student at (student MACs, team
    retention) in every action mode eval.json has; empty without retention."""
    per_mode = data.retention_per_mode
    if not per_mode:
        return []
    points = []
    for agent in data.agents:
        cost = data.costs.get(agent)
        if cost is None:
            continue
        if cost.teacher is not None:
            points.append(CostPoint("teacher", agent, "full", cost.teacher.macs, TEACHER_RETENTION, "reference"))
        if cost.student is not None:
            points += [CostPoint("student", agent, _view(data, agent), cost.student.macs, value, mode)
                       for mode, value in per_mode.items()]
    return points


def latency_points(data: ReportData) -> list[LatencyPoint]:
    """Every measured teacher and student on every machine and bundle (this host's and other
    devices'), at (p50 µs, retention in the headline mode); empty without retention."""
    retention = data.retention
    if retention is None:
        return []
    points = []
    for latency in [*data.host, *data.devices]:
        for result in latency.results:
            if result.p50_us > 0:
                points.append(LatencyPoint(result.role, result.agent, latency.machine, latency.bundle_name,
                                           result.precision, result.backend, result.p50_us,
                                           TEACHER_RETENTION if result.role == "teacher" else retention))
    return points


def budget_points(data: ReportData) -> list[BudgetPoint]:
    """One point per student with a known input size, at its view's share of the full observation;
    empty without retention."""
    retention = data.retention
    if retention is None:
        return []
    return [BudgetPoint(given, retention) for agent in data.agents if (given := data.inputs.get(agent)) is not None]
