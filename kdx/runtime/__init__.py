"""TORCH-FREE on-device runtime: bundle loading, backends, per-agent policies, profiling.

Nothing in this package may import torch; ``tests/runtime/test_torch_free.py`` enforces it.

    from kdx.runtime import Bundle
    bundle = Bundle.load("bundles/rpi")               # manifest + every file's sha256 checked
    policy = bundle.policy("agent_0", backend="auto") # fastest backend measured here
    policy.reset()                                    # start of an episode
    action = policy.act(obs, mask=None)               # obs float32 [obs_dim] -> int
"""

from __future__ import annotations

from typing import Any

_LAZY = {
    "Bundle": "kdx.runtime.bundle",
    "Policy": "kdx.runtime.policy",
    "Manifest": "kdx.runtime.manifest",
}


def __getattr__(name: str) -> Any:
    # Lazy so that `kdx-runtime --help` does not pay for numpy and the backends.
    if name in _LAZY:
        import importlib

        return getattr(importlib.import_module(_LAZY[name]), name)
    raise AttributeError(f"module 'kdx.runtime' has no attribute {name!r}")


__all__ = list(_LAZY)
