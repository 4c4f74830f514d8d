"""Rollout collection for MAPPO: ``T`` steps of ``B`` batched envs into a ``RolloutBuffer``.

Shapes: ``T`` = rollout length, ``B`` = num_envs, ``A`` = agents, ``D`` = max obs dim,
``K`` = max actions, ``S`` = state dim, ``H`` = GRU width.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import torch

from kdx.envs.base import BatchedEnv, EnvStep
from kdx.trainer.common.episodes import EndedEpisodes, reset_ended
from kdx.trainer.common.ppo_losses import masked_log_probs
from kdx.trainer.common.sampling import sample_actions
from kdx.trainer.teacher.model import Teacher


@dataclass
class RolloutBuffer:
    """One rollout. ``values``/``next_values`` are denormalised; ``old_values`` as the critic said."""

    obs: torch.Tensor          # [T, B, A, D]
    masks: torch.Tensor        # bool [T, B, A, K]
    states: torch.Tensor       # [T, B, S]
    actions: torch.Tensor      # long [T, B, A]
    log_probs: torch.Tensor    # [T, B, A]
    old_values: torch.Tensor   # [T, B, A], normalised units (critic output)
    values: torch.Tensor       # [T, B, A]
    next_values: torch.Tensor  # [T, B, A], V(s_{t+1}); of the final state where the episode ended
    rewards: torch.Tensor      # [T, B, A]
    terminated: torch.Tensor   # bool [T, B]
    done: torch.Tensor         # bool [T, B]
    hidden0: torch.Tensor | None  # [B, A, H] GRU state at the rollout's first step
    episode_returns: list[float] = field(default_factory=list)
    episode_lengths: list[float] = field(default_factory=list)
    episode_wins: list[float] = field(default_factory=list)


@torch.no_grad()
def collect_rollout(env: BatchedEnv, teacher: Teacher, step: EnvStep, hidden: torch.Tensor | None,
                    length: int, generator: torch.Generator) -> tuple[RolloutBuffer, EnvStep, torch.Tensor | None]:
    """Act ``length`` steps with the sampled policy; returns the buffer, next step and hidden."""
    hidden0 = None if hidden is None else hidden.clone()
    obs_l, mask_l, state_l, act_l, logp_l, v_l, rew_l, term_l, done_l = ([] for _ in range(9))
    ended = EndedEpisodes()
    for _ in range(length):
        obs, mask, state = step.padded_obs(), step.padded_action_mask(), step.state
        out = teacher.actor(obs, hidden, state)
        log_probs = masked_log_probs(out.logits, mask)
        actions = sample_actions(log_probs, generator)
        old_v = teacher.critic(state, obs)
        nxt = env.step(actions)
        obs_l.append(obs)
        mask_l.append(mask)
        state_l.append(state)
        act_l.append(actions)
        logp_l.append(log_probs.gather(-1, actions.unsqueeze(-1)).squeeze(-1))
        v_l.append(old_v)
        rew_l.append(nxt.reward)
        term_l.append(nxt.terminated)
        done_l.append(nxt.done)
        ended.record(obs, nxt)
        hidden = reset_ended(out.hidden, nxt.done)
        step = nxt
    old_values, done = torch.stack(v_l), torch.stack(done_l)
    next_norm = ended.next_values(teacher.critic, old_values, step, done)
    vn = teacher.value_norm
    buffer = RolloutBuffer(
        obs=torch.stack(obs_l), masks=torch.stack(mask_l), states=torch.stack(state_l),
        actions=torch.stack(act_l), log_probs=torch.stack(logp_l), old_values=old_values,
        values=vn.denormalize(old_values), next_values=vn.denormalize(next_norm),
        rewards=torch.stack(rew_l), terminated=torch.stack(term_l), done=done,
        hidden0=hidden0, episode_returns=ended.returns, episode_lengths=ended.lengths, episode_wins=ended.wins,
    )
    return buffer, step, hidden
