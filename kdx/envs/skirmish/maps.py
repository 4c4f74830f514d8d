"""The skirmish map registry: SMAC's open-field maps as small dataclasses.

Each map lists its two teams as ``(unit type, count)`` pairs, SMAC's step limit, and SMAC's
unit-type one-hot layout (``unit_type_bits`` and the order of the types in the one-hot, which SMAC
defines separately for allies and enemies; on stalker/zealot maps the two orders differ in SMAC
and are reproduced here).

Start positions (a modelling choice; SMAC's maps place units by hand): both teams stand in a
block formation, facing each other across the map centre along x, fronts ``front_gap`` apart
(outside sight range 9, so the first steps are an approach), with a small seeded jitter.
"""

from __future__ import annotations

from dataclasses import dataclass

from kdx.envs.skirmish.units import UNIT_TYPES, UnitType
from kdx.errors import KdxError

MAP_SIZE = 32.0  # playable square, map units (SMAC's small maps are 32 x 32)


@dataclass(frozen=True)
class SkirmishMap:
    """One battle: who fights whom, for how many agent steps, and SMAC's type encoding."""

    name: str
    allies: tuple[tuple[str, int], ...]
    enemies: tuple[tuple[str, int], ...]
    limit: int
    unit_type_bits: int = 0
    ally_type_order: tuple[str, ...] = ()
    enemy_type_order: tuple[str, ...] = ()
    front_gap: float = 10.0
    column: int = 8  # units per formation column (across the battle line)
    jitter: float = 0.5  # start positions are uniform in +-jitter around the formation slot

    def ally_types(self) -> list[UnitType]:
        """Ally units in agent order (SMAC sorts agents by unit type, then position)."""
        return _expand(self.allies)

    def enemy_types(self) -> list[UnitType]:
        return _expand(self.enemies)

    @property
    def n_agents(self) -> int:
        return sum(n for _, n in self.allies)

    @property
    def n_enemies(self) -> int:
        return sum(n for _, n in self.enemies)

    @property
    def n_actions(self) -> int:
        return 6 + self.n_enemies

    @property
    def ally_shields(self) -> bool:
        """SMAC adds a shield feature for a Protoss team; here: any unit with shields."""
        return any(t.shield > 0 for t in self.ally_types())

    @property
    def enemy_shields(self) -> bool:
        return any(t.shield > 0 for t in self.enemy_types())


def _expand(team: tuple[tuple[str, int], ...]) -> list[UnitType]:
    return [UNIT_TYPES[name] for name, count in team for _ in range(count)]


def _m(name: str, allies, enemies, limit: int, bits: int = 0, ally_order=(), enemy_order=None,
       **kw) -> SkirmishMap:
    return SkirmishMap(name, tuple(allies), tuple(enemies), limit, bits, tuple(ally_order),
                       tuple(ally_order if enemy_order is None else enemy_order), **kw)


_SZ = ("stalker", "zealot")
# SMAC's enemy one-hot on stalker/zealot maps is (unit_type - 73): zealot 0, stalker 1.
_SZ_ENEMY = ("zealot", "stalker")
_CSZ = ("colossus", "stalker", "zealot")
_MMM = ("marauder", "marine", "medivac")
_BANE = ("baneling", "zergling")

MAPS: dict[str, SkirmishMap] = {m.name: m for m in (
    _m("3m", [("marine", 3)], [("marine", 3)], 60),
    _m("8m", [("marine", 8)], [("marine", 8)], 120),
    _m("25m", [("marine", 25)], [("marine", 25)], 150, column=9),
    _m("5m_vs_6m", [("marine", 5)], [("marine", 6)], 70),
    _m("8m_vs_9m", [("marine", 8)], [("marine", 9)], 120),
    _m("10m_vs_11m", [("marine", 10)], [("marine", 11)], 150, column=10),
    _m("27m_vs_30m", [("marine", 27)], [("marine", 30)], 180, column=10),
    _m("2s3z", [("stalker", 2), ("zealot", 3)], [("stalker", 2), ("zealot", 3)], 120, 2, _SZ,
       _SZ_ENEMY),
    _m("3s5z", [("stalker", 3), ("zealot", 5)], [("stalker", 3), ("zealot", 5)], 150, 2, _SZ,
       _SZ_ENEMY),
    _m("3s5z_vs_3s6z", [("stalker", 3), ("zealot", 5)], [("stalker", 3), ("zealot", 6)], 170, 2,
       _SZ, _SZ_ENEMY),
    _m("3s_vs_3z", [("stalker", 3)], [("zealot", 3)], 150),
    _m("3s_vs_4z", [("stalker", 3)], [("zealot", 4)], 200),
    _m("3s_vs_5z", [("stalker", 3)], [("zealot", 5)], 250),
    _m("1c3s5z", [("colossus", 1), ("stalker", 3), ("zealot", 5)],
       [("colossus", 1), ("stalker", 3), ("zealot", 5)], 180, 3, _CSZ),
    _m("MMM", [("marauder", 2), ("marine", 7), ("medivac", 1)],
       [("marauder", 2), ("marine", 7), ("medivac", 1)], 150, 3, _MMM),
    _m("MMM2", [("marauder", 2), ("marine", 7), ("medivac", 1)],
       [("marauder", 3), ("marine", 8), ("medivac", 1)], 180, 3, _MMM),
    _m("2m_vs_1z", [("marine", 2)], [("zealot", 1)], 150),
    _m("6h_vs_8z", [("hydralisk", 6)], [("zealot", 8)], 150),
    _m("bane_vs_bane", [("baneling", 4), ("zergling", 20)], [("baneling", 4), ("zergling", 20)],
       200, 2, _BANE, column=8),
)}


def get_map(name: str) -> SkirmishMap:
    """The map called ``name``; unknown names raise ``KdxError`` listing the maps."""
    try:
        return MAPS[name]
    except KeyError:
        raise KdxError(
            f"unknown skirmish map {name!r}. Available maps: {', '.join(MAPS)}"
        ) from None
