"""Teacher networks: a shared (or per-group) actor and a centralised critic.

Both are plain ``torch.nn`` modules built from Linear, LayerNorm, an activation and an optional
GRU cell, so that export can wrap them per agent (``TeacherActor.agent_view(i)``).

Shapes (batch-first, ``A`` agents, ``D`` = ``spec.max_obs_dim``, ``K`` = ``spec.max_actions``):

- ``TeacherActor(obs [B, A, D], hidden [B, A, H] | None, state [B, S] | None) -> ActorOutput`` with
  ``logits [B, A, K]`` (padded actions get ``MASKED_LOGIT``), ``embedding [B, A, H]`` (the last
  hidden layer, what distillation matches) and ``hidden [B, A, H] | None`` (the GRU state).
  A centralised actor (``state_dim > 0``) also reads the global ``state``: normalised on its own
  and projected by a zero-initialised linear layer into the first hidden layer's pre-activation
  (``ActorNet.state_in``), so it starts as the local actor and learns what the state adds; a local
  one (``state_dim == 0``) ignores ``state``.
- ``TeacherCritic(state [B, S], obs [B, A, D]) -> values [B, A]`` in normalised units: one head
  per agent on the global state, or with ``agent_specific_state`` one shared head on
  ``state + obs_i + one_hot(i)``.
"""

from __future__ import annotations

from typing import NamedTuple

import torch
from torch import nn

from kdx.envs.base import EnvSpec
from kdx.trainer.common.activations import activation_module
from kdx.trainer.common.sampling import MASKED_LOGIT


class ActorOutput(NamedTuple):
    logits: torch.Tensor
    embedding: torch.Tensor
    hidden: torch.Tensor | None


def orthogonal_init(layer: nn.Linear, gain: float) -> nn.Linear:
    nn.init.orthogonal_(layer.weight, gain=gain)
    nn.init.zeros_(layer.bias)
    return layer


def mlp_trunk(in_dim: int, hidden: tuple[int, ...], activation: str, input_norm: bool = True) -> nn.Sequential:
    """LayerNorm on the input (feature normalisation, optional), then [Linear, activation, LayerNorm]."""
    gain = nn.init.calculate_gain(activation)
    layers: list[nn.Module] = [nn.LayerNorm(in_dim)] if input_norm else []
    width = in_dim
    for h in hidden:
        layers += [orthogonal_init(nn.Linear(width, h), gain), activation_module(activation), nn.LayerNorm(h)]
        width = h
    return nn.Sequential(*layers)


class ActorNet(nn.Module):
    """One policy network: ``x [N, in_dim]`` (+ ``hidden [N, H]``) -> logits, embedding, hidden.

    With ``state_dim > 0`` it also takes ``state_term [N, hidden[0]]``, what ``state_in`` made of
    the global state, added to the first Linear's output before its activation. ``state_in`` is a
    LayerNorm of its own (so the state's statistics do not rescale the observation) and a Linear
    without bias whose weights start at zero: a fresh centralised actor is exactly a local one, and
    the state's weights grow only as far as the gradient finds the state useful.
    """

    def __init__(self, in_dim: int, n_actions: int, hidden: tuple[int, ...], activation: str,
                 recurrent: bool, input_norm: bool = True, state_dim: int = 0) -> None:
        super().__init__()
        self.in_dim, self.n_actions, self.recurrent = in_dim, n_actions, recurrent
        self.trunk = mlp_trunk(in_dim, hidden, activation, input_norm)
        self.first_linear = next(i for i, m in enumerate(self.trunk) if isinstance(m, nn.Linear))
        self.state_in: nn.Sequential | None = None
        if state_dim:
            project = nn.Linear(state_dim, hidden[0], bias=False)
            nn.init.zeros_(project.weight)
            self.state_in = nn.Sequential(*([nn.LayerNorm(state_dim)] if input_norm else []), project)
        width = hidden[-1]
        self.hidden_dim = width
        self.gru = nn.GRUCell(width, width) if recurrent else None
        self.gru_norm = nn.LayerNorm(width) if recurrent else None
        if self.gru is not None:
            for name, p in self.gru.named_parameters():
                if "weight" in name:
                    nn.init.orthogonal_(p)
                else:
                    nn.init.zeros_(p)
        self.head = orthogonal_init(nn.Linear(width, n_actions), 0.01)

    def forward(self, x: torch.Tensor, hidden: torch.Tensor | None = None,
                state_term: torch.Tensor | None = None) -> ActorOutput:
        if self.state_in is None:
            z = self.trunk(x)
        else:
            assert state_term is not None and state_term.shape[0] == x.shape[0], \
                "a centralised ActorNet needs state_term [N, hidden[0]] (state_in of the global state)"
            z = x
            for i, layer in enumerate(self.trunk):
                z = layer(z)
                if i == self.first_linear:
                    z = z + state_term
        if self.gru is not None:
            if hidden is None:
                hidden = z.new_zeros(z.shape[0], self.hidden_dim)
            hidden = self.gru(z, hidden)
            z = self.gru_norm(hidden)
        return ActorOutput(self.head(z), z, hidden)


class TeacherActor(nn.Module):
    """Shared actor over all agents (agent id one-hot appended), or one actor per group.

    Each group's network sees ``obs`` zero-padded to the group's widest observation, then the
    ``n_agents``-wide one-hot of the agent's index, and outputs the group's widest action count.
    A centralised actor (``state_dim > 0``) projects the global state once per env step with each
    group network's ``state_in`` and adds it to every agent's first hidden layer.
    """

    def __init__(self, spec: EnvSpec, hidden: tuple[int, ...], activation: str = "relu",
                 recurrent: bool = False, per_group: bool = False, input_norm: bool = True,
                 state_dim: int = 0) -> None:
        super().__init__()
        self.n_agents, self.max_obs_dim, self.max_actions = spec.n_agents, spec.max_obs_dim, spec.max_actions
        self.state_dim = state_dim
        names = spec.agent_names
        groups = spec.groups if per_group else {"shared": list(names)}
        self.group_agents: dict[str, list[int]] = {g: [names.index(n) for n in ms] for g, ms in groups.items()}
        self.group_obs_dim = {g: max(spec.agents[i].obs_dim for i in idx) for g, idx in self.group_agents.items()}
        self.group_actions = {g: max(spec.agents[i].n_actions for i in idx) for g, idx in self.group_agents.items()}
        self.agent_group = {i: g for g, idx in self.group_agents.items() for i in idx}
        self.nets = nn.ModuleDict({
            g: ActorNet(self.group_obs_dim[g] + spec.n_agents, self.group_actions[g], hidden, activation, recurrent,
                        input_norm, state_dim)
            for g in self.group_agents
        })
        self.recurrent = recurrent
        self.hidden_dim = hidden[-1]
        self.register_buffer("agent_ids", torch.eye(spec.n_agents), persistent=False)

    def initial_hidden(self, batch: int, device: torch.device | str = "cpu") -> torch.Tensor | None:
        """Zero GRU state ``[batch, A, H]``, or None for a feed-forward actor."""
        if not self.recurrent:
            return None
        return torch.zeros(batch, self.n_agents, self.hidden_dim, device=device)

    @property
    def centralised(self) -> bool:
        """True when the actor reads the global state (not deployable per agent)."""
        return self.state_dim > 0

    def forward(self, obs: torch.Tensor, hidden: torch.Tensor | None = None,
                state: torch.Tensor | None = None) -> ActorOutput:
        batch = obs.shape[0]
        assert obs.shape[1:] == (self.n_agents, self.max_obs_dim), f"obs shape {tuple(obs.shape)}"
        if self.centralised:
            assert state is not None and state.shape == (batch, self.state_dim), \
                f"centralised actor needs state [{batch}, {self.state_dim}], got {None if state is None else tuple(state.shape)}"
        ids = self.agent_ids.expand(batch, -1, -1)
        if len(self.nets) == 1:  # shared actor: one pass over all agents
            net = next(iter(self.nets.values()))
            x = torch.cat([obs, ids], dim=-1).reshape(batch * self.n_agents, -1)
            h = None if hidden is None else hidden.reshape(batch * self.n_agents, -1)
            out = net(x, h, self._state_term(net, state, self.n_agents))
            logits = out.logits.reshape(batch, self.n_agents, -1)
            emb = out.embedding.reshape(batch, self.n_agents, -1)
            new_h = None if out.hidden is None else out.hidden.reshape(batch, self.n_agents, -1)
            return ActorOutput(logits, emb, new_h)
        logits = obs.new_full((batch, self.n_agents, self.max_actions), MASKED_LOGIT)
        emb = obs.new_zeros(batch, self.n_agents, self.hidden_dim)
        new_h = obs.new_zeros(batch, self.n_agents, self.hidden_dim) if self.recurrent else None
        for g, idx in self.group_agents.items():
            d, k, n = self.group_obs_dim[g], self.group_actions[g], len(idx)
            x = torch.cat([obs[:, idx, :d], ids[:, idx]], dim=-1).reshape(batch * n, -1)
            h = None if hidden is None else hidden[:, idx].reshape(batch * n, -1)
            out = self.nets[g](x, h, self._state_term(self.nets[g], state, n))
            logits[:, idx, :k] = out.logits.reshape(batch, n, k)
            emb[:, idx] = out.embedding.reshape(batch, n, -1)
            if new_h is not None:
                new_h[:, idx] = out.hidden.reshape(batch, n, -1)
        return ActorOutput(logits, emb, new_h)

    def _state_term(self, net: ActorNet, state: torch.Tensor | None, n: int) -> torch.Tensor | None:
        """``net.state_in(state)`` once per env step, repeated for the ``n`` agents the net runs:
        ``[B * n, hidden[0]]`` (None for a local actor)."""
        if net.state_in is None:
            return None
        term = net.state_in(state)
        return term.unsqueeze(1).expand(-1, n, -1).reshape(term.shape[0] * n, -1)

    def embed(self, obs: torch.Tensor, hidden: torch.Tensor | None = None,
              state: torch.Tensor | None = None) -> torch.Tensor:
        """The last hidden layer per agent, ``[B, A, H]``."""
        return self.forward(obs, hidden, state).embedding

    def agent_view(self, agent: int, n_actions: int, obs_dim: int) -> AgentActor:
        """A module for one agent alone: its own ``obs [B, obs_dim]`` -> ``logits [B, n_actions]``.

        Of a centralised actor the view only serves cost counting: it cannot run on ``obs`` alone."""
        return AgentActor(self, agent, obs_dim, n_actions)


class AgentActor(nn.Module):
    """One agent's view of a ``TeacherActor`` (agent id fixed): what export wraps per agent.

    ``forward(obs [B, obs_dim], hidden [B, H] | None) -> (logits [B, n_actions], hidden)``.
    """

    def __init__(self, actor: TeacherActor, agent: int, obs_dim: int, n_actions: int) -> None:
        super().__init__()
        self.group = actor.agent_group[agent]
        self.net = actor.nets[self.group]
        self.obs_dim, self.n_actions = obs_dim, n_actions
        self.pad = actor.group_obs_dim[self.group] - obs_dim
        self.register_buffer("agent_id", actor.agent_ids[agent].clone(), persistent=False)

    def forward(self, obs: torch.Tensor, hidden: torch.Tensor | None = None):
        batch = obs.shape[0]
        parts = [obs]
        if self.pad:
            parts.append(obs.new_zeros(batch, self.pad))
        parts.append(self.agent_id.expand(batch, -1))
        out = self.net(torch.cat(parts, dim=-1), hidden)
        return out.logits[:, : self.n_actions], out.hidden


class TeacherCritic(nn.Module):
    """Centralised critic: values ``[B, A]`` in normalised units (see the module docstring)."""

    def __init__(self, spec: EnvSpec, hidden: tuple[int, ...], activation: str = "relu",
                 agent_specific: bool = False, input_norm: bool = True) -> None:
        super().__init__()
        self.n_agents, self.agent_specific = spec.n_agents, agent_specific
        in_dim = spec.state_dim + (spec.max_obs_dim + spec.n_agents if agent_specific else 0)
        self.trunk = mlp_trunk(in_dim, hidden, activation, input_norm)
        self.head = orthogonal_init(nn.Linear(hidden[-1], 1 if agent_specific else spec.n_agents), 1.0)
        self.register_buffer("agent_ids", torch.eye(spec.n_agents), persistent=False)

    def forward(self, state: torch.Tensor, obs: torch.Tensor | None = None) -> torch.Tensor:
        batch = state.shape[0]
        if not self.agent_specific:
            return self.head(self.trunk(state))
        assert obs is not None, "agent-specific critic needs the agents' observations"
        x = torch.cat([state.unsqueeze(1).expand(-1, self.n_agents, -1), obs,
                       self.agent_ids.expand(batch, -1, -1)], dim=-1)
        return self.head(self.trunk(x)).squeeze(-1)


def count_parameters(module: nn.Module) -> int:
    return sum(p.numel() for p in module.parameters())
