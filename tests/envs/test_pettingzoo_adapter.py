"""The PettingZoo adapter: N copies of a ParallelEnv behind the batched API."""

import numpy as np
import pytest
import torch

from kdx.envs import make
from kdx.errors import KdxError

mpe2 = pytest.importorskip("mpe2", reason="mpe2 is part of the [train] extra")


def test_heterogeneous_spaces_of_speaker_listener():
    env = make("pettingzoo:mpe2.simple_speaker_listener_v4", num_envs=2, seed=0)
    spec = env.spec
    assert [(a.name, a.obs_dim, a.n_actions) for a in spec.agents] == [
        ("speaker_0", 3, 3),
        ("listener_0", 11, 5),
    ]
    assert spec.groups == {"speaker": ["speaker_0"], "listener": ["listener_0"]}
    out = env.reset()
    assert [tuple(o.shape) for o in out.obs] == [(2, 3), (2, 11)]
    assert [tuple(m.shape) for m in out.action_mask] == [(2, 3), (2, 5)]
    assert out.padded_obs().shape == (2, 2, 11)
    assert out.state.shape == (2, spec.state_dim)


def test_matches_a_directly_driven_parallel_env():
    """Copy i with the seed the adapter drew must replay exactly what the adapter returned."""
    env = make("pettingzoo:mpe2.simple_spread_v3", num_envs=2, seed=3)
    gen = torch.Generator().manual_seed(3)
    seeds = torch.randint(0, 2**31 - 1, (2,), generator=gen).tolist()
    out = env.reset()
    direct = mpe2.simple_spread_v3.parallel_env(continuous_actions=False)
    obs, _ = direct.reset(seed=seeds[1])
    for k, name in enumerate(env.spec.agent_names):
        np.testing.assert_allclose(out.obs[k][1].numpy(), obs[name], atol=1e-6)
    rng = np.random.default_rng(0)
    for _ in range(10):
        acts = torch.from_numpy(rng.integers(0, 5, size=(2, 3)))
        out = env.step(acts)
        obs, rew, *_ = direct.step({n: int(acts[1, k]) for k, n in enumerate(env.spec.agent_names)})
        for k, name in enumerate(env.spec.agent_names):
            np.testing.assert_allclose(out.obs[k][1].numpy(), obs[name], atol=1e-5)
            assert out.reward[1, k].item() == pytest.approx(rew[name], abs=1e-5)


def test_auto_reset_and_episode_statistics():
    env = make("pettingzoo:mpe2.simple_spread_v3", num_envs=2, seed=0)
    env.reset()
    total = torch.zeros(2)
    for _ in range(25):
        out = env.step(env.sample_random_actions())
        total += out.reward.sum(dim=1)
    assert out.truncated.all() and not out.terminated.any()
    assert torch.allclose(out.info["episode_return"], total, atol=1e-3)
    assert out.info["episode_length"].tolist() == [25, 25]
    out = env.step(env.sample_random_actions())
    assert not out.done.any()


def test_bad_names_and_actions_are_clear_errors():
    with pytest.raises(KdxError, match="<module>.<env>"):
        make("pettingzoo:nomodule", num_envs=1)
    with pytest.raises(KdxError, match="cannot import"):
        make("pettingzoo:mpe2.no_such_env_v0", num_envs=1)
    env = make("pettingzoo:mpe2.simple_speaker_listener_v4", num_envs=1)
    env.reset()
    with pytest.raises(KdxError, match="speaker_0.*0..2"):
        env.step(torch.tensor([[3, 0]]))
    with pytest.raises(KdxError, match=r"shape \[num_envs, n_agents\]"):
        env.step(torch.tensor([0, 0]))
