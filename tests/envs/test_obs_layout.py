"""Observation layouts: the torch-free dataclasses, every registered env's layouts, the feature
names checked against real observations, and `kdx envs show`."""

from __future__ import annotations

import importlib.util
import json
import subprocess
import sys

import pytest
import torch

from kdx.envs import available, make
from kdx.envs.obs_layout import Entity, ObservationBlock, ObservationLayout
from kdx.envs.skirmish.maps import MAPS
from kdx.errors import KdxError

TOY = ObservationLayout.concat([
    ("self", Entity("self"), ("vel_x", "vel_y")),
    ("enemy.0", Entity("enemy", 0), ("distance", "health")),
    ("enemy.1", Entity("enemy", 1), ("distance", "health")),
    ("ally.0", Entity("ally", 0), ("distance", "health", "shield")),
])


# ---------------------------------------------------------------------------------- the dataclasses
def test_concat_lays_blocks_out_in_order_with_flat_names():
    assert [(b.name, b.start, b.stop) for b in TOY.blocks] == [
        ("self", 0, 2), ("enemy.0", 2, 4), ("enemy.1", 4, 6), ("ally.0", 6, 9)]
    assert TOY.size == 9
    assert TOY.feature_names() == [
        "self.vel_x", "self.vel_y", "enemy.0.distance", "enemy.0.health", "enemy.1.distance",
        "enemy.1.health", "ally.0.distance", "ally.0.health", "ally.0.shield"]
    assert TOY.block("enemy.1").entity == Entity("enemy", 1)
    with pytest.raises(KdxError, match="no observation block 'enemy.7'.*self, enemy.0"):
        TOY.block("enemy.7")


@pytest.mark.parametrize(("patterns", "indices"), [
    (("enemy.*.health",), [3, 5]),
    (("*.health",), [3, 5, 7]),
    (("enemy.*",), [2, 3, 4, 5]),
    (("self",), [0, 1]),  # a block name selects the whole block
    (("ally.0.shield", "self.vel_?"), [0, 1, 8]),
    (("enemy.[1]",), [4, 5]),
    (("*",), list(range(9))),
])
def test_select_matches_glob_patterns_on_features_and_blocks(patterns, indices):
    assert TOY.select(*patterns) == indices


def test_select_refuses_a_pattern_that_matches_nothing():
    with pytest.raises(KdxError, match="'enemy.*.shield' matches no observation feature"):
        TOY.select("enemy.*.health", "enemy.*.shield")


def test_json_round_trip_is_exact_and_plain():
    data = json.loads(json.dumps(TOY.to_json()))
    assert ObservationLayout.from_json(data) == TOY
    assert data["blocks"][1] == {"name": "enemy.0", "entity": {"kind": "enemy", "index": 0},
                                 "features": ["distance", "health"], "start": 2, "stop": 4}


@pytest.mark.parametrize(("build", "message"), [
    (lambda: Entity("monster"), "unknown entity kind 'monster'"),
    (lambda: Entity("enemy"), "needs a slot index"),
    (lambda: Entity("self", 1), "takes no index"),
    (lambda: ObservationBlock("x", Entity("self"), ("a", "a"), 0), "repeats a feature"),
    (lambda: ObservationLayout((ObservationBlock("a", Entity("self"), ("x",), 0),
                                ObservationBlock("b", Entity("self"), ("y",), 2))), "starts at 2, expected 1"),
    (lambda: ObservationLayout((ObservationBlock("a", Entity("self"), ("x", "y"), 0),
                                ObservationBlock("b", Entity("self"), ("y",), 1))), "starts at 1, expected 2"),
    (lambda: ObservationLayout.concat([("a", Entity("self"), ("x",)), ("a", Entity("goal"), ("y",))]),
     "names repeat"),
    (lambda: ObservationLayout.from_json({"blocks": [{"name": "a"}]}), "not an observation layout"),
    (lambda: ObservationLayout.from_json({"blocks": [{"name": "a", "entity": {"kind": "self"},
                                                      "features": ["x"], "start": 0, "stop": 3}]}),
     "stop 3 does not match"),
])
def test_inconsistent_layouts_are_refused(build, message):
    with pytest.raises(KdxError, match=message):
        build()


def test_the_layout_module_imports_without_torch():
    code = ("import sys; sys.modules['torch'] = None\n"  # any `import torch` now fails
            "from kdx.envs.obs_layout import ObservationLayout\n"
            "print(ObservationLayout.generic(3).feature_names())\n"
            "assert not any(m.startswith('torch') and sys.modules[m] for m in sys.modules)\n")
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120)
    assert result.returncode == 0, result.stderr
    assert "obs.f2" in result.stdout


# ---------------------------------------------------------------------------------- every env
MPE2 = importlib.util.find_spec("mpe2") is not None
ENV_NAMES = [n for n, e in available().items() if e.family != "smac"] + [
    pytest.param("pettingzoo:mpe2.simple_spread_v3", marks=pytest.mark.skipif(not MPE2, reason="needs mpe2"))]


@pytest.mark.parametrize("name", ENV_NAMES)
def test_every_env_describes_every_observation_index_once(name):
    env = make(name, num_envs=2, seed=0)
    try:
        out = env.reset()
        layouts = env.observation_layouts()
        assert len(layouts) == env.spec.n_agents
        for agent, layout, obs in zip(env.spec.agents, layouts, out.obs):
            assert layout.size == agent.obs_dim == obs.shape[1]
            owners = [0] * layout.size
            for block in layout.blocks:
                for index in range(block.start, block.stop):
                    owners[index] += 1
            assert owners == [1] * layout.size, f"{agent.name}: indices outside or in two blocks"
            names = layout.feature_names()
            assert len(set(names)) == len(names) == layout.size
            assert len({b.name for b in layout.blocks}) == len(layout.blocks)
            assert ObservationLayout.from_json(json.loads(json.dumps(layout.to_json()))) == layout
            assert env.observation_layout(agent.name) == layout
        if name.startswith("pettingzoo:"):
            assert all([b.name for b in layout.blocks] == ["obs"] for layout in layouts)
    finally:
        env.close()


def test_layouts_leave_the_spec_json_as_it_was():
    """Runs compare spec JSON for equality (distillation's teacher check): no new keys."""
    spec = make("skirmish/3m").spec.to_json()
    assert set(spec) == {"name", "state_dim", "episode_limit", "has_win_flag", "shared_reward", "agents"}
    assert set(spec["agents"][0]) == {"name", "obs_dim", "n_actions", "group"}


def test_agent_out_of_range_is_a_clear_error():
    with pytest.raises(KdxError, match="has agents 0..2, not 3"):
        make("skirmish/3m").observation_layout(3)


# ---------------------------------------------------------------------------------- skirmish
def test_skirmish_3m_blocks_follow_smac():
    layout = make("skirmish/3m").observation_layout(0)
    assert [b.name for b in layout.blocks] == ["move", "enemy.0", "enemy.1", "enemy.2", "ally.0", "ally.1", "own"]
    assert layout.block("enemy.0").features == ("attackable", "distance", "dx", "dy", "health")
    assert layout.block("ally.1").features == ("visible", "distance", "dx", "dy", "health")
    assert layout.block("own").features == ("health",)


@pytest.mark.parametrize("map_name", list(MAPS))
def test_skirmish_layout_matches_each_map(map_name):
    env = make(f"skirmish/{map_name}")
    layout = env.observation_layout(0)
    m = env.map
    assert layout.size == env.reset().obs[0].shape[1]
    assert len(layout.select("enemy.*.health")) == m.n_enemies
    assert len(layout.select("ally.*.health")) == m.n_agents - 1
    has_shield = [m.enemy_shields, m.ally_shields, m.ally_shields]
    assert [f"{b}.shield" in layout.feature_names() for b in ("enemy.0", "ally.0", "own")] == has_shield
    assert len(layout.block("own").features) == 1 + int(m.ally_shields) + m.unit_type_bits


@pytest.mark.parametrize("map_name", ["3m", "2s3z"])
def test_skirmish_feature_names_point_at_the_right_numbers(map_name):
    env = make(f"skirmish/{map_name}", num_envs=1, seed=0)
    env.reset()
    n_a, n_e = env.map.n_agents, env.map.n_enemies
    pos = torch.tensor([[[10.0, 14.0 + k] for k in range(n_a)] + [[14.0, 14.0 + k] for k in range(n_e)]])
    health = env.table.max_health.clone()[None]
    shield = env.table.max_shield.clone()[None]
    health[0, n_a] *= 0.4  # enemy 0 is damaged
    health[0, 1] *= 0.7  # so is agent 1
    shield[0, n_a] *= 0.5
    out = env.set_units(pos=pos, health=health, shield=shield)
    layout = env.observation_layout(0)
    obs0, obs1 = out.obs[0][0], out.obs[1][0]

    def at(obs, name):
        return float(obs[layout.feature_names().index(name)])

    assert at(obs0, "enemy.0.health") == pytest.approx(0.4)
    assert at(obs0, "enemy.1.health") == pytest.approx(1.0)
    assert at(obs0, "enemy.0.dx") == pytest.approx(4.0 / 9)
    assert at(obs0, "enemy.0.distance") == pytest.approx(4.0 / 9)
    assert at(obs0, "ally.0.health") == pytest.approx(0.7)  # agent 0's first other ally is agent 1
    assert at(obs1, "own.health") == pytest.approx(0.7)
    assert at(obs1, "ally.0.dy") == pytest.approx(-1.0 / 9)  # agent 1's first other ally is agent 0
    assert obs0[layout.select("move.*")].tolist() == out.action_mask[0][0, 2:6].float().tolist()
    attackable = obs0[layout.select("enemy.*.attackable")]
    assert attackable.tolist() == out.action_mask[0][0, 6:].float().tolist()
    if env.map.enemy_shields:  # 2s3z: enemy 0 is a stalker; SMAC's enemy one-hot is (zealot, stalker)
        assert at(obs0, "enemy.0.shield") == pytest.approx(0.5)
        assert at(obs0, "enemy.0.type_stalker") == 1.0 and at(obs0, "enemy.0.type_zealot") == 0.0
        assert at(obs0, "own.type_stalker") == 1.0


# ---------------------------------------------------------------------------------- MPE
def test_simple_spread_feature_names_point_at_the_right_numbers():
    env = make("mpe/simple_spread", num_envs=1)
    env.reset()
    pos = [[0.1, 0.2], [0.3, -0.4], [-0.5, 0.6]]
    env.set_state(0, agent_pos=pos, agent_vel=[[0.01, 0.02], [0.03, 0.04], [0.05, 0.06]],
                  landmark_pos=[[0.9, 0.8], [-0.7, 0.6], [0.5, -0.5]])
    layout = env.observation_layout(1)
    assert [b.name for b in layout.blocks] == [
        "self", "landmark.0", "landmark.1", "landmark.2", "agent.0", "agent.1", "comm.0", "comm.1"]
    obs = dict(zip(layout.feature_names(), env.observations()[1][0].tolist()))
    assert obs["self.vel_y"] == pytest.approx(0.04) and obs["self.pos_x"] == pytest.approx(0.3)
    assert obs["landmark.2.dx"] == pytest.approx(0.5 - 0.3)
    assert obs["agent.0.dy"] == pytest.approx(0.2 + 0.4)  # agent 1's other agents: 0, then 2
    assert obs["agent.1.dx"] == pytest.approx(-0.5 - 0.3)
    assert all(obs[n] == 0.0 for n in layout.feature_names() if n.startswith("comm."))


def test_speaker_listener_feature_names_point_at_the_right_numbers():
    env = make("mpe/simple_speaker_listener", num_envs=1)
    env.reset()
    env.set_state(0, goal=[1], comm=[[0.0, 0.0, 1.0], [0.0, 0.0, 0.0]], agent_vel=[[0, 0], [0.2, -0.1]],
                  agent_pos=[[0, 0], [0.1, 0.1]], landmark_pos=[[0.5, 0.5], [-0.3, 0.4], [0, 0]])
    speaker, listener = (dict(zip(env.observation_layout(i).feature_names(), o[0].tolist()))
                         for i, o in enumerate(env.observations()))
    assert speaker == pytest.approx({"goal.red": 0.15, "goal.green": 0.65, "goal.blue": 0.15})
    assert listener["self.vel_y"] == pytest.approx(-0.1)
    assert listener["landmark.1.dy"] == pytest.approx(0.3)
    assert [listener[f"comm.0.word_{w}"] for w in range(3)] == [0.0, 0.0, 1.0]


def test_simple_reference_feature_names_point_at_the_right_numbers():
    env = make("mpe/simple_reference", num_envs=1)
    env.reset()
    comm = torch.zeros(2, 10)
    comm[1, 7] = 1.0  # agent 1 said word 7
    env.set_state(0, goal=[2, 0], comm=comm)
    layout = env.observation_layout(0)
    assert [b.name for b in layout.blocks] == ["self", "landmark.0", "landmark.1", "landmark.2", "goal", "comm.0"]
    obs = dict(zip(layout.feature_names(), env.observations()[0][0].tolist()))
    assert obs["goal.blue"] == pytest.approx(0.75) and obs["goal.red"] == pytest.approx(0.25)
    assert [i for i in range(10) if obs[f"comm.0.word_{i}"]] == [7]


# ---------------------------------------------------------------------------------- kdx envs show
def test_envs_show_prints_the_blocks(run_kdx, capsys):
    assert run_kdx(["envs", "show", "skirmish/3m"]) == 0
    out = capsys.readouterr().out
    for text in ("agent_0, agent_1, agent_2", "enemy.2", "enemy 2", "ally.1", "attackable", "[29, 30)"):
        assert text in out
    assert out.count("observation of") == 1  # one table for the three marines


def test_envs_show_prints_one_table_per_distinct_layout(run_kdx, capsys):
    assert run_kdx(["envs", "show", "mpe/simple_speaker_listener"]) == 0
    out = capsys.readouterr().out
    assert out.count("observation of") == 2 and "speaker_0" in out and "comm.0" in out


def test_envs_show_json_round_trips(run_kdx, capsys):
    assert run_kdx(["envs", "show", "mpe/simple_spread", "--json"]) == 0
    data = json.loads(capsys.readouterr().out)
    env = make("mpe/simple_spread")
    assert data["env"] == "mpe/simple_spread"
    assert [a["name"] for a in data["agents"]] == list(env.spec.agent_names)
    for agent, layout in zip(data["agents"], env.observation_layouts()):
        assert ObservationLayout.from_json(agent["layout"]) == layout
        assert agent["obs_dim"] == layout.size


def test_envs_show_unknown_env_is_a_user_error(run_kdx, capsys):
    assert run_kdx(["envs", "show", "mpe/nope"]) == 2
    assert "unknown environment 'mpe/nope'" in capsys.readouterr().err
