"""``kdx evaluate``: teacher vs students vs references on the same seeds, written once to ``eval.json``.

Loads the teacher and (when the run has them) the students once, runs every policy through
``kdx.trainer.common.evaluate.evaluate_policies`` on the same env seeds, adds the students'
retention, cost (as ``kdx distill`` stored it), view and input size, and writes ``RUN/eval.json`` atomically, once.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from kdx.devices.cost import COST_RULE
from kdx.fileio import atomic_write_text
from kdx.layout import RunLayout
from kdx.trainer.common.evaluate import EVAL_SEED, Policy, evaluate_policies
from kdx.trainer.common.loop_config import check_torch_device
from kdx.trainer.distill.costs import run_costs
from kdx.trainer.distill.evaluate import MODES, StudentTeamPolicy, retention
from kdx.trainer.distill.store import load_student_views, load_students, student_inputs
from kdx.trainer.teacher.evaluate import TeacherPolicy
from kdx.trainer.teacher.store import load_teacher


def evaluate_run(run_dir: str | Path, episodes: int = 100, seed: int = EVAL_SEED, torch_device: str = "cpu",
                 extra_policies: dict[str, Policy] | None = None) -> dict[str, Any]:
    """Evaluate a run's teacher (greedy and sampled), its students if distilled, ``extra_policies``
    and the references on the same seeds on ``torch_device``; write ``RUN/eval.json`` atomically and
    return its content."""
    check_torch_device(torch_device)
    layout = RunLayout(Path(run_dir))
    teacher = load_teacher(layout.run, device=torch_device)
    students = load_students(layout.run, torch_device) if layout.students.config.is_file() else None
    policies: dict[str, Policy] = {
        "teacher_greedy": TeacherPolicy(teacher, greedy=True),
        "teacher_sampled": TeacherPolicy(teacher, greedy=False),
    }
    if students is not None:
        policies.update({f"students_{m}": StudentTeamPolicy(students, greedy=(m == "greedy"),
                                                                          views=load_student_views(layout.run)) for m in MODES})
    policies.update(extra_policies or {})
    result = evaluate_policies(teacher.config.env, policies, episodes, seed, torch_device)
    if students is not None:
        result["students"] = {
            **retention(result),
            "cost": {name: cost.to_json() for name, cost in run_costs(layout.run, teacher).items()},
            "cost_counted": COST_RULE,
            # per agent: the student's view (text, "full" = its whole observation) and input width
            "inputs": {name: given.to_json() for name, given in student_inputs(layout.run).items()},
        }
    atomic_write_text(layout.eval_json, json.dumps(result, indent=2))
    return result
