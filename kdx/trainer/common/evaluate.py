"""Evaluation: any policy over N episodes, with 95% confidence intervals and reference scores.

A *policy* is the small interface ``Policy``: ``reset(env)`` before a batch of episodes, then
``act(step) -> long [num_envs, n_agents]`` from the ``EnvStep`` (decentralised policies read
only ``step.obs``, ``step.action_mask`` and ``step.done``; scripted references may read the env).
Teachers (``kdx.trainer.teacher.evaluate``), students (``kdx.trainer.distill.evaluate``), random
and scripted policies all plug in the same way.

Every policy is run on the same env seeds, so the random and oracle references of MPE's
normalised score (0 = uniform random, 1 = scripted oracle) come from the very same episodes'
initial states.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import asdict, dataclass
from typing import Any, Protocol

import torch

from kdx.envs.base import BatchedEnv, EnvStep
from kdx.envs.registry import make
from kdx.errors import KdxError
from kdx.trainer.common.sampling import sample_actions

EVAL_SEED = 10_000  # evaluation seeds differ from training seeds
MAX_EVAL_ENVS = 256


class Policy(Protocol):
    """What evaluation needs from a policy."""

    name: str

    def reset(self, env: BatchedEnv) -> None: ...

    def act(self, step: EnvStep) -> torch.Tensor: ...


class RandomPolicy:
    """Uniformly random legal actions (the 0 of normalised scores)."""

    name = "random"

    def __init__(self) -> None:
        self.generator = torch.Generator()

    def reset(self, env: BatchedEnv) -> None:
        self.generator = torch.Generator(device=env.device).manual_seed(env.seed + 1)

    def act(self, step: EnvStep) -> torch.Tensor:
        mask = step.padded_action_mask()
        return sample_actions(torch.where(mask, 0.0, -1e9), self.generator)


class ScriptedPolicy:
    """A script with privileged access to the env: ``fn(env)`` (MPE oracles) or, with
    ``takes_step``, ``fn(env, step)`` (skirmish scripts) ``-> long [num_envs, n_agents]``."""

    def __init__(self, name: str, fn: Callable[..., torch.Tensor], takes_step: bool = False) -> None:
        self.name, self.fn, self.takes_step = name, fn, takes_step
        self.env: BatchedEnv | None = None

    def reset(self, env: BatchedEnv) -> None:
        self.env = env

    def act(self, step: EnvStep) -> torch.Tensor:
        return self.fn(self.env, step) if self.takes_step else self.fn(self.env)


@dataclass
class PolicyResult:
    """Episode statistics of one policy; ``*_ci95`` are half-widths of 95% intervals."""

    name: str
    episodes: int
    mean_return: float
    return_ci95: float
    win_rate: float | None = None
    win_rate_ci95: float | None = None
    normalized_score: float | None = None
    normalized_score_ci95: float | None = None


def mean_ci95(values: list[float]) -> tuple[float, float]:
    """Mean and the half-width of its normal-approximation 95% confidence interval."""
    n = len(values)
    mean = sum(values) / n
    if n < 2:
        return mean, float("nan")
    var = sum((v - mean) ** 2 for v in values) / (n - 1)
    return mean, 1.96 * math.sqrt(var / n)


@torch.no_grad()
def run_episodes(env_name: str, policy: Policy, episodes: int, seed: int = EVAL_SEED,
                 device: str = "cpu") -> tuple[list[float], list[float]]:
    """Returns and win flags of ``episodes`` complete episodes (the first one of each env copy).

    Batches of up to ``MAX_EVAL_ENVS`` envs; batch ``k`` uses seed ``seed + k``, so every policy
    meets the same initial states.
    """
    returns: list[float] = []
    wins: list[float] = []
    batch = 0
    while len(returns) < episodes:
        n = min(MAX_EVAL_ENVS, episodes - len(returns))
        env = make(env_name, num_envs=n, seed=seed + batch, device=device)
        step = env.reset()
        policy.reset(env)
        finished = torch.zeros(n, dtype=torch.bool, device=env.device)
        ret = torch.zeros(n, device=env.device)
        won = torch.zeros(n, device=env.device)
        for _ in range(env.spec.episode_limit + 1):
            step = env.step(policy.act(step))
            first = step.done & ~finished
            ret[first] = step.info["episode_return"][first].float()
            won[first] = step.info["won"][first].float()
            finished |= step.done
            if bool(finished.all()):
                break
        env.close()
        returns += ret.tolist()
        wins += won.tolist()
        batch += 1
    return returns, wins


def reference_policies(env_name: str) -> dict[str, Policy]:
    """Random and, where the env family has one, its scripted oracle / scripted team."""
    refs: dict[str, Policy] = {"random": RandomPolicy()}
    if env_name.startswith("mpe/"):
        try:
            from kdx.envs.mpe.oracles import ORACLES
        except ImportError:
            ORACLES = {}
        if env_name in ORACLES:
            refs["oracle"] = ScriptedPolicy("oracle", ORACLES[env_name])
    elif env_name.startswith("skirmish/"):
        try:
            from kdx.envs.skirmish.scripted import SCRIPTED_POLICIES
        except ImportError:
            SCRIPTED_POLICIES = {}
        for name, fn in SCRIPTED_POLICIES.items():
            if name != "random":  # uniform random is already the "random" reference
                refs[f"scripted_{name}"] = ScriptedPolicy(f"scripted_{name}", fn, takes_step=True)
    return refs


def evaluate_policies(env_name: str, policies: dict[str, Policy], episodes: int, seed: int = EVAL_SEED,
                      device: str = "cpu") -> dict[str, Any]:
    """Evaluate ``policies`` plus the references on the same seeds; the ``eval.json`` content."""
    if episodes < 1:
        raise KdxError(f"--episodes must be a positive integer (got {episodes})")
    all_policies = {**policies, **reference_policies(env_name)}
    raw = {name: run_episodes(env_name, p, episodes, seed, device) for name, p in all_policies.items()}
    has_win = make(env_name, num_envs=1, seed=seed).spec.has_win_flag
    rand = sum(raw["random"][0]) / episodes
    oracle = sum(raw["oracle"][0]) / episodes if "oracle" in raw else None
    results = {}
    for name, (rets, wins) in raw.items():
        mean, ci = mean_ci95(rets)
        r = PolicyResult(name, episodes, mean, ci)
        if has_win:
            r.win_rate, r.win_rate_ci95 = mean_ci95(wins)
        if oracle is not None and oracle != rand:
            r.normalized_score, r.normalized_score_ci95 = mean_ci95([(x - rand) / (oracle - rand) for x in rets])
        results[name] = asdict(r)
    return {
        "env": env_name,
        "episodes": episodes,
        "seed": seed,
        "reference": {"random_return": rand, "oracle_return": oracle},
        "policies": results,
    }


def print_eval_table(result: dict[str, Any], console=None) -> None:
    """The evaluation as a rich table (formatting happens only here)."""
    from rich.console import Console
    from rich.table import Table

    table = Table(title=f"{result['env']}: {result['episodes']} episodes per policy (95% CI)")
    for col in ("policy", "mean return", "win rate", "normalised score"):
        table.add_column(col, justify="right" if col != "policy" else "left")

    def pm(x: float | None, ci: float | None, pct: bool = False) -> str:
        if x is None:
            return "-"
        if pct:
            return f"{x:.1%} ± {ci:.1%}" if ci == ci else f"{x:.1%}"
        return f"{x:.3f} ± {ci:.3f}" if ci == ci else f"{x:.3f}"

    for name, r in result["policies"].items():
        table.add_row(name, pm(r["mean_return"], r["return_ci95"]), pm(r["win_rate"], r["win_rate_ci95"], True),
                      pm(r["normalized_score"], r["normalized_score_ci95"]))
    (console or Console()).print(table)
