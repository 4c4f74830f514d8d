"""TORCH-FREE on-device runtime: bundle loading, backends, per-agent policies, profiling.

Nothing in this package may import torch; ``tests/runtime/test_torch_free.py`` enforces it.

    from kdx.runtime import Bundle
    bundle = Bundle.load("bundles/rpi")               # manifest + every file's sha256 checked
    policy = bundle.policy("agent_0", backend="auto") # fastest backend measured here
    policy.reset()                                    # start of an episode
    action = policy.act(obs, mask=None)               # obs float32 [obs_dim] -> int
"""

from __future__ import annotations

from kdx.lazy import lazy_exports

# Lazy so that `kdx-runtime --help` does not pay for numpy and the backends.
_LAZY = {
    "Bundle": "kdx.runtime.bundle",
    "Policy": "kdx.runtime.policy",
    "Manifest": "kdx.runtime.manifest",
}
__getattr__ = lazy_exports("kdx.runtime", _LAZY)

__all__ = list(_LAZY)
