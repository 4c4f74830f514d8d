"""Each kdx env's PettingZoo twin (kdx.envs.twins) is in its registry entry and really is its
twin: the same agents, observation sizes and action counts."""

from __future__ import annotations

import pytest

from kdx.envs import available, make
from kdx.envs.twins import PETTINGZOO_TWINS, pettingzoo_twin


def test_registry_entries_carry_the_twins_of_the_table() -> None:
    entries = available()
    assert {name: e.pettingzoo_twin for name, e in entries.items() if e.pettingzoo_twin} == PETTINGZOO_TWINS
    assert all(e.pettingzoo_twin is None for e in entries.values() if e.family in ("skirmish", "smac"))


def test_a_pettingzoo_name_is_its_own_twin() -> None:
    assert pettingzoo_twin("pettingzoo:mpe2.simple_tag_v3") == "pettingzoo:mpe2.simple_tag_v3"
    assert pettingzoo_twin("mpe/simple_spread") == "pettingzoo:mpe2.simple_spread_v3"
    assert pettingzoo_twin("skirmish/3m") is None


@pytest.mark.parametrize("name", list(PETTINGZOO_TWINS))
def test_the_twin_has_the_same_agents_observations_and_actions(name: str) -> None:
    pytest.importorskip("mpe2", reason="mpe2 provides the twins")
    from kdx.runtime.closed_loop import make_parallel_env

    spec = make(name, num_envs=1).spec
    twin = make_parallel_env(PETTINGZOO_TWINS[name])
    try:
        assert list(twin.possible_agents) == list(spec.agent_names)
        for agent in spec.agents:
            assert twin.observation_space(agent.name).shape == (agent.obs_dim,), agent.name
            assert twin.action_space(agent.name).n == agent.n_actions, agent.name
    finally:
        twin.close()
