"""What both stages' rollouts do when episodes end inside a rollout of auto-resetting envs.

An env that ends an episode at step ``t`` resets at once, so the step it returns already shows
the next episode. GAE must still bootstrap the ended episode from its *own* final state
(``info["final_state"]``, paired with the agents' last observation for agent-specific critics),
and a recurrent policy must start the next episode from a zero hidden state.

Shapes: ``T`` rollout length, ``B`` envs, ``A`` agents, ``D`` max obs dim, ``S`` state dim,
``H`` GRU width.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field

import torch

from kdx.envs.base import EnvStep

#: ``critic(state [N, S], obs [N, A, D]) -> values [N, A]``
Critic = Callable[[torch.Tensor, torch.Tensor], torch.Tensor]


def bootstrap_next_values(values: torch.Tensor, last_values: torch.Tensor, final_values: torch.Tensor,
                          done: torch.Tensor) -> torch.Tensor:
    """``V(s_{t+1})`` for every step of a rollout, ``[T, B, A]``.

    Args:
        values: ``[T, B, A]`` V(s_t) as the rollout recorded it.
        last_values: ``[B, A]`` the value of the state the rollout stopped in (after its last step).
        final_values: ``[E, A]`` the value of each ended episode's final state, one row per
            ``True`` of ``done`` in row-major order (by step, then env).
        done: ``bool [T, B]`` the episode ended at step ``t``.

    Where no episode ended, the next value is the next step's value (the last one:
    ``last_values``); where one ended, it is that episode's final-state value, not the value of
    the reset state the env moved on to.
    """
    T, B = done.shape
    if values.shape[:2] != (T, B) or last_values.shape != values.shape[1:]:
        raise ValueError(f"values {tuple(values.shape)} / last_values {tuple(last_values.shape)} do not fit done {(T, B)}")
    if final_values.shape != (int(done.sum()), *values.shape[2:]):
        raise ValueError(f"final_values {tuple(final_values.shape)} needs one row per ended episode ({int(done.sum())})")
    next_values = torch.cat([values[1:], last_values.unsqueeze(0)])
    next_values[done] = final_values
    return next_values


def reset_ended(hidden: torch.Tensor | None, done: torch.Tensor) -> torch.Tensor | None:
    """GRU state ``[B, A, H]`` zeroed for the envs whose episode ended (``done bool [B]``);
    ``None`` (a feed-forward policy) stays ``None``."""
    return None if hidden is None else hidden.masked_fill(done.view(-1, 1, 1), 0.0)


@dataclass
class EndedEpisodes:
    """The episodes that ended during one rollout: final states and last observations (to
    bootstrap their values), returns, lengths and win flags (for the metrics)."""

    final_states: list[torch.Tensor] = field(default_factory=list)  # [n_t, S] per step with endings
    final_obs: list[torch.Tensor] = field(default_factory=list)     # [n_t, A, D]
    returns: list[float] = field(default_factory=list)
    lengths: list[float] = field(default_factory=list)
    wins: list[float] = field(default_factory=list)

    def record(self, obs: torch.Tensor, nxt: EnvStep) -> None:
        """After ``nxt = env.step(...)`` taken on observations ``obs [B, A, D]``."""
        if not bool(nxt.done.any()):
            return
        idx = nxt.done.nonzero().squeeze(1)
        self.final_states.append(nxt.info["final_state"][idx])
        self.final_obs.append(obs[idx])  # agent-specific critics pair the final state with the last obs
        self.returns += nxt.info["episode_return"][idx].tolist()
        self.lengths += nxt.info["episode_length"][idx].float().tolist()
        self.wins += nxt.info["won"][idx].float().tolist()

    def next_values(self, critic: Critic, values: torch.Tensor, last_step: EnvStep, done: torch.Tensor) -> torch.Tensor:
        """:func:`bootstrap_next_values` with ``critic``'s values of the rollout's last state and of
        the recorded final states; ``values [T, B, A]`` and ``done bool [T, B]`` as recorded."""
        last_values = critic(last_step.state, last_step.padded_obs())
        if self.final_states:
            final_values = critic(torch.cat(self.final_states), torch.cat(self.final_obs))
        else:
            final_values = values.new_zeros((0, *values.shape[2:]))
        return bootstrap_next_values(values, last_values, final_values, done)
