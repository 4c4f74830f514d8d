"""What each agent's networks cost: its student, and the teacher actor seen from that agent.

Counted once, when ``kdx distill`` starts (students by sizing, the teacher by
:func:`teacher_view_costs`, both with ``kdx.devices.cost.count_cost``), and stored in
``students/sizing.json``. eval.json, the bundle manifest and the report read them through
:func:`run_costs`; a run distilled before costs were stored is counted on the spot, with the
same function.
"""

from __future__ import annotations

from pathlib import Path

from kdx.devices.cost import AgentCost, NetworkCost
from kdx.devices.mlp import StudentArch, student_cost
from kdx.devices.sizing import read_stored_sizing
from kdx.errors import KdxError
from kdx.layout import RunLayout
from kdx.trainer.common.layers import module_cost
from kdx.trainer.distill.store import read_students_config
from kdx.trainer.teacher.model import Teacher


def teacher_view_costs(teacher: Teacher) -> dict[str, NetworkCost]:
    """``{agent: cost}`` of the teacher's actor as each agent runs it (its own observation,
    padded, plus its id), the module that export ships per agent."""
    actor = teacher.actor
    return {a.name: module_cost(actor.agent_view(i, a.n_actions, a.obs_dim))
            for i, a in enumerate(teacher.spec.agents)}


def run_costs(run_dir: str | Path, teacher: Teacher | None) -> dict[str, AgentCost]:
    """``{agent: AgentCost}`` of a distilled run, in the students' order, as stored in
    ``students/sizing.json``. For a run distilled before costs were stored: the students counted
    from the architectures in ``students/config.json`` and the teacher from ``teacher`` (its
    costs are None without one)."""
    rows = read_stored_sizing(RunLayout(Path(run_dir)).students.sizing)
    if rows is not None:
        return {row.agent: row.cost for row in rows}
    teacher_costs = teacher_view_costs(teacher) if teacher is not None else {}
    out = {}
    for name, arch in read_students_config(run_dir)["agents"].items():
        try:
            hidden, obs_dim, n_actions = tuple(arch["hidden"]), arch["obs_dim"], arch["n_actions"]
        except (KeyError, TypeError) as exc:
            raise KdxError(f"students config of {run_dir}: agent {name!r} has no architecture ({exc}); "
                           "re-run `kdx distill`") from None
        out[name] = AgentCost(name, student_cost(StudentArch(hidden), obs_dim, n_actions),
                              teacher_costs.get(name), hidden)
    return out
