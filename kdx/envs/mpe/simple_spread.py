"""``mpe/simple_spread``: N agents cover N landmarks without colliding (mpe2 simple_spread_v3).

Facts from mpe2: agents ``agent_0..agent_{N-1}`` (size 0.15, colliding, silent, dim_c 2);
landmarks do not collide. Discrete actions: 0 no-op, 1 left, 2 right, 3 down, 4 up.
Observation of agent i (``4 + 2N + 4(N-1)`` floats):
``[vel_i, pos_i, landmark_j - pos_i for all j, pos_k - pos_i for k != i, comm_k for k != i]``
(the comm slots are always zero: the agents are silent).
Reward of agent i: ``(1 - local_ratio) * global + local_ratio * local_i`` with
``global = -sum_landmarks min_agents dist`` and ``local_i = -(number of other agents closer than
0.3)``, computed after the move.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch

from kdx.envs.base import EnvSpec
from kdx.envs.mpe import physics
from kdx.envs.mpe.core import MpeEnv, agent_spec
from kdx.errors import KdxError

AGENT_SIZE = 0.15


@dataclass(frozen=True)
class SpreadConfig:
    """Scenario parameters of simple_spread (mpe2's defaults)."""

    n_agents: int = 3  # N: number of agents, and of landmarks
    local_ratio: float = 0.5  # weight of the local (collision) reward; global gets 1 - local_ratio
    max_cycles: int = 25  # episode length; episodes end only by this time limit

    def __post_init__(self) -> None:
        if not isinstance(self.n_agents, int) or self.n_agents < 1:
            raise KdxError(f"simple_spread: N must be a positive integer, got {self.n_agents!r}")
        if not 0.0 <= self.local_ratio <= 1.0:
            raise KdxError(f"simple_spread: local_ratio must be in [0, 1], got {self.local_ratio!r}")
        if not isinstance(self.max_cycles, int) or self.max_cycles < 1:
            raise KdxError(f"simple_spread: max_cycles must be a positive integer, got {self.max_cycles!r}")


class SimpleSpread(MpeEnv):
    """Vectorised simple_spread. The global state is the concatenation of all agents'
    observations (what MAPPO uses for MPE), ``[num_envs, N * obs_dim]``."""

    dim_c = 2
    n_goals = 0

    def __init__(self, config: SpreadConfig, num_envs: int, **kwargs) -> None:
        self.n_landmarks = config.n_agents
        super().__init__(config, num_envs, **kwargs)
        n = config.n_agents
        self._move_force = physics.move_force_table(physics.WORLD.sensitivity, self.dtype, self.device)
        # others[i] = the agents other than i, in index order (mpe2's observation order).
        self._others = torch.tensor(
            [[k for k in range(n) if k != i] for i in range(n)], dtype=torch.long, device=self.device
        ).reshape(n, max(n - 1, 0))
        self._rows = torch.arange(n, device=self.device)[:, None]
        self._not_self = ~torch.eye(n, dtype=torch.bool, device=self.device)

    def _make_spec(self) -> EnvSpec:
        n = self.config.n_agents
        obs_dim = 4 + 2 * n + 4 * (n - 1)
        return EnvSpec(
            name="mpe/simple_spread",
            agents=tuple(agent_spec(f"agent_{i}", obs_dim, physics.N_MOVES, "agents") for i in range(n)),
            state_dim=n * obs_dim,
            episode_limit=self.config.max_cycles,
        )

    def _step_envs(self, actions: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, None]:
        force = self._move_force[actions]  # [B, N, 2]
        force = force + physics.contact_forces(self.agent_pos, 2 * AGENT_SIZE)
        self.agent_pos, self.agent_vel = physics.integrate(self.agent_pos, self.agent_vel, force)
        self._invalidate()
        return self._rewards(), torch.zeros(self.num_envs, dtype=torch.bool, device=self.device), None

    def _rewards(self) -> torch.Tensor:
        pos = self.agent_pos
        to_landmarks = (pos[:, :, None, :] - self.landmark_pos[:, None, :, :]).square().sum(-1).sqrt()
        global_reward = -to_landmarks.amin(dim=1).sum(dim=1)  # [B]
        agent_dist = physics.pairwise_offsets(pos).square().sum(-1).sqrt()
        collisions = ((agent_dist < 2 * AGENT_SIZE) & self._not_self).sum(dim=2)  # [B, N]
        lr = self.config.local_ratio
        return (global_reward[:, None] * (1.0 - lr) - collisions.to(self.dtype) * lr).to(self.dtype)

    def _compute_observations(self) -> tuple[tuple[torch.Tensor, ...], torch.Tensor]:
        b, n = self.num_envs, self.config.n_agents
        pos = self.agent_pos
        rel_landmarks = self.landmark_pos[:, None, :, :] - pos[:, :, None, :]  # [B, N, L, 2]
        rel_agents = pos[:, None, :, :] - pos[:, :, None, :]  # [b, i, k] = pos_k - pos_i
        rel_others = rel_agents[:, self._rows, self._others]  # [B, N, N-1, 2]
        comm_others = self.comm[:, self._others]  # [B, N, N-1, dim_c]
        all_obs = torch.cat(
            (
                self.agent_vel,
                pos,
                rel_landmarks.reshape(b, n, -1),
                rel_others.reshape(b, n, -1),
                comm_others.reshape(b, n, -1),
            ),
            dim=2,
        )
        return all_obs.unbind(dim=1), all_obs.reshape(b, -1)


def make_simple_spread(
    num_envs: int = 1,
    seed: int = 0,
    device: str = "cpu",
    check_actions: bool = True,
    dtype: torch.dtype | str = torch.float32,
    N: int = 3,
    local_ratio: float = 0.5,
    max_cycles: int = 25,
) -> SimpleSpread:
    """Factory for the registry; keyword names follow mpe2 (``N``, ``local_ratio``, ``max_cycles``)."""
    config = SpreadConfig(n_agents=N, local_ratio=local_ratio, max_cycles=max_cycles)
    return SimpleSpread(config, num_envs, seed=seed, device=device, check_actions=check_actions, dtype=dtype)
