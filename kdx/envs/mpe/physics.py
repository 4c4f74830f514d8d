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


def contact_scale(dist: torch.Tensor, radius_sum: float, c: WorldConstants = WORLD) -> torch.Tensor:
    """Soft-contact push per unit offset for particle pairs at distance ``dist`` (any shape).

    mpe2 (``World.get_collision_force``) pushes ``a`` away from ``b`` with
    ``contact_force * (pos_a - pos_b) / d * penetration``, where ``penetration =
    k * log(1 + exp(-(d - d_min) / k))``, ``d_min = size_a + size_b``, ``k = contact_margin``.
    This returns ``contact_force * penetration / d``: multiply by ``pos_a - pos_b`` for the force.
    """
    # softplus(x, beta=1/k) = k * log(1 + exp(x / k)); linear beyond 50 (exp(-50) is below
    # float64 resolution there).
    penetration = F.softplus(radius_sum - dist, beta=1.0 / c.contact_margin, threshold=50.0)
    return penetration * c.contact_force / dist


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
