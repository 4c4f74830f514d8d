"""Unit types of the skirmish simulator and the one time base everything is converted to.

Time base: StarCraft II's "Faster" game speed, 22.4 game loops per second. Unit stats and rates
are quoted in Faster seconds (the numbers players and Liquipedia use; the game's data files quote
some rates per *Normal* second, 16 loops, which are 1.4x slower), and one agent step is SMAC's
8 game loops = 0.357 s. Every rate is converted once, here (``per_loop``), into "per game loop"
units: cooldowns in loops, speeds in distance per loop, regeneration and healing in points per loop.

Ranges are StarCraft II weapon ranges, measured between the units' edges (centre distance minus
both radii). SMAC's action mask uses a different, fixed rule (centre distance <= 6); see
``kdx.envs.skirmish.features``.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field

from kdx.errors import KdxError

LOOPS_PER_SECOND = 22.4
LOOPS_PER_STEP = 8  # SMAC's step_mul
SECONDS_PER_STEP = LOOPS_PER_STEP / LOOPS_PER_SECOND
MIN_HEALTH_DAMAGE_PER_HIT = 0.5  # armour never reduces a hit below this (StarCraft II rule)


def per_loop(rate_per_s: float) -> float:
    """A rate per Faster second as an amount per game loop: the simulator's one conversion."""
    return rate_per_s / LOOPS_PER_SECOND


# Shields (every unit that has them): regenerate after this long without taking damage.
SHIELD_REGEN_DELAY_S = 7.14  # 10 Normal seconds
SHIELD_REGEN_PER_S = 2.8  # 2 per Normal second
SHIELD_REGEN_DELAY_LOOPS = SHIELD_REGEN_DELAY_S * LOOPS_PER_SECOND
SHIELD_REGEN_PER_LOOP = per_loop(SHIELD_REGEN_PER_S)

# Health regenerated per second by every unit of a race (zerg units all regenerate).
RACE_HEALTH_REGEN_PER_S: dict[str, float] = {"terran": 0.0, "protoss": 0.0, "zerg": 0.38}


@dataclass(frozen=True)
class UnitType:
    """Combat statistics of one unit type (times in Faster seconds, rates per Faster second,
    distances in map units). The ``*_loops`` / ``*_per_loop`` properties are the simulator's units."""

    name: str
    health: float
    shield: float
    armour: float
    damage: float  # per hit
    hits: int  # hits per attack (zealot 2, colossus 2)
    cooldown_s: float
    speed: float  # map units per second
    range: float  # edge to edge; melee units use a short range
    radius: float
    light: bool = False
    armoured: bool = False
    bonus_vs_light: float = 0.0
    bonus_vs_armoured: float = 0.0
    air: bool = False
    hits_air: bool = True
    smac_max_cooldown: float = 15.0  # SMAC's normaliser for the state's cooldown feature
    heal_per_s: float = 0.0  # medivac: health healed per second
    heal_per_energy: float = 0.0  # medivac: health healed per energy point
    max_energy: float = 0.0
    start_energy: float = 0.0
    energy_regen_per_s: float = 0.0
    explode_radius: float = 0.0  # baneling: damages every enemy within this centre distance, then dies
    splash_line: tuple[float, float] = (0.0, 0.0)  # colossus: (length, width) of the line it hits
    race: str = field(kw_only=True)  # a key of RACE_HEALTH_REGEN_PER_S
    biological: bool = field(kw_only=True)  # medivacs heal biological units only

    def __post_init__(self) -> None:
        if self.race not in RACE_HEALTH_REGEN_PER_S:
            raise KdxError(f"unit type {self.name!r} has unknown race {self.race!r}; "
                           f"use one of {', '.join(RACE_HEALTH_REGEN_PER_S)}")

    @property
    def cooldown_loops(self) -> float:
        return self.cooldown_s * LOOPS_PER_SECOND

    @property
    def attack_period_loops(self) -> int:
        """Loops between two attacks: the first loop whose cooldown has run out."""
        return math.ceil(self.cooldown_loops - 1e-9)

    @property
    def speed_per_loop(self) -> float:
        return per_loop(self.speed)

    @property
    def health_regen_per_s(self) -> float:
        return RACE_HEALTH_REGEN_PER_S[self.race]

    @property
    def health_regen_per_loop(self) -> float:
        return per_loop(self.health_regen_per_s)

    @property
    def heal_per_loop(self) -> float:
        return per_loop(self.heal_per_s)

    @property
    def energy_regen_per_loop(self) -> float:
        return per_loop(self.energy_regen_per_s)

    @property
    def is_healer(self) -> bool:
        return self.heal_per_s > 0

    @property
    def is_exploder(self) -> bool:
        return self.explode_radius > 0


# Stats of the current StarCraft II game (as used by the SMAClite re-implementation; heal, energy
# and regeneration rates in Faster seconds); SMAC's max cooldowns (only used to normalise the
# state) from oxwhirl/smac.
UNIT_TYPES: dict[str, UnitType] = {
    "marine": UnitType("marine", 45, 0, 0, 6, 1, 0.61, 3.15, 5, 0.375, light=True,
                       smac_max_cooldown=15, race="terran", biological=True),
    "marauder": UnitType("marauder", 125, 0, 1, 10, 1, 1.07, 3.15, 6, 0.5625, armoured=True,
                         bonus_vs_armoured=10, hits_air=False, smac_max_cooldown=25,
                         race="terran", biological=True),
    "medivac": UnitType("medivac", 150, 0, 1, 0, 0, 0.0, 3.5, 4, 0.75, armoured=True, air=True,
                        hits_air=False, smac_max_cooldown=200, heal_per_s=12.6, heal_per_energy=3,
                        max_energy=200, start_energy=50, energy_regen_per_s=0.7875,
                        race="terran", biological=False),
    "stalker": UnitType("stalker", 80, 80, 1, 13, 1, 1.34, 4.13, 6, 0.625, armoured=True,
                        bonus_vs_armoured=5, smac_max_cooldown=35, race="protoss", biological=False),
    "zealot": UnitType("zealot", 100, 50, 1, 8, 2, 0.86, 3.15, 0.1, 0.5, light=True,
                       hits_air=False, smac_max_cooldown=22, race="protoss", biological=True),
    "colossus": UnitType("colossus", 200, 150, 1, 10, 2, 1.07, 3.15, 7, 1.0, armoured=True,
                         bonus_vs_light=5, hits_air=False, smac_max_cooldown=24,
                         splash_line=(2.8, 0.3), race="protoss", biological=False),
    "zergling": UnitType("zergling", 35, 0, 0, 5, 1, 0.497, 4.13, 0.1, 0.375, light=True,
                         hits_air=False, smac_max_cooldown=11, race="zerg", biological=True),
    "hydralisk": UnitType("hydralisk", 90, 0, 0, 12, 1, 0.59, 3.15, 5, 0.625, light=True,
                          smac_max_cooldown=10, race="zerg", biological=True),
    "baneling": UnitType("baneling", 30, 0, 0, 16, 1, 0.0, 3.15, 0.25, 0.375,
                         bonus_vs_light=19, hits_air=False, smac_max_cooldown=1,
                         explode_radius=2.2, race="zerg", biological=True),
}
