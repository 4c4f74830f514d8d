"""One copy of a kdx env behind PettingZoo's ``ParallelEnv`` interface, numpy in and out: how
``kdx run`` plays a bundle in envs that have no PettingZoo twin (``skirmish/*``, ``smac/*``).

The reverse of :mod:`kdx.envs.pettingzoo`. PettingZoo's conventions: ``reset(seed) ->
(observations, infos)``, ``step(actions) -> (observations, rewards, terminations, truncations,
infos)`` with dicts keyed by agent name, and ``agents`` empty once the episode has ended. Each
observation is ``{"observation": float32 [obs_dim], "action_mask": bool [n_actions]}``
(PettingZoo's masking convention); each agent's reward is its column of ``EnvStep.reward``.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import numpy as np
import torch

from kdx.envs.base import BatchedEnv, EnvStep
from kdx.errors import KdxError


@dataclass(frozen=True)
class DiscreteSpace:
    """An agent's action space: actions ``0 .. n-1`` (what ``gymnasium.spaces.Discrete`` offers
    the closed loop, without the dependency)."""

    n: int


class ParallelEnvView:
    """``env`` (built with ``num_envs=1``) as a PettingZoo ParallelEnv.

    ``max_cycles`` ends an episode early (as a truncation) after that many steps; the env's own
    limit applies otherwise. The wrapped env resets itself when an episode ends, so the
    observations returned with the end belong to the next episode (as in every kdx env).
    """

    def __init__(self, env: BatchedEnv, max_cycles: int | None = None) -> None:
        if env.num_envs != 1:
            raise KdxError(f"{env.spec.name}: a ParallelEnv view needs num_envs=1, got {env.num_envs}")
        if max_cycles is not None and max_cycles < 1:
            raise KdxError(f"max_cycles must be >= 1, got {max_cycles}")
        self.env = env
        self.max_cycles = max_cycles
        self.possible_agents = list(env.spec.agent_names)
        self.agents: list[str] = []
        self._spaces = {a.name: DiscreteSpace(a.n_actions) for a in env.spec.agents}
        self._steps = 0

    def action_space(self, agent: str) -> DiscreteSpace:
        return self._spaces[agent]

    def reset(self, seed: int | None = None, options: Any = None) -> tuple[dict, dict]:
        """Start an episode; ``seed`` reseeds the env's generator (equal seeds, equal episodes)."""
        if seed is not None:
            self.env.rng.manual_seed(seed)
        out = self.env.reset()
        self.agents = list(self.possible_agents)
        self._steps = 0
        return self._observations(out), {a: {} for a in self.agents}

    def step(self, actions: dict[str, int]) -> tuple[dict, dict, dict, dict, dict]:
        """One step with every live agent's action (``{agent: int}``)."""
        if not self.agents:
            raise KdxError(f"{self.env.spec.name}: the episode has ended; call reset() first")
        missing = [a for a in self.agents if a not in actions]
        if missing:
            raise KdxError(f"{self.env.spec.name}: no action for agent(s) {', '.join(missing)}")
        row = torch.tensor([[int(actions[a]) for a in self.possible_agents]], dtype=torch.long,
                           device=self.env.device)
        out = self.env.step(row)
        self._steps += 1
        terminated = bool(out.terminated[0])
        truncated = not terminated and (bool(out.truncated[0]) or self._steps == self.max_cycles)
        rewards = dict(zip(self.possible_agents, out.reward[0].tolist()))
        infos: dict[str, dict] = {a: {} for a in self.agents}
        if terminated or truncated:
            won = bool(out.info["won"][0])
            infos = {a: {"won": won} for a in self.agents}
            self.agents = []
        terminations = dict.fromkeys(self.possible_agents, terminated)
        truncations = dict.fromkeys(self.possible_agents, truncated)
        return self._observations(out), rewards, terminations, truncations, infos

    def _observations(self, out: EnvStep) -> dict[str, dict[str, np.ndarray]]:
        return {name: {"observation": obs[0].detach().cpu().numpy().astype(np.float32, copy=False),
                       "action_mask": mask[0].detach().cpu().numpy()}
                for name, obs, mask in zip(self.possible_agents, out.obs, out.action_mask)}

    def close(self) -> None:
        self.env.close()
