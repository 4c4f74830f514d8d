"""The env registry: unknown names list what exists; every registered env builds and steps."""

import pytest
import torch

from kdx.envs import available, make
from kdx.errors import KdxError


def test_unknown_env_lists_available_names():
    with pytest.raises(KdxError) as info:
        make("mpe/nope", num_envs=1)
    message = str(info.value)
    assert "unknown environment 'mpe/nope'" in message
    assert "pettingzoo:" in message
    for name in list(available())[:3]:
        assert name in message


def test_bad_num_envs_is_refused():
    with pytest.raises(KdxError, match="num_envs"):
        make("pettingzoo:mpe2.simple_spread_v3", num_envs=0)


# Every fixed-name env builds, steps with random legal actions and keeps the batched contract.
# (Real SMAC needs StarCraft II and is skipped by its own factory's error.)
@pytest.mark.parametrize("name", [n for n, e in available().items() if e.family != "smac"])
def test_every_registered_env_keeps_the_contract(name):
    env = make(name, num_envs=3, seed=0)
    spec = env.spec
    out = env.reset()
    for _ in range(3):
        out = env.step(env.sample_random_actions())
    assert len(out.obs) == spec.n_agents == len(out.action_mask)
    for agent, obs, mask in zip(spec.agents, out.obs, out.action_mask):
        assert obs.shape == (3, agent.obs_dim) and obs.dtype == torch.float32
        assert mask.shape == (3, agent.n_actions) and mask.dtype == torch.bool
        assert mask.any(dim=1).all(), "every agent must always have a legal action"
    assert out.state.shape == (3, spec.state_dim)
    assert out.reward.shape == (3, spec.n_agents)
    assert out.terminated.shape == out.truncated.shape == (3,)
    env.close()


# A checkpoint taken mid-episode must load into a freshly built and reset env, and continue
# exactly: no state may appear lazily after the first step.
@pytest.mark.parametrize("name", [n for n, e in available().items() if e.family in ("mpe", "skirmish")])
def test_env_state_loads_into_a_fresh_env(name):
    env = make(name, num_envs=2, seed=1)
    env.reset()
    for _ in range(3):
        env.step(env.sample_random_actions())
    state = env.state_dict()
    fresh = make(name, num_envs=2, seed=2)
    fresh.reset()  # as a resuming trainer does: build, reset, then load the checkpoint
    fresh.load_state_dict(state)
    actions = env.sample_random_actions()
    fresh.rng.set_state(env.rng.get_state())
    a, b = env.step(actions), fresh.step(actions)
    for x, y in zip(a.obs, b.obs):
        torch.testing.assert_close(x, y)
    torch.testing.assert_close(a.reward, b.reward)
