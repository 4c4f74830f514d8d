"""The report's first screen: does this run keep the paper's promises? Per student (and its view):
team retention, FLOPs ratio (teacher ÷ student) and latency ratio (student ÷ teacher on the same
machine and backend), each beside the KD-MARL paper's claim with a pass/miss verdict. Plain data;
``content.py`` formats it. A number the run does not have stays None ("not measured"), never guessed.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from typing import TYPE_CHECKING

from kdx.report.collect import LatencyResult, LatencySet, ReportData

if TYPE_CHECKING:
    from kdx.trainer.distill.store import StudentInput

PAPER = "KD-MARL (Pavel, Pratama et al., 2026)"


@dataclass(frozen=True)
class Claim:
    """One claim of the paper and the test a measured value must pass to match it."""

    name: str
    paper: str  # the claim as the paper states it
    bar: str  # what kdx checks, in words
    passes: Callable[[float], bool]


# The paper's three headline numbers (SMAC; students vs a MAPPO teacher).
CLAIMS: dict[str, Claim] = {
    "retention": Claim("retention", "> 90% retention", "retention > 90%", lambda r: r > 0.90),
    "flops": Claim("flops", "up to 28.6x fewer FLOPs", "teacher ÷ student FLOPs >= 28.6x", lambda x: x >= 28.6),
    "latency": Claim("latency", "~40% less inference time", "student ÷ teacher latency <= 0.60",
                     lambda x: x <= 0.60),
}


@dataclass(frozen=True)
class LatencyComparison:
    """Student vs teacher p50 of one agent on one machine, bundle and backend."""

    machine: str
    bundle: str
    precision: str
    backend: str
    teacher_us: float
    student_us: float
    basis: str  # "timed" (full timed runs of both) or "probe" (backend auto's short timing of both)

    @property
    def ratio(self) -> float:
        """Student time over teacher time (0.6 = 40% less inference time)."""
        return self.student_us / self.teacher_us


@dataclass
class AnswerRow:
    """One student's numbers beside the claims; None = not measured."""

    agent: str
    input: StudentInput | None
    retention: float | None
    flops_ratio: float | None
    latency: LatencyComparison | None
    verdicts: dict[str, bool | None] = field(default_factory=dict)  # claim name -> pass / miss / None


def same_backend(latency: LatencySet, agent: str) -> LatencyComparison | None:
    """Teacher vs student of ``agent`` in ``latency`` on one backend: full timed runs of both on
    one backend (the teacher's first) when there are, else backend auto's short probe of a backend
    both were probed on; None when there is no common backend."""
    teacher, student = latency.result(agent, "teacher"), latency.result(agent, "student")
    if teacher is None or student is None:
        return None
    precision = student.precision if student.precision == teacher.precision else \
        f"{teacher.precision} teacher, {student.precision} student"

    def compare(backend: str, t_us: float, s_us: float, basis: str) -> LatencyComparison | None:
        if t_us <= 0 or s_us <= 0:
            return None
        return LatencyComparison(latency.machine, latency.bundle_name, precision, backend, t_us, s_us, basis)

    order = _backend_order(teacher, student)
    for basis, t_us, s_us in (("timed", teacher.timed_us, student.timed_us), ("probe", teacher.probe_us, student.probe_us)):
        common = [b for b in order if b in t_us and b in s_us]
        if common:
            return compare(common[0], t_us[common[0]], s_us[common[0]], basis)
    return None


def _backend_order(teacher: LatencyResult, student: LatencyResult) -> list[str]:
    return list(dict.fromkeys([teacher.backend, student.backend, *teacher.probe_us]))


def latency_sets_by_preference(data: ReportData) -> list[LatencySet]:
    """Where the headline latency comes from, best first: other machines' device files (the real
    target), then this host's bundle for the profile the students were sized for, then fp32,
    then any other."""
    target = _sizing_target(data.sizing_profile)

    def rank(latency: LatencySet) -> int:
        if latency.bundle.get("target") == target:
            return 0
        return 1 if latency.bundle.get("precision") == "fp32" else 2

    return [*data.devices, *sorted(data.host, key=rank)]


def _sizing_target(profile: str | None) -> str | None:
    from kdx.devices.registry import PROFILES

    found = PROFILES.get(profile) if profile else None
    return found.target if found else None


def answer_rows(data: ReportData) -> list[AnswerRow]:
    """One row per student (agents with a student cost or a view), with the verdict of each claim."""
    retention = data.retention
    rows = []
    for agent in data.agents:
        cost = data.costs.get(agent)
        if (cost is None or cost.student is None) and agent not in data.inputs:
            continue
        flops = None
        if cost is not None and cost.teacher is not None and cost.student is not None and cost.student.flops:
            flops = cost.teacher.flops / cost.student.flops
        latency = next((c for s in latency_sets_by_preference(data) if (c := same_backend(s, agent))), None)
        values = {"retention": retention, "flops": flops, "latency": latency.ratio if latency else None}
        verdicts = {name: None if values[name] is None else bool(claim.passes(values[name]))
                    for name, claim in CLAIMS.items()}
        rows.append(AnswerRow(agent, data.inputs.get(agent), retention, flops, latency, verdicts))
    return rows
