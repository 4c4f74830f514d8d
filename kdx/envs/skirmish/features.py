"""SMAC's observation, global state and action-mask layouts, computed for every env at once.

Layouts follow oxwhirl/smac with its default options (``obs_all_health``, ``obs_own_health``,
``state_last_action`` on; pathing grid, terrain height, last actions in observations off):

- observation of agent i (zeros when it is dead): 4 move bits, then per enemy
  ``[attackable, dist/9, dx/9, dy/9, health, (shield), (type one-hot)]`` (zeros when out of sight
  range 9 or dead), per other ally ``[visible, dist/9, dx/9, dy/9, health, (shield), (type)]``,
  own ``[health, (shield), (type)]``. "attackable" is the action mask's column ``6 + k``, as in
  SMAC (for a medivac that column means "ally k can be healed", a SMAC quirk kept as is).
- state: per ally ``[health, cooldown / SMAC max cooldown (energy / 200 for a medivac),
  x and y relative to the map centre / map size, (shield), (type)]``, per enemy
  ``[health, rel x, rel y, (shield), (type)]``, then every agent's last action one-hot.
- action mask: no-op only (and always) for the dead; stop; the four moves when the point one
  unit away in that direction is inside the map (SMAC's ``can_move`` on an open map); attack
  enemy k (heal ally k for a medivac, never a medivac) when it is alive and its centre is within
  SMAC's shoot range 6.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch

from kdx.envs.skirmish.combat import Battle, UnitTable
from kdx.envs.skirmish.maps import MAP_SIZE, SkirmishMap

SIGHT_RANGE = 9.0
SHOOT_RANGE = 6.0
MOVE_AMOUNT = 2.0
N_ACTIONS_NO_ATTACK = 6


@dataclass
class FeatureLayout:
    """Static pieces of the feature layout of one map (``[nA, ...]`` / ``[nE, ...]`` tensors)."""

    n_allies: int
    n_enemies: int
    n_actions: int
    ally_shields: bool
    enemy_shields: bool
    type_bits: int
    ally_onehot: torch.Tensor  # [nA, bits]
    enemy_onehot: torch.Tensor  # [nE, bits]
    others: torch.Tensor  # long [nA, nA - 1]: the other allies of each agent, in order
    max_cooldown_state: torch.Tensor  # [nA]: SMAC's normaliser (energy max for medivacs)
    heal_offset: torch.Tensor  # long [nA]: unit index of attack target 0 (enemies or allies)

    @staticmethod
    def build(game_map: SkirmishMap, table: UnitTable, device: torch.device) -> FeatureLayout:
        n_a, n_e, bits = game_map.n_agents, game_map.n_enemies, game_map.unit_type_bits

        def onehot(types, order):
            out = torch.zeros(len(types), bits, device=device)
            if bits:
                for i, t in enumerate(types):
                    out[i, order.index(t.name)] = 1.0
            return out

        others = torch.tensor([[j for j in range(n_a) if j != i] for i in range(n_a)],
                              dtype=torch.long, device=device).reshape(n_a, n_a - 1)
        return FeatureLayout(
            n_allies=n_a, n_enemies=n_e, n_actions=game_map.n_actions,
            ally_shields=game_map.ally_shields, enemy_shields=game_map.enemy_shields,
            type_bits=bits,
            ally_onehot=onehot(game_map.ally_types(), game_map.ally_type_order),
            enemy_onehot=onehot(game_map.enemy_types(), game_map.enemy_type_order),
            others=others,
            max_cooldown_state=torch.tensor(
                [t.smac_max_cooldown for t in game_map.ally_types()], device=device),
            heal_offset=torch.where(table.healer[:n_a], 0, n_a).long(),
        )

    @property
    def enemy_feats(self) -> int:
        return 5 + int(self.enemy_shields) + self.type_bits

    @property
    def ally_feats(self) -> int:
        return 5 + int(self.ally_shields) + self.type_bits

    @property
    def own_feats(self) -> int:
        return 1 + int(self.ally_shields) + self.type_bits

    @property
    def obs_dim(self) -> int:
        return 4 + self.n_enemies * self.enemy_feats + (self.n_allies - 1) * self.ally_feats + self.own_feats

    @property
    def state_dim(self) -> int:
        ally = 4 + int(self.ally_shields) + self.type_bits
        enemy = 3 + int(self.enemy_shields) + self.type_bits
        return self.n_allies * ally + self.n_enemies * enemy + self.n_allies * self.n_actions


def action_masks(layout: FeatureLayout, table: UnitTable, b: Battle) -> torch.Tensor:
    """Legal actions of every agent, ``bool [E, nA, n_actions]``."""
    n_a, n_e = layout.n_allies, layout.n_enemies
    alive = b.alive
    me = alive[:, :n_a]
    x, y = b.pos[:, :n_a, 0], b.pos[:, :n_a, 1]
    half = MOVE_AMOUNT / 2

    def inside(v):  # SMAC: int(coordinate) within [0, map size)
        v = torch.trunc(v)
        return (v >= 0) & (v < MAP_SIZE)

    moves = torch.stack([inside(y + half), inside(y - half), inside(x + half), inside(x - half)], -1)
    head = torch.stack([~me, me], -1)
    # Attack columns: enemies, or allies (never medivacs) for healers.
    heal = table.healer[:n_a]
    col = torch.arange(n_e, device=b.pos.device)
    unit_idx = (layout.heal_offset[:, None] + col[None, :])  # [nA, nE]
    valid_col = torch.where(heal[:, None], col[None, :] < n_a, torch.ones_like(unit_idx, dtype=torch.bool))
    unit_idx = unit_idx.clamp(max=len(table.types) - 1)
    tpos = b.pos[:, unit_idx]  # [E, nA, nE, 2]
    dist = (tpos - b.pos[:, :n_a].unsqueeze(2)).norm(dim=-1)
    t_ok = alive[:, unit_idx] & ~(heal[:, None] & table.healer[unit_idx]) & valid_col
    attack = t_ok & (dist <= SHOOT_RANGE) & me.unsqueeze(-1)
    return torch.cat([head, moves & me.unsqueeze(-1), attack], dim=-1)


def observations(layout: FeatureLayout, table: UnitTable, b: Battle, masks: torch.Tensor) -> torch.Tensor:
    """Every agent's observation, ``float32 [E, nA, obs_dim]`` (zeros for dead agents)."""
    n_a = layout.n_allies
    alive = b.alive
    frac_h = b.health / table.max_health
    frac_s = b.shield / table.max_shield.clamp(min=1e-6)
    me_pos = b.pos[:, :n_a]
    rel = b.pos.unsqueeze(1) - me_pos.unsqueeze(2)  # [E, nA, U, 2]
    dist = rel.norm(dim=-1)
    seen = (dist < SIGHT_RANGE) & alive.unsqueeze(1)

    def block(sl, first, shields, onehot):
        d, r, vis = dist[:, :, sl], rel[:, :, sl], seen[:, :, sl]
        parts = [first, d / SIGHT_RANGE, r[..., 0] / SIGHT_RANGE, r[..., 1] / SIGHT_RANGE,
                 frac_h[:, sl].unsqueeze(1).expand_as(d)]
        if shields:
            parts.append(frac_s[:, sl].unsqueeze(1).expand_as(d))
        feats = torch.stack(parts, -1)
        if onehot.shape[-1]:
            feats = torch.cat([feats, onehot.expand(*d.shape, -1)], -1)
        return feats * vis.unsqueeze(-1)

    enemy = block(slice(n_a, None), masks[:, :, N_ACTIONS_NO_ATTACK:].float(), layout.enemy_shields,
                  layout.enemy_onehot)
    allies = block(slice(0, n_a), torch.ones_like(dist[:, :, :n_a]), layout.ally_shields,
                   layout.ally_onehot)
    idx = layout.others.unsqueeze(0).unsqueeze(-1).expand(allies.shape[0], -1, -1, allies.shape[-1])
    allies = allies.gather(2, idx)
    own = [frac_h[:, :n_a].unsqueeze(-1)]
    if layout.ally_shields:
        own.append(frac_s[:, :n_a].unsqueeze(-1))
    if layout.type_bits:
        own.append(layout.ally_onehot.expand(b.pos.shape[0], -1, -1))
    e = b.pos.shape[0]
    obs = torch.cat([masks[:, :, 2:6].float(), enemy.reshape(e, n_a, -1), allies.reshape(e, n_a, -1),
                     torch.cat(own, -1)], dim=-1)
    return obs * alive[:, :n_a].unsqueeze(-1)


def global_state(layout: FeatureLayout, table: UnitTable, b: Battle, last_actions: torch.Tensor) -> torch.Tensor:
    """SMAC's global state, ``float32 [E, state_dim]``; ``last_actions`` is ``long [E, nA]``."""
    n_a = layout.n_allies
    e = b.pos.shape[0]
    alive = b.alive.float()
    frac_h = b.health / table.max_health
    frac_s = b.shield / table.max_shield.clamp(min=1e-6)
    rel = (b.pos - MAP_SIZE / 2) / MAP_SIZE
    ally_cd = torch.where(table.healer[:n_a], b.energy[:, :n_a], b.cooldown[:, :n_a]) / layout.max_cooldown_state
    ally = [frac_h[:, :n_a], ally_cd, rel[:, :n_a, 0], rel[:, :n_a, 1]]
    if layout.ally_shields:
        ally.append(frac_s[:, :n_a])
    ally_t = torch.stack(ally, -1)
    if layout.type_bits:
        ally_t = torch.cat([ally_t, layout.ally_onehot.expand(e, -1, -1)], -1)
    enemy = [frac_h[:, n_a:], rel[:, n_a:, 0], rel[:, n_a:, 1]]
    if layout.enemy_shields:
        enemy.append(frac_s[:, n_a:])
    enemy_t = torch.stack(enemy, -1)
    if layout.type_bits:
        enemy_t = torch.cat([enemy_t, layout.enemy_onehot.expand(e, -1, -1)], -1)
    ally_t = ally_t * alive[:, :n_a].unsqueeze(-1)
    enemy_t = enemy_t * alive[:, n_a:].unsqueeze(-1)
    last = torch.nn.functional.one_hot(last_actions, layout.n_actions).float()
    return torch.cat([ally_t.reshape(e, -1), enemy_t.reshape(e, -1), last.reshape(e, -1)], -1)
