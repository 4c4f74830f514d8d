"""``kdx-runtime run``: the bundle's policies in closed loop with a PettingZoo parallel env,
each agent fed only its own observation (decentralised execution), torch-free. A student with a
view gets the device part of its view of that observation (``Policy.model_input``), applied
before each decision and not counted in its latency (which stays the model's, as in ``bench``).

Env names: ``pettingzoo:<module>.<env>`` (e.g. ``pettingzoo:mpe2.simple_spread_v3``), or a kdx
env with a PettingZoo twin (``kdx.envs.twins``: ``mpe/simple_spread`` plays in
``pettingzoo:mpe2.simple_spread_v3``); the module must provide ``parallel_env(...)``. Discrete actions are requested (``continuous_actions=False``)
where the env takes that argument. Observations may be arrays, or dicts with ``observation`` and
``action_mask`` (PettingZoo's masking convention).
"""

from __future__ import annotations

import importlib
import inspect
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from kdx.envs.twins import PETTINGZOO_PREFIX, pettingzoo_twin
from kdx.errors import KdxError
from kdx.runtime.policy import Deadline, Policy
from kdx.runtime.profiler import LatencyStats


def pettingzoo_env(env: str, bundle_path: str | Path = "BUNDLE") -> str:
    """The PettingZoo env that plays ``env`` here: ``env`` itself if it is a ``pettingzoo:``
    name, else the twin of kdx env ``env``; KdxError saying how to play an env without one."""
    twin = pettingzoo_twin(env)
    if twin is None:
        raise KdxError(
            f"env {env!r} has no torch-free PettingZoo twin, so kdx-runtime cannot play it. On a "
            f"machine with kdx[train] (pip install 'kdx[train]'), `kdx run {bundle_path} --env {env}` "
            f"plays the bundle in kdx's own {env} (same options as kdx-runtime run); or pass "
            "--env pettingzoo:<module>.<env> for a PettingZoo env with the same agents.")
    return twin


def make_parallel_env(name: str, max_cycles: int | None = None) -> Any:
    """A PettingZoo ParallelEnv from ``pettingzoo:<module>.<env>``."""
    if not name.startswith(PETTINGZOO_PREFIX) or "." not in name[len(PETTINGZOO_PREFIX):]:
        raise KdxError(f"env {name!r}: expected pettingzoo:<module>.<env>, "
                       "e.g. pettingzoo:mpe2.simple_spread_v3")
    module_name = name[len(PETTINGZOO_PREFIX):]
    try:
        module = importlib.import_module(module_name)
    except ImportError as exc:
        raise KdxError(f"env {name!r}: cannot import {module_name} ({exc}); install it "
                       "(e.g. pip install pettingzoo mpe2)") from None
    factory = getattr(module, "parallel_env", None)
    if factory is None:
        raise KdxError(f"env {name!r}: {module_name} has no parallel_env()")
    try:
        accepted = inspect.signature(factory).parameters
    except (TypeError, ValueError):
        accepted = {}
    # PettingZoo's parallel_wrapper_fn hides the arguments behind **kwargs: offer them then too.
    open_ended = any(p.kind is inspect.Parameter.VAR_KEYWORD for p in accepted.values())
    kwargs: dict[str, Any] = {}
    if "continuous_actions" in accepted or open_ended:
        kwargs["continuous_actions"] = False
    if max_cycles is not None and ("max_cycles" in accepted or open_ended):
        kwargs["max_cycles"] = max_cycles
    try:
        return factory(**kwargs)
    except TypeError as exc:
        if not open_ended or "continuous_actions" in accepted:
            raise KdxError(f"env {name!r}: cannot create it with {kwargs} ({exc})") from None
    kwargs.pop("continuous_actions")  # a discrete-only env that forwards **kwargs strictly
    try:
        return factory(**kwargs)
    except TypeError as exc:
        raise KdxError(f"env {name!r}: cannot create it with {kwargs} ({exc})") from None


@dataclass
class RunResult:
    """Closed-loop outcome: returns per episode and per-decision latency (raw samples kept)."""

    episodes: int
    team_returns: list[float]
    agent_returns: dict[str, list[float]]
    steps: int
    latency_samples_ns: np.ndarray = field(repr=False)
    step_samples_ns: np.ndarray = field(repr=False)
    deadline: dict[str, Any] | None = None

    @property
    def latency(self) -> LatencyStats:
        """Per decision (one agent's ``act``)."""
        return LatencyStats.from_samples_ns(self.latency_samples_ns)

    @property
    def step_latency(self) -> LatencyStats:
        """Per env step: all agents' decisions of that step, one after the other."""
        return LatencyStats.from_samples_ns(self.step_samples_ns)

    def summary(self) -> dict[str, Any]:
        returns = np.asarray(self.team_returns, dtype=np.float64)
        return {
            "episodes": self.episodes,
            "steps": self.steps,
            "team_return_mean": float(returns.mean()),
            "team_return_std": float(returns.std()),
            "agent_return_mean": {k: float(np.mean(v)) for k, v in self.agent_returns.items()},
            "latency": self.latency.to_dict(),
            "step_latency": self.step_latency.to_dict(),
            "deadline": self.deadline,
        }


def _split_obs(raw: Any) -> tuple[np.ndarray, np.ndarray | None]:
    if isinstance(raw, dict):
        return np.asarray(raw["observation"]), raw.get("action_mask")
    return raw, None


def run_episodes(env: Any, policies: dict[str, Policy], episodes: int, seed: int = 0,
                 deadline: Deadline | None = None) -> RunResult:
    """Play ``episodes`` episodes; each agent's action comes from its own policy and its own
    observation only. Latency is the time of each ``policy.act`` call."""
    if episodes < 1:
        raise KdxError(f"episodes must be >= 1, got {episodes}")
    env_agents = list(env.possible_agents)
    missing = [a for a in env_agents if a not in policies]
    if missing:
        raise KdxError(f"the bundle has no policy for env agent(s) {', '.join(missing)}; "
                       f"bundle agents: {', '.join(policies)}")
    for agent in env_agents:
        space = env.action_space(agent)
        n = getattr(space, "n", None)
        if n is None or int(n) != policies[agent].n_actions:
            raise KdxError(f"agent {agent}: env action space {space} does not match the policy's "
                           f"{policies[agent].n_actions} discrete actions")
        if deadline is not None:
            deadline.check_fallback(policies[agent].n_actions)
    clock = time.perf_counter_ns
    samples: list[int] = []
    step_samples: list[int] = []
    team_returns: list[float] = []
    agent_returns: dict[str, list[float]] = {a: [] for a in env_agents}
    steps = 0
    for episode in range(episodes):
        observations, _ = env.reset(seed=seed + episode)
        for policy in policies.values():
            policy.reset()
        totals = dict.fromkeys(env_agents, 0.0)
        while env.agents:
            actions = {}
            step_ns = 0
            for agent in env.agents:
                obs, mask = _split_obs(observations[agent])
                obs = policies[agent].model_input(obs)
                start = clock()
                action = policies[agent].act(obs, mask)
                elapsed = clock() - start
                if deadline is not None:
                    action, _, _ = deadline.record(action, elapsed)
                samples.append(elapsed)
                step_ns += elapsed
                actions[agent] = action
            step_samples.append(step_ns)
            observations, rewards, _, _, _ = env.step(actions)
            steps += 1
            for agent, reward in rewards.items():
                totals[agent] += float(reward)
        for agent in env_agents:
            agent_returns[agent].append(totals[agent])
        team_returns.append(float(sum(totals.values())))
    return RunResult(episodes, team_returns, agent_returns, steps,
                     np.asarray(samples, dtype=np.int64), np.asarray(step_samples, dtype=np.int64),
                     deadline.summary() if deadline is not None else None)
