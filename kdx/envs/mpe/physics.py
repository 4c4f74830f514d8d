"""MPE particle physics as pure, batched torch functions.

The constants and the update order follow mpe2 (``mpe2._mpe_utils.core.World`` and
``SimpleEnv._set_action``): a discrete move picks a unit force along one axis, scaled by the
sensitivity (5.0 unless the agent sets ``accel``); colliding pairs push each other apart with a
soft-contact force; then ``pos += vel * dt``, ``vel *= 1 - damping``, ``vel += force / mass * dt``
(mass 1, no speed limit and no noise in the scenarios kdx ships).

Shapes: positions and velocities are ``[num_envs, n_entities, 2]``.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
import torch.nn.functional as F


@dataclass(frozen=True)
class WorldConstants:
    """mpe2's world constants (``World.__init__`` and ``SimpleEnv._set_action``)."""

    dt: float = 0.1
    damping: float = 0.25
    contact_force: float = 1e2
    contact_margin: float = 1e-3
    sensitivity: float = 5.0


WORLD = WorldConstants()

# Discrete move index -> unit force, in mpe2's order:
# 0 no-op, 1 left (-x), 2 right (+x), 3 down (-y), 4 up (+y).
MOVE_DIRECTIONS = ((0.0, 0.0), (-1.0, 0.0), (1.0, 0.0), (0.0, -1.0), (0.0, 1.0))
N_MOVES = len(MOVE_DIRECTIONS)


def move_force_table(sensitivity: float, dtype: torch.dtype, device: torch.device) -> torch.Tensor:
    """``[N_MOVES, 2]``: the force each discrete move applies (direction x sensitivity)."""
    return torch.tensor(MOVE_DIRECTIONS, dtype=dtype, device=device) * sensitivity


def pairwise_offsets(pos: torch.Tensor) -> torch.Tensor:
    """``[B, n, n, 2]`` with ``out[b, i, j] = pos[b, i] - pos[b, j]``."""
    return pos[:, :, None, :] - pos[:, None, :, :]


def contact_forces(pos: torch.Tensor, radius_sum: float, c: WorldConstants = WORLD) -> torch.Tensor:
    """Soft-contact forces between every pair of equal colliding particles, ``[B, n, 2]``.

    For a pair at distance ``d`` with ``d_min = size_a + size_b`` mpe2 uses
    ``penetration = k * log(1 + exp(-(d - d_min) / k))`` and pushes ``a`` by
    ``contact_force * (pos_a - pos_b) / d * penetration`` (and ``b`` by its negative).
    Summing over ``j`` gives each particle's total; the self-pair is masked out.
    """
    delta = pairwise_offsets(pos)
    n = pos.shape[1]
    eye = torch.eye(n, dtype=torch.bool, device=pos.device)
    dist = delta.square().sum(-1).sqrt()
    # The self-pair has d = 0; a dummy distance of 1 avoids 0/0 before it is masked out.
    dist = dist.masked_fill(eye, 1.0)
    k = c.contact_margin
    penetration = F.softplus((radius_sum - dist) / k, threshold=50.0) * k
    scale = (c.contact_force * penetration / dist).masked_fill(eye, 0.0)
    return (delta * scale[..., None]).sum(dim=2)


def integrate(
    pos: torch.Tensor, vel: torch.Tensor, force: torch.Tensor, c: WorldConstants = WORLD
) -> tuple[torch.Tensor, torch.Tensor]:
    """One Euler step in mpe2's order: position moves with the *old* velocity."""
    new_pos = pos + vel * c.dt
    new_vel = vel * (1.0 - c.damping) + force * c.dt
    return new_pos, new_vel


def decode_actions(actions: torch.Tensor, movable: bool, silent: bool) -> tuple[torch.Tensor | None, torch.Tensor | None]:
    """Split mpe2's discrete action into ``(move, word)``.

    mpe2 numbers a movable, speaking agent's actions ``word * 5 + move``; an agent that only
    moves or only speaks uses the index directly.
    """
    if movable and silent:
        return actions, None
    if movable:
        return actions % N_MOVES, actions // N_MOVES
    return None, actions
