"""Parity: the vectorised MPE scenarios step exactly like mpe2's own envs.

Each batch slot gets the world of an mpe2 parallel env reset with its own seed; both sides then
play the same random actions for whole episodes, and every observation, global state, reward
and the truncation at ``max_cycles`` are compared.
"""

from __future__ import annotations

import numpy as np
import pytest
import torch

from kdx.envs import make

mpe2 = pytest.importorskip("mpe2")
from mpe2 import simple_reference_v3, simple_speaker_listener_v4, simple_spread_v3  # noqa: E402

ATOL = 1e-5

# name -> (kdx kwargs, mpe2 parallel-env constructor taking the same kwargs)
CASES = {
    "spread_default": ("mpe/simple_spread", {}, simple_spread_v3.parallel_env),
    "spread_n4": ("mpe/simple_spread", {"N": 4, "local_ratio": 0.25, "max_cycles": 20}, simple_spread_v3.parallel_env),
    "speaker_listener": ("mpe/simple_speaker_listener", {}, simple_speaker_listener_v4.parallel_env),
    "reference": ("mpe/simple_reference", {"local_ratio": 0.3}, simple_reference_v3.parallel_env),
}


def _mpe2_envs(ctor, kwargs, seeds, cluster):
    envs, first_obs = [], []
    for seed in seeds:
        env = ctor(continuous_actions=False, **kwargs)
        obs, _ = env.reset(seed=int(seed))
        if cluster:
            # Put the agents on a small ring, neighbours 0.28 apart (they collide below 0.3):
            # shallow overlaps push gently, so contacts and collision penalties keep recurring.
            world = env.unwrapped.world
            n = len(world.agents)
            radius = 0.28 / (2 * np.sin(np.pi / n))
            centre = world.agents[0].state.p_pos.copy()
            for i, agent in enumerate(world.agents):
                angle = 2 * np.pi * i / n + seed
                agent.state.p_pos = centre + radius * np.array([np.cos(angle), np.sin(angle)])
            obs = {a: env.unwrapped.observe(a) for a in env.agents}
        envs.append(env)
        first_obs.append(obs)
    return envs, first_obs


def _huddle_moves(envs):
    """``[k, n_agents]`` moves (0..4) towards the agents' centroid along the longer axis."""
    moves = []
    for env in envs:
        pos = np.stack([a.state.p_pos for a in env.unwrapped.world.agents])
        to_centre = pos.mean(axis=0) - pos
        along_x = np.abs(to_centre[:, 0]) >= np.abs(to_centre[:, 1])
        x_move = np.where(to_centre[:, 0] < 0, 1, 2)
        y_move = np.where(to_centre[:, 1] < 0, 3, 4)
        moves.append(np.where(along_x, x_move, y_move))
    return np.stack(moves)


def run_parity(name, kwargs, ctor, seeds, dtype=torch.float64, atol=ATOL, corrupt_actions=False, cluster=False):
    """Play one whole episode on both sides and assert they agree; returns the number of steps
    in which some agent was penalised for a collision (spread)."""
    envs, first_obs = _mpe2_envs(ctor, kwargs, seeds, cluster)
    k = len(seeds)
    ours = make(name, num_envs=k, seed=999, dtype=dtype, **kwargs)
    ours.reset()
    for i, env in enumerate(envs):
        ours.load_state_from_mpe2(env.unwrapped.world, i)
    names = ours.spec.agent_names
    assert tuple(envs[0].possible_agents) == names

    def check_obs(our_obs, their_obs_per_env, what):
        for a, agent in enumerate(names):
            theirs = np.stack([o[agent] for o in their_obs_per_env])
            np.testing.assert_allclose(our_obs[a].numpy(), theirs, atol=atol, rtol=0, err_msg=f"{what} {agent}")

    check_obs(ours.observations(), first_obs, "reset obs")
    np.testing.assert_allclose(
        ours.global_state().numpy(), np.stack([e.state() for e in envs]), atol=atol, rtol=0, err_msg="reset state"
    )

    rng = np.random.default_rng(seeds[0])
    n_actions = [ours.spec.agents[a].n_actions for a in range(len(names))]
    limit = ours.spec.episode_limit
    returns = np.zeros(k)
    collision_steps = 0
    for t in range(limit):
        acts = np.stack([rng.integers(0, n, size=k) for n in n_actions], axis=1)  # [k, n_agents]
        if cluster:
            acts = np.where(rng.random(acts.shape) < 0.7, _huddle_moves(envs), acts)
        results = [env.step({agent: int(acts[i, a]) for a, agent in enumerate(names)}) for i, env in enumerate(envs)]
        sent = (acts + 1) % np.array(n_actions) if corrupt_actions else acts
        step = ours.step(torch.as_tensor(sent, dtype=torch.long))
        their_rewards = np.array([[r[1][agent] for agent in names] for r in results])
        np.testing.assert_allclose(step.reward.numpy(), their_rewards, atol=atol, rtol=0, err_msg=f"reward t={t}")
        returns += their_rewards.sum(axis=1)
        collision_steps += int((their_rewards.max(axis=1) - their_rewards.min(axis=1) > 1e-9).sum())
        their_trunc = np.array([all(r[3][agent] for agent in names) for r in results])
        assert not any(any(r[2].values()) for r in results), "mpe2 MPE episodes never terminate"
        assert step.terminated.numpy().tolist() == [False] * k
        assert step.truncated.numpy().tolist() == their_trunc.tolist(), f"truncation differs at t={t}"
        their_state = np.stack([np.concatenate([r[0][agent] for agent in names]) for r in results])
        np.testing.assert_allclose(
            step.info["final_state"].numpy(), their_state, atol=atol, rtol=0, err_msg=f"state t={t}"
        )
        if t < limit - 1:
            check_obs(step.obs, [r[0] for r in results], f"obs t={t}")
        else:
            assert their_trunc.all(), "mpe2 truncates at max_cycles"
            assert step.info["episode_length"].numpy().tolist() == [limit] * k
            np.testing.assert_allclose(step.info["episode_return"].numpy(), returns, atol=1e-4, rtol=0)
            # The slot has auto-reset: a fresh episode at t = 0 with zero velocities.
            assert ours.t.numpy().tolist() == [0] * k
    return collision_steps


@pytest.mark.parametrize("case", sorted(CASES))
def test_whole_episodes_match_mpe2(case):
    name, kwargs, ctor = CASES[case]
    for seeds in ([0, 1, 2, 3], [17, 41, 1234]):
        run_parity(name, kwargs, ctor, seeds)


@pytest.mark.parametrize("case", ["spread_default", "spread_n4"])
def test_crowded_spread_episodes_match_mpe2(case):
    # Random play rarely collides; a crowded start and moves that mostly huddle towards the
    # agents' centroid exercise the contact forces and the collision penalty all episode.
    name, kwargs, ctor = CASES[case]
    collision_steps = run_parity(name, kwargs, ctor, [21, 22, 23, 24], cluster=True)
    assert collision_steps >= 10


@pytest.mark.parametrize("case", ["spread_default", "reference"])
def test_float32_default_stays_close_to_mpe2(case):
    name, kwargs, ctor = CASES[case]
    run_parity(name, kwargs, ctor, [5, 6], dtype=torch.float32, atol=1e-4)


@pytest.mark.parametrize("case", sorted(CASES))
def test_parity_check_detects_different_dynamics(case):
    # The same harness with the kdx side given other actions must fail: the comparison is sharp.
    name, kwargs, ctor = CASES[case]
    with pytest.raises(AssertionError):
        run_parity(name, kwargs, ctor, [3, 4], corrupt_actions=True)


def test_spread_collisions_are_exercised():
    # Put two agents on top of each other so the contact force and collision penalty matter,
    # then check against mpe2 from that state.
    env = simple_spread_v3.parallel_env(continuous_actions=False)
    env.reset(seed=7)
    world = env.unwrapped.world
    world.agents[1].state.p_pos = world.agents[0].state.p_pos + np.array([0.1, 0.05])
    world.agents[2].state.p_pos = world.agents[0].state.p_pos + np.array([-0.2, 0.1])
    ours = make("mpe/simple_spread", num_envs=1, dtype=torch.float64)
    ours.reset()
    ours.load_state_from_mpe2(world, 0)
    obs, rewards, *_ = env.step({"agent_0": 0, "agent_1": 2, "agent_2": 3})
    step = ours.step(torch.tensor([[0, 2, 3]]))
    expected = np.array([[rewards[a] for a in ("agent_0", "agent_1", "agent_2")]])
    np.testing.assert_allclose(step.reward.numpy(), expected, atol=ATOL, rtol=0)
    assert expected.max() < -0.5 * 0.9  # each agent collided: the local penalty shows
    for a, agent in enumerate(("agent_0", "agent_1", "agent_2")):
        np.testing.assert_allclose(step.obs[a].numpy()[0], obs[agent], atol=ATOL, rtol=0)
    # The push apart is large compared with a move: velocities beyond what actions give.
    assert np.abs(obs["agent_1"][:2]).max() > 0.5
