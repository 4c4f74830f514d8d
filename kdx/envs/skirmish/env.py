"""``SkirmishEnv``: SMAC's interface on the vectorised combat simulator.

One agent step = 8 game loops (SMAC's step_mul), each resolved by ``combat.game_loop``; overlapping
units are pushed apart once per agent step. Reward: SMAC's default shaped reward (damage dealt to
enemy health + shields, +10 per enemy killed, +200 on a win, absolute value as in SMAC), scaled by
``20 / max_reward``; every agent gets the same team reward. ``info`` adds ``lost`` and ``timeout``
to the base class's ``won``.
"""

from __future__ import annotations

import torch

from kdx.envs.base import AgentSpec, BatchedEnv, EnvSpec, EnvStep
from kdx.envs.obs_layout import ObservationLayout
from kdx.envs.skirmish import features
from kdx.envs.skirmish.combat import (
    Battle,
    PairPlanes,
    StepConstants,
    UnitTable,
    game_loop,
    push_apart,
)
from kdx.envs.skirmish.maps import MAP_SIZE, SkirmishMap, get_map
from kdx.envs.skirmish.units import LOOPS_PER_STEP
from kdx.errors import KdxError

REWARD_DEATH = 10.0
REWARD_WIN = 200.0
REWARD_SCALE = 20.0
_MOVE_DIRS = ((0.0, 1.0), (0.0, -1.0), (1.0, 0.0), (-1.0, 0.0))  # north, south, east, west


def start_positions(game_map: SkirmishMap, table: UnitTable, device: torch.device) -> torch.Tensor:
    """Formation slots ``[U, 2]`` before jitter: two blocks facing each other along x."""
    out = []
    centre = MAP_SIZE / 2
    for sign, team in ((-1.0, game_map.ally_types()), (1.0, game_map.enemy_types())):
        spacing = 2 * max(t.radius for t in team) + 0.3
        n = len(team)
        for j in range(n):
            col, row = divmod(j, game_map.column)
            in_col = min(game_map.column, n - col * game_map.column)
            x = centre + sign * (game_map.front_gap / 2 + col * spacing)
            y = centre + (row - (in_col - 1) / 2) * spacing
            out.append((x, y))
    return torch.tensor(out, device=device)


class SkirmishEnv(BatchedEnv):
    """A SMAC map simulated in torch for ``num_envs`` envs at once.

    Shapes: ``obs[i]`` ``float32 [E, obs_dim]``, masks ``bool [E, 6 + n_enemies]``, state
    ``float32 [E, state_dim]``, reward ``float32 [E, n_agents]`` (equal columns).
    """

    observation_distance_unit = features.SIGHT_RANGE  # observed distances are dist / 9

    def __init__(self, map_name: str | SkirmishMap, num_envs: int, seed: int = 0, device: str | torch.device = "cpu",
                 check_actions: bool = True, sight_range: float = features.SIGHT_RANGE) -> None:
        if not sight_range > 0:
            raise KdxError(f"sight_range must be > 0 (SMAC's is {features.SIGHT_RANGE:g}); got {sight_range!r}")
        self.sight_range = float(sight_range)
        self.observation_distance_unit = self.sight_range  # observed distances are dist / sight range
        self.map = map_name if isinstance(map_name, SkirmishMap) else get_map(map_name)
        m = self.map
        dev = torch.device(device)
        self.table = UnitTable.build(m, dev)
        self.layout = features.FeatureLayout.build(m, self.table, dev)
        groups = [t.name for t in m.ally_types()]
        self.spec = EnvSpec(
            name=f"skirmish/{m.name}",
            agents=tuple(AgentSpec(f"agent_{i}", self.layout.obs_dim, m.n_actions, groups[i])
                         for i in range(m.n_agents)),
            state_dim=self.layout.state_dim,
            episode_limit=m.limit,
            has_win_flag=True,
            shared_reward=True,
        )
        super().__init__(num_envs, seed=seed, device=dev, check_actions=check_actions)
        t = self.table
        self.max_reward = REWARD_DEATH * m.n_enemies + REWARD_WIN + float(
            (t.max_health[m.n_agents:] + t.max_shield[m.n_agents:]).sum())
        self._slots = start_positions(m, t, dev)
        self._dirs = torch.tensor(_MOVE_DIRS, device=dev)
        self._pair_planes = PairPlanes.build(t, num_envs)
        self._step_constants = StepConstants.build(t, num_envs)
        e, u = num_envs, len(t.types)
        zeros = torch.zeros(e, u, device=dev)
        self.battle = Battle(
            x=zeros.clone(), y=zeros.clone(), health=zeros.clone(), shield=zeros.clone(),
            cooldown=zeros.clone(), energy=zeros.clone(), since_damage=zeros.clone(),
            enemy_target=torch.zeros(e, u, dtype=torch.long, device=dev),
            order_chase=zeros.clone(), order_move=zeros.clone(), order_ok=zeros.clone(),
            order_target=torch.zeros(e, u, dtype=torch.long, device=dev),
            goal_x=zeros.clone(), goal_y=zeros.clone(),
            acting_on=torch.full((e, u), -1, dtype=torch.long, device=dev),
        )
        self.last_actions = torch.zeros(e, m.n_agents, dtype=torch.long, device=dev)
        self.lost = torch.zeros(e, dtype=torch.bool, device=dev)
        self._masks_cache: torch.Tensor | None = None
        self.record_actions = False  # keep battle.acting_on (who shot whom) for rendering

    # ------------------------------------------------------------------ scenario hooks
    def _reset_envs(self, mask: torch.Tensor) -> None:
        b, t = self.battle, self.table
        jitter = (torch.rand(self.num_envs, len(t.types), 2, generator=self.rng, device=self.device)
                  * 2 - 1) * self.map.jitter
        start = self._slots + jitter
        # Float 0/1 selection (lerp with 0/1 weights is exact): far cheaper than torch.where on CPU.
        fresh = mask.float()[:, None].expand_as(b.x).contiguous()
        kept = 1.0 - fresh
        b.x = torch.lerp(b.x, start[..., 0], fresh)
        b.y = torch.lerp(b.y, start[..., 1], fresh)
        b.health = torch.lerp(b.health, t.max_health.expand_as(fresh), fresh)
        b.shield = torch.lerp(b.shield, t.max_shield.expand_as(fresh), fresh)
        b.cooldown = b.cooldown * kept
        b.energy = torch.lerp(b.energy, t.start_energy.expand_as(fresh), fresh)
        b.since_damage = b.since_damage * kept
        b.enemy_target = b.enemy_target * kept.long()
        self.last_actions = self.last_actions * (~mask).long()[:, None]
        self._masks_cache = None

    def _set_orders(self, actions: torch.Tensor) -> None:
        """Turn agent actions into unit orders for the coming 8 game loops."""
        b, n_a = self.battle, self.map.n_agents
        is_move = (actions >= 2) & (actions <= 5)
        is_attack = actions >= features.N_ACTIONS_NO_ATTACK
        direction = self._dirs[(actions - 2).clamp(0, 3)]
        target = (actions - features.N_ACTIONS_NO_ATTACK).clamp(min=0) + self.layout.heal_offset
        target = target.clamp(max=len(self.table.types) - 1)
        b.order_chase[:, :n_a] = is_attack.float()
        b.order_move[:, :n_a] = is_move.float()
        b.order_ok[:, :n_a] = self.table.can_target[torch.arange(n_a, device=self.device), target].float()
        b.order_target[:, :n_a] = target
        b.goal_x[:, :n_a] = b.x[:, :n_a] + features.MOVE_AMOUNT * direction[..., 0]
        b.goal_y[:, :n_a] = b.y[:, :n_a] + features.MOVE_AMOUNT * direction[..., 1]

    def _step_envs(self, actions: torch.Tensor):
        b, t, n_a = self.battle, self.table, self.map.n_agents
        alive_before = b.alive
        enemy_hp_before = (b.health + b.shield)[:, n_a:]
        self._set_orders(actions)
        self.last_actions = actions.clone()
        b.acting_on.fill_(-1)
        with torch.inference_mode():  # pure tensor work: skipping autograd's dispatch saves ~15%
            for _ in range(LOOPS_PER_STEP):
                game_loop(t, b, record=self.record_actions, const=self._step_constants)
            push_apart(t, b, self._pair_planes)
        b.drop_inference_tensors()
        alive = b.alive
        enemy_hp = (b.health + b.shield)[:, n_a:]
        was = alive_before[:, n_a:]
        delta = ((enemy_hp_before - enemy_hp) * was).sum(1)
        kills = (was & ~alive[:, n_a:]).sum(1) * REWARD_DEATH
        fighters = alive & ~t.healer
        ally_fight, enemy_fight = fighters[:, :n_a].any(1), fighters[:, n_a:].any(1)
        ally_any, enemy_any = alive[:, :n_a].any(1), alive[:, n_a:].any(1)
        # SMAC: a team with only medivacs left has lost (MMM maps); both wiped out is a draw.
        lost = ~ally_fight & (enemy_any | t.has_healers)
        won = ~lost & ~enemy_fight & ally_any
        terminated = lost | won | (~ally_any & ~enemy_any)
        reward = (delta + kills).abs() + REWARD_WIN * won
        reward = reward * (REWARD_SCALE / self.max_reward)
        self.lost = lost
        self._masks_cache = None
        return reward.unsqueeze(1).expand(-1, n_a).contiguous(), terminated, won

    def set_units(self, pos: torch.Tensor | None = None, health: torch.Tensor | None = None,
                  shield: torch.Tensor | None = None) -> EnvStep:
        """Overwrite unit positions ``[E, U, 2]`` / health / shields ``[E, U]`` (units: allies,
        then enemies) to stage a particular fight, e.g. in tests; returns the new observations."""
        b = self.battle
        if pos is not None:
            b.x = pos[..., 0].to(b.x).clone()
            b.y = pos[..., 1].to(b.y).clone()
        if health is not None:
            b.health = health.to(b.health).clone()
        if shield is not None:
            b.shield = shield.to(b.shield).clone()
        self._masks_cache = None
        self._last_masks = self._action_masks()
        zeros = torch.zeros(self.num_envs, dtype=torch.bool, device=self.device)
        return EnvStep(self._observations(), self._last_masks, self._global_state(),
                       torch.zeros(self.num_envs, self.spec.n_agents, device=self.device),
                       zeros, zeros.clone(), {})

    @property
    def geometry(self) -> features.Geometry:
        """Offsets and distances from every agent to every unit now, ``[E, nA, U]``."""
        self._masks()
        return self._geometry

    def _masks(self) -> torch.Tensor:
        if self._masks_cache is None:
            self._geometry = features.Geometry.of(self.battle, self.map.n_agents)
            self._masks_cache = features.action_masks(self.layout, self.table, self.battle, self._geometry)
        return self._masks_cache

    def _action_masks(self) -> tuple[torch.Tensor, ...]:
        return tuple(self._masks().unbind(1))

    def _observations(self) -> tuple[torch.Tensor, ...]:
        masks = self._masks()
        obs = features.observations(self.layout, self.table, self.battle, masks, self._geometry,
                                     self.sight_range)
        return tuple(obs.unbind(1))

    def _observation_layouts(self) -> tuple[ObservationLayout, ...]:
        return (self.layout.observation,) * self.map.n_agents

    def action_targets(self) -> tuple[dict[int, str], ...]:
        n_a, first = self.map.n_agents, features.N_ACTIONS_NO_ATTACK
        healer, allowed = self.table.healer[:n_a].tolist(), self.layout.target_allowed.tolist()
        units = self.layout.target_units.tolist()
        out = []
        for i in range(n_a):
            targets = {}
            for k, (u, ok) in enumerate(zip(units[i], allowed[i])):
                if not ok:
                    continue
                if not healer[i]:
                    targets[first + k] = f"enemy.{u - n_a}"
                else:  # heals an ally: its block among the others, or the agent's own
                    targets[first + k] = "own" if u == i else f"ally.{u if u < i else u - 1}"
            out.append(targets)
        return tuple(out)

    def _global_state(self) -> torch.Tensor:
        return features.global_state(self.layout, self.table, self.battle, self.last_actions)

    def step(self, actions: torch.Tensor) -> EnvStep:
        out = super().step(actions)
        out.info["lost"] = self.lost & out.terminated
        out.info["timeout"] = out.truncated
        return out

    def _describe_illegal(self, agent: int, env: int, action: int) -> str:
        b, n_a = self.battle, self.map.n_agents
        alive = bool(b.health[env, agent] > 0)
        if not alive:
            return "the agent is dead, and a dead agent may only take no-op (0)"
        if action == 0:
            return "no-op (0) is only for dead agents; a live agent uses stop (1) to stand still"
        if 2 <= action <= 5:
            name = ("north", "south", "east", "west")[action - 2]
            return f"moving {name} would leave the map"
        k = action - features.N_ACTIONS_NO_ATTACK
        healer = bool(self.table.healer[agent])
        if healer:
            if k >= n_a:
                return f"a medivac heals allies 0..{n_a - 1}; there is no ally {k}"
            if not bool(self.table.can_target[agent, k]):
                return (f"ally {k} is a {self.table.types[k].name}, and medivacs heal biological "
                        "ground units only")
            unit, what = k, "ally"
        else:
            unit, what = n_a + k, "enemy"
        if not bool(b.health[env, unit] > 0):
            return f"{what} {k} is dead"
        dist = float((b.pos[env, unit] - b.pos[env, agent]).norm())
        return f"{what} {k} is {dist:.2f} away, beyond the shoot range {features.SHOOT_RANGE:g}"
