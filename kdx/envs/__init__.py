"""Batched multi-agent environments (torch, batch-first) and their registry.

``kdx.envs.make(name, num_envs=..., seed=..., device=...)`` builds any registered env;
``kdx.envs.available()`` lists them. See ``kdx.envs.base`` for the API and its shapes.
"""

from kdx.envs.base import AgentSpec, BatchedEnv, EnvSpec, EnvStep, pad_and_stack
from kdx.envs.registry import available, make, prefixes, register, register_prefix

__all__ = [
    "AgentSpec",
    "BatchedEnv",
    "EnvSpec",
    "EnvStep",
    "available",
    "make",
    "pad_and_stack",
    "prefixes",
    "register",
    "register_prefix",
]
