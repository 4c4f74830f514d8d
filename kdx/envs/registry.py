"""The environment registry: one dict from name to factory, filled in one place.

Families register themselves with ``register(name, factory, description)``; open-ended families
(``pettingzoo:<module>.<env>``) register a prefix with ``register_prefix``. Each entry carries its
PettingZoo twin, if any, from the torch-free table in ``kdx.envs.twins``.
"""

from __future__ import annotations

import importlib
from collections.abc import Callable
from dataclasses import dataclass

from kdx.envs.base import BatchedEnv
from kdx.envs.twins import pettingzoo_twin
from kdx.errors import KdxError

EnvFactory = Callable[..., BatchedEnv]


@dataclass(frozen=True)
class EnvEntry:
    """A registered environment: how to build it, one line about it, and the PettingZoo env
    (``pettingzoo:<module>.<env>``) the torch-free runtime plays it in, if there is one."""

    name: str
    factory: EnvFactory
    description: str
    family: str
    pettingzoo_twin: str | None = None


ENVS: dict[str, EnvEntry] = {}
PREFIXES: dict[str, EnvEntry] = {}

# Modules that fill the registry when imported. Listed once, here.
_FAMILY_MODULES = (
    "kdx.envs.mpe",
    "kdx.envs.skirmish",
    "kdx.envs.smac",
    "kdx.envs.pettingzoo",
)
_loaded = False


def register(name: str, factory: EnvFactory, description: str, family: str) -> None:
    """Add ``name`` to the registry (names are unique)."""
    if name in ENVS:
        raise KdxError(f"environment {name!r} is registered twice")
    ENVS[name] = EnvEntry(name, factory, description, family, pettingzoo_twin(name))


def register_prefix(prefix: str, factory: EnvFactory, description: str, family: str) -> None:
    """Register an open family: ``factory(suffix, ...)`` builds ``prefix + suffix``."""
    PREFIXES[prefix] = EnvEntry(prefix + "<...>", factory, description, family)


def _load_families() -> None:
    global _loaded
    if _loaded:
        return
    _loaded = True
    for module in _FAMILY_MODULES:
        try:
            importlib.import_module(module)
        except ModuleNotFoundError as exc:
            # A family whose module does not exist yet (or whose own optional dependency is
            # missing at import time) simply offers no envs.
            if exc.name and (exc.name == module or module.startswith(exc.name)):
                continue
            raise


def available() -> dict[str, EnvEntry]:
    """Every registered environment (fixed names), in registration order."""
    _load_families()
    return dict(ENVS)


def prefixes() -> dict[str, EnvEntry]:
    """Open families such as ``pettingzoo:``."""
    _load_families()
    return dict(PREFIXES)


def make(name: str, num_envs: int = 1, seed: int = 0, device: str = "cpu", **kwargs) -> BatchedEnv:
    """Build environment ``name`` with ``num_envs`` batched copies.

    Example: ``make("mpe/simple_spread", num_envs=1024, seed=0, device="cpu")``.
    """
    _load_families()
    entry = ENVS.get(name)
    if entry is not None:
        return entry.factory(num_envs=num_envs, seed=seed, device=device, **kwargs)
    for prefix, p_entry in PREFIXES.items():
        if name.startswith(prefix):
            return p_entry.factory(name[len(prefix) :], num_envs=num_envs, seed=seed, device=device, **kwargs)
    names = ", ".join(ENVS) or "(none)"
    pre = ", ".join(e.name for e in PREFIXES.values())
    raise KdxError(
        f"unknown environment {name!r}. Available: {names}"
        + (f"; open families: {pre}" if pre else "")
        + ". Run `kdx envs list` to see them with descriptions."
    )
