"""The observation blocks MPE scenarios are made of (see ``kdx.envs.obs_layout``).

``self`` (velocity, and position where observed), ``landmark.j`` (landmark j's offset from the
agent), ``agent.k`` (the k-th other agent's offset), ``comm.k`` (the k-th other agent's
utterance), ``goal`` (a goal landmark's colour). Each scenario lists its blocks in
``_make_layouts`` in the order its observation concatenates them.
"""

from __future__ import annotations

from kdx.envs.obs_layout import Entity

Block = tuple[str, Entity, tuple[str, ...]]

OFFSET = ("dx", "dy")  # position of a landmark or another agent minus this agent's
SELF_VELOCITY: Block = ("self", Entity("self"), ("vel_x", "vel_y"))
GOAL_COLOUR: Block = ("goal", Entity("goal"), ("red", "green", "blue"))


def landmark_blocks(n_landmarks: int) -> list[Block]:
    """``landmark.j``: landmark j's offset from the agent, for every landmark."""
    return [(f"landmark.{j}", Entity("landmark", j), OFFSET) for j in range(n_landmarks)]


def other_agent_blocks(n_others: int) -> list[Block]:
    """``agent.k``: the k-th other agent's offset from the agent (other agents in agent order)."""
    return [(f"agent.{k}", Entity("agent", k), OFFSET) for k in range(n_others)]


def comm_block(k: int, dim_c: int) -> Block:
    """``comm.k``: the k-th other agent's utterance (one-hot of its word; zeros when silent)."""
    return (f"comm.{k}", Entity("communication", k), tuple(f"word_{w}" for w in range(dim_c)))
