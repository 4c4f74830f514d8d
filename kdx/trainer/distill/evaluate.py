"""Teacher vs students on the same seeds: score with 95% CI, retention, params and MACs per agent.

``evaluate_with_students(run)`` runs the teacher and (when ``RUN/students/`` exists) the student
team, greedy and sampled, plus the random/scripted references, all through
``kdx.trainer.common.evaluate`` on the same env seeds, and adds a ``students`` section to ``eval.json``:

- ``retention``: student / teacher in the same action mode. On envs with a win flag (SMAC-like)
  the ratio of win rates; otherwise the ratio of returns measured from the uniform-random policy,
  ``(student - random) / (teacher - random)``, which on MPE equals the ratio of normalised scores
  (0 = random, 1 = scripted oracle). The headline uses the mode in which the teacher scores best.
- ``cost``: per agent, parameters and MACs of the teacher actor's view of that agent and of its
  student, and their ratios: the values ``kdx distill`` stored in ``students/sizing.json``
  (``kdx.trainer.distill.costs.run_costs``; rule: ``kdx.devices.cost.COST_RULE``).
"""

from __future__ import annotations

from typing import Any

import torch

from kdx.envs.base import BatchedEnv, EnvStep
from kdx.trainer.common.ppo_losses import masked_log_probs
from kdx.trainer.common.sampling import sample_actions
from kdx.trainer.distill.rollout import team_forward
from kdx.trainer.distill.students import StudentPolicy
from kdx.trainer.distill.views import StudentViews

MODES = ("greedy", "sampled")


class StudentTeamPolicy:
    """Each agent's student acts on that agent's own observation (decentralised), greedy or sampled.
    ``views`` (``students/config.json``'s, see ``load_student_views``): each student reads the
    *device* form of its view (no noise, dropout flags 1), built on the env's layouts at ``reset``."""

    def __init__(self, students: dict[str, StudentPolicy], greedy: bool, views: dict | None = None) -> None:
        self.students, self.greedy = list(students.values()), greedy
        self.views_json, self.views = views, None
        self.name = "students_greedy" if greedy else "students_sampled"
        self.generator = torch.Generator()

    def reset(self, env: BatchedEnv) -> None:
        self.generator = torch.Generator(device=env.device).manual_seed(env.seed + 7)
        if self.views_json:
            self.views = StudentViews.from_json(self.views_json, env.observation_layouts()).device()

    @torch.no_grad()
    def act(self, step: EnvStep) -> torch.Tensor:
        mask = step.padded_action_mask()
        obs = self.views.inputs(step.obs, None) if self.views is not None else step.padded_obs()
        logits, _ = team_forward(self.students, obs, mask.shape[-1])
        logp = masked_log_probs(logits, mask)
        return logp.argmax(-1) if self.greedy else sample_actions(logp, self.generator)


def _score(result: dict[str, Any], name: str) -> float | None:
    r = result["policies"][name]
    if r["win_rate"] is not None:
        return r["win_rate"]
    return r["mean_return"] - result["reference"]["random_return"]


def retention(result: dict[str, Any]) -> dict[str, Any]:
    """Student / teacher per action mode, and the headline (the teacher's best mode)."""
    has_win = result["policies"]["teacher_greedy"]["win_rate"] is not None
    per_mode: dict[str, float | None] = {}
    teacher_score: dict[str, float] = {}
    for mode in MODES:
        t, s = _score(result, f"teacher_{mode}"), _score(result, f"students_{mode}")
        teacher_score[mode] = t
        per_mode[mode] = s / t if t > 0 else None
    best = max(MODES, key=lambda m: teacher_score[m])
    return {
        "measure": "win rate ratio" if has_win else "(return - random) ratio (= normalised score ratio on MPE)",
        "per_mode": per_mode,
        "mode": best,
        "retention": per_mode[best],
    }


def print_students_table(result: dict[str, Any], console=None) -> None:
    """Retention and per-agent cost as rich tables (formatting happens only here)."""
    from rich.console import Console
    from rich.table import Table

    console = console or Console()
    s = result.get("students")
    if s is None:
        return
    head = Table(title=f"retention ({s['measure']})")
    for col in ("mode", "retention"):
        head.add_column(col)
    for mode, value in s["per_mode"].items():
        label = f"{mode} (headline)" if mode == s["mode"] else mode
        head.add_row(label, "-" if value is None else f"{value:.1%}")
    console.print(head)
    table = Table(title="cost per agent: teacher actor vs student")
    inputs = s.get("inputs") or {}
    for col in ("agent", "view (inputs)", "student", "teacher params", "student params", "params ratio", "teacher MACs",
                "student MACs", "MACs ratio"):
        table.add_column(col, justify="left" if col in ("agent", "view (inputs)", "student") else "right")
    for agent, c in s["cost"].items():
        given = inputs.get(agent)
        view = f"{given['view']} ({given['input_size']}/{given['full_input_size']})" if given else "-"
        table.add_row(agent, view, "x".join(map(str, c["student_hidden"])), f"{c['teacher_params']:,}",
                      f"{c['student_params']:,}", f"{c['param_ratio']:.1f}x", f"{c['teacher_macs']:,}",
                      f"{c['student_macs']:,}", f"{c['mac_ratio']:.1f}x")
    console.print(table)
