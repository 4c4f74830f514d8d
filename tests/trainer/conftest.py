"""Registers ``toy/match`` (see trainer_toy_env.py) for the trainer tests."""

from __future__ import annotations

import pytest
from trainer_toy_env import ToyMatchEnv


@pytest.fixture(scope="session", autouse=True)
def toy_env_registered():
    """Register ``toy/match`` once for the trainer tests."""
    from kdx.envs import registry

    registry.available()
    if "toy/match" not in registry.ENVS:
        registry.register("toy/match", ToyMatchEnv, "trainer test env", "toy")
    yield
