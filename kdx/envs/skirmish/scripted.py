"""Scripted reference policies for skirmish maps (and anything with SMAC's action layout).

Each policy is ``fn(env, step) -> long [num_envs, n_agents]`` and returns legal actions only.
They read the simulator's true unit state (``env.battle``), like the scripted baselines reported
for SMAC:

- ``random``: uniformly random legal actions (from the env's own generator, so seeded);
- ``attack-nearest``: each agent attacks the closest enemy it may attack; otherwise it walks
  toward the closest living enemy; before any agent can attack, it stops (and so shoots whatever
  walks into its weapon range) once that enemy is closer than ``HOLD_DISTANCE``;
- ``focus-fire``: every agent that can shoots the weakest enemy (health + shield) among those in
  range, enemy banelings first (own banelings take the closest enemy); otherwise it walks toward
  the closest living enemy. Medivacs heal the most damaged ally
  they may heal, otherwise follow the closest ally.
"""

from __future__ import annotations

from collections.abc import Callable

import torch

from kdx.envs.base import EnvStep
from kdx.envs.skirmish.features import N_ACTIONS_NO_ATTACK

ScriptedPolicy = Callable[[object, EnvStep], torch.Tensor]
_FAR = 1.0e6
BANELING_CHARGE_DISTANCE = 2.0
HOLD_DISTANCE = 9.0  # sight range: stop as soon as an enemy is seen


def random_policy(env, step: EnvStep) -> torch.Tensor:
    """Uniformly random legal actions."""
    masks = step.padded_action_mask()  # [E, nA, A]
    e, n, a = masks.shape
    flat = torch.multinomial(masks.reshape(e * n, a).float(), 1, generator=env.rng)
    return flat.reshape(e, n)


def _walk_toward(env, masks: torch.Tensor, which: str) -> torch.Tensor:
    """A legal move toward the closest living enemy (or, for healers, ally); stop if none."""
    b, n_a = env.battle, env.map.n_agents
    alive = b.alive
    healer = env.table.healer[:n_a]
    geo = env.geometry  # [E, nA, U] offsets from each agent to every unit, this step
    d_e = torch.where(alive[:, None, n_a:], geo.dist[:, :, n_a:], _FAR)
    ally_ok = alive[:, None, :n_a] & ~healer & ~torch.eye(n_a, dtype=torch.bool, device=alive.device)
    d_a = torch.where(ally_ok, geo.dist[:, :, :n_a], _FAR)
    near_e = d_e.argmin(2, keepdim=True) + n_a
    near_a = d_a.argmin(2, keepdim=True)
    near = torch.where(healer.view(1, -1, 1), near_a, near_e)
    dx, dy = geo.dx.gather(2, near).squeeze(2), geo.dy.gather(2, near).squeeze(2)
    dist = geo.dist.gather(2, near).squeeze(2)
    vertical = dy.abs() > dx.abs()
    move = torch.where(vertical, torch.where(dy > 0, 2, 3), torch.where(dx > 0, 4, 5))
    legal = masks.gather(2, move.unsqueeze(-1)).squeeze(-1)
    # Healers already close to the ally they follow hold still. Before the fight starts (no
    # agent can attack yet), fighters that see an enemy coming stop and let it walk into their
    # weapon range (a stopped unit shoots whatever enters it) rather than walk into its fire;
    # once anyone is fighting, the others close in.
    engaged = masks[:, :, N_ACTIONS_NO_ATTACK:].any(2) & ~healer
    waiting = ~engaged.any(1, keepdim=True) & (dist < HOLD_DISTANCE)
    if env.table.has_exploders:  # against banelings: hold the line, let them come
        waiting = dist < HOLD_DISTANCE
    close = torch.where(healer, dist < 2.0, waiting)
    return torch.where(legal & ~close, move, torch.ones_like(move))


def _pick_target(env, masks: torch.Tensor, score: torch.Tensor) -> torch.Tensor:
    """Attack the legal target with the lowest ``score`` ``[E, nA, n_targets]``; else walk."""
    attack = masks[:, :, N_ACTIONS_NO_ATTACK:]
    masked = torch.where(attack, score, torch.full_like(score, _FAR))
    best = masked.argmin(dim=2) + N_ACTIONS_NO_ATTACK
    act = torch.where(attack.any(2), best, _walk_toward(env, masks, "enemy"))
    dead = masks[:, :, 0]
    return torch.where(dead, torch.zeros_like(act), act)


def _target_units(env) -> torch.Tensor:
    """Unit index behind each attack column of each agent, ``long [nA, n_targets]``."""
    n_e = env.map.n_enemies
    col = torch.arange(n_e, device=env.device)
    return (env.layout.heal_offset[:, None] + col).clamp(max=len(env.table.types) - 1)


def attack_nearest(env, step: EnvStep) -> torch.Tensor:
    """Closest legal target (centre distance), else walk toward the closest enemy."""
    masks = step.padded_action_mask()
    b, n_a = env.battle, env.map.n_agents
    units = _target_units(env)
    dist = env.geometry.dist.gather(2, units.expand(b.x.shape[0], -1, -1))
    healer = env.table.healer[:n_a].view(1, -1, 1)
    hurt = (b.health / env.table.max_health)[:, units]
    return _pick_target(env, masks, torch.where(healer, hurt, dist))


def focus_fire(env, step: EnvStep) -> torch.Tensor:
    """Everyone on the weakest enemy in range (health + shield), else walk toward the enemy."""
    masks = step.padded_action_mask()
    b, n_a = env.battle, env.map.n_agents
    units = _target_units(env)
    hp = (b.health + b.shield)[:, units]  # [E, nA, n_targets]
    healer = env.table.healer[:n_a].view(1, -1, 1)
    hurt = (b.health / env.table.max_health)[:, units]
    # Ties (full-health enemies) broken by index so that everyone picks the same one. Enemy
    # banelings go first (kill them before they reach us); our own banelings spread out on the
    # closest enemies instead of all blowing up on the same one.
    tie = torch.arange(units.shape[1], device=env.device) * 1e-3
    threat = -1000.0 * env.table.exploder[units].float()
    score = torch.where(healer, hurt, hp + tie + threat)
    actions = _pick_target(env, masks, score)
    if env.table.has_exploders:
        # Own banelings stand (a standing baneling bursts on whatever touches it) and only charge
        # enemies that are already close; they never all chase the same target.
        exploder = env.table.exploder[:n_a]
        dist = env.geometry.dist.gather(2, units.expand(b.x.shape[0], -1, -1))
        near = torch.where(masks[:, :, N_ACTIONS_NO_ATTACK:], dist, _FAR).min(dim=2)
        charge = near.values < BANELING_CHARGE_DISTANCE
        bane_action = torch.where(charge, near.indices + N_ACTIONS_NO_ATTACK, 1)
        bane_action = torch.where(masks[:, :, 0], 0, bane_action)
        actions = torch.where(exploder, bane_action, actions)
    return actions


SCRIPTED_POLICIES: dict[str, ScriptedPolicy] = {
    "random": random_policy,
    "attack-nearest": attack_nearest,
    "focus-fire": focus_fire,
}
