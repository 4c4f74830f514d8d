"""Conformance of every registered MPE env to the batched env API, plus scenario parameters."""

from __future__ import annotations

import math

import pytest
import torch

from kdx.envs import available, make
from kdx.envs.mpe import physics
from kdx.errors import KdxError

MPE_ENVS = sorted(name for name, entry in available().items() if entry.family == "mpe")
NUM_ENVS = 5


def test_all_three_scenarios_are_registered():
    assert MPE_ENVS == ["mpe/simple_reference", "mpe/simple_speaker_listener", "mpe/simple_spread"]


def _check_step_shapes(env, step):
    spec = env.spec
    assert len(step.obs) == len(step.action_mask) == spec.n_agents
    for agent, obs, mask in zip(spec.agents, step.obs, step.action_mask):
        assert obs.shape == (NUM_ENVS, agent.obs_dim) and obs.dtype == torch.float32
        assert mask.shape == (NUM_ENVS, agent.n_actions) and mask.dtype == torch.bool
        assert bool(mask.all())
    assert step.state.shape == (NUM_ENVS, spec.state_dim) and step.state.dtype == torch.float32
    assert step.reward.shape == (NUM_ENVS, spec.n_agents) and step.reward.dtype == torch.float32
    assert step.terminated.shape == step.truncated.shape == (NUM_ENVS,)
    assert step.terminated.dtype == step.truncated.dtype == torch.bool
    # The global state is all agents' observations concatenated.
    torch.testing.assert_close(step.state, torch.cat(step.obs, dim=1))


@pytest.mark.parametrize("name", MPE_ENVS)
def test_shapes_auto_reset_and_episode_stats(name):
    env = make(name, num_envs=NUM_ENVS, seed=3)
    spec = env.spec
    assert spec.episode_limit == 25
    step = env.reset()
    _check_step_shapes(env, step)
    summed = torch.zeros(NUM_ENVS)
    for t in range(1, 2 * spec.episode_limit + 1):
        step = env.step(env.sample_random_actions())
        _check_step_shapes(env, step)
        summed += step.reward.sum(dim=1)
        at_limit = t % spec.episode_limit == 0
        assert step.truncated.tolist() == [at_limit] * NUM_ENVS
        assert not bool(step.terminated.any())
        assert step.info["episode_length"].tolist() == [(t - 1) % spec.episode_limit + 1] * NUM_ENVS
        torch.testing.assert_close(step.info["episode_return"], summed, atol=1e-4, rtol=1e-5)
        if at_limit:
            summed.zero_()
            # A fresh episode: velocities back to zero, nothing said yet, time reset.
            assert bool((env.agent_vel == 0).all()) and bool((env.comm == 0).all())
            assert env.t.tolist() == [0] * NUM_ENVS
            assert not torch.equal(step.info["final_state"], step.state)


@pytest.mark.parametrize("name", MPE_ENVS)
def test_same_seed_same_trajectory_different_seed_differs(name):
    def trajectory(seed):
        env = make(name, num_envs=NUM_ENVS, seed=seed)
        states = [env.reset().state]
        for _ in range(30):  # crosses one auto-reset
            step = env.step(env.sample_random_actions())
            states += [step.state, step.reward]
        return states

    a, b, c = trajectory(11), trajectory(11), trajectory(12)
    assert all(torch.equal(x, y) for x, y in zip(a, b))
    assert not torch.equal(a[0], c[0])
    assert not torch.equal(a[-2], c[-2])


@pytest.mark.parametrize("name", MPE_ENVS)
def test_bad_actions_name_the_agent(name):
    env = make(name, num_envs=NUM_ENVS, seed=0)
    env.reset()
    good = env.sample_random_actions()
    for i, agent in enumerate(env.spec.agents):
        bad = good.clone()
        bad[2, i] = agent.n_actions
        with pytest.raises(KdxError, match=agent.name):
            env.step(bad)
    with pytest.raises(KdxError, match="shape"):
        env.step(good[:, :1])
    with pytest.raises(KdxError, match="integers"):
        env.step(good.float())


def test_speaker_listener_groups_are_data():
    spec = make("mpe/simple_speaker_listener").spec
    assert spec.groups == {"speaker": ["speaker_0"], "listener": ["listener_0"]}
    assert [(a.obs_dim, a.n_actions) for a in spec.agents] == [(3, 3), (11, 5)]
    assert not spec.homogeneous


def test_spread_parameters_pass_through_make():
    env = make("mpe/simple_spread", num_envs=2, N=5, local_ratio=1.0, max_cycles=7)
    assert env.spec.agent_names == tuple(f"agent_{i}" for i in range(5))
    assert env.spec.agents[0].obs_dim == 4 + 10 + 16
    assert env.spec.episode_limit == 7
    env.reset()
    # With local_ratio 1 only collisions count: agents spread far apart earn exactly zero.
    env.agent_pos = torch.tensor([[[3.0 * i, 0.0] for i in range(5)]] * 2)
    step = env.step(torch.zeros(2, 5, dtype=torch.long))
    assert step.reward.abs().max().item() == 0.0
    with pytest.raises(KdxError, match="local_ratio"):
        make("mpe/simple_spread", local_ratio=1.5)
    with pytest.raises(KdxError, match="dtype"):
        make("mpe/simple_reference", dtype="float16")
    with pytest.raises(KdxError, match="no parameter"):
        make("mpe/simple_spread", n_agents=4)  # mpe2's name is N
    with pytest.raises(KdxError, match="no parameter"):
        make("mpe/simple_speaker_listener", local_ratio=0.5)  # mpe2 has none here


def test_set_state_rejects_wrong_shapes():
    env = make("mpe/simple_reference", num_envs=2)
    with pytest.raises(KdxError, match="agent_pos"):
        env.set_state(0, agent_pos=torch.zeros(3, 2))
    with pytest.raises(KdxError, match="goal"):
        env.set_state(1, goal=[0, 3])
    with pytest.raises(KdxError, match="env_index"):
        env.set_state(2, goal=[0, 1])


def test_contact_scale_matches_mpe2_formula_in_a_loop():
    c = physics.WORLD
    dist = torch.linspace(0.05, 0.6, 200, dtype=torch.float64)
    got = physics.contact_scale(dist, 0.3)
    for d, g in zip(dist.tolist(), got.tolist()):
        x = -(d - 0.3) / c.contact_margin
        penetration = (max(x, 0.0) + math.log1p(math.exp(-abs(x)))) * c.contact_margin  # logaddexp(0, x) * k
        assert g == pytest.approx(c.contact_force * penetration / d, rel=1e-9, abs=1e-300)


def test_reference_action_is_word_times_five_plus_move():
    env = make("mpe/simple_reference", num_envs=1, dtype=torch.float64)
    env.reset()
    env.set_state(0, agent_vel=torch.zeros(2, 2))
    # agent_0: word 7, move 2 (right); agent_1: word 0, move 3 (down)
    env.step(torch.tensor([[7 * 5 + 2, 0 * 5 + 3]]))
    assert env.comm[0, 0].argmax().item() == 7 and env.comm[0, 1].argmax().item() == 0
    dv = physics.WORLD.sensitivity * physics.WORLD.dt
    torch.testing.assert_close(env.agent_vel[0], torch.tensor([[dv, 0.0], [0.0, -dv]], dtype=torch.float64))


@pytest.mark.parametrize("name", MPE_ENVS)
def test_state_dict_round_trip_resumes_identically(name):
    env = make(name, num_envs=NUM_ENVS, seed=4)
    env.reset()
    for _ in range(3):
        env.step(env.sample_random_actions())
    saved = env.state_dict()
    first = [env.step(env.sample_random_actions()).state for _ in range(25)]
    env.observations()  # fill the cache: it must not change what is saved
    assert sorted(env.state_dict()) == sorted(saved)
    env.load_state_dict(saved)
    again = [env.step(env.sample_random_actions()).state for _ in range(25)]
    assert all(torch.equal(a, b) for a, b in zip(first, again))
