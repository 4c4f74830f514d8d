"""Registers ``toy/match`` and ``toy/lazy`` (see trainer_toy_env.py) for the trainer tests."""

from __future__ import annotations

import pytest
from trainer_toy_env import LazyCacheEnv, ToyMatchEnv


@pytest.fixture(scope="session", autouse=True)
def toy_env_registered():
    """Register the toy envs once for the trainer tests."""
    from kdx.envs import registry

    registry.available()
    if "toy/match" not in registry.ENVS:
        registry.register("toy/match", ToyMatchEnv, "trainer test env", "toy")
    if "toy/lazy" not in registry.ENVS:
        registry.register("toy/lazy", LazyCacheEnv, "trainer test env with a lazily built tensor", "toy")
    yield
