"""SMAC's interface on skirmish maps: sizes, masks, observations, rewards, flags, determinism."""

from __future__ import annotations

import math

import pytest
import torch

from kdx.envs import available, make
from kdx.envs.skirmish.maps import MAPS, get_map
from kdx.envs.skirmish.scripted import SCRIPTED_POLICIES
from kdx.errors import KdxError

# Sizes printed by oxwhirl/smac at default settings (obs / state / actions).
SMAC_SIZES = {
    "3m": (30, 48, 9), "8m": (80, 168, 14), "2s3z": (80, 120, 11), "MMM": (160, 290, 16),
    "5m_vs_6m": (55, 98, 12), "3s5z": (128, 216, 14), "MMM2": (176, 322, 18),
}
PROTOSS = {"stalker", "zealot", "colossus"}
# SMAC's map registry: unit_type_bits per map (0 when the map's types are not one-hot encoded).
SMAC_TYPE_BITS = {"2s3z": 2, "3s5z": 2, "3s5z_vs_3s6z": 2, "1c3s5z": 3, "MMM": 3, "MMM2": 3,
                  "bane_vs_bane": 2}


def smac_sizes(name: str) -> tuple[int, int, int]:
    """SMAC's get_obs_size / get_state_size / n_actions, written out from its formulas."""
    m = MAPS[name]
    bits = SMAC_TYPE_BITS.get(name, 0)
    sh_a = int(any(t in PROTOSS for t, _ in m.allies))
    sh_e = int(any(t in PROTOSS for t, _ in m.enemies))
    n_a, n_e = m.n_agents, m.n_enemies
    n_actions = 6 + n_e
    obs = 4 + n_e * (5 + sh_e + bits) + (n_a - 1) * (5 + sh_a + bits) + (1 + sh_a + bits)
    state = n_a * (4 + sh_a + bits) + n_e * (3 + sh_e + bits) + n_a * n_actions
    return obs, state, n_actions


@pytest.mark.parametrize("name", list(MAPS))
def test_sizes_equal_smac(name):
    env = make(f"skirmish/{name}", num_envs=2)
    s = env.spec
    got = (s.agents[0].obs_dim, s.state_dim, s.agents[0].n_actions)
    assert got == smac_sizes(name)
    if name in SMAC_SIZES:
        assert got == SMAC_SIZES[name]
    out = env.reset()
    assert all(o.shape == (2, s.agents[0].obs_dim) for o in out.obs)
    assert out.state.shape == (2, s.state_dim)
    assert s.episode_limit == MAPS[name].limit and s.has_win_flag


def test_every_map_is_registered_and_unknown_maps_are_refused():
    names = {n for n, e in available().items() if e.family == "skirmish"}
    assert names == {f"skirmish/{m}" for m in MAPS}
    with pytest.raises(KdxError, match="3m.*8m.*MMM2"):
        get_map("4m")


def reference_mask(env, e: int, i: int) -> list[bool]:
    """SMAC's get_avail_agent_actions, one agent at a time."""
    b, n_a = env.battle, env.map.n_agents
    n_actions = env.spec.agents[i].n_actions
    if b.health[e, i] <= 0:
        return [True] + [False] * (n_actions - 1)
    x, y = b.pos[e, i].tolist()
    inside = [0 <= math.trunc(v) < 32 for v in (y + 1, y - 1, x + 1, x - 1)]
    healer = bool(env.table.healer[i])
    out = [False, True] + inside
    for k in range(n_actions - 6):
        unit = k if healer else n_a + k
        if healer and (k >= n_a or not env.table.types[k].biological or env.table.types[k].air):
            out.append(False)
            continue
        dist = math.dist(b.pos[e, unit].tolist(), (x, y))
        out.append(bool(b.health[e, unit] > 0) and dist <= 6)
    return out


@pytest.mark.parametrize("name", ["3m", "MMM2", "2s3z"])
def test_masks_observations_and_state_follow_smac_rules(name):
    env = make(f"skirmish/{name}", num_envs=4, seed=3)
    out = env.reset()
    n_a = env.map.n_agents
    for t in range(24):
        for e in range(4):
            for i in range(n_a):
                assert out.action_mask[i][e].tolist() == reference_mask(env, e, i)
                if env.battle.health[e, i] <= 0:
                    assert not bool(out.obs[i][e].any())
        # Own health is the observation's health entry after move/enemy/ally blocks.
        own = torch.stack([o[:, env.layout.obs_dim - env.layout.own_feats] for o in out.obs], 1)
        assert torch.allclose(own, env.battle.health[:, :n_a] / env.table.max_health[:n_a])
        actions = SCRIPTED_POLICIES["random" if t % 2 else "focus-fire"](env, out)
        out = env.step(actions)
        last = out.state[:, -n_a * env.spec.agents[0].n_actions:].reshape(4, n_a, -1)
        live = ~out.done
        assert torch.equal(last.argmax(-1)[live], actions[live])


@pytest.mark.parametrize("name", ["3m", "8m", "5m_vs_6m"])
def test_team_reward_sums_to_at_most_20_and_to_20_on_a_win(name):
    env = make(f"skirmish/{name}", num_envs=32, seed=1)
    out = env.reset()
    team = torch.zeros(32)
    totals, wins = [], []
    for _ in range(min(2 * env.spec.episode_limit, 80)):
        out = env.step(SCRIPTED_POLICIES["focus-fire"](env, out))
        assert torch.equal(out.reward, out.reward[:, :1].expand_as(out.reward))
        assert bool((out.reward >= 0).all())
        team += out.reward[:, 0]
        done = out.done
        totals.append(team[done].clone())
        wins.append(out.info["won"][done])
        assert not bool((out.info["won"] & out.info["lost"]).any())
        assert torch.equal(out.info["timeout"], out.truncated)
        team[done] = 0
    totals, wins = torch.cat(totals), torch.cat(wins)
    assert totals.numel() >= 32
    assert float(totals.max()) <= 20 + 1e-3
    if bool(wins.any()):
        assert torch.allclose(totals[wins], torch.full_like(totals[wins], 20.0), atol=1e-3)


def rollout(name, seed, steps=20):
    env = make(f"skirmish/{name}", num_envs=8, seed=seed)
    out = env.reset()
    states = [out.state]
    for _ in range(steps):
        out = env.step(SCRIPTED_POLICIES["random"](env, out))
        states.append(out.state)
    return torch.stack(states)


def test_same_seed_same_battles_different_seed_different():
    a, b, c = rollout("2s3z", 5), rollout("2s3z", 5), rollout("2s3z", 6)
    assert torch.equal(a, b)
    assert not torch.equal(a, c)


def test_illegal_actions_are_refused_with_the_reason():
    env = make("skirmish/3m", num_envs=2)
    env.reset()
    actions = torch.ones(2, 3, dtype=torch.long)
    actions[1, 2] = 6  # enemies start ~10 away: beyond shoot range
    with pytest.raises(KdxError, match=r"agent_2.*env 1.*enemy 0 is .* away, beyond the shoot range 6"):
        env.step(actions)
    actions[1, 2] = 0
    with pytest.raises(KdxError, match="no-op .* only for dead agents"):
        env.step(actions)


@pytest.mark.parametrize("name", ["MMM", "bane_vs_bane", "1c3s5z", "3s_vs_5z"])
@pytest.mark.parametrize("policy", list(SCRIPTED_POLICIES))
def test_scripted_policies_act_legally(name, policy):
    env = make(f"skirmish/{name}", num_envs=4, seed=0)  # check_actions on: illegal raises
    out = env.reset()
    for _ in range(12):
        out = env.step(SCRIPTED_POLICIES[policy](env, out))


def test_focus_fire_beats_random_on_3m():
    rates = {}
    for policy in ("random", "focus-fire"):
        env = make("skirmish/3m", num_envs=64, seed=2)
        out = env.reset()
        won, n = 0, 0
        for _ in range(60):
            out = env.step(SCRIPTED_POLICIES[policy](env, out))
            won += int(out.info["won"][out.done].sum())
            n += int(out.done.sum())
        rates[policy] = won / n
    assert rates["focus-fire"] > 0.5 > 0.1 > rates["random"]


def test_checkpointed_state_holds_no_per_pair_constants():
    # push_apart's [U, U, E] planes are rebuilt from the map: saving them would add
    # U * U * num_envs floats per copy to every training checkpoint.
    env = make("skirmish/8m", num_envs=64, seed=0)
    env.reset()
    state = env.state_dict()
    assert not any("pair_planes" in key for key in state)
    n_units = 16
    assert max(t.numel() for t in state.values()) < n_units * n_units * 64
