"""Any PettingZoo ``ParallelEnv`` behind the batched API: the slow path for envs without a port.

``make("pettingzoo:mpe2.simple_tag_v3", num_envs=8)`` imports ``mpe2.simple_tag_v3``, calls its
``parallel_env(**env_kwargs)`` ``num_envs`` times and steps the copies one after another in this
process. Spaces may differ between agents (the speaker and listener of speaker_listener do):
each agent keeps its own flattened observation size and discrete action count.

Conventions:
- Observations are flattened to float32. A dict observation with ``"observation"`` and
  ``"action_mask"`` keys (PettingZoo's convention) provides the action mask; so does an
  ``"action_mask"`` entry in the agent's info. Otherwise every action is legal.
- The global state is ``env.state()`` when the env implements it, else all agents' observations
  concatenated in agent order.
- Agents that leave the episode early get zero observations and only action 0 legal until the
  episode ends; the episode ends when no agent is left (or all are terminated/truncated).
- ``terminated`` is set when every agent terminated; otherwise the end counts as a truncation.
- MPE envs are made with ``continuous_actions=False`` unless the caller says otherwise.
"""

from __future__ import annotations

import importlib
from typing import Any

import numpy as np
import torch

from kdx.envs.base import AgentSpec, BatchedEnv, EnvSpec, check_num_envs
from kdx.envs.registry import register_prefix
from kdx.envs.twins import PETTINGZOO_PREFIX
from kdx.errors import KdxError

_NO_LIMIT = 10**9


def _import_parallel_env(target: str, env_kwargs: dict[str, Any]):
    if "." not in target:
        raise KdxError(
            f"pettingzoo env {target!r} must be written as <module>.<env>, "
            "e.g. pettingzoo:mpe2.simple_spread_v3"
        )
    try:
        module = importlib.import_module(target)
    except ModuleNotFoundError as exc:
        raise KdxError(
            f"cannot import {target!r} for the PettingZoo adapter ({exc}). Check the name, and "
            "install the package that provides it (e.g. `pip install mpe2` for mpe2.*)."
        ) from None
    if not hasattr(module, "parallel_env"):
        raise KdxError(f"module {target!r} has no parallel_env(); it is not a PettingZoo environment")
    kwargs = dict(env_kwargs)
    if target.startswith(("mpe2.", "pettingzoo.mpe.")):
        kwargs.setdefault("continuous_actions", False)
    return lambda: module.parallel_env(**kwargs)


def _split_obs(raw: Any) -> tuple[np.ndarray, np.ndarray | None]:
    if isinstance(raw, dict) and "observation" in raw:
        mask = raw.get("action_mask")
        return np.asarray(raw["observation"], dtype=np.float32).ravel(), (
            None if mask is None else np.asarray(mask, dtype=bool)
        )
    return np.asarray(raw, dtype=np.float32).ravel(), None


class PettingZooEnv(BatchedEnv):
    """``num_envs`` copies of a PettingZoo ParallelEnv stepped sequentially in this process."""

    state_in_tensors = False  # the state lives in the wrapped simulator

    def __init__(self, target: str, num_envs: int = 1, seed: int = 0, device: str = "cpu",
                 check_actions: bool = True, **env_kwargs: Any) -> None:
        check_num_envs(num_envs)
        factory = _import_parallel_env(target, env_kwargs)
        self._copies = [factory() for _ in range(num_envs)]
        first = self._copies[0]
        names = list(first.possible_agents)
        agents = []
        for name in names:
            act_space = first.action_space(name)
            if not hasattr(act_space, "n"):
                raise KdxError(
                    f"pettingzoo:{target}: agent {name!r} has a {type(act_space).__name__} action "
                    "space; kdx supports discrete actions only (for MPE pass continuous_actions=False)"
                )
            obs_space = first.observation_space(name)
            if hasattr(obs_space, "spaces") and "observation" in obs_space.spaces:
                obs_space = obs_space.spaces["observation"]
            obs_dim = int(np.prod(obs_space.shape))
            group = name.rsplit("_", 1)[0] if name.rsplit("_", 1)[-1].isdigit() else name
            agents.append(AgentSpec(name=name, obs_dim=obs_dim, n_actions=int(act_space.n), group=group))
        self._names = names
        self._has_state = callable(getattr(first, "state", None)) and self._probe_state(first, seed)
        state_dim = sum(a.obs_dim for a in agents)
        if self._has_state:
            state_dim = int(np.asarray(first.state()).size)
        limit = int(getattr(first.unwrapped, "max_cycles", 0) or getattr(first, "max_cycles", 0) or _NO_LIMIT)
        self.spec = EnvSpec(
            name=f"pettingzoo:{target}",
            agents=tuple(agents),
            state_dim=state_dim,
            episode_limit=limit,
            has_win_flag=False,
        )
        super().__init__(num_envs=num_envs, seed=seed, device=device, check_actions=check_actions)
        n = num_envs
        self._obs = [np.zeros((n, a.obs_dim), dtype=np.float32) for a in agents]
        self._masks = [np.ones((n, a.n_actions), dtype=bool) for a in agents]
        self._state = np.zeros((n, state_dim), dtype=np.float32)
        self._truncated_now = np.zeros(n, dtype=bool)

    @staticmethod
    def _probe_state(env, seed: int) -> bool:
        try:
            env.reset(seed=seed)
            env.state()
            return True
        except (NotImplementedError, AttributeError):
            return False

    # ------------------------------------------------------------------ scenario hooks
    def _record(self, i: int, observations: dict, infos: dict) -> None:
        env = self._copies[i]
        for k, (name, spec) in enumerate(zip(self._names, self.spec.agents)):
            if name in observations:
                obs, mask = _split_obs(observations[name])
                if obs.size != spec.obs_dim:
                    raise KdxError(
                        f"{self.spec.name}: agent {name!r} returned an observation of size {obs.size}, "
                        f"expected {spec.obs_dim}; variable-size observations are not supported"
                    )
                self._obs[k][i] = obs
                info_mask = infos.get(name, {}).get("action_mask") if isinstance(infos.get(name), dict) else None
                mask = mask if mask is not None else info_mask
                self._masks[k][i] = True if mask is None else np.asarray(mask, dtype=bool)
            else:  # the agent has left the episode
                self._obs[k][i] = 0.0
                self._masks[k][i] = False
                self._masks[k][i, 0] = True
        if self._has_state:
            self._state[i] = np.asarray(env.state(), dtype=np.float32).ravel()
        else:
            self._state[i] = np.concatenate([o[i] for o in self._obs])

    def _reset_envs(self, mask: torch.Tensor) -> None:
        idx = mask.nonzero().flatten().tolist()
        seeds = torch.randint(0, 2**31 - 1, (len(idx),), generator=self.rng, device=self.device).tolist()
        for i, s in zip(idx, seeds):
            observations, infos = self._copies[i].reset(seed=int(s))
            self._record(i, observations, infos)

    def _step_envs(self, actions: torch.Tensor):
        acts = actions.cpu().numpy()
        n = self.num_envs
        reward = np.zeros((n, self.spec.n_agents), dtype=np.float32)
        terminated = np.zeros(n, dtype=bool)
        self._truncated_now[:] = False
        for i, env in enumerate(self._copies):
            live = list(env.agents)
            step_actions = {name: int(acts[i, k]) for k, name in enumerate(self._names) if name in live}
            observations, rewards, terms, truncs, infos = env.step(step_actions)
            for k, name in enumerate(self._names):
                reward[i, k] = float(rewards.get(name, 0.0))
            ended = {a for a in live if terms.get(a, False) or truncs.get(a, False)}
            if not env.agents or ended >= set(live):
                all_terminated = all(terms.get(a, False) for a in live)
                terminated[i] = all_terminated
                self._truncated_now[i] = not all_terminated
            self._record(i, observations, infos)
        won = torch.zeros(n, dtype=torch.bool, device=self.device)
        return (
            torch.from_numpy(reward).to(self.device),
            torch.from_numpy(terminated).to(self.device),
            won,
        )

    def _env_truncated(self) -> torch.Tensor:
        return torch.from_numpy(self._truncated_now.copy()).to(self.device)

    def _observations(self) -> tuple[torch.Tensor, ...]:
        return tuple(torch.from_numpy(o.copy()).to(self.device) for o in self._obs)

    def _action_masks(self) -> tuple[torch.Tensor, ...]:
        return tuple(torch.from_numpy(m.copy()).to(self.device) for m in self._masks)

    def _global_state(self) -> torch.Tensor:
        return torch.from_numpy(self._state.copy()).to(self.device)

    def close(self) -> None:
        for env in self._copies:
            env.close()


def _make_pettingzoo(target: str, num_envs: int = 1, seed: int = 0, device: str = "cpu", **kwargs) -> PettingZooEnv:
    return PettingZooEnv(target, num_envs=num_envs, seed=seed, device=device, **kwargs)


register_prefix(
    PETTINGZOO_PREFIX,
    _make_pettingzoo,
    "any PettingZoo ParallelEnv by module name, N copies stepped in-process (slow path)",
    family="pettingzoo",
)
