"""The teacher as an evaluation policy (``kdx.trainer.common.evaluate.Policy``)."""

from __future__ import annotations

import torch

from kdx.envs.base import BatchedEnv, EnvStep
from kdx.trainer.common.episodes import reset_ended
from kdx.trainer.teacher.model import Teacher


class TeacherPolicy:
    """The teacher's actor, greedy (argmax) or sampled; keeps its GRU state across steps."""

    def __init__(self, teacher: Teacher, greedy: bool, seed: int = 0) -> None:
        self.teacher, self.greedy = teacher, greedy
        self.name = "teacher_greedy" if greedy else "teacher_sampled"
        self.generator = torch.Generator(device=next(teacher.actor.parameters()).device).manual_seed(seed)
        self.hidden: torch.Tensor | None = None

    def reset(self, env: BatchedEnv) -> None:
        self.generator.manual_seed(env.seed)
        self.hidden = self.teacher.actor.initial_hidden(env.num_envs, env.device)

    @torch.no_grad()
    def act(self, step: EnvStep) -> torch.Tensor:
        self.hidden = reset_ended(self.hidden, step.done)
        actions, self.hidden = self.teacher.act(step.padded_obs(), step.state, step.padded_action_mask(), self.hidden,
                                                greedy=self.greedy, generator=self.generator)
        return actions
