"""A tiny env for trainer tests: agents must name a target shown in their observation.

``ToyMatchEnv`` is heterogeneous on purpose (agent 0: obs 3 / actions 3; agent 1: obs 5 /
actions 4 with action 3 always masked), has a win flag (both agents right at the last step) and
episodes of 4 steps, so a few PPO updates visibly learn it.
"""

from __future__ import annotations

import torch

from kdx.envs.base import AgentSpec, BatchedEnv, EnvSpec


class ToyMatchEnv(BatchedEnv):
    spec = EnvSpec(
        name="toy/match",
        agents=(AgentSpec("a0", 3, 3, "small"), AgentSpec("a1", 5, 4, "big")),
        state_dim=6,
        episode_limit=4,
        has_win_flag=True,
    )

    def __init__(self, num_envs: int, seed: int = 0, device: str = "cpu") -> None:
        super().__init__(num_envs, seed, device)
        self.target = torch.zeros(num_envs, 2, dtype=torch.long)

    def _reset_envs(self, mask: torch.Tensor) -> None:
        n = int(mask.sum())
        t0 = torch.randint(0, 3, (n,), generator=self.rng)
        self.target[mask] = torch.stack([t0, (t0 + 1) % 3], dim=1)

    def _step_envs(self, actions: torch.Tensor):
        right = (actions == self.target).float()
        reward = right.mean(dim=1, keepdim=True).expand(-1, 2).clone()
        last = self.t + 1 >= self.spec.episode_limit
        won = last & (right.sum(1) == 2)
        self._reset_envs(torch.ones(self.num_envs, dtype=torch.bool))  # new target every step
        return reward, torch.zeros(self.num_envs, dtype=torch.bool), won

    def _observations(self):
        o0 = torch.nn.functional.one_hot(self.target[:, 0], 3).float()
        o1 = torch.cat([torch.nn.functional.one_hot(self.target[:, 1], 3).float(), torch.ones(self.num_envs, 2)], 1)
        return (o0, o1)

    def _action_masks(self):
        m1 = torch.ones(self.num_envs, 4, dtype=torch.bool)
        m1[:, 3] = False
        return (torch.ones(self.num_envs, 3, dtype=torch.bool), m1)

    def _global_state(self):
        return torch.cat(self._observations(), dim=1)[:, :6]


class LazyCacheEnv(ToyMatchEnv):
    """Builds a tensor cache on its first step (not in reset), like a simulator's lookup tables:
    a fresh env has not built it yet when a checkpoint is restored."""

    def _step_envs(self, actions):
        if not hasattr(self, "step_count"):
            self.step_count = torch.zeros(self.num_envs)
        self.step_count += 1
        return super()._step_envs(actions)
