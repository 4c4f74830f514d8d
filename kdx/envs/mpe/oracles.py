"""Scripted oracle policies for the MPE scenarios, the upper anchor of normalised scores.

``ORACLES[name](env) -> long [num_envs, n_agents]`` reads the env's world tensors (it is a
script with privileged access, not a learner) and returns actions for the current state:

- simple_spread: agents take landmarks by the optimal assignment (least total distance, brute
  force over the N! permutations) and steer towards them;
- simple_speaker_listener: the speaker says the goal's index; the listener steers to the landmark
  the speaker's last word names (it stays put until it has heard one);
- simple_reference: each agent says the goal it knows (the other's) and steers to the landmark
  the other agent's last word names.

Steering is a one-step lookahead: of the five moves, pick the one whose *resting point* (where
the agent would coast to if it stopped acting: ``pos + vel*dt + vel'*dt / damping``) lands
closest to the target. Coasting into account makes it brake in time instead of orbiting.
"""

from __future__ import annotations

import itertools
from collections.abc import Callable

import torch

from kdx.envs.mpe import physics
from kdx.envs.mpe.core import MpeEnv
from kdx.envs.mpe.simple_speaker_listener import LISTENER, SPEAKER
from kdx.errors import KdxError

MAX_ASSIGNMENT_AGENTS = 7  # 7! = 5040 permutations: brute force stays cheap up to here


def steer_towards(pos: torch.Tensor, vel: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
    """``long [...]``: the move (0..4) whose resting point lands nearest ``target``.

    ``pos``, ``vel``, ``target``: ``[..., 2]``.
    """
    c = physics.WORLD
    forces = physics.move_force_table(c.sensitivity, pos.dtype, pos.device)  # [5, 2]
    next_pos = pos + vel * c.dt
    next_vel = vel[..., None, :] * (1.0 - c.damping) + forces * c.dt  # [..., 5, 2]
    rest = next_pos[..., None, :] + next_vel * (c.dt / c.damping)
    miss = (rest - target[..., None, :]).square().sum(-1)
    return miss.argmin(dim=-1)


def best_assignment(cost: torch.Tensor) -> torch.Tensor:
    """``long [B, N]``: landmark per agent minimising the summed ``cost [B, N agents, N landmarks]``."""
    n = cost.shape[1]
    if n > MAX_ASSIGNMENT_AGENTS:
        raise KdxError(
            f"the simple_spread oracle brute-forces assignments for at most {MAX_ASSIGNMENT_AGENTS} agents, got {n}"
        )
    perms = torch.tensor(list(itertools.permutations(range(n))), dtype=torch.long, device=cost.device)  # [P, N]
    # total[b, p] = sum_i cost[b, i, perms[p, i]]
    picked = cost[:, torch.arange(n, device=cost.device)[None, :], perms]  # [B, P, N]
    best = picked.sum(dim=2).argmin(dim=1)
    return perms[best]


def spread_oracle(env: MpeEnv) -> torch.Tensor:
    dist = (env.agent_pos[:, :, None, :] - env.landmark_pos[:, None, :, :]).square().sum(-1).sqrt()
    assignment = best_assignment(dist)  # [B, N]
    target = env.landmark_pos.gather(1, assignment[:, :, None].expand(-1, -1, 2))
    return steer_towards(env.agent_pos, env.agent_vel, target)


def _heard_landmark(env: MpeEnv, speaker: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """Landmark index named by each env's ``speaker`` utterance ``[B, dim_c]``, and whether
    anything was said yet (an all-zero utterance means silence)."""
    word = speaker.argmax(dim=-1).clamp(max=env.n_landmarks - 1)
    return word, speaker.abs().sum(-1) > 0


def speaker_listener_oracle(env: MpeEnv) -> torch.Tensor:
    say = env.goal[:, 0]
    heard, said = _heard_landmark(env, env.comm[:, SPEAKER])
    target = env.landmark_pos.gather(1, heard[:, None, None].expand(-1, 1, 2)).squeeze(1)
    move = steer_towards(env.agent_pos[:, LISTENER], env.agent_vel[:, LISTENER], target)
    move = torch.where(said, move, torch.zeros_like(move))
    return torch.stack((say, move), dim=1)


def reference_oracle(env: MpeEnv) -> torch.Tensor:
    say = env.goal  # agent i knows the goal of the other agent: it says it
    other_comm = env.comm[:, [1, 0]]  # what each agent hears
    heard, said = _heard_landmark(env, other_comm)  # [B, 2]
    target = env.landmark_pos.gather(1, heard[:, :, None].expand(-1, -1, 2))
    move = steer_towards(env.agent_pos, env.agent_vel, target)
    move = torch.where(said, move, torch.zeros_like(move))
    return say * physics.N_MOVES + move


ORACLES: dict[str, Callable[[MpeEnv], torch.Tensor]] = {
    "mpe/simple_spread": spread_oracle,
    "mpe/simple_speaker_listener": speaker_listener_oracle,
    "mpe/simple_reference": reference_oracle,
}


def oracle_actions(env: MpeEnv) -> torch.Tensor:
    """The scripted oracle's actions ``long [num_envs, n_agents]`` for ``env``'s current state."""
    fn = ORACLES.get(env.spec.name)
    if fn is None:
        raise KdxError(f"no scripted oracle for {env.spec.name!r}; oracles exist for: {', '.join(ORACLES)}")
    return fn(env)
