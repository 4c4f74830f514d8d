"""Rollout collection for MAPPO: ``T`` steps of ``B`` batched envs into a ``RolloutBuffer``.

Shapes: ``T`` = rollout length, ``B`` = num_envs, ``A`` = agents, ``D`` = max obs dim,
``K`` = max actions, ``S`` = state dim, ``H`` = GRU width.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import torch

from kdx.envs.base import BatchedEnv, EnvStep
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
    final_states, final_obs, done_at = [], [], []
    returns, lengths, wins = [], [], []
    for t in range(length):
        obs, mask, state = step.padded_obs(), step.padded_action_mask(), step.state
        out = teacher.actor(obs, hidden)
        log_probs = masked_log_probs(out.logits, mask)
        actions = sample_actions(log_probs, generator)
        old_v = teacher.critic(state, obs)
        nxt = env.step(actions)
        done = nxt.done
        obs_l.append(obs)
        mask_l.append(mask)
        state_l.append(state)
        act_l.append(actions)
        logp_l.append(log_probs.gather(-1, actions.unsqueeze(-1)).squeeze(-1))
        v_l.append(old_v)
        rew_l.append(nxt.reward)
        term_l.append(nxt.terminated)
        done_l.append(done)
        hidden = out.hidden
        if bool(done.any()):
            idx = done.nonzero().squeeze(1)
            final_states.append(nxt.info["final_state"][idx])
            final_obs.append(obs[idx])  # agent-specific critics pair the final state with the last obs
            done_at.append((t, idx))
            returns += nxt.info["episode_return"][idx].tolist()
            lengths += nxt.info["episode_length"][idx].float().tolist()
            wins += nxt.info["won"][idx].float().tolist()
            if hidden is not None:
                hidden = hidden.masked_fill(done.view(-1, 1, 1), 0.0)
        step = nxt
    old_values = torch.stack(v_l)
    last_v = teacher.critic(step.state, step.padded_obs())
    next_norm = torch.cat([old_values[1:], last_v.unsqueeze(0)])
    if done_at:
        final_v = teacher.critic(torch.cat(final_states), torch.cat(final_obs))
        row = 0
        for t, idx in done_at:
            next_norm[t, idx] = final_v[row : row + len(idx)]
            row += len(idx)
    vn = teacher.value_norm
    buffer = RolloutBuffer(
        obs=torch.stack(obs_l), masks=torch.stack(mask_l), states=torch.stack(state_l),
        actions=torch.stack(act_l), log_probs=torch.stack(logp_l), old_values=old_values,
        values=vn.denormalize(old_values), next_values=vn.denormalize(next_norm),
        rewards=torch.stack(rew_l), terminated=torch.stack(term_l), done=torch.stack(done_l),
        hidden0=hidden0, episode_returns=returns, episode_lengths=lengths, episode_wins=wins,
    )
    return buffer, step, hidden
