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
import torch.nn.functional as F

from kdx.envs.base import EnvSpec
from kdx.envs.mpe import physics
from kdx.envs.mpe.blocks import comm_block, landmark_blocks, other_agent_blocks
from kdx.envs.mpe.core import MpeEnv, agent_spec, reject_unknown_params
from kdx.envs.obs_layout import Entity, ObservationBlock, ObservationLayout
from kdx.errors import KdxError

AGENT_SIZE = 0.15
SELF_FEATURES = ("vel_x", "vel_y", "pos_x", "pos_y")


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
    observations (what MAPPO uses for MPE), ``[num_envs, N * obs_dim]``.

    For speed the world lives in one packed buffer ``[num_envs, 4N + 2L + 1]`` with coordinate
    planes ``x_agents | y_agents | vx | vy | x_landmarks | y_landmarks | 0``; every
    observation entry and pairwise offset is then "column a minus column b" of that buffer
    (the last column is a constant zero), i.e. two ``index_select`` and one subtraction, which
    is exact (no sums or products are formed, so the float64 path equals mpe2's numbers).
    ``agent_pos``, ``agent_vel`` and ``landmark_pos`` are ``[num_envs, n, 2]`` properties.
    """

    dim_c = 2
    n_goals = 0

    def __init__(self, config: SpreadConfig, num_envs: int, **kwargs) -> None:
        self.n_landmarks = config.n_agents
        super().__init__(config, num_envs, **kwargs)
        self._pair_cache: tuple[torch.Tensor, torch.Tensor] | None = None
        self._build_index_tables()
        self._move_force = physics.move_force_table(physics.WORLD.sensitivity, self.dtype, self.device)  # [5, 2]

    # ------------------------------------------------------------------ packed storage
    def _allocate_state(self) -> None:
        n, L = self.config.n_agents, self.n_landmarks
        self._w = torch.zeros(self.num_envs, 4 * n + 2 * L + 1, dtype=self.dtype, device=self.device)
        self.comm = torch.zeros(self.num_envs, n, self.dim_c, dtype=self.dtype, device=self.device)
        self.goal = torch.zeros(self.num_envs, 0, dtype=torch.long, device=self.device)

    def _planes(self, first: int, count: int) -> torch.Tensor:
        return torch.stack((self._w[:, first : first + count], self._w[:, first + count : first + 2 * count]), dim=-1)

    def _set_planes(self, first: int, count: int, value: torch.Tensor) -> None:
        value = torch.as_tensor(value, dtype=self.dtype, device=self.device)
        self._w[:, first : first + count] = value[..., 0]
        self._w[:, first + count : first + 2 * count] = value[..., 1]
        self._invalidate()

    @property
    def agent_pos(self) -> torch.Tensor:
        return self._planes(0, self.config.n_agents)

    @agent_pos.setter
    def agent_pos(self, value: torch.Tensor) -> None:
        self._set_planes(0, self.config.n_agents, value)

    @property
    def agent_vel(self) -> torch.Tensor:
        return self._planes(2 * self.config.n_agents, self.config.n_agents)

    @agent_vel.setter
    def agent_vel(self, value: torch.Tensor) -> None:
        self._set_planes(2 * self.config.n_agents, self.config.n_agents, value)

    @property
    def landmark_pos(self) -> torch.Tensor:
        return self._planes(4 * self.config.n_agents, self.n_landmarks)

    @landmark_pos.setter
    def landmark_pos(self, value: torch.Tensor) -> None:
        self._set_planes(4 * self.config.n_agents, self.n_landmarks, value)

    def _invalidate(self) -> None:
        super()._invalidate()
        self._pair_cache = None

    def _build_index_tables(self) -> None:
        n, L = self.config.n_agents, self.n_landmarks
        zero = 4 * n + 2 * L

        def x(i):  # column of agent i's x; its y is x(i) + n
            return i

        def vx(i):
            return 2 * n + i

        def lx(j):
            return 4 * n + j

        others = [[k for k in range(n) if k != i] for i in range(n)]

        def columns(i: int, block: ObservationBlock) -> dict[str, tuple[int, int]]:
            """Feature name -> (plus column, minus column) for a block of agent i."""
            kind, k = block.entity.kind, block.entity.index
            if kind == "self":
                return {"vel_x": (vx(i), zero), "vel_y": (vx(i) + n, zero),
                        "pos_x": (x(i), zero), "pos_y": (x(i) + n, zero)}
            if kind == "landmark":
                return {"dx": (lx(k), x(i)), "dy": (lx(k) + L, x(i) + n)}
            if kind == "agent":
                return {"dx": (x(others[i][k]), x(i)), "dy": (x(others[i][k]) + n, x(i) + n)}
            return dict.fromkeys(block.features, (zero, zero))  # silent: comm slots stay 0

        # Observation of agent i, entry by entry, in the order of its layout.
        plus, minus = [], []
        for i, layout in enumerate(self._layouts):
            for block in layout.blocks:
                entries = columns(i, block)
                plus += [entries[f][0] for f in block.features]
                minus += [entries[f][1] for f in block.features]
        # Distances are read off the observations, which hold every offset they need: agent i's
        # landmark offsets (pairs [i][l]) and its offsets to the other agents (pairs [m][i], the
        # m-th other agent of i, offset = pos_other - pos_i); all x columns first, then all y.
        d = self.spec.agents[0].obs_dim
        at = self._layouts[0].block
        x_cols = [i * d + at(f"landmark.{j}").start for i in range(n) for j in range(L)]
        x_cols += [i * d + at(f"agent.{m}").start for m in range(n - 1) for i in range(n)]
        as_index = lambda v: torch.tensor(v, dtype=torch.long, device=self.device)  # noqa: E731
        self._obs_plus, self._obs_minus = as_index(plus), as_index(minus)
        self._dist_cols = as_index(x_cols + [c + 1 for c in x_cols])
        self._n_al = n * L

    # ------------------------------------------------------------------ spec and step
    def _make_layouts(self) -> tuple[ObservationLayout, ...]:
        n = self.config.n_agents
        layout = ObservationLayout.concat([
            ("self", Entity("self"), SELF_FEATURES),
            *landmark_blocks(n),
            *other_agent_blocks(n - 1),
            *(comm_block(k, self.dim_c) for k in range(n - 1)),
        ])
        return (layout,) * n

    def _make_spec(self) -> EnvSpec:
        n = self.config.n_agents
        return EnvSpec(
            name="mpe/simple_spread",
            agents=tuple(agent_spec(f"agent_{i}", self._layouts[i], physics.N_MOVES, "agents") for i in range(n)),
            state_dim=sum(layout.size for layout in self._layouts),
            episode_limit=self.config.max_cycles,
        )

    def _distances(self) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """Agent-landmark distances ``[B, N*L]`` ([i][l]), ordered agent-pair offsets
        ``[B, 2, N(N-1)]`` (x, y; pairs [m][i], offset = pos_other - pos_i) and their distances."""
        off = self._global_state().index_select(1, self._dist_cols)
        half = off.shape[1] // 2
        dx, dy = off[:, :half], off[:, half:]
        dist = (dx * dx + dy * dy).sqrt()  # mpe2's sqrt(sum(square(delta)))
        pair_off = off.view(self.num_envs, 2, half)[:, :, self._n_al :]
        return dist[:, : self._n_al], pair_off, dist[:, self._n_al :]

    def _step_envs(self, actions: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, None]:
        n, b = self.config.n_agents, self.num_envs
        c = physics.WORLD
        move = F.embedding(actions, self._move_force).transpose(1, 2)  # [B, 2, N]: x row, y row
        if n > 1:
            if self._pair_cache is None:
                _, pair_off, pair_dist = self._distances()
            else:
                pair_off, pair_dist = self._pair_cache
            # The push on agent i points away from the other agent: -(pos_other - pos_i).
            push = pair_off * -physics.contact_scale(pair_dist, 2 * AGENT_SIZE)[:, None, :]  # [B, 2, N(N-1)]
            contact = push[:, :, :n]
            for m in range(1, n - 1):
                contact = contact + push[:, :, m * n : (m + 1) * n]
            force = (move + contact).reshape(b, 2 * n)
        else:
            force = move.reshape(b, 2 * n)
        pos, vel = self._w[:, : 2 * n], self._w[:, 2 * n : 4 * n]
        pos.add_(vel * c.dt)
        vel.mul_(1.0 - c.damping).add_(force * c.dt)
        self._invalidate()
        to_landmarks, pair_off, pair_dist = self._distances()
        self._pair_cache = (pair_off, pair_dist)  # the next step's contact forces start here
        return self._rewards(to_landmarks, pair_dist), torch.zeros(b, dtype=torch.bool, device=self.device), None

    def _rewards(self, to_landmarks: torch.Tensor, pair_dist: torch.Tensor) -> torch.Tensor:
        n, L = self.config.n_agents, self.n_landmarks
        nearest = to_landmarks[:, :L]
        for i in range(1, n):
            nearest = torch.minimum(nearest, to_landmarks[:, i * L : (i + 1) * L])
        global_reward = -nearest.sum(dim=1)  # [B]
        collided = (pair_dist < 2 * AGENT_SIZE).to(self.dtype)  # [B, N(N-1)], pairs [m][i]
        collisions = torch.zeros_like(global_reward)[:, None].expand(-1, n)
        for m in range(n - 1):
            collisions = collisions + collided[:, m * n : (m + 1) * n]
        lr = self.config.local_ratio
        return global_reward[:, None] * (1.0 - lr) - collisions * lr

    def _compute_observations(self) -> tuple[tuple[torch.Tensor, ...], torch.Tensor]:
        b, n = self.num_envs, self.config.n_agents
        flat = self._w.index_select(1, self._obs_plus) - self._w.index_select(1, self._obs_minus)
        return flat.view(b, n, -1).unbind(dim=1), flat


def make_simple_spread(
    num_envs: int = 1,
    seed: int = 0,
    device: str = "cpu",
    check_actions: bool = True,
    dtype: torch.dtype | str = torch.float32,
    N: int = 3,
    local_ratio: float = 0.5,
    max_cycles: int = 25,
    **unknown: object,
) -> SimpleSpread:
    """Factory for the registry; keyword names follow mpe2 (``N``, ``local_ratio``, ``max_cycles``)."""
    reject_unknown_params("mpe/simple_spread", unknown, ("N", "local_ratio", "max_cycles", "check_actions", "dtype"))
    config = SpreadConfig(n_agents=N, local_ratio=local_ratio, max_cycles=max_cycles)
    return SimpleSpread(config, num_envs, seed=seed, device=device, check_actions=check_actions, dtype=dtype)
