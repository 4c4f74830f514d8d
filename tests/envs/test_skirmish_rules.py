"""Combat rules of the skirmish simulator against hand-computed fights.

Time base: 22.4 game loops per second, 8 loops per agent step. A weapon that fires at loop 0 fires
again every ``ceil(cooldown_s * 22.4)`` loops: marine 0.61 s -> 14, marauder 1.07 s -> 24,
stalker 1.34 s -> 31, zealot 0.86 s -> 20. Regeneration, healing and energy are checked against
their rates per Faster second (``kdx.envs.skirmish.units``) times the time that passed.
"""

from __future__ import annotations

import math

import pytest
import torch

from kdx.envs.skirmish.combat import apply_hits, hit_damage
from kdx.envs.skirmish.env import SkirmishEnv
from kdx.envs.skirmish.maps import SkirmishMap
from kdx.envs.skirmish.units import (
    LOOPS_PER_SECOND,
    LOOPS_PER_STEP,
    RACE_HEALTH_REGEN_PER_S,
    SECONDS_PER_STEP,
    SHIELD_REGEN_DELAY_S,
    SHIELD_REGEN_PER_S,
    UNIT_TYPES,
)
from kdx.errors import KdxError

U = UNIT_TYPES
MEDIVAC = U["medivac"]


def duel(allies, enemies, positions, health=None, shield=None, limit=100, check_actions=True):
    game_map = SkirmishMap("duel", tuple(allies), tuple(enemies), limit, jitter=0.0)
    env = SkirmishEnv(game_map, num_envs=1, seed=0, check_actions=check_actions)
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


def test_medivac_heals_at_its_rate_and_pays_with_energy():
    env, _ = duel([("marine", 1), ("medivac", 1)], [("marine", 1)],
                  [[10.0, 16.0], [10.0, 18.0], [30.0, 16.0]], health=[20.0, 150.0, 45.0])
    mask = env._last_masks[1]
    assert mask[0].tolist() == [False, True, True, True, True, True, True]  # heal ally 0
    for _ in range(3):
        act(env, 1, 6)
    healed = MEDIVAC.heal_per_s * 3 * SECONDS_PER_STEP
    spent = healed / MEDIVAC.heal_per_energy - MEDIVAC.energy_regen_per_s * 3 * SECONDS_PER_STEP
    assert env.battle.health[0, 0].item() == pytest.approx(20 + healed, rel=1e-5)
    assert env.battle.energy[0, 1].item() == pytest.approx(MEDIVAC.start_energy - spent, rel=1e-5)


def test_medivac_energy_regenerates_at_its_rate_up_to_the_maximum():
    env, _ = duel([("marine", 1), ("medivac", 1)], [("marine", 1)],
                  [[2.0, 2.0], [2.0, 4.0], [30.0, 30.0]])  # nobody hurt: nothing to heal
    for step in range(1, 11):
        act(env, 1, 1)
        expected = MEDIVAC.start_energy + MEDIVAC.energy_regen_per_s * step * SECONDS_PER_STEP
        assert env.battle.energy[0, 1].item() == pytest.approx(expected, rel=1e-5)
    env.battle.energy[0, 1] = MEDIVAC.max_energy - 0.01
    act(env, 1, 1)
    assert env.battle.energy[0, 1].item() == pytest.approx(MEDIVAC.max_energy)


def test_medivacs_heal_exactly_the_biological_ground_units():
    env, _ = duel([("medivac", 1), *((name, 1) for name in U)], [("marine", 1)],
                  [[16.0, 16.0]] * (len(U) + 2))
    allowed = [bool(ok) for ok in env.table.can_target[0, :len(U) + 1]]
    assert allowed == [t.biological and not t.air for t in env.table.types[:len(U) + 1]]
    assert {t.name for t in U.values() if t.biological} == {
        "marine", "marauder", "zealot", "zergling", "hydralisk", "baneling"}


def test_heal_is_masked_and_never_lands_on_stalkers_colossi_or_medivacs():
    allies = [("stalker", 1), ("colossus", 1), ("medivac", 2), ("marine", 1)]
    positions = [[6.0, 15.0], [6.0, 18.5], [5.0, 16.0], [5.0, 17.0], [8.0, 16.0]]
    positions += [[28.0, 12.0 + 2 * k] for k in range(5)]
    health = [40.0, 100.0, 100.0, 150.0, 30.0] + [45.0] * 5
    env, out = duel(allies, [("marine", 5)], positions, health=health, check_actions=False)
    # Only the marine may be healed (it is hurt, and so are the closer stalker, colossus, medivac).
    for medivac in (2, 3):
        assert out.action_mask[medivac][0, 6:].tolist() == [False, False, False, False, True]
    checked, _ = duel(allies, [("marine", 5)], positions, health=health)
    with pytest.raises(KdxError, match="ally 0 is a stalker, and medivacs heal biological"):
        act(checked, 1, 1, 6, 1, 1)
    # Medivac 2 idles (heals the closest hurt friend it may heal), medivac 3 is ordered onto the
    # colossus anyway (the env's checks are off): only the marine gains health, by one medivac.
    act(env, 1, 1, 1, 7, 1)
    health_after = env.battle.health[0, :5].tolist()
    heal = MEDIVAC.heal_per_s * SECONDS_PER_STEP
    assert health_after == pytest.approx([40.0, 100.0, 100.0, 150.0, 30.0 + heal], rel=1e-5)
    regen = MEDIVAC.energy_regen_per_s * SECONDS_PER_STEP
    assert env.battle.energy[0, 2:4].tolist() == pytest.approx(
        [MEDIVAC.start_energy - heal / MEDIVAC.heal_per_energy + regen, MEDIVAC.start_energy + regen],
        rel=1e-5)


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


def test_shields_regenerate_at_their_rate_after_the_delay_without_damage():
    # Far corners: the zealot walks in at ~1.1 per step and stays out of reach for 30 steps.
    env, _ = duel([("stalker", 1)], [("zealot", 1)], [[1.0, 1.0], [31.0, 31.0]], shield=[10.0, 50.0])
    first_regen_loop = math.ceil(SHIELD_REGEN_DELAY_S * LOOPS_PER_SECOND)  # counted from the last hit
    assert math.ceil(first_regen_loop / LOOPS_PER_STEP) == 20  # 7.14 s is 20 agent steps
    for step in range(1, 26):
        act(env, 1)
        regen_loops = max(0, step * LOOPS_PER_STEP - first_regen_loop + 1)
        expected = 10.0 + SHIELD_REGEN_PER_S / LOOPS_PER_SECOND * regen_loops
        assert env.battle.shield[0, 0].item() == pytest.approx(expected, rel=1e-5), step
    assert env.battle.health[0, 0].item() == U["stalker"].health  # protoss health does not regenerate
    # A full step of regeneration adds the rate times the step's seconds.
    before = env.battle.shield[0, 0].item()
    act(env, 1)
    assert env.battle.shield[0, 0].item() - before == pytest.approx(SHIELD_REGEN_PER_S * SECONDS_PER_STEP,
                                                                     rel=1e-4)


def test_damage_restarts_the_shield_regeneration_delay():
    env, _ = duel([("stalker", 1)], [("zealot", 1)], [[1.0, 1.0], [31.0, 31.0]], shield=[10.0, 50.0])
    env.battle.since_damage[0, 0] = 1000.0  # long undamaged: regenerating
    act(env, 1)
    assert env.battle.shield[0, 0].item() > 10.0
    env.battle.since_damage[0, 0] = 0.0  # just hit
    shield = env.battle.shield[0, 0].item()
    act(env, 1)
    assert env.battle.shield[0, 0].item() == shield


@pytest.mark.parametrize("name", list(U))
def test_every_zerg_unit_and_only_zerg_units_regenerate_health(name):
    # The unit under test at a corner, a full-health marine beside it (medivacs need a fighter).
    env, _ = duel([(name, 1), ("marine", 1)], [("marine", 1)], [[1.0, 1.0], [1.0, 8.0], [31.0, 31.0]],
                  health=[U[name].health / 2, 45.0, 45.0])
    for _ in range(5):
        act(env, 1, 1)
    rate = RACE_HEALTH_REGEN_PER_S[U[name].race]
    assert (rate > 0) == (U[name].race == "zerg")
    expected = U[name].health / 2 + rate * 5 * SECONDS_PER_STEP
    assert env.battle.health[0, 0].item() == pytest.approx(expected, rel=1e-5)


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
