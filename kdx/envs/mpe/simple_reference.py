"""``mpe/simple_reference``: two agents each know the other's goal and must tell it
(mpe2 simple_reference_v3).

Facts from mpe2: agents ``agent_0`` and ``agent_1`` both move and speak (dim_c = 10); a discrete
action is ``word * 5 + move`` (50 actions; moves 0 no-op, 1 left, 2 right, 3 down, 4 up);
3 landmarks with fixed colours; nothing collides. Agent i holds a goal landmark ``goal[i]``
meant for the *other* agent. Observation of agent i (21 floats):
``[vel_i, landmark_j - pos_i for j in 0..2, colour of goal[i], the other agent's utterance]``.
Reward of agent i: ``(1 - local_ratio) * mean_k local_k + local_ratio * local_i`` with
``local_i = -|pos_other - landmark[goal[i]]|``.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import torch

from kdx.envs.base import EnvSpec
from kdx.envs.mpe import physics
from kdx.envs.mpe.blocks import GOAL_COLOUR, SELF_VELOCITY, comm_block, landmark_blocks
from kdx.envs.mpe.core import MpeEnv, agent_spec, landmark_index, reject_unknown_params
from kdx.envs.obs_layout import ObservationLayout
from kdx.errors import KdxError

LANDMARK_COLORS = ((0.75, 0.25, 0.25), (0.25, 0.75, 0.25), (0.25, 0.25, 0.75))
N_WORDS = 10


@dataclass(frozen=True)
class ReferenceConfig:
    """Scenario parameters of simple_reference (mpe2's defaults)."""

    local_ratio: float = 0.5  # weight of the agent's own reward; the mean gets 1 - local_ratio
    max_cycles: int = 25  # episode length; episodes end only by this time limit

    def __post_init__(self) -> None:
        if not 0.0 <= self.local_ratio <= 1.0:
            raise KdxError(f"simple_reference: local_ratio must be in [0, 1], got {self.local_ratio!r}")
        if not isinstance(self.max_cycles, int) or self.max_cycles < 1:
            raise KdxError(f"simple_reference: max_cycles must be a positive integer, got {self.max_cycles!r}")


class SimpleReference(MpeEnv):
    """Vectorised simple_reference. The global state is the concatenation of both agents'
    observations (what MAPPO uses for MPE), ``[num_envs, 42]``. ``goal[:, i]`` is the landmark
    agent i knows (the one the other agent must reach)."""

    n_landmarks = 3
    dim_c = N_WORDS
    n_goals = 2

    def __init__(self, config: ReferenceConfig, num_envs: int, **kwargs) -> None:
        super().__init__(config, num_envs, **kwargs)
        self._move_force = physics.move_force_table(physics.WORLD.sensitivity, self.dtype, self.device)
        self._colors = torch.tensor(LANDMARK_COLORS, dtype=self.dtype, device=self.device)
        self._words = torch.eye(self.dim_c, dtype=self.dtype, device=self.device)
        self._other = torch.tensor([1, 0], dtype=torch.long, device=self.device)

    def _make_layouts(self) -> tuple[ObservationLayout, ...]:
        layout = ObservationLayout.concat([
            SELF_VELOCITY,
            *landmark_blocks(self.n_landmarks),
            GOAL_COLOUR,  # the goal this agent knows: the other agent's landmark
            comm_block(0, self.dim_c),  # the other agent's word
        ])
        return (layout, layout)

    def _make_spec(self) -> EnvSpec:
        return EnvSpec(
            name="mpe/simple_reference",
            agents=tuple(agent_spec(f"agent_{i}", self._layouts[i], physics.N_MOVES * N_WORDS, "agents")
                         for i in range(2)),
            state_dim=sum(layout.size for layout in self._layouts),
            episode_limit=self.config.max_cycles,
        )

    def _step_envs(self, actions: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, None]:
        move, word = physics.decode_actions(actions, movable=True, silent=False)
        self.agent_pos, self.agent_vel = physics.integrate(self.agent_pos, self.agent_vel, self._move_force[move])
        self.comm = self._words[word]  # [B, 2, dim_c]
        self._invalidate()
        goal_pos = self.landmark_pos.gather(1, self.goal[:, :, None].expand(-1, -1, 2))  # [B, 2, 2]
        other_pos = self.agent_pos[:, self._other]
        local = -(other_pos - goal_pos).square().sum(-1).sqrt()  # [B, 2]
        lr = self.config.local_ratio
        reward = local.mean(dim=1, keepdim=True) * (1.0 - lr) + local * lr
        return reward, torch.zeros(self.num_envs, dtype=torch.bool, device=self.device), None

    def _compute_observations(self) -> tuple[tuple[torch.Tensor, ...], torch.Tensor]:
        b = self.num_envs
        rel_landmarks = self.landmark_pos[:, None, :, :] - self.agent_pos[:, :, None, :]  # [B, 2, 3, 2]
        all_obs = torch.cat(
            (
                self.agent_vel,
                rel_landmarks.reshape(b, 2, -1),
                self._colors[self.goal],
                self.comm[:, self._other],
            ),
            dim=2,
        )
        return all_obs.unbind(dim=1), all_obs.reshape(b, -1)

    def _goals_from_mpe2(self, world: Any) -> list[int]:
        return [landmark_index(world, agent.goal_b) for agent in world.agents]


def make_simple_reference(
    num_envs: int = 1,
    seed: int = 0,
    device: str = "cpu",
    check_actions: bool = True,
    dtype: torch.dtype | str = torch.float32,
    local_ratio: float = 0.5,
    max_cycles: int = 25,
    **unknown: object,
) -> SimpleReference:
    """Factory for the registry; keyword names follow mpe2."""
    reject_unknown_params("mpe/simple_reference", unknown, ("local_ratio", "max_cycles", "check_actions", "dtype"))
    config = ReferenceConfig(local_ratio=local_ratio, max_cycles=max_cycles)
    return SimpleReference(config, num_envs, seed=seed, device=device, check_actions=check_actions, dtype=dtype)
