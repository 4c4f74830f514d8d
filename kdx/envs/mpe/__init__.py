"""Vectorised MPE scenarios (torch, batch-first) that reproduce mpe2's dynamics exactly.

Importing this package registers ``mpe/simple_spread``, ``mpe/simple_speaker_listener`` and
``mpe/simple_reference`` in ``kdx.envs.registry``. Every factory accepts the scenario's
parameters as keywords (``N``, ``local_ratio``, ``max_cycles`` as in mpe2) plus
``check_actions`` and ``dtype`` (``torch.float32`` by default; ``torch.float64`` for bit-close
parity with mpe2, which computes in float64).
"""

from __future__ import annotations

from kdx.envs.mpe.core import MpeEnv
from kdx.envs.mpe.simple_reference import ReferenceConfig, SimpleReference, make_simple_reference
from kdx.envs.mpe.simple_speaker_listener import (
    SimpleSpeakerListener,
    SpeakerListenerConfig,
    make_simple_speaker_listener,
)
from kdx.envs.mpe.simple_spread import SimpleSpread, SpreadConfig, make_simple_spread
from kdx.envs.registry import register

register(
    "mpe/simple_spread",
    make_simple_spread,
    "N agents cover N landmarks without colliding (mpe2 simple_spread_v3; kwargs N, local_ratio, max_cycles)",
    family="mpe",
)
register(
    "mpe/simple_speaker_listener",
    make_simple_speaker_listener,
    "a speaker names the goal landmark, a listener walks there (mpe2 simple_speaker_listener_v4)",
    family="mpe",
)
register(
    "mpe/simple_reference",
    make_simple_reference,
    "two agents each tell the other its goal and walk to their own (mpe2 simple_reference_v3)",
    family="mpe",
)

__all__ = [
    "MpeEnv",
    "ReferenceConfig",
    "SimpleReference",
    "SimpleSpeakerListener",
    "SimpleSpread",
    "SpeakerListenerConfig",
    "SpreadConfig",
    "make_simple_reference",
    "make_simple_speaker_listener",
    "make_simple_spread",
]
