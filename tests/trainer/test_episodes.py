"""Final-state bootstrapping and hidden-state resets shared by both stages' rollouts."""

from __future__ import annotations

import pytest
import torch

from kdx.envs.registry import make
from kdx.trainer.common.episodes import EndedEpisodes, bootstrap_next_values, reset_ended


def test_bootstrap_next_values_matches_a_plain_loop():
    g = torch.Generator().manual_seed(0)
    T, B, A = 6, 5, 3
    values = torch.randn(T, B, A, generator=g)
    last = torch.randn(B, A, generator=g)
    done = torch.rand(T, B, generator=g) < 0.35
    done[-1, 0] = True  # an episode ending at the last step bootstraps from its final state too
    final = torch.randn(int(done.sum()), A, generator=g)
    got = bootstrap_next_values(values, last, final, done)
    row = 0
    for t in range(T):
        for b in range(B):
            if done[t, b]:
                expected = final[row]
                row += 1
            else:
                expected = values[t + 1, b] if t + 1 < T else last[b]
            assert torch.equal(got[t, b], expected), (t, b)
    assert row == len(final)
    assert torch.equal(values, values.clone())  # the input is not written to


def test_bootstrap_next_values_refuses_a_wrong_number_of_final_values():
    done = torch.tensor([[True, False], [False, True]])
    with pytest.raises(ValueError, match="one row per ended episode"):
        bootstrap_next_values(torch.zeros(2, 2, 1), torch.zeros(2, 1), torch.zeros(1, 1), done)


def _critic(state: torch.Tensor, obs: torch.Tensor) -> torch.Tensor:
    """A deterministic stand-in value ``[N, A]`` that depends on both the state and each agent's obs."""
    s_weights = torch.arange(1.0, state.shape[-1] + 1)
    o_weights = torch.arange(1.0, obs.shape[-1] + 1) * 10
    return (state * s_weights).sum(-1, keepdim=True) + (obs * o_weights).sum(-1)


def test_ended_episodes_bootstrap_from_the_final_state_not_the_reset_one():
    env = make("toy/match", num_envs=4, seed=0)  # episodes of 4 steps: two endings per env in 8 steps
    step = env.reset()
    gen = torch.Generator().manual_seed(0)
    ended, values, done, seen = EndedEpisodes(), [], [], []
    for _ in range(8):
        obs = step.padded_obs()
        values.append(_critic(step.state, obs))
        actions = torch.stack([torch.randint(0, 3, (4,), generator=gen)] * 2, dim=1)
        nxt = env.step(actions)
        ended.record(obs, nxt)
        seen.append((obs, nxt))
        done.append(nxt.done)
        step = nxt
    values_t, done_t = torch.stack(values), torch.stack(done)
    assert int(done_t.sum()) == 8 == len(ended.returns) == len(ended.lengths) == len(ended.wins)
    assert ended.lengths == [4.0] * 8
    got = ended.next_values(_critic, values_t, step, done_t)
    for t, (obs, nxt) in enumerate(seen):
        for b in range(4):
            if nxt.done[b]:
                state, agent_obs = nxt.info["final_state"][b], obs[b]
            else:
                state, agent_obs = nxt.state[b], nxt.padded_obs()[b]
            assert torch.equal(got[t, b], _critic(state[None], agent_obs[None])[0]), (t, b)
    # the reset state would have given another value: the bootstrap really used the final one
    t_end = next(t for t, (_, nxt) in enumerate(seen) if nxt.done.any())
    reset_value = _critic(seen[t_end][1].state, seen[t_end][1].padded_obs())
    assert not torch.equal(got[t_end], reset_value)


def test_ended_episodes_without_endings_bootstrap_from_the_next_step():
    env = make("toy/match", num_envs=3, seed=1)
    step = env.reset()
    ended = EndedEpisodes()
    obs = step.padded_obs()
    values = _critic(step.state, obs)[None]
    nxt = env.step(torch.zeros(3, 2, dtype=torch.long))
    ended.record(obs, nxt)
    assert not ended.final_states
    got = ended.next_values(_critic, values, nxt, nxt.done[None])
    assert torch.equal(got[0], _critic(nxt.state, nxt.padded_obs()))


def test_reset_ended_zeroes_only_the_ended_envs():
    hidden = torch.ones(3, 2, 4)
    out = reset_ended(hidden, torch.tensor([False, True, False]))
    assert out[1].abs().sum() == 0 and torch.equal(out[[0, 2]], hidden[[0, 2]])
    assert reset_ended(None, torch.tensor([True])) is None
