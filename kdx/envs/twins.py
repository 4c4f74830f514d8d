"""Each kdx env's PettingZoo twin: the same scenario as a PettingZoo ``ParallelEnv``.

Data only, and torch-free: the runtime (``kdx-runtime run``) reads it to play a bundle in its
env's twin without kdx's torch envs, and the registry records each twin in its entry
(``EnvEntry.pettingzoo_twin``). An env without a twin here (``skirmish/*``, ``smac/*``) has no
torch-free closed loop; ``kdx run BUNDLE`` plays those in kdx's own env.
"""

from __future__ import annotations

PETTINGZOO_PREFIX = "pettingzoo:"

# kdx env -> PettingZoo env with the same agents, observations and actions (mpe/* reproduce mpe2).
PETTINGZOO_TWINS: dict[str, str] = {
    "mpe/simple_spread": "pettingzoo:mpe2.simple_spread_v3",
    "mpe/simple_speaker_listener": "pettingzoo:mpe2.simple_speaker_listener_v4",
    "mpe/simple_reference": "pettingzoo:mpe2.simple_reference_v3",
}


def pettingzoo_twin(env: str) -> str | None:
    """The PettingZoo env that plays ``env``: ``env`` itself if it is a ``pettingzoo:`` name,
    else its twin, or None when it has none."""
    if env.startswith(PETTINGZOO_PREFIX):
        return env
    return PETTINGZOO_TWINS.get(env)
