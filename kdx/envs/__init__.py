"""Batched multi-agent environments (torch, batch-first) and their registry.

``kdx.envs.make(name, num_envs=..., seed=..., device=...)`` builds any registered env;
``kdx.envs.available()`` lists them. See ``kdx.envs.base`` for the API and its shapes.

The exports are lazy so that the torch-free ``kdx.envs.twins`` can be imported (by the runtime)
without importing torch through this package.
"""

from __future__ import annotations

from kdx.lazy import lazy_exports

_LAZY = {
    **dict.fromkeys(("AgentSpec", "BatchedEnv", "EnvSpec", "EnvStep", "pad_and_stack"), "kdx.envs.base"),
    **dict.fromkeys(("available", "make", "prefixes", "register", "register_prefix"), "kdx.envs.registry"),
}
__getattr__ = lazy_exports("kdx.envs", _LAZY)

__all__ = list(_LAZY)
