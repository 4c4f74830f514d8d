"""Pins the skirmish simulator's trajectories bit for bit.

A seeded 200-step rollout with random legal actions (drawn from the env's own generator) on 3m,
8m, MMM and 2s3z, hashed over every step's observations, action masks, global state, rewards,
done and win flags (as float32). The hashes were recorded from the simulator before its
small-batch speed work (issue 16 item 6); any change to them is a change of behaviour, not of
speed. Float reductions can round differently on another CPU's vector width; if only that machine
disagrees, compare against the old code there before re-pinning.
"""

from __future__ import annotations

import hashlib

import pytest
import torch

from kdx.envs.skirmish import SkirmishEnv, combat

GOLDEN = {
    "3m": "305ed48d5565ca66aeea8aef6e77e16454010894f1a883ced7c772f6c3b19d63",
    "8m": "def4f32b104491e41c0d40ca9e6e9e051a150185253af02939abfa13eefaf19f",
    "MMM": "92c7645f2c8bc555bdbebb6ac47a959cd6a704dad5132b736738064290f955a0",
    "2s3z": "a4287f15281be275f6197ca3ba5cbe7eb66b729ba6816fa6c6948899f9f09b30",
}


def trajectory_sha256(map_name: str, steps: int = 200, num_envs: int = 16, seed: int = 7) -> str:
    """sha256 of a seeded random-action rollout: every step's obs, masks, state, reward, done, won."""
    env = SkirmishEnv(map_name, num_envs=num_envs, seed=seed)
    out = env.reset()
    digest = hashlib.sha256()
    for _ in range(steps):
        out = env.step(env.sample_random_actions())
        for t in (*out.obs, *out.action_mask, out.state, out.reward, out.done, out.info["won"]):
            digest.update(t.to(torch.float32).contiguous().numpy().tobytes())
    return digest.hexdigest()


@pytest.mark.parametrize("map_name", sorted(GOLDEN))
def test_trajectory_is_unchanged(map_name):
    assert trajectory_sha256(map_name) == GOLDEN[map_name]


@pytest.mark.parametrize("map_name", ["8m", "MMM"])
def test_large_batch_lookups_give_the_same_trajectory(map_name, monkeypatch):
    # Large batches look pair tables up with index_select instead of take; forcing that path at
    # this small batch must not change a bit.
    monkeypatch.setattr(combat, "_TAKE_MAX_INDICES", 0)
    monkeypatch.setattr(torch, "take", lambda *a: pytest.fail("take used above the threshold"))
    assert trajectory_sha256(map_name) == GOLDEN[map_name]
