"""The scripted MPE oracles: correct pieces, and far better returns than uniform random play."""

from __future__ import annotations

import itertools

import pytest
import torch

from kdx.envs import make
from kdx.envs.mpe.oracles import ORACLES, best_assignment, oracle_actions, steer_towards
from kdx.errors import KdxError


def mean_episode_return(name, policy, num_envs=128, episodes=2, seed=0):
    """Mean per-agent return of finished episodes under ``policy(env) -> actions``, and its
    standard error."""
    env = make(name, num_envs=num_envs, seed=seed)
    env.reset()
    finished = []
    for _ in range(episodes * env.spec.episode_limit):
        step = env.step(policy(env))
        finished.append(step.info["episode_return"][step.done])
    returns = torch.cat(finished) / env.spec.n_agents
    assert returns.numel() == num_envs * episodes
    return returns.mean().item(), returns.std().item() / returns.numel() ** 0.5


@pytest.mark.parametrize("name", sorted(ORACLES))
def test_oracle_beats_random_by_a_wide_margin(name):
    oracle_mean, oracle_se = mean_episode_return(name, oracle_actions)
    random_mean, random_se = mean_episode_return(name, lambda env: env.sample_random_actions())
    # Returns are negative (distances, collisions): the oracle must at least halve random
    # play's cost, and the gap must be far outside the noise (10 standard errors).
    assert oracle_mean > 0.5 * random_mean, (oracle_mean, random_mean)
    noise = (oracle_se**2 + random_se**2) ** 0.5
    assert oracle_mean - random_mean > 10 * noise, (oracle_mean, random_mean, noise)


def test_best_assignment_matches_brute_force_loop():
    gen = torch.Generator().manual_seed(1)
    cost = torch.rand(20, 4, 4, generator=gen)
    got = best_assignment(cost)
    for b in range(20):
        best = min(itertools.permutations(range(4)), key=lambda p: sum(float(cost[b, i, p[i]]) for i in range(4)))
        assert got[b].tolist() == list(best)


def test_steering_picks_the_direction_of_the_target_and_brakes():
    pos = torch.zeros(4, 2)
    targets = torch.tensor([[-1.0, 0.0], [1.0, 0.0], [0.0, -1.0], [0.0, 1.0]])
    assert steer_towards(pos, torch.zeros(4, 2), targets).tolist() == [1, 2, 3, 4]
    # Moving fast towards a target right ahead: coasting would overshoot, so it brakes (left).
    assert steer_towards(torch.zeros(1, 2), torch.tensor([[2.0, 0.0]]), torch.tensor([[0.3, 0.0]])).tolist() == [1]


def test_oracle_refuses_unknown_env():
    class Fake:
        class spec:
            name = "mpe/nope"

    with pytest.raises(KdxError, match="no scripted oracle"):
        oracle_actions(Fake())
