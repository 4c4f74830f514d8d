"""SMAC's observation, global state and action-mask layouts, computed for every env at once.

Layouts follow oxwhirl/smac with its default options (``obs_all_health``, ``obs_own_health``,
``state_last_action`` on; pathing grid, terrain height, last actions in observations off):

- observation of agent i (zeros when it is dead): 4 move bits, then per enemy
  ``[attackable, dist/9, dx/9, dy/9, health, (shield), (type one-hot)]`` (zeros when out of sight
  range 9 or dead), per other ally ``[visible, dist/9, dx/9, dy/9, health, (shield), (type)]``,
  own ``[health, (shield), (type)]``. "attackable" is the action mask's column ``6 + k``, as in
  SMAC (for a medivac that column means "ally k can be healed", a SMAC quirk kept as is).
  ``observation_layout`` names these features as blocks ``move``, ``enemy.k``, ``ally.k`` (the
  k-th *other* ally) and ``own``; the sizes used here are counted from those names.
- state: per ally ``[health, cooldown / SMAC max cooldown (energy / 200 for a medivac),
  x and y relative to the map centre / map size, (shield), (type)]``, per enemy
  ``[health, rel x, rel y, (shield), (type)]``, then every agent's last action one-hot.
- action mask: no-op only (and always) for the dead; stop; the four moves when the point one
  unit away in that direction is inside the map (SMAC's ``can_move`` on an open map); attack
  enemy k (heal ally k for a medivac) when it is alive and its centre is within SMAC's shoot
  range 6. Medivacs heal biological ground units only (``UnitTable.can_target``): SMAC masks
  only medivacs, which is the same rule on SMAC's maps (marines, marauders and medivacs).
"""

from __future__ import annotations

from dataclasses import dataclass

import torch

from kdx.envs.obs_layout import Entity, ObservationLayout
from kdx.envs.skirmish.combat import Battle, UnitTable, float_mask
from kdx.envs.skirmish.maps import MAP_SIZE, SkirmishMap

SIGHT_RANGE = 9.0
SHOOT_RANGE = 6.0
MOVE_AMOUNT = 2.0
N_ACTIONS_NO_ATTACK = 6
# Dead unit u sits (u + 1) * this far along x in Geometry: out of every range, apart from each other.
_DEAD_SPACING = 1.0e4
# The move features are action columns 2..5, in SMAC's order.
MOVE_FEATURES = ("north", "south", "east", "west")


def unit_features(first: str, shields: bool, type_names: tuple[str, ...], last_action_bits: int = 0
                  ) -> tuple[str, ...]:
    """Feature names of one enemy (``first="attackable"``) or other ally (``"visible"``), in the
    order ``observations`` builds them; ``last_action_bits`` is for real SMAC's optional
    ``obs_last_action`` (skirmish observations have none)."""
    return (first, "distance", "dx", "dy", "health", *(("shield",) if shields else ()),
            *(f"type_{t}" for t in type_names), *(f"last_action_{a}" for a in range(last_action_bits)))


def own_features(shields: bool, type_names: tuple[str, ...]) -> tuple[str, ...]:
    """Feature names of the agent's own block, in the order ``observations`` builds them."""
    return ("health", *(("shield",) if shields else ()), *(f"type_{t}" for t in type_names))


def type_names(order: tuple[str, ...], bits: int) -> tuple[str, ...]:
    """Names of the unit-type one-hot's bits (none when the map has one unit type)."""
    return tuple(order[i] if i < len(order) else str(i) for i in range(bits))


def observation_layout(game_map: SkirmishMap, last_action_bits: int = 0) -> ObservationLayout:
    """Every agent's observation layout on ``game_map`` (all agents share it): move features,
    then per enemy, per other ally, then own features, as ``observations`` concatenates them."""
    bits = game_map.unit_type_bits
    ally_types = type_names(game_map.ally_type_order, bits)
    enemy = unit_features("attackable", game_map.enemy_shields, type_names(game_map.enemy_type_order, bits))
    ally = unit_features("visible", game_map.ally_shields, ally_types, last_action_bits)
    return ObservationLayout.concat([
        ("move", Entity("self"), MOVE_FEATURES),
        *((f"enemy.{k}", Entity("enemy", k), enemy) for k in range(game_map.n_enemies)),
        *((f"ally.{k}", Entity("ally", k), ally) for k in range(game_map.n_agents - 1)),
        ("own", Entity("self"), own_features(game_map.ally_shields, ally_types)),
    ])


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
    others_flat: torch.Tensor  # long [nA * (nA - 1)]: the same as indices into a flattened [nA, nA]
    others_onehot: torch.Tensor  # [nA, nA - 1, bits]: unit type one-hot of each agent's other allies
    max_cooldown_state: torch.Tensor  # [nA]: SMAC's normaliser (energy max for medivacs)
    heal_offset: torch.Tensor  # long [nA]: unit index of attack target 0 (enemies or allies)
    target_units: torch.Tensor  # long [nA, nE]: unit behind each attack column (clamped)
    target_allowed: torch.Tensor  # bool [nA, nE]: the column names a unit this agent may target
    any_healer: bool
    observation: ObservationLayout  # names of the observation's features, one block per entity

    @staticmethod
    def build(game_map: SkirmishMap, table: UnitTable, device: torch.device) -> FeatureLayout:
        n_a, n_e, bits = game_map.n_agents, game_map.n_enemies, game_map.unit_type_bits

        def onehot(types, order):
            out = torch.zeros(len(types), bits, device=device)
            if bits:
                for i, t in enumerate(types):
                    out[i, order.index(t.name)] = 1.0
            return out

        heal = table.healer[:n_a]
        heal_offset = torch.where(heal, 0, n_a).long()
        col = torch.arange(n_e, device=device)
        others = torch.tensor([[j for j in range(n_a) if j != i] for i in range(n_a)],
                              dtype=torch.long, device=device).reshape(n_a, n_a - 1)
        return FeatureLayout(
            n_allies=n_a, n_enemies=n_e, n_actions=game_map.n_actions,
            ally_shields=game_map.ally_shields, enemy_shields=game_map.enemy_shields,
            type_bits=bits,
            ally_onehot=onehot(game_map.ally_types(), game_map.ally_type_order),
            enemy_onehot=onehot(game_map.enemy_types(), game_map.enemy_type_order),
            others=others,
            others_flat=(torch.arange(n_a, device=device)[:, None] * n_a + others).reshape(-1),
            others_onehot=onehot(game_map.ally_types(), game_map.ally_type_order)[others],
            max_cooldown_state=torch.tensor(
                [t.smac_max_cooldown for t in game_map.ally_types()], device=device),
            heal_offset=heal_offset,
            target_units=(heal_offset[:, None] + col).clamp(max=n_a + n_e - 1),
            target_allowed=torch.where(heal[:, None],
                                       (col < n_a) & table.can_target[:n_a, col.clamp(max=n_a - 1)],
                                       torch.ones(n_a, n_e, dtype=torch.bool, device=device)),
            any_healer=bool(heal.any()),
            observation=observation_layout(game_map),
        )

    @property
    def own_feats(self) -> int:
        return self.observation.block("own").size

    @property
    def obs_dim(self) -> int:
        return self.observation.size

    @property
    def state_dim(self) -> int:
        ally = 4 + int(self.ally_shields) + self.type_bits
        enemy = 3 + int(self.enemy_shields) + self.type_bits
        return self.n_allies * ally + self.n_enemies * enemy + self.n_allies * self.n_actions


@dataclass
class Geometry:
    """Where every unit is relative to every agent, ``[E, nA, U]`` (computed once per step).

    Dead units are placed far away, each at its own distance (``_DEAD_SPACING``), so a dead unit
    is out of everyone's sight and shoot range and a dead agent sees nobody: the feature code
    needs no alive masks on these grids."""

    dx: torch.Tensor
    dy: torch.Tensor
    dist: torch.Tensor

    @staticmethod
    def of(b: Battle, n_allies: int) -> Geometry:
        spacing = _DEAD_SPACING * torch.arange(1, b.x.shape[1] + 1, dtype=b.x.dtype, device=b.x.device)
        x = b.x + spacing * float_mask(torch.le, b.health, 0.0)
        dx = x.unsqueeze(1) - x[:, :n_allies].unsqueeze(2)
        dy = b.y.unsqueeze(1) - b.y[:, :n_allies].unsqueeze(2)
        return Geometry(dx, dy, (dx * dx).addcmul_(dy, dy).sqrt_())


def action_masks(layout: FeatureLayout, table: UnitTable, b: Battle, geo: Geometry) -> torch.Tensor:
    """Legal actions of every agent, ``bool [E, nA, n_actions]``."""
    n_a = layout.n_allies
    alive = b.alive
    me = alive[:, :n_a]
    x, y = b.x[:, :n_a], b.y[:, :n_a]
    half = MOVE_AMOUNT / 2

    def inside(v):  # SMAC: int(coordinate) within [0, map size)
        v = torch.trunc(v)
        return (v >= 0) & (v < MAP_SIZE) & me

    head = torch.stack([~me, me, inside(y + half), inside(y - half), inside(x + half), inside(x - half)], -1)
    if layout.any_healer:
        dist = geo.dist.gather(2, layout.target_units.expand(b.x.shape[0], -1, -1))
        t_ok = alive[:, layout.target_units] & layout.target_allowed
    else:  # every agent attacks the enemies: a plain slice
        dist = geo.dist[:, :, n_a:]
        t_ok = alive[:, None, n_a:]
    attack = t_ok & (dist <= SHOOT_RANGE) & me.unsqueeze(-1)
    return torch.cat([head, attack], dim=-1)


def observations(layout: FeatureLayout, table: UnitTable, b: Battle, masks: torch.Tensor,
                 geo: Geometry, sight_range: float = SIGHT_RANGE) -> torch.Tensor:
    """Every agent's observation, ``float32 [E, nA, obs_dim]`` (zeros for dead agents).

    ``sight_range``: units at that distance or farther are out of sight (SMAC: 9); observed
    distances and offsets are divided by it. Below the shoot range, "can attack" is shown only
    for enemies in sight, as every other feature of an entity.

    Built from whole feature planes, each masked by sight before one final concatenation (no
    strided writes into a zeroed buffer, no broadcast over the feature axis: both are slow on
    CPU). Dead units and dead agents are out of sight by construction (see ``Geometry``).
    """
    n_a = layout.n_allies
    e = b.x.shape[0]
    frac_h = b.health / table.max_health
    frac_s = b.shield / table.max_shield.clamp(min=1e-6)
    seen = float_mask(torch.lt, geo.dist, sight_range)  # [E, nA, U]

    def block(first, dist, dx, dy, seen_c, health, shield, onehot):  # [E, nA, count * feats]
        scaled_c = seen_c * (1.0 / sight_range)
        planes = [first, dist * scaled_c, dx * scaled_c, dy * scaled_c, health * seen_c]
        if shield is not None:
            planes.append(shield * seen_c)
        out = torch.stack(planes, -1)
        if onehot.shape[-1]:
            out = torch.cat([out, seen_c.unsqueeze(-1) * onehot], -1)
        return out.view(e, n_a, -1)

    en = slice(n_a, None)
    if layout.any_healer:  # a medivac's columns mean "ally k can be healed" (SMAC), shown if enemy k is seen
        attackable = masks[:, :, N_ACTIONS_NO_ATTACK:].float() * seen[:, :, en]
    else:  # alive target within shoot range of a live agent (dead ones are out of range)
        attackable = float_mask(torch.le, geo.dist[:, :, en], SHOOT_RANGE)
        if sight_range <= SHOOT_RANGE:  # SMAC's default sight (9) covers the shoot range (6)
            attackable = attackable * seen[:, :, en]
    enemy_block = block(attackable, geo.dist[:, :, en], geo.dx[:, :, en], geo.dy[:, :, en], seen[:, :, en],
                        frac_h[:, None, en], frac_s[:, None, en] if layout.enemy_shields else None,
                        layout.enemy_onehot)

    # Other allies, in order: each agent's n_a - 1 columns picked out of the [nA, nA] planes.
    def others(plane):  # [E, nA, nA] -> [E, nA, nA - 1]
        return plane.reshape(e, n_a * n_a).index_select(1, layout.others_flat).view(e, n_a, n_a - 1)

    def other_units(values):  # [E, nA] -> [E, nA, nA - 1]
        return values.index_select(1, layout.others.view(-1)).view(e, n_a, n_a - 1)

    al = slice(0, n_a)
    seen_a = others(seen[:, :, al])
    ally_block = block(seen_a, others(geo.dist[:, :, al]), others(geo.dx[:, :, al]), others(geo.dy[:, :, al]),
                       seen_a, other_units(frac_h[:, :n_a]),
                       other_units(frac_s[:, :n_a]) if layout.ally_shields else None, layout.others_onehot)

    own = [frac_h[:, :n_a].unsqueeze(-1)]
    if layout.ally_shields:
        own.append(frac_s[:, :n_a].unsqueeze(-1))
    if layout.type_bits:
        own.append(layout.ally_onehot * float_mask(torch.gt, b.health[:, :n_a], 0.0).unsqueeze(-1))
    move = masks[:, :, 2:N_ACTIONS_NO_ATTACK].float()  # all 0 for a dead agent
    return torch.cat([move, enemy_block, ally_block, *own], -1)


def global_state(layout: FeatureLayout, table: UnitTable, b: Battle, last_actions: torch.Tensor) -> torch.Tensor:
    """SMAC's global state, ``float32 [E, state_dim]``; ``last_actions`` is ``long [E, nA]``."""
    n_a = layout.n_allies
    e = b.x.shape[0]
    alive = b.alive.float()
    frac_h = b.health / table.max_health
    frac_s = b.shield / table.max_shield.clamp(min=1e-6)
    rx = (b.x - MAP_SIZE / 2) / MAP_SIZE
    ry = (b.y - MAP_SIZE / 2) / MAP_SIZE
    cd = torch.where(table.healer[:n_a], b.energy[:, :n_a], b.cooldown[:, :n_a]) if layout.any_healer \
        else b.cooldown[:, :n_a]
    ally = [frac_h[:, :n_a], cd / layout.max_cooldown_state, rx[:, :n_a], ry[:, :n_a]]
    if layout.ally_shields:
        ally.append(frac_s[:, :n_a])
    ally_t = torch.stack(ally, -1)
    if layout.type_bits:
        ally_t = torch.cat([ally_t, layout.ally_onehot.expand(e, -1, -1)], -1)
    enemy = [frac_h[:, n_a:], rx[:, n_a:], ry[:, n_a:]]
    if layout.enemy_shields:
        enemy.append(frac_s[:, n_a:])
    enemy_t = torch.stack(enemy, -1)
    if layout.type_bits:
        enemy_t = torch.cat([enemy_t, layout.enemy_onehot.expand(e, -1, -1)], -1)
    ally_t = ally_t * alive[:, :n_a].unsqueeze(-1)
    enemy_t = enemy_t * alive[:, n_a:].unsqueeze(-1)
    last = torch.nn.functional.one_hot(last_actions, layout.n_actions).float()
    return torch.cat([ally_t.reshape(e, -1), enemy_t.reshape(e, -1), last.reshape(e, -1)], -1)
