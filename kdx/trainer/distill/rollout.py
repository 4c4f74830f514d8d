"""On-policy rollouts of the student team, labelled by the frozen teacher.

The students act on their own observations (each agent's student sees only its agent's
unpadded observation, or its view of it: ``kdx.trainer.distill.views``). At every step the teacher's actor labels the same observations (masked
logits and embeddings, the targets of the distillation terms) and the teacher's critic values
the global state: teacher-guided GAE needs no student critic.

Shapes: ``T`` rollout length, ``B`` envs, ``A`` agents, ``D`` max obs dim, ``K`` max actions,
``H`` teacher embedding width, ``S`` state dim.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field

import torch

from kdx.envs.base import BatchedEnv, EnvStep
from kdx.trainer.common.episodes import EndedEpisodes, reset_ended
from kdx.trainer.common.ppo_losses import masked_log_probs
from kdx.trainer.common.sampling import MASKED_LOGIT, sample_actions
from kdx.trainer.distill.students import StudentPolicy
from kdx.trainer.distill.views import StudentViews
from kdx.trainer.teacher.model import Teacher


def team_forward(students: Sequence[StudentPolicy], obs: torch.Tensor, n_actions: int) -> tuple[torch.Tensor, list[torch.Tensor]]:
    """All students on padded ``obs [N, A, D]``: logits ``[N, A, K]`` (padding = ``MASKED_LOGIT``)
    and each student's embedding ``[N, width_i]``."""
    n = obs.shape[0]
    logits = obs.new_full((n, len(students), n_actions), MASKED_LOGIT)
    embeddings = []
    for i, student in enumerate(students):
        out, emb = student(obs[:, i, : student.obs_dim])
        logits[:, i, : student.n_actions] = out
        embeddings.append(emb)
    return logits, embeddings


@dataclass
class StudentRollout:
    """One rollout of the student team. ``values``/``next_values`` from the teacher's critic, denormalised."""

    obs: torch.Tensor              # [T, B, A, D] the students' inputs (their views, when given)
    masks: torch.Tensor            # bool [T, B, A, K]
    actions: torch.Tensor          # long [T, B, A] executed actions
    log_probs: torch.Tensor        # [T, B, A] the acting student's log-prob of the executed action
    student_acted: torch.Tensor    # bool [T, B, A] False where the teacher's action was mixed in
    teacher_logits: torch.Tensor   # [T, B, A, K] masked
    teacher_embedding: torch.Tensor  # [T, B, A, H]
    agreement: torch.Tensor        # bool [T, B, A] student greedy == teacher greedy (at rollout time)
    values: torch.Tensor           # [T, B, A]
    next_values: torch.Tensor      # [T, B, A]; of the final state where the episode ended
    rewards: torch.Tensor          # [T, B, A]
    terminated: torch.Tensor       # bool [T, B]
    done: torch.Tensor             # bool [T, B]
    episode_returns: list[float] = field(default_factory=list)
    episode_wins: list[float] = field(default_factory=list)


@torch.no_grad()
def collect_student_rollout(env: BatchedEnv, teacher: Teacher, students: Sequence[StudentPolicy], step: EnvStep,
                            teacher_hidden: torch.Tensor | None, length: int, generator: torch.Generator,
                            teacher_mix: float = 0.0, views: StudentViews | None = None
                            ) -> tuple[StudentRollout, EnvStep, torch.Tensor | None]:
    """Act ``length`` steps with the sampled students (each agent-step takes the teacher's sampled
    action instead with probability ``teacher_mix``); returns the rollout, next step, teacher GRU state.
    With active ``views`` each student acts on its (training) view of its own observation, drawn
    from ``generator``, and the rollout's ``obs`` holds those inputs ``[T, B, A, D']``; the teacher
    and its critic still read the teacher's own input."""
    rec: dict[str, list[torch.Tensor]] = {k: [] for k in (
        "obs", "masks", "states", "actions", "log_probs", "student_acted", "teacher_logits",
        "teacher_embedding", "agreement", "values", "rewards", "terminated", "done")}
    ended = EndedEpisodes()
    k = env.spec.max_actions
    for _ in range(length):
        obs, mask, state = step.padded_obs(), step.padded_action_mask(), step.state
        t_out = teacher.forward_actor(obs, state, mask, teacher_hidden)  # the teacher's own input
        s_obs = views.inputs(step.obs, generator) if views is not None and views.active else obs
        s_logits, _ = team_forward(students, s_obs, k)
        s_logp = masked_log_probs(s_logits, mask)
        actions = sample_actions(s_logp, generator)
        acted = torch.ones_like(actions, dtype=torch.bool)
        if teacher_mix > 0:
            use_teacher = torch.rand(actions.shape, generator=generator, device=actions.device) < teacher_mix
            actions = torch.where(use_teacher, sample_actions(t_out.logits, generator), actions)
            acted = ~use_teacher
        nxt = env.step(actions)
        rec["obs"].append(s_obs)
        rec["masks"].append(mask)
        rec["states"].append(state)
        rec["actions"].append(actions)
        rec["log_probs"].append(s_logp.gather(-1, actions.unsqueeze(-1)).squeeze(-1))
        rec["student_acted"].append(acted)
        rec["teacher_logits"].append(t_out.logits)
        rec["teacher_embedding"].append(t_out.embedding)
        rec["agreement"].append(s_logp.argmax(-1) == t_out.logits.argmax(-1))
        rec["values"].append(teacher.critic(state, obs))
        rec["rewards"].append(nxt.reward)
        rec["terminated"].append(nxt.terminated)
        rec["done"].append(nxt.done)
        ended.record(obs, nxt)
        teacher_hidden = reset_ended(t_out.hidden, nxt.done)
        step = nxt
    values, done = torch.stack(rec["values"]), torch.stack(rec["done"])
    next_norm = ended.next_values(teacher.critic, values, step, done)
    vn = teacher.value_norm
    rollout = StudentRollout(
        obs=torch.stack(rec["obs"]), masks=torch.stack(rec["masks"]), actions=torch.stack(rec["actions"]),
        log_probs=torch.stack(rec["log_probs"]), student_acted=torch.stack(rec["student_acted"]),
        teacher_logits=torch.stack(rec["teacher_logits"]), teacher_embedding=torch.stack(rec["teacher_embedding"]),
        agreement=torch.stack(rec["agreement"]), values=vn.denormalize(values),
        next_values=vn.denormalize(next_norm), rewards=torch.stack(rec["rewards"]),
        terminated=torch.stack(rec["terminated"]), done=done,
        episode_returns=ended.returns, episode_wins=ended.wins,
    )
    return rollout, step, teacher_hidden


@torch.no_grad()
def teacher_observation_stats(env: BatchedEnv, teacher: Teacher, step: EnvStep, steps: int,
                              generator: torch.Generator, views: StudentViews | None = None
                              ) -> tuple[list[tuple[torch.Tensor, torch.Tensor]], EnvStep]:
    """Per-agent mean and std of each agent's own observation (its training view, when ``views``
    are active) over ``steps`` steps of the sampled teacher: the students' fixed input
    normalisation. Returns the stats and the next step."""
    hidden = teacher.actor.initial_hidden(env.num_envs, step.state.device)
    seen: list[list[torch.Tensor]] = [[] for _ in env.spec.agents]
    for _ in range(steps):
        if views is not None and views.active:
            viewed = views.inputs(step.obs, generator)
            for i, width in enumerate(views.widths().values()):
                seen[i].append(viewed[:, i, :width])
        else:
            for i, o in enumerate(step.obs):
                seen[i].append(o)
        actions, hidden = teacher.act(step.padded_obs(), step.state, step.padded_action_mask(), hidden,
                                      generator=generator)
        step = env.step(actions)
        hidden = reset_ended(hidden, step.done)
    stats = []
    for per_agent in seen:
        x = torch.cat(per_agent)
        stats.append((x.mean(0), x.std(0)))
    return stats, step
