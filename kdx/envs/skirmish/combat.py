"""Combat rules of the skirmish simulator, vectorised over ``[env, unit]``, one game loop at a time.

Units of both teams live in one unit axis: allies first (agent order), then enemies. Per-unit
constants are a ``UnitTable`` of ``[U]`` / ``[U, U]`` tensors built once per map, and the same
constants laid out for the env's batch (and the rules' scalars as tensors) a ``StepConstants``
built once per env; the mutable battle is a ``Battle`` of ``[E, U]`` tensors. ``game_loop``
advances every env by one game loop:

1. targets: agent orders are fixed for the agent step; units without an order (stop, or whose
   target died) auto-acquire the closest enemy in weapon range, as idle StarCraft II units do;
   the built-in enemy AI attack-moves (keeps its target while it is alive and in range,
   otherwise picks the closest hittable ally and walks to it); healers heal the closest damaged
   friendly biological ground unit (the enemy's medivac follows its team when nobody is hurt);
2. units in range with their weapon ready fire (every shot of a loop lands at once); units out
   of range of their target, or with a move order, walk at their speed;
3. damage: shields absorb first, armour is subtracted from each hit that reaches health (at
   least 0.5 per hit); banelings explode on their target (area damage, then die); a colossus
   also hits enemies on a 2.8 x 0.3 line through its target; medivacs heal biological ground
   units with energy;
4. cooldowns run down, shields regenerate after a delay without damage, zerg units regenerate
   (rates in ``kdx.envs.skirmish.units``, already converted to per-loop amounts there).

Collisions (push-apart of overlapping ground units) are resolved by ``push_apart``, which the env
calls once per agent step (a modelling choice that keeps the per-loop work small; units move at
most ~1.5 map units per agent step, less than two marine radii).
"""

from __future__ import annotations

from dataclasses import dataclass, field, fields

import torch

from kdx.envs.skirmish.maps import MAP_SIZE, SkirmishMap
from kdx.envs.skirmish.units import (
    MIN_HEALTH_DAMAGE_PER_HIT,
    SHIELD_REGEN_DELAY_LOOPS,
    SHIELD_REGEN_PER_LOOP,
    UnitType,
)

_FAR = 1.0e6
# For the target search dead units are shifted this far along x (allies one way, enemies the
# other): their squared distance to anyone (>= ~1e8) then exceeds every reach and every penalty,
# so the [E, nA, nE] grid needs no alive masks. Live units keep their exact coordinates.
_DEAD_SHIFT = 1.0e4


def hit_damage(attacker: UnitType, target: UnitType) -> float:
    """Damage of one hit of ``attacker`` on ``target`` before shields and armour."""
    return (
        attacker.damage
        + attacker.bonus_vs_light * target.light
        + attacker.bonus_vs_armoured * target.armoured
    )


def apply_hits(health: torch.Tensor, shield: torch.Tensor, armour: torch.Tensor,
               raw_damage: torch.Tensor, n_hits: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """Apply ``n_hits`` hits totalling ``raw_damage`` to units (all tensors broadcast together).

    Shields absorb first and ignore armour; every hit that reaches health loses ``armour``
    (never below 0.5 per hit). Hits landing in the same loop are resolved in any order: exact
    when they are equal (the usual case: one unit type shooting), otherwise the number of hits
    reaching health is estimated with the mean hit. Returns ``(health, shield)``.
    """
    absorbed = torch.minimum(shield, raw_damage)
    rest = raw_damage - absorbed
    mean_hit = raw_damage / n_hits.clamp(min=1)
    fully_absorbed = torch.floor(shield / mean_hit.clamp(min=1e-6))
    reaching = (n_hits - fully_absorbed).clamp(min=1)
    loss = torch.maximum(rest - armour * reaching, MIN_HEALTH_DAMAGE_PER_HIT * reaching)
    loss = torch.where(rest > 0, loss, torch.zeros_like(loss))
    return health - loss, shield - absorbed


@dataclass
class UnitTable:
    """Per-unit constants of one map, ``[U]`` tensors (``[U, U]`` for attacker x target)."""

    n_allies: int
    n_enemies: int
    types: list[UnitType]
    ally: torch.Tensor  # bool [U]
    max_health: torch.Tensor
    max_shield: torch.Tensor
    armour: torch.Tensor
    radius: torch.Tensor
    range: torch.Tensor
    speed: torch.Tensor  # per loop
    cooldown: torch.Tensor  # loops
    hits: torch.Tensor
    healer: torch.Tensor  # bool
    exploder: torch.Tensor  # bool
    air: torch.Tensor  # bool
    heal_per_loop: torch.Tensor
    heal_per_energy: torch.Tensor
    max_energy: torch.Tensor
    start_energy: torch.Tensor
    energy_per_loop: torch.Tensor
    health_regen_per_loop: torch.Tensor
    explode_radius: torch.Tensor
    hit_damage: torch.Tensor  # [U, U] damage of one hit of i on j
    can_target: torch.Tensor  # bool [U, U]: i may attack (or heal: biological ground units) j
    has_healers: bool
    has_exploders: bool
    splash_units: list[int]  # colossi
    splash_length: float
    splash_width: float
    has_shields: bool
    has_regeneration: bool
    row_offset: torch.Tensor  # long [U]: i * U, to index flattened [U, U] tables
    not_exploder: torch.Tensor  # float [U]
    index_sign: torch.Tensor  # [U, U]: +1 on and below the diagonal, -1 above
    contact: torch.Tensor  # [U, U]: sum of radii, with 0 on the diagonal
    # Derived tables, computed once at construction (never lazily: a table that appeared only
    # after some step would make env checkpoints differ from a freshly built env's).
    reach: torch.Tensor = field(init=False)  # [U, U]: centre distance at which i's weapon reaches j
    reach_sq_allies: torch.Tensor = field(init=False)  # [nA, nE]: squared reach; -1 where i cannot target j
    enemy_penalty: torch.Tensor | None = field(init=False)  # [nA, nE]: _FAR where enemy j cannot target ally i
    dead_shift: torch.Tensor = field(init=False)  # [U]: x shift of a dead unit in the target search
    can_target_f: torch.Tensor = field(init=False)  # float 0/1 copies of bool tables (see float_mask)
    healer_f: torch.Tensor = field(init=False)
    not_healer: torch.Tensor = field(init=False)
    exploder_f: torch.Tensor = field(init=False)
    ground_f: torch.Tensor = field(init=False)  # 1 for ground units (they collide), 0 for air

    def __post_init__(self) -> None:
        self.reach = self.range[:, None] + self.radius[:, None] + self.radius[None, :]
        n_a = self.n_allies
        reach = self.reach[:n_a, n_a:]
        self.reach_sq_allies = torch.where(self.can_target[:n_a, n_a:], reach * reach, -1.0)
        block = self.can_target[n_a:, :n_a]
        self.enemy_penalty = None if bool(block.all()) else (_FAR * (~block).float()).T.contiguous()
        self.dead_shift = torch.where(self.ally, _DEAD_SHIFT, -_DEAD_SHIFT)
        self.can_target_f = self.can_target.float()
        self.healer_f = self.healer.float()
        self.not_healer = 1.0 - self.healer_f
        self.exploder_f = self.exploder.float()
        self.ground_f = 1.0 - self.air.float()

    @property
    def unit_index(self) -> torch.Tensor:
        return torch.arange(len(self.types), device=self.ally.device)

    @staticmethod
    def build(game_map: SkirmishMap, device: torch.device) -> UnitTable:
        allies, enemies = game_map.ally_types(), game_map.enemy_types()
        types = allies + enemies
        n_a = len(allies)
        side = torch.tensor([i < n_a for i in range(len(types))], device=device)

        def col(fn, dtype=torch.float32):
            return torch.tensor([fn(t) for t in types], dtype=dtype, device=device)

        dmg = torch.tensor([[hit_damage(a, b) for b in types] for a in types], device=device)
        opposite = side[:, None] != side[None, :]
        air = col(lambda t: t.air, torch.bool)
        hits_air = col(lambda t: t.hits_air, torch.bool)
        healer = col(lambda t: t.is_healer, torch.bool)
        attack_ok = opposite & (hits_air[:, None] | ~air[None, :]) & ~healer[:, None]
        biological = col(lambda t: t.biological, torch.bool)
        heal_ok = ~opposite & healer[:, None] & biological[None, :] & ~air[None, :]
        colossi = [i for i, t in enumerate(types) if t.splash_line[0] > 0]
        line = types[colossi[0]].splash_line if colossi else (0.0, 0.0)
        return UnitTable(
            n_allies=n_a, n_enemies=len(enemies), types=types, ally=side,
            max_health=col(lambda t: t.health), max_shield=col(lambda t: t.shield),
            armour=col(lambda t: t.armour), radius=col(lambda t: t.radius),
            range=col(lambda t: t.range), speed=col(lambda t: t.speed_per_loop),
            cooldown=col(lambda t: t.cooldown_loops), hits=col(lambda t: float(t.hits)),
            healer=healer, exploder=col(lambda t: t.is_exploder, torch.bool), air=air,
            heal_per_loop=col(lambda t: t.heal_per_loop),
            heal_per_energy=col(lambda t: max(t.heal_per_energy, 1e-6)),
            max_energy=col(lambda t: t.max_energy), start_energy=col(lambda t: t.start_energy),
            energy_per_loop=col(lambda t: t.energy_regen_per_loop),
            health_regen_per_loop=col(lambda t: t.health_regen_per_loop),
            explode_radius=col(lambda t: t.explode_radius),
            hit_damage=dmg, can_target=attack_ok | heal_ok,
            has_healers=bool(healer.any()), has_exploders=any(t.is_exploder for t in types),
            splash_units=colossi, splash_length=line[0], splash_width=line[1],
            has_shields=any(t.shield > 0 for t in types),
            has_regeneration=any(t.health_regen_per_s > 0 for t in types),
            row_offset=torch.arange(len(types), device=device) * len(types),
            not_exploder=1.0 - col(lambda t: float(t.is_exploder)),
            contact=(col(lambda t: t.radius)[:, None] + col(lambda t: t.radius)[None, :])
            * (1 - torch.eye(len(types), device=device)),
            index_sign=(torch.tril(torch.ones(len(types), len(types), device=device), 0)
                        - torch.triu(torch.ones(len(types), len(types), device=device), 1)),
        )


@dataclass
class Battle:
    """The mutable battle of every env: ``[E, U]`` tensors (positions as ``x`` and ``y``)."""

    x: torch.Tensor
    y: torch.Tensor
    health: torch.Tensor
    shield: torch.Tensor
    cooldown: torch.Tensor  # loops until the weapon is ready
    energy: torch.Tensor
    since_damage: torch.Tensor  # loops since the last damage taken (kept on maps with shields)
    enemy_target: torch.Tensor  # long [E, U]: the AI's kept target (unit index) per unit
    # Allies' orders for this agent step (float 0/1 masks, see float_mask):
    order_chase: torch.Tensor  # attack (heal) order_target
    order_move: torch.Tensor  # move to (goal_x, goal_y)
    order_ok: torch.Tensor  # order_target is a unit this unit can attack (heal)
    order_target: torch.Tensor  # long [E, U]
    goal_x: torch.Tensor  # move orders' goal points
    goal_y: torch.Tensor
    acting_on: torch.Tensor  # long [E, U]: whom each unit last shot or healed this step, -1: nobody

    @property
    def alive(self) -> torch.Tensor:
        return self.health > 0

    @property
    def pos(self) -> torch.Tensor:
        """Positions ``[E, U, 2]`` (a copy)."""
        return torch.stack([self.x, self.y], dim=-1)

    def drop_inference_tensors(self) -> None:
        """Replace the tensors that ``torch.inference_mode`` made (the env runs its game loops
        there: no autograd bookkeeping per op) by ordinary copies, which callers may write into."""
        for f in fields(self):
            value = getattr(self, f.name)
            if value.is_inference():
                setattr(self, f.name, value.clone())


def float_mask(compare, a: torch.Tensor, b: torch.Tensor | float) -> torch.Tensor:
    """``compare(a, b)`` (torch.gt, torch.le, ...) as a float 0/1 tensor.

    The combat step works with float masks (and = product, or = maximum, select = ``lerp``, exact
    for 0/1 weights) rather than bool tensors: on CPU a comparison written into a float tensor
    vectorises while one producing bool does not, and neither do bool-to-float conversion and
    ``torch.where`` -- each of those costs ten to fifty float operations at 4096 envs."""
    # An empty ``out`` is resized to the broadcast shape by the comparison itself (no Python-side
    # shape arithmetic: torch.broadcast_shapes costs more than the comparison at small batch).
    return compare(a, b, out=torch.empty(0, dtype=a.dtype, device=a.device))


def _closest(score: torch.Tensor, index: torch.Tensor, count: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """``score.min(0)`` of a unit-major ``[n, m, E]`` grid, as ``[E, m]`` float tensors: the
    smallest value and the first index reaching it (what torch.min returns) plus ``offset``, from
    two amin reductions over the outer axis (torch.min with indices is several times slower).
    ``index``: ``offset + arange(n)`` as a float ``[n, 1, 1]`` tensor, ``count``: n as a 0-dim
    tensor (both from ``StepConstants``)."""
    best = score.amin(0, keepdim=True)
    # addcmul(a, m, c) with a 0/1 mask m: the product is exact, so it rounds as a + m * c would
    first = torch.addcmul(index, float_mask(torch.ne, score, best), count).amin(0)
    return best.squeeze(0).T, first.T


# Lookups of at most this many indices use take (one op: cheapest at small batch); larger ones
# index_select, the faster kernel once the work outweighs the per-op overhead.
_TAKE_MAX_INDICES = 4096


def _lookup(pair_table: torch.Tensor, flat_index: torch.Tensor) -> torch.Tensor:
    """``pair_table.take(flat_index)`` for a ``[U, U]`` table."""
    if flat_index.numel() <= _TAKE_MAX_INDICES:
        return torch.take(pair_table, flat_index)
    return pair_table.view(-1).index_select(0, flat_index.reshape(-1)).view(flat_index.shape)


@dataclass
class Intent:
    """What every unit does in one game loop, ``[E, U]``; masks are float 0/1."""

    target: torch.Tensor  # long: whom it attacks or heals (arbitrary where ``engage`` is 0)
    engage: torch.Tensor  # attacks or heals ``target`` when in range (alive unit, valid target)
    pursue: torch.Tensor  # walks toward ``target`` when out of range (attack orders, enemy AI)
    move: torch.Tensor  # walks toward its move order's goal


@dataclass
class StepConstants:
    """Constants of ``game_loop`` laid out for ``num_envs`` envs, built once per env (``build``),
    so that no game loop allocates or expands them again; not part of the env's checkpointed
    state (rebuilt from the map)."""

    NOT_ENV_STATE = True
    reach_sq_allies: torch.Tensor  # [nE, nA, E]: UnitTable.reach_sq_allies.T copied over envs
    enemy_penalty: torch.Tensor | None  # [nA, nE, E]: UnitTable.enemy_penalty over envs, or None
    ally_index: torch.Tensor  # float [nA, 1, 1]: 0..nA-1, for _closest
    enemy_unit_index: torch.Tensor  # float [nE, 1, 1]: the enemies' unit indices nA..U-1
    enemy_ones: torch.Tensor  # [E, nE] ones
    enemy_row_offset: torch.Tensor  # long [nE]: UnitTable.row_offset of the enemies
    reach_sq: torch.Tensor  # [U, U]: UnitTable.reach squared
    armoured: bool  # some unit has armour (else damage needs no armour term: x - 0 * n == x)
    zeros: torch.Tensor  # [E, U] zeros (never written: the base of out-of-place scatters)
    # The rules' scalars as 0-dim tensors: an op with a Python number operand costs about twice
    # one with a tensor operand (the number is wrapped into a tensor every time); same values.
    zero: torch.Tensor
    one: torch.Tensor
    far: torch.Tensor  # _FAR
    n_allies: torch.Tensor
    n_enemies: torch.Tensor
    approach: torch.Tensor  # 1e-3: how far inside weapon range a unit walks
    tiny: torch.Tensor  # 1e-6: smallest divisor
    min_hit: torch.Tensor  # MIN_HEALTH_DAMAGE_PER_HIT
    regen_delay: torch.Tensor  # SHIELD_REGEN_DELAY_LOOPS
    regen_per_loop: torch.Tensor  # SHIELD_REGEN_PER_LOOP

    @staticmethod
    def build(table: UnitTable, num_envs: int) -> StepConstants:
        n_a, n_e = table.n_allies, table.n_enemies
        dev = table.max_health.device

        def plane(t: torch.Tensor) -> torch.Tensor:
            return t[:, :, None].expand(-1, -1, num_envs).contiguous()

        return StepConstants(
            reach_sq_allies=plane(table.reach_sq_allies.T),
            enemy_penalty=None if table.enemy_penalty is None else plane(table.enemy_penalty),
            ally_index=torch.arange(n_a, dtype=torch.float32, device=dev).view(-1, 1, 1),
            enemy_unit_index=torch.arange(n_a, n_a + n_e, dtype=torch.float32, device=dev).view(-1, 1, 1),
            enemy_ones=torch.ones(num_envs, n_e, device=dev),
            enemy_row_offset=table.row_offset[n_a:].clone(),
            reach_sq=table.reach * table.reach,
            armoured=bool((table.armour != 0).any()),
            zeros=torch.zeros(num_envs, n_a + n_e, device=dev),
            **{name: torch.tensor(float(v), device=dev) for name, v in (
                ("zero", 0.0), ("one", 1.0), ("far", _FAR), ("n_allies", n_a), ("n_enemies", n_e),
                ("approach", 1e-3), ("tiny", 1e-6), ("min_hit", MIN_HEALTH_DAMAGE_PER_HIT),
                ("regen_delay", SHIELD_REGEN_DELAY_LOOPS), ("regen_per_loop", SHIELD_REGEN_PER_LOOP))},
        )


def choose_targets(table: UnitTable, b: Battle, alive: torch.Tensor, const: StepConstants | None = None) -> Intent:
    """Every unit's intent this loop; ``alive`` is a float 0/1 ``[E, U]`` mask; ``const``: the
    env's ``StepConstants`` (built here when not given).

    "Closest" compares centre distances (squared: no square roots on the pairwise grid).
    """
    const = const or StepConstants.build(table, b.x.shape[0])
    n_a = table.n_allies
    # Pairwise work runs unit-major ([n, m, E]: the env axis innermost and contiguous), where
    # elementwise ops and amin over the outer axis vectorise; broadcasting along the innermost
    # axis does not, so per-pair tables are expanded first.
    xt = torch.addcmul(b.x, table.dead_shift, const.one - alive).T.contiguous()  # dead far away: _DEAD_SHIFT
    yt = b.y.T.contiguous()

    def grid(rows: slice, cols: slice) -> torch.Tensor:  # [rows, cols, E] squared centre distances
        dx = xt[rows, None] - xt[None, cols]
        dy = yt[rows, None] - yt[None, cols]
        return (dx * dx).addcmul_(dy, dy)

    allies, enemies = slice(0, n_a), slice(n_a, None)
    d2 = grid(allies, enemies)  # [nA, nE, E]: reduced over allies for the enemies' targets
    # Enemy AI: keep the current target while alive and in range, else the closest hittable ally.
    if const.enemy_penalty is not None:
        d2 += const.enemy_penalty  # a whole [nA, nE, E] plane: no inner broadcast, fast
    best_e, new_e = _closest(d2, const.ally_index, const.n_allies)
    cur = b.enemy_target[:, n_a:]
    cur_flat = cur + const.enemy_row_offset
    cdx = b.x[:, n_a:] - b.x.gather(1, cur)
    cdy = b.y[:, n_a:] - b.y.gather(1, cur)
    keep = (alive.gather(1, cur) * _lookup(table.can_target_f, cur_flat)
            * float_mask(torch.le, (cdx * cdx).addcmul_(cdy, cdy), _lookup(const.reach_sq, cur_flat)))
    tgt_e = torch.lerp(new_e, cur.float(), keep)
    engage_e = torch.maximum(float_mask(torch.lt, best_e, const.far), keep)

    # Idle allies: closest hittable enemy already in weapon range (no chasing); dead enemies
    # and the ones an ally cannot hit (reach -1) are out of reach.
    d2 = grid(enemies, allies)  # [nE, nA, E]: reduced over enemies (the outer axis, which is fast)
    reach_sq = const.reach_sq_allies  # [nE, nA, E]: no inner broadcast, fast
    # the index of the closest enemy as a unit index (offset n_a)
    best_a, auto_a = _closest(d2.addcmul_(float_mask(torch.gt, d2, reach_sq), const.far),
                              const.enemy_unit_index, const.n_enemies)
    has_a = float_mask(torch.lt, best_a, const.far)

    # Allies' own orders: attack (or heal) a live target, or move; otherwise idle
    # auto-acquire ("hold": fire at what is in range, never walk after it).
    ordered = b.order_target[:, :n_a]
    chase = b.order_chase[:, :n_a] * alive.gather(1, ordered)
    hold = has_a * (const.one - chase) * (const.one - b.order_move[:, :n_a])
    tgt_a = torch.lerp(auto_a, ordered.float(), chase)
    engage_a = hold.addcmul_(chase, b.order_ok[:, :n_a])

    target = torch.cat([tgt_a, tgt_e], dim=1)
    pursue = torch.cat([chase, const.enemy_ones], dim=1)
    engage = torch.cat([engage_a, engage_e], dim=1)
    move = b.order_move  # enemies never hold move orders: their columns stay 0
    if table.has_healers:
        target, engage, pursue = _healer_behaviour(table, b, alive, target, engage, pursue, chase)
    target = target.long()
    b.enemy_target[:, n_a:] = target[:, n_a:]
    return Intent(target, engage * alive, pursue, move)


def _masked_argmin(score: torch.Tensor, valid: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """Index of the smallest ``score`` among ``valid`` along the last axis, and whether any."""
    best, idx = torch.where(valid, score, _FAR).min(dim=-1)
    return idx, best < _FAR


def _healer_targets(table: UnitTable, b: Battle, alive: torch.Tensor, healers: torch.Tensor,
                    friends: torch.Tensor, need_range: bool) -> tuple[torch.Tensor, torch.Tensor]:
    """Closest damaged friendly biological ground unit for each healer index (``long [H]``) among
    ``friends`` (``long [F]``). ``need_range``: only within heal range (idle ally medivacs);
    otherwise the closest friend, preferring damaged ones (the enemy AI's medivac)."""
    dx = b.x[:, healers, None] - b.x[:, None, friends]
    dy = b.y[:, healers, None] - b.y[:, None, friends]
    edge = (dx * dx + dy * dy).sqrt() - table.radius[healers, None] - table.radius[friends]
    damaged = b.health[:, friends] < table.max_health[friends]
    valid = (alive[:, friends] > 0).unsqueeze(1) & table.can_target[healers][:, friends]
    if need_range:
        valid = valid & damaged.unsqueeze(1) & (edge <= table.range[healers, None])
        score = edge
    else:
        score = edge + 1000.0 * (~damaged).unsqueeze(1)
    idx, has = _masked_argmin(score, valid)
    return friends[idx], has


def _healer_behaviour(table: UnitTable, b: Battle, alive: torch.Tensor, target: torch.Tensor,
                      engage: torch.Tensor, pursue: torch.Tensor, ally_chase: torch.Tensor
                      ) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """Medivacs: an ally medivac with a heal order keeps it; otherwise (unless moving) it heals
    the closest damaged friend in range. The enemy's medivac follows and heals its team."""
    n_a, n_u = table.n_allies, len(table.types)
    dev = target.device
    target, engage, pursue = target.clone(), engage.clone(), pursue.clone()
    for lo, hi, is_ally in ((0, n_a, True), (n_a, n_u, False)):
        healers = [i for i in range(lo, hi) if bool(table.healer[i])]
        if not healers:
            continue
        h = torch.tensor(healers, device=dev)
        friends = torch.arange(lo, hi, device=dev)
        auto, has = _healer_targets(table, b, alive, h, friends, need_range=is_ally)
        has_f = has.float()
        if is_ally:
            ordered = ally_chase[:, h]
            hold = has_f * (1.0 - ordered) * (1.0 - b.order_move[:, h])
            target[:, h] = torch.lerp(auto.float(), target[:, h], ordered)
            engage[:, h] = ordered * b.order_ok[:, h] + hold
        else:
            target[:, h] = auto.float()
            engage[:, h] = has_f
            pursue[:, h] = has_f
    return target, engage, pursue


def game_loop(table: UnitTable, b: Battle, record: bool = False, const: StepConstants | None = None) -> None:
    """Advance every env of ``b`` by one game loop, in place. ``record``: keep ``acting_on``;
    ``const``: the env's ``StepConstants`` (built here when not given).

    Masks are float 0/1 tensors (see ``float_mask``): an exact and, on CPU, far cheaper way to write
    the rules than bool tensors and ``torch.where``.
    """
    const = const or StepConstants.build(table, b.x.shape[0])
    zero, one = const.zero, const.one
    alive = float_mask(torch.gt, b.health, zero)
    intent = choose_targets(table, b, alive, const)
    target = intent.target
    flat = target + table.row_offset  # index into [U, U] tables: attacker * U + target
    tx, ty = b.x.gather(1, target), b.y.gather(1, target)
    to_tx, to_ty = tx - b.x, ty - b.y
    dist = (to_tx * to_tx).addcmul_(to_ty, to_ty).sqrt_()
    gap = dist - _lookup(table.reach, flat)  # <= 0: in weapon range
    in_range = float_mask(torch.le, gap, zero)
    ready = intent.engage * in_range
    fire = ready * float_mask(torch.le, b.cooldown, zero)
    if table.has_healers:
        fire = fire * table.not_healer

    # Movement (units that fire or hold in range stand still). lerp with 0/1 weights selects exactly.
    walk_to_target = intent.engage * intent.pursue * (one - in_range)
    walking = torch.addcmul(walk_to_target, intent.move, alive)
    gx = torch.lerp(b.goal_x - b.x, to_tx, walk_to_target)
    gy = torch.lerp(b.goal_y - b.y, to_ty, walk_to_target)
    goal_dist = (gx * gx).addcmul_(gy, gy).sqrt_()
    wanted = torch.lerp(goal_dist, gap + const.approach, walk_to_target)
    step = torch.minimum(table.speed, wanted).mul_(walking).div_(torch.maximum(goal_dist, const.tiny))

    # Damage of this loop's shots.
    direct = fire * table.not_exploder if table.has_exploders else fire
    n_hits = table.hits * direct
    per_hit = _lookup(table.hit_damage, flat)
    dmg = const.zeros.scatter_add(1, target, per_hit * n_hits)
    cnt = const.zeros.scatter_add(1, target, n_hits)
    if table.has_exploders:
        dmg, cnt = _explosions(table, b, alive, fire, dmg, cnt)
    if table.splash_units:
        dmg, cnt = _line_splash(table, b, alive, fire, target, tx, ty, to_tx, to_ty, dist, dmg, cnt)

    if table.has_shields:
        health, shield = apply_hits(b.health, b.shield, table.armour, dmg, cnt)
    else:  # apply_hits without shields; no hits (cnt 0) means no damage (dmg 0): loss 0
        raw = dmg - table.armour * cnt if const.armoured else dmg
        health = b.health - torch.maximum(raw, const.min_hit * cnt)
        shield = b.shield
    if table.has_healers:
        target_hurt = float_mask(torch.lt, b.health.gather(1, target), table.max_health[target])
        heal = ready * table.healer_f * target_hurt * float_mask(torch.gt, b.energy, 0.0)
        amount = torch.minimum(table.heal_per_loop, b.energy * table.heal_per_energy) * heal
        healed = torch.zeros_like(amount).scatter_add_(1, target, amount)
        health = torch.minimum(health + healed, table.max_health)
        b.energy = torch.minimum(b.energy - amount / table.heal_per_energy + table.energy_per_loop,
                                 table.max_energy)
    if table.has_exploders:
        health = health * (1.0 - fire * table.exploder_f)

    if table.has_shields or table.has_regeneration:
        living = float_mask(torch.gt, health, zero)
    if table.has_shields:  # only shields care how long ago a unit was hit
        b.since_damage = (b.since_damage + one) * float_mask(torch.le, dmg, zero)
        regen = living * float_mask(torch.ge, b.since_damage, const.regen_delay)
        shield = torch.minimum(shield + regen * const.regen_per_loop, table.max_shield)
        b.shield = shield * living
    if table.has_regeneration:
        regrown = torch.minimum(health + table.health_regen_per_loop, table.max_health)
        health = torch.lerp(health, regrown, living)
    b.health = health.clamp_(min=0)  # the dead have exactly 0
    # A unit fires only with its cooldown at 0, so "reset on fire" is an addition.
    # (fire * cooldown is exact: addcmul rounds like the plain sum)
    b.cooldown = torch.addcmul(b.cooldown, fire, table.cooldown).sub_(one).clamp_(min=0)
    if record:
        acted = (fire + ready * table.healer_f) if table.has_healers else fire
        b.acting_on = torch.where(acted > 0, target, b.acting_on)
    b.x = b.x.addcmul_(gx, step).clamp_(0.0, MAP_SIZE)
    b.y = b.y.addcmul_(gy, step).clamp_(0.0, MAP_SIZE)


def _explosions(table, b, alive, fire, dmg, cnt):
    """Banelings that fire explode: every enemy within the blast (edge inside the radius) is hit."""
    bi = torch.tensor([i for i, t in enumerate(table.types) if t.is_exploder], device=dmg.device)
    dx = b.x[:, bi, None] - b.x[:, None, :]
    dy = b.y[:, bi, None] - b.y[:, None, :]
    d = (dx * dx + dy * dy).sqrt()  # [E, B, U]
    inside = float_mask(torch.le, d - table.radius, table.explode_radius[bi, None])
    hit = fire[:, bi, None] * inside * alive.unsqueeze(1) * table.can_target_f[bi].unsqueeze(0)
    add = table.hit_damage[bi].unsqueeze(0) * hit
    return dmg + add.sum(1), cnt + hit.sum(1)


def _line_splash(table, b, alive, fire, target, tx, ty, to_tx, to_ty, dist, dmg, cnt):
    """A colossus shot also hits other enemies whose edge touches a line through its target,
    perpendicular to the shot (``splash_length`` x ``splash_width``)."""
    ci = torch.tensor(table.splash_units, device=dmg.device)
    inv = 1.0 / dist[:, ci].clamp(min=1e-6)
    fx, fy = (to_tx[:, ci] * inv).unsqueeze(-1), (to_ty[:, ci] * inv).unsqueeze(-1)  # [E, C, 1]
    rx = b.x.unsqueeze(1) - tx[:, ci].unsqueeze(-1)  # [E, C, U]
    ry = b.y.unsqueeze(1) - ty[:, ci].unsqueeze(-1)
    along = (rx * fx + ry * fy).abs()
    across = (rx * fy - ry * fx).abs()
    inside = (float_mask(torch.le, along, table.splash_width / 2 + table.radius)
              * float_mask(torch.le, across, table.splash_length / 2 + table.radius))
    not_primary = (table.unit_index != target[:, ci].unsqueeze(-1)).float()
    hit = (fire[:, ci].unsqueeze(-1) * inside * not_primary * alive.unsqueeze(1)
           * table.can_target_f[ci].unsqueeze(0))
    per = table.hit_damage[ci].unsqueeze(0) * table.hits[ci, None]
    return dmg + (per * hit).sum(1), cnt + (table.hits[ci, None] * hit).sum(1)


@dataclass
class PairPlanes:
    """Per-pair constants of ``push_apart`` copied out over the env axis, ``[U, U, E]``: the
    unit-major grid then has no broadcast along its innermost axis (slow on CPU). Built once
    per env (``build``), never lazily; constants, so not part of the env's checkpointed state."""

    NOT_ENV_STATE = True
    contact: torch.Tensor  # sum of radii, 0 on the diagonal
    tie_break: torch.Tensor  # tiny index-ordered offset separating units exactly on top of each other

    @staticmethod
    def build(table: UnitTable, num_envs: int) -> PairPlanes:
        def plane(t: torch.Tensor) -> torch.Tensor:
            return t[:, :, None].expand(-1, -1, num_envs).contiguous()
        return PairPlanes(contact=plane(table.contact), tie_break=plane(table.index_sign * 1e-4))


# push_apart works on [U, U, envs] grids in chunks of about this many elements: large maps at
# thousands of envs would otherwise allocate grids of 50+ MB, which the C allocator maps fresh
# (and the kernel zero-fills) on every call.
_PUSH_CHUNK_ELEMENTS = 1 << 21


def push_apart(table: UnitTable, b: Battle, planes: PairPlanes | None = None) -> None:
    """Separate overlapping live ground units: each pair moves apart by half its overlap."""
    planes = planes or PairPlanes.build(table, b.x.shape[0])
    ground = (float_mask(torch.gt, b.health, 0.0) * table.ground_f).T  # [U, E]: live ground units
    xt, yt = b.x.T.contiguous(), b.y.T.contiguous()
    n_envs, n_units = b.x.shape
    step = max(1, _PUSH_CHUNK_ELEMENTS // (n_units * n_units))
    push_x, push_y = torch.empty_like(xt), torch.empty_like(yt)
    for lo in range(0, n_envs, step):
        envs = slice(lo, min(lo + step, n_envs))
        x, y, g = xt[:, envs], yt[:, envs], ground[:, envs]
        dx = (x[:, None] - x[None, :]).add_(planes.tie_break[:, :, envs])  # [U, U, e]: i minus j
        dy = y[:, None] - y[None, :]
        inv_d = torch.rsqrt((dx * dx).addcmul_(dy, dy))
        overlap = torch.relu(planes.contact[:, :, envs] - inv_d.reciprocal())
        # push_i = sum_j overlap/2 * (p_i - p_j) / d for live ground pairs.
        scale = overlap.mul_(inv_d).mul_(g[:, None] * g[None, :]).mul_(0.5)
        torch.sum(dx.mul_(scale), 1, out=push_x[:, envs])
        torch.sum(dy.mul_(scale), 1, out=push_y[:, envs])
    b.x = (b.x + push_x.T).clamp_(0.0, MAP_SIZE)
    b.y = (b.y + push_y.T).clamp_(0.0, MAP_SIZE)
