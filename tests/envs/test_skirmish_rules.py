"""Combat rules of the skirmish simulator against hand-computed fights.

Time base: 22.4 game loops per second, 8 loops per agent step. A weapon that fires at loop 0 fires
again every ``ceil(cooldown_s * 22.4)`` loops: marine 0.61 s -> 14, marauder 1.07 s -> 24,
stalker 1.34 s -> 31, zealot 0.86 s -> 20.
"""

from __future__ import annotations

import math

import pytest
import torch

from kdx.envs.skirmish.combat import apply_hits, hit_damage
from kdx.envs.skirmish.env import SkirmishEnv
from kdx.envs.skirmish.maps import SkirmishMap
from kdx.envs.skirmish.units import UNIT_TYPES

U = UNIT_TYPES


def duel(allies, enemies, positions, health=None, shield=None, limit=100):
    game_map = SkirmishMap("duel", tuple(allies), tuple(enemies), limit, jitter=0.0)
    env = SkirmishEnv(game_map, num_envs=1, seed=0)
    env.reset()
    pos = torch.tensor([positions], dtype=torch.float32)
    h = None if health is None else torch.tensor([health], dtype=torch.float32)
    s = None if shield is None else torch.tensor([shield], dtype=torch.float32)
    return env, env.set_units(pos=pos, health=h, shield=s)


def act(env, *actions):
    return env.step(torch.tensor([list(actions)]))


def test_attack_periods_in_loops():
    assert U["marine"].attack_period_loops == 14
    assert U["marauder"].attack_period_loops == 24
    assert U["stalker"].attack_period_loops == 31
    assert U["zealot"].attack_period_loops == 20


def test_bonus_damage_per_hit():
    assert hit_damage(U["marauder"], U["marine"]) == 10
    assert hit_damage(U["marauder"], U["stalker"]) == 20  # +10 vs armoured
    assert hit_damage(U["stalker"], U["marauder"]) == 18  # +5 vs armoured
    assert hit_damage(U["stalker"], U["zealot"]) == 13
    assert hit_damage(U["colossus"], U["zealot"]) == 15  # +5 vs light
    assert hit_damage(U["baneling"], U["zergling"]) == 35  # +19 vs light


def sequential_hits(health, shield, armour, hits):
    """Plain reference: one hit after another, shields first, armour per hit on health."""
    for d in hits:
        absorbed = min(shield, d)
        shield -= absorbed
        if d - absorbed > 0:
            health -= max(d - absorbed - armour, 0.5)
    return health, shield


@pytest.mark.parametrize("shield", [0.0, 8.0, 40.0, 36.0, 80.0])
@pytest.mark.parametrize("n_hits,per_hit,armour", [(1, 18.0, 1.0), (2, 8.0, 1.0), (3, 18.0, 1.0), (4, 6.0, 0.0)])
def test_apply_hits_matches_sequential_hits(shield, n_hits, per_hit, armour):
    h, s = apply_hits(torch.tensor(100.0), torch.tensor(shield), torch.tensor(armour),
                      torch.tensor(per_hit * n_hits), torch.tensor(float(n_hits)))
    ref_h, ref_s = sequential_hits(100.0, shield, armour, [per_hit] * n_hits)
    assert float(h) == pytest.approx(ref_h)
    assert float(s) == pytest.approx(ref_s)


def test_marine_vs_marine_trade_eight_hits_and_draw_at_step_13():
    # Centre distance 5.5: edge distance 4.75 is inside both marines' range 5.
    env, _ = duel([("marine", 1)], [("marine", 1)], [[10.0, 16.0], [15.5, 16.0]])
    out = act(env, 6)
    assert env.battle.health.tolist() == [[39.0, 39.0]]  # one shot each at loop 0
    for step in range(2, 13):
        out = act(env, 6)
        shots = math.ceil(8 * step / 14)
        assert env.battle.health[0, 0].item() == pytest.approx(45 - 6 * shots)
        assert not bool(out.done)
    out = act(env, 6)  # 8th shot at loop 98, inside step 13 (loops 96..103)
    assert bool(out.terminated) and not bool(out.info["won"]) and not bool(out.info["lost"])
    assert int(out.info["episode_length"]) == 13


def test_armour_marine_loses_to_marauder():
    env, _ = duel([("marine", 1)], [("marauder", 1)], [[10.0, 16.0], [15.5, 16.0]])
    for _ in range(12):
        out = act(env, 6)
    # marauder shots at loops 0, 24, 48, 72: 4 x 10; marine shots 0..84: 7 x (6 - 1 armour)
    assert env.battle.health.tolist() == [[5.0, 90.0]]
    out = act(env, 6)  # marauder's 5th shot at loop 96
    assert bool(out.info["lost"]) and bool(out.terminated)


def test_shields_absorb_first_and_bonus_vs_armoured():
    env, _ = duel([("marauder", 1)], [("stalker", 1)], [[10.0, 16.0], [15.5, 16.0]])
    act(env, 6)
    assert env.battle.shield[0, 1].item() == pytest.approx(80 - 20)  # 10 + 10 vs armoured, on shields
    assert env.battle.health[0, 1].item() == pytest.approx(80)
    assert env.battle.health[0, 0].item() == pytest.approx(125 - (18 - 1))  # 13 + 5 - armour 1
    for _ in range(11):  # to loop 95: marauder shots at 0, 24, 48, 72 -> 80 on shields exactly
        act(env, 6)
    assert env.battle.shield[0, 1].item() == pytest.approx(0.0)
    assert env.battle.health[0, 1].item() == pytest.approx(80.0)
    act(env, 6)  # shot at loop 96 goes to health, less the stalker's armour
    assert env.battle.health[0, 1].item() == pytest.approx(80 - 19)


def test_zealot_hits_twice_per_attack():
    # Melee: centre distance 0.9 = radii 0.875 + 0.025 edge gap, inside the zealot's 0.1 range.
    env, _ = duel([("zealot", 1)], [("marine", 1)], [[10.0, 16.0], [10.9, 16.0]])
    act(env, 6)
    assert env.battle.health[0, 1].item() == pytest.approx(45 - 2 * 8)
    assert env.battle.shield[0, 0].item() == pytest.approx(50 - 6)
    for _ in range(4):
        out = act(env, 6)
        assert not bool(out.done)
    out = act(env, 6)  # third attack at loop 40, inside step 6
    assert bool(out.info["won"]) and int(out.info["episode_length"]) == 6


def test_medivac_heals_with_energy():
    env, _ = duel([("marine", 1), ("medivac", 1)], [("marine", 1)],
                  [[10.0, 16.0], [10.0, 18.0], [30.0, 16.0]], health=[20.0, 150.0, 45.0])
    mask = env._last_masks[1]
    assert mask[0].tolist() == [False, True, True, True, True, True, True]  # heal ally 0
    act(env, 1, 6)
    healed = 8 * 9 / 22.4
    assert env.battle.health[0, 0].item() == pytest.approx(20 + healed, rel=1e-5)
    assert env.battle.energy[0, 1].item() == pytest.approx(50 - healed / 3 + 8 * 0.5625 / 22.4, rel=1e-5)


def test_baneling_explodes_on_a_group():
    env, _ = duel([("baneling", 1)], [("zergling", 3)],
                  [[10.0, 16.0], [10.8, 16.0], [11.2, 16.9], [11.2, 15.1]])
    out = act(env, 6)
    # Everyone died at loop 0 (16 + 19 vs light = 35 each): a draw, and the env has reset.
    assert bool(out.terminated) and not bool(out.info["won"]) and not bool(out.info["lost"])
    final = out.info["final_state"][0]  # ally [health, cooldown, x, y], enemies [health, x, y]
    assert [final[0].item(), final[4].item(), final[7].item(), final[10].item()] == [0, 0, 0, 0]
    max_reward = 3 * 10 + 200 + 3 * 35
    assert out.reward[0, 0].item() == pytest.approx((3 * 35 + 3 * 10) * 20 / max_reward)


def test_shields_regenerate_only_after_ten_seconds_without_damage():
    env, _ = duel([("stalker", 1)], [("stalker", 1)], [[2.0, 16.0], [30.0, 16.0]],
                  shield=[10.0, 80.0])
    act(env, 1)
    assert env.battle.shield[0, 0].item() == pytest.approx(10.0)
    env.battle.since_damage[0, 0] = 224.0
    act(env, 1)
    assert env.battle.shield[0, 0].item() == pytest.approx(10.0 + 8 * 2 / 22.4, rel=1e-5)


def test_push_apart_separates_overlapping_units_by_half_the_overlap_each():
    from kdx.envs.skirmish.combat import push_apart

    env, _ = duel([("marine", 2)], [("zealot", 1)], [[10.0, 16.0], [10.0, 16.0], [10.5, 16.0]])
    push_apart(env.table, env.battle)
    # Coincident marines: 0.75 overlap, 0.375 each way; marine-zealot: 0.875 - 0.5 = 0.375.
    assert env.battle.x[0].tolist() == pytest.approx([10 - 0.375 - 0.1875, 10 + 0.375 - 0.1875, 10.875],
                                                     abs=1e-3)
    assert env.battle.y[0].tolist() == pytest.approx([16.0, 16.0, 16.0])


def test_push_apart_in_env_chunks_equals_one_pass(monkeypatch):
    import dataclasses

    from kdx.envs.skirmish import combat

    env = SkirmishEnv("8m", num_envs=50, seed=3)
    env.reset()
    b = env.battle
    b.x = b.x + torch.rand(b.x.shape, generator=torch.Generator().manual_seed(0)) * 0.5  # overlaps
    whole, chunked = dataclasses.replace(b), dataclasses.replace(b)
    combat.push_apart(env.table, whole)
    monkeypatch.setattr(combat, "_PUSH_CHUNK_ELEMENTS", 16 * 16 * 7)  # chunks of 7 envs, a short last one
    combat.push_apart(env.table, chunked)
    assert float((whole.x - b.x).abs().max()) > 0.01  # something was pushed
    torch.testing.assert_close(chunked.x, whole.x, atol=1e-5, rtol=0)
    torch.testing.assert_close(chunked.y, whole.y, atol=1e-5, rtol=0)
