"""Skirmish: a StarCraft-free, SMAC-style combat simulator, vectorised over envs with torch.

``kdx.envs.make("skirmish/3m", num_envs=1024)`` builds SMAC's 3m map (observation, state and
action layouts identical to SMAC's). Maps: ``kdx.envs.skirmish.maps.MAPS``; unit stats:
``kdx.envs.skirmish.units.UNIT_TYPES``; scripted policies: ``kdx.envs.skirmish.scripted``.
"""

from __future__ import annotations

from kdx.envs.registry import register
from kdx.envs.skirmish.env import SkirmishEnv
from kdx.envs.skirmish.maps import MAPS, SkirmishMap, get_map


def _factory(map_name: str):
    def make(num_envs: int = 1, seed: int = 0, device: str = "cpu", **kwargs) -> SkirmishEnv:
        return SkirmishEnv(map_name, num_envs=num_envs, seed=seed, device=device, **kwargs)

    return make


def _describe(m: SkirmishMap) -> str:
    def team(units):
        return " + ".join(f"{n} {name}" for name, n in units)

    return f"SMAC {m.name} without StarCraft: {team(m.allies)} vs {team(m.enemies)}, {m.limit} steps"


for _name, _map in MAPS.items():
    register(f"skirmish/{_name}", _factory(_name), _describe(_map), family="skirmish")

__all__ = ["MAPS", "SkirmishEnv", "SkirmishMap", "get_map"]
