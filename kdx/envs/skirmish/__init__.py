"""Skirmish: a StarCraft-free, SMAC-style combat simulator, vectorised over envs with torch.

``kdx.envs.make("skirmish/3m", num_envs=1024)`` builds SMAC's 3m map (observation, state and
action layouts identical to SMAC's). Maps: ``kdx.envs.skirmish.maps.MAPS``; unit stats:
``kdx.envs.skirmish.units.UNIT_TYPES``; scripted policies: ``kdx.envs.skirmish.scripted``.

Modelling choices (details in each module's docstring):

- time base: StarCraft II "Faster", 22.4 game loops/s; an agent step is 8 loops (0.357 s) and
  combat (targets, shots, movement, damage, regeneration) is resolved every loop; a weapon fires
  again ``ceil(cooldown_s * 22.4)`` loops after it fired;
- weapon ranges are edge to edge (centre distance minus both radii), while the action mask uses
  SMAC's rule (target centre within 6); ``attack k`` out of weapon range walks into range first;
- shots of one loop land together (shields first, armour per hit on health); stopped units shoot
  the closest enemy in weapon range (idle StarCraft II units do); move orders do not shoot;
- the enemy AI attack-moves: it keeps its target while that is alive and in range, otherwise
  takes the closest hittable ally and walks to it; its medivac heals the closest hurt friend;
- overlapping ground units are pushed apart once per agent step; positions stay in the 32 x 32 map;
- teams start in two blocks facing each other across the map centre, fronts 10 apart (outside
  sight range), with seeded jitter of +-0.5 per unit;
- colossus splash: a 2.8 x 0.3 line through the target, across the shot; baneling: every enemy
  whose edge is within 2.2 of it, then it dies; every zerg unit regenerates health, shields
  regenerate after a delay without damage, medivacs heal biological ground units only, with
  energy (the rates, in Faster seconds, are in ``units``).
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
