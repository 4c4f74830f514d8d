"""What an export reads from a run folder: the students, the teacher actor, their checksums.

Students live in ``RUN/students/`` (``config.json`` + ``<agent>.safetensors``, read by
``kdx.trainer.distill.store.load_students``); the teacher in ``RUN/teacher/`` (read by
``kdx.trainer.teacher.store.load_teacher``). Nothing is unpickled. Each policy's parameters
and MACs (the manifest's ``params``/``macs``) are the ones ``kdx distill`` stored
(``kdx.trainer.distill.costs.run_costs``); policies handed over in memory are counted with the
same function (``kdx.trainer.common.layers.module_cost``).

Students distilled on a view of their observation (``kdx distill --view``) take the view as
input: their source carries the view (``PolicySource.view``, the manifest's record, built from
``students/config.json``'s views and the env's observation layouts).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from kdx.devices.cost import NetworkCost
from kdx.errors import KdxError
from kdx.fileio import sha256_file
from kdx.layout import RunLayout
from kdx.runtime.manifest_view import AgentView


@dataclass
class PolicySource:
    """One torch policy to export, seen from one agent.

    ``module`` maps ``obs [B, obs_dim]`` (and ``hidden [B, H]`` if ``recurrent_size``) to
    ``logits [B, n_actions]`` (first element if it returns a tuple); it holds its own input
    normalisation, which export folds into the graph.
    """

    name: str
    role: str  # "student" | "teacher"
    module: Any  # torch.nn.Module
    obs_dim: int
    n_actions: int
    hidden_sizes: list[int]
    checkpoint_sha256: str
    cost: NetworkCost  # parameters and MACs, kdx.devices.cost.COST_RULE
    recurrent_size: int | None = None
    extra_metadata: dict[str, str] = field(default_factory=dict)
    # students with a view: ``obs_dim`` is the view's width, ``view.raw_obs_dim`` the env's
    view: AgentView | None = None


@dataclass
class RunPolicies:
    """Everything ``kdx export`` exports from one run."""

    run_dir: Path
    env: str
    students: list[PolicySource]
    teacher: list[PolicySource]
    notes: list[str] = field(default_factory=list)  # one line each, for the export log


def load_students(run_dir: Path) -> tuple[dict[str, Any], str | None]:
    """``({agent: StudentPolicy}, env name or None)`` from ``RUN/students`` (eval mode), read by
    the trainer's own loader (safetensors + config.json; KdxError when missing or corrupt)."""
    from kdx.trainer.distill.store import load_students as trainer_load_students
    from kdx.trainer.distill.store import read_students_config

    env = read_students_config(run_dir).get("env")
    return trainer_load_students(run_dir), env if isinstance(env, str) else None


def student_views(run_dir: Path, env: str, students: dict[str, Any]) -> dict[str, AgentView]:
    """The manifest records of the students' views (``students/config.json``), against ``env``'s
    observation layouts; agents without a view (or with the identity) are left out. KdxError if
    a view no longer fits the env or its width is not the student's input."""
    from kdx.envs.registry import make
    from kdx.envs.view_spec import View
    from kdx.trainer.distill.store import load_student_views

    recorded = load_student_views(run_dir) or {}
    if not any(v.get("ops") for v in recorded.values()):
        return {}
    probe = make(env, num_envs=1)
    layouts = dict(zip(probe.spec.agent_names, probe.observation_layouts()))
    probe.close()
    out = {}
    for name, record in recorded.items():
        if not record.get("ops"):
            continue
        if name not in layouts or name not in students:
            raise KdxError(f"{run_dir}: students/config.json has a view for {name!r}, which is not a student of "
                           f"{env}; re-run `kdx distill`")
        try:
            view = AgentView.of(View.from_json(record["ops"]), layouts[name])
        except KdxError as exc:
            raise KdxError(f"the view of student {name} no longer fits {env}'s observation ({exc}); "
                           "re-run `kdx distill`") from None
        if view.width != students[name].obs_dim:
            raise KdxError(f"student {name}: its view gives {view.width} features but the student reads "
                           f"{students[name].obs_dim}; the run folder is inconsistent, re-run `kdx distill`")
        out[name] = view
    return out


def _cost(costs: dict[str, NetworkCost] | None, name: str, module: Any) -> NetworkCost:
    if costs is not None and costs.get(name) is not None:
        return costs[name]
    from kdx.trainer.common.layers import module_cost

    return module_cost(module)


def student_sources(students: dict[str, Any], run_dir: Path | None,
                    costs: dict[str, NetworkCost] | None = None,
                    views: dict[str, AgentView] | None = None) -> list[PolicySource]:
    """Wrap ``StudentPolicy`` modules as export sources (checksums from their safetensors; costs
    from ``costs`` by agent, else counted; ``views`` by agent, see ``student_views``)."""
    sources = []
    for name, student in students.items():
        weights = None if run_dir is None else RunLayout(run_dir).students.weights(name)
        sha = sha256_file(weights) if weights is not None and weights.is_file() else "0" * 64
        sources.append(PolicySource(
            name=name, role="student", module=student, obs_dim=student.obs_dim,
            n_actions=student.n_actions, hidden_sizes=list(student.hidden), checkpoint_sha256=sha,
            cost=_cost(costs, name, student), extra_metadata={"activation": student.activation},
            view=(views or {}).get(name),
        ))
    return sources


def teacher_sources(teacher: Any, checkpoint_sha256: str,
                    costs: dict[str, NetworkCost] | None = None) -> list[PolicySource]:
    """One ``AgentActor`` view of the teacher's actor per agent (agent id and padding baked in;
    costs from ``costs`` by agent, else counted)."""
    spec = teacher.spec
    sources = []
    for index, agent in enumerate(spec.agents):
        view = teacher.actor.agent_view(index, agent.n_actions, agent.obs_dim).eval()
        sources.append(PolicySource(
            name=agent.name, role="teacher", module=view, obs_dim=agent.obs_dim,
            n_actions=agent.n_actions, hidden_sizes=list(teacher.config.hidden_sizes),
            checkpoint_sha256=checkpoint_sha256, cost=_cost(costs, agent.name, view),
            recurrent_size=teacher.actor.hidden_dim if teacher.actor.recurrent else None,
        ))
    return sources


def load_run_policies(run_dir: str | Path, include_teacher: bool = True) -> RunPolicies:
    """Students (required) and the teacher actor (if the run has one, it is wanted and it is
    local: a centralised actor reads the global state, so it is skipped with a note)."""
    run = Path(run_dir)
    if not run.is_dir():
        raise KdxError(f"run folder {run} does not exist; pass the folder `kdx train --out` wrote")
    from kdx.trainer.distill.costs import run_costs

    students, env = load_students(run)
    teacher: list[PolicySource] = []
    teacher_weights = RunLayout(run).teacher.weights
    loaded = None
    if include_teacher and RunLayout(run).teacher.config.is_file():
        from kdx.trainer.teacher.store import load_teacher

        loaded = load_teacher(run)
    costs = run_costs(run, loaded)
    notes: list[str] = []
    if loaded is not None:
        if loaded.actor.centralised:
            notes.append("teacher actor not exported: it is centralised (--teacher-input centralised reads the "
                         "global state), so it cannot run per agent on a device; the students are exported")
        else:
            teacher = teacher_sources(loaded, sha256_file(teacher_weights), {n: c.teacher for n, c in costs.items()})
        env = env or loaded.config.env
        names = [a.name for a in loaded.spec.agents]
        unknown = sorted(set(students) - set(names))
        if unknown:
            raise KdxError(f"students {', '.join(unknown)} are not agents of {loaded.config.env} "
                           f"({', '.join(names)}); the run folder is inconsistent")
    if env is None:
        raise KdxError(f"{run}: cannot tell which environment the students were trained on "
                       "(no 'env' in students/config.json and no teacher); re-run `kdx distill`")
    views = student_views(run, env, students)
    return RunPolicies(run, env, student_sources(students, run, {n: c.student for n, c in costs.items()}, views),
                       teacher, notes)
