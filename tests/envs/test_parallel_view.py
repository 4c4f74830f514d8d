"""A kdx env behind PettingZoo's ParallelEnv interface (what `kdx run` plays bundles in): the
same episodes as the batched env, numpy in and out, episodes that end."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from kdx.envs import available, make
from kdx.envs.parallel import ParallelEnvView
from kdx.errors import KdxError

# The first env of every family with a fixed name (smac needs StarCraft II).
FIRST_OF_FAMILY = list({e.family: n for n, e in reversed(available().items()) if e.family != "smac"}.values())


def _legal_actions(observations: dict, rng: np.random.Generator) -> dict[str, int]:
    return {a: int(rng.choice(np.flatnonzero(o["action_mask"]))) for a, o in observations.items()}


@pytest.mark.parametrize("name", FIRST_OF_FAMILY)
def test_the_view_plays_the_batched_env_episode(name: str) -> None:
    view = ParallelEnvView(make(name, num_envs=1))
    spec = view.env.spec
    direct = make(name, num_envs=1)
    direct.rng.manual_seed(7)
    expected = direct.reset()
    observations, _ = view.reset(seed=7)
    rng = np.random.default_rng(0)
    steps = 0
    while view.agents:
        for i, agent in enumerate(spec.agents):
            o = observations[agent.name]
            assert o["observation"].dtype == np.float32 and o["observation"].shape == (agent.obs_dim,)
            assert o["action_mask"].dtype == np.bool_ and o["action_mask"].shape == (agent.n_actions,)
            np.testing.assert_array_equal(o["observation"], expected.obs[i][0].numpy())
            np.testing.assert_array_equal(o["action_mask"], expected.action_mask[i][0].numpy())
        actions = _legal_actions(observations, rng)
        observations, rewards, terminations, truncations, _ = view.step(actions)
        expected = direct.step(torch.tensor([[actions[a] for a in spec.agent_names]]))
        assert list(rewards.values()) == expected.reward[0].tolist()
        steps += 1
    assert steps <= spec.episode_limit
    assert all(terminations.values()) or all(truncations.values())
    with pytest.raises(KdxError, match="call reset"):
        view.step(actions)
    view.close()


def test_max_cycles_truncates_and_equal_seeds_replay() -> None:
    view = ParallelEnvView(make("mpe/simple_spread", num_envs=1), max_cycles=5)
    first, _ = view.reset(seed=3)
    steps = 0
    while view.agents:
        _, _, terminations, truncations, _ = view.step(dict.fromkeys(view.agents, 0))
        steps += 1
    assert steps == 5 and all(truncations.values()) and not any(terminations.values())
    again, _ = view.reset(seed=3)
    other, _ = view.reset(seed=4)
    np.testing.assert_array_equal(first["agent_0"]["observation"], again["agent_0"]["observation"])
    assert not np.array_equal(first["agent_0"]["observation"], other["agent_0"]["observation"])


def test_the_view_needs_one_copy() -> None:
    with pytest.raises(KdxError, match="num_envs=1"):
        ParallelEnvView(make("mpe/simple_spread", num_envs=2))
