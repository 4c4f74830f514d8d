"""``mpe/simple_speaker_listener``: a speaker names a goal landmark, a listener goes there
(mpe2 simple_speaker_listener_v4).

Facts from mpe2: agents ``speaker_0`` (immovable, speaks, 3 actions = the word said, one of
dim_c = 3) and ``listener_0`` (moves, silent, 5 actions: 0 no-op, 1 left, 2 right, 3 down,
4 up); 3 landmarks with fixed colours; nothing collides. Observations:
speaker ``[goal landmark colour]`` (3); listener ``[vel, landmark_j - pos for j in 0..2,
speaker's utterance]`` (2 + 6 + 3 = 11). Both agents get ``-|listener - goal landmark|^2``
(squared distance, no local/global split).
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

LANDMARK_COLORS = ((0.65, 0.15, 0.15), (0.15, 0.65, 0.15), (0.15, 0.15, 0.65))
SPEAKER, LISTENER = 0, 1


@dataclass(frozen=True)
class SpeakerListenerConfig:
    """Scenario parameters of simple_speaker_listener (mpe2's defaults)."""

    max_cycles: int = 25  # episode length; episodes end only by this time limit

    def __post_init__(self) -> None:
        if not isinstance(self.max_cycles, int) or self.max_cycles < 1:
            raise KdxError(
                f"simple_speaker_listener: max_cycles must be a positive integer, got {self.max_cycles!r}"
            )


class SimpleSpeakerListener(MpeEnv):
    """Vectorised simple_speaker_listener; groups ``speaker`` and ``listener``.

    The global state is the concatenation of both agents' observations (what MAPPO uses for
    MPE), ``[num_envs, 3 + 11]``. ``goal[:, 0]`` is the goal landmark index.
    """

    n_landmarks = 3
    dim_c = 3
    n_goals = 1

    def __init__(self, config: SpeakerListenerConfig, num_envs: int, **kwargs) -> None:
        super().__init__(config, num_envs, **kwargs)
        self._move_force = physics.move_force_table(physics.WORLD.sensitivity, self.dtype, self.device)
        self._colors = torch.tensor(LANDMARK_COLORS, dtype=self.dtype, device=self.device)
        self._words = torch.eye(self.dim_c, dtype=self.dtype, device=self.device)

    def _make_layouts(self) -> tuple[ObservationLayout, ...]:
        speaker = ObservationLayout.concat([GOAL_COLOUR])
        listener = ObservationLayout.concat([
            SELF_VELOCITY,
            *landmark_blocks(self.n_landmarks),
            comm_block(0, self.dim_c),  # the speaker's word
        ])
        return speaker, listener

    def _make_spec(self) -> EnvSpec:
        speaker, listener = self._layouts
        return EnvSpec(
            name="mpe/simple_speaker_listener",
            agents=(
                agent_spec("speaker_0", speaker, self.dim_c, "speaker"),
                agent_spec("listener_0", listener, physics.N_MOVES, "listener"),
            ),
            state_dim=speaker.size + listener.size,
            episode_limit=self.config.max_cycles,
        )

    def _step_envs(self, actions: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, None]:
        force = self._move_force[actions[:, LISTENER]]  # [B, 2]
        pos, vel = physics.integrate(self.agent_pos[:, LISTENER], self.agent_vel[:, LISTENER], force)
        # The speaker never moves: only the listener's row changes.
        self.agent_pos = torch.stack((self.agent_pos[:, SPEAKER], pos), dim=1)
        self.agent_vel = torch.stack((self.agent_vel[:, SPEAKER], vel), dim=1)
        said = self._words[actions[:, SPEAKER]]  # [B, dim_c]
        self.comm = torch.stack((said, torch.zeros_like(said)), dim=1)
        self._invalidate()
        goal_pos = self.landmark_pos.gather(1, self.goal[:, :, None].expand(-1, -1, 2)).squeeze(1)
        dist2 = (pos - goal_pos).square().sum(-1)
        reward = (-dist2)[:, None].expand(-1, 2).contiguous()
        return reward, torch.zeros(self.num_envs, dtype=torch.bool, device=self.device), None

    def _compute_observations(self) -> tuple[tuple[torch.Tensor, ...], torch.Tensor]:
        b = self.num_envs
        speaker_obs = self._colors[self.goal[:, 0]]
        listener_pos = self.agent_pos[:, LISTENER]
        rel_landmarks = (self.landmark_pos - listener_pos[:, None, :]).reshape(b, -1)
        listener_obs = torch.cat((self.agent_vel[:, LISTENER], rel_landmarks, self.comm[:, SPEAKER]), dim=1)
        return (speaker_obs, listener_obs), torch.cat((speaker_obs, listener_obs), dim=1)

    def _goals_from_mpe2(self, world: Any) -> list[int]:
        return [landmark_index(world, world.agents[SPEAKER].goal_b)]


def make_simple_speaker_listener(
    num_envs: int = 1,
    seed: int = 0,
    device: str = "cpu",
    check_actions: bool = True,
    dtype: torch.dtype | str = torch.float32,
    max_cycles: int = 25,
    **unknown: object,
) -> SimpleSpeakerListener:
    """Factory for the registry."""
    reject_unknown_params("mpe/simple_speaker_listener", unknown, ("max_cycles", "check_actions", "dtype"))
    config = SpeakerListenerConfig(max_cycles=max_cycles)
    return SimpleSpeakerListener(
        config, num_envs, seed=seed, device=device, check_actions=check_actions, dtype=dtype
    )
