"""Generalised advantage estimation (Schulman et al., 2016) over batched, auto-resetting envs."""

from __future__ import annotations

import torch


def gae_advantages(
    rewards: torch.Tensor,
    values: torch.Tensor,
    next_values: torch.Tensor,
    terminated: torch.Tensor,
    done: torch.Tensor,
    gamma: float,
    lam: float,
) -> tuple[torch.Tensor, torch.Tensor]:
    """Advantages and returns, both ``[T, B, A]``.

    Args:
        rewards: ``[T, B, A]`` reward received after step ``t``.
        values: ``[T, B, A]`` V(s_t).
        next_values: ``[T, B, A]`` V(s_{t+1}) of the state step ``t`` led to; for an episode that
            ended at ``t`` this is the value of its final state (not of the reset state).
        terminated: ``bool [T, B]`` the episode reached a terminal state at ``t`` (no bootstrap).
        done: ``bool [T, B]`` the episode ended at ``t`` (terminated or truncated): the
            advantage trace is cut, but a truncated episode still bootstraps from ``next_values``.

    ``delta_t = r_t + gamma * (1 - terminated_t) * V(s_{t+1}) - V(s_t)`` and
    ``A_t = delta_t + gamma * lam * (1 - done_t) * A_{t+1}``; returns are ``A_t + V(s_t)``.
    """
    assert rewards.shape == values.shape == next_values.shape, "rewards/values/next_values shapes differ"
    assert terminated.shape == done.shape == rewards.shape[:2], "flags must be [T, B]"
    not_term = (~terminated).to(rewards.dtype).unsqueeze(-1)
    not_done = (~done).to(rewards.dtype).unsqueeze(-1)
    deltas = rewards + gamma * not_term * next_values - values
    advantages = torch.zeros_like(rewards)
    running = torch.zeros_like(rewards[0])
    for t in reversed(range(rewards.shape[0])):
        running = deltas[t] + gamma * lam * not_done[t] * running
        advantages[t] = running
    return advantages, advantages + values
