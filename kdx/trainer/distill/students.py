"""Student networks: one small, critic-free MLP policy per agent.

A student sees only its own agent's observation (decentralised execution) and outputs logits
over that agent's actions. Its last hidden layer is the *embedding* the structural distillation
terms compare with the teacher's. Observation normalisation is a pair of fixed buffers
(``obs_mean``, ``obs_std``) set from recorded observations before distillation, so the exporter
can fold it into the first layer.
"""

from __future__ import annotations

from collections.abc import Sequence

import torch
from torch import nn

from kdx.devices.mlp import ACTIVATIONS
from kdx.errors import KdxError
from kdx.trainer.common.activations import activation_module


def _orthogonal(layer: nn.Linear, gain: float) -> nn.Linear:
    nn.init.orthogonal_(layer.weight, gain=gain)
    nn.init.zeros_(layer.bias)
    return layer


class StudentPolicy(nn.Module):
    """A per-agent MLP: ``obs [B, obs_dim] -> (logits [B, n_actions], embedding [B, hidden[-1]])``.

    Args:
        obs_dim: the agent's observation size.
        n_actions: the agent's discrete action count.
        hidden: hidden layer widths, e.g. ``(32,)`` or ``(64, 64)``; at least one layer.
        activation: one of ``kdx.devices.mlp.ACTIVATIONS``.
    """

    def __init__(self, obs_dim: int, n_actions: int, hidden: Sequence[int], activation: str = "tanh") -> None:
        super().__init__()
        hidden = tuple(int(h) for h in hidden)
        if not hidden or any(h < 1 for h in hidden):
            raise KdxError(f"a student needs at least one hidden layer of positive width, got {hidden}")
        if activation not in ACTIVATIONS:
            raise KdxError(f"unknown activation {activation!r}; choose one of {', '.join(ACTIVATIONS)}")
        self.obs_dim = int(obs_dim)
        self.n_actions = int(n_actions)
        self.hidden = hidden
        self.activation = activation
        self.register_buffer("obs_mean", torch.zeros(obs_dim))
        self.register_buffer("obs_std", torch.ones(obs_dim))
        layers: list[nn.Module] = []
        width = obs_dim
        for h in hidden:
            layers += [_orthogonal(nn.Linear(width, h), gain=2**0.5), activation_module(activation)]
            width = h
        self.body = nn.Sequential(*layers)
        self.head = _orthogonal(nn.Linear(width, n_actions), gain=0.01)

    @property
    def embedding_dim(self) -> int:
        return self.hidden[-1]

    def set_obs_normalisation(self, mean: torch.Tensor, std: torch.Tensor, eps: float = 1e-6) -> None:
        """Fix the input normalisation ``(obs - mean) / std`` (std floored at ``eps``)."""
        if mean.shape != (self.obs_dim,) or std.shape != (self.obs_dim,):
            raise KdxError(f"normalisation stats must have shape [{self.obs_dim}]")
        self.obs_mean.copy_(mean)
        self.obs_std.copy_(std.clamp_min(eps))

    def forward(self, obs: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        if obs.shape[-1] != self.obs_dim:
            raise KdxError(f"student expects observations of size {self.obs_dim}, got {obs.shape[-1]}")
        embedding = self.body((obs - self.obs_mean) / self.obs_std)
        return self.head(embedding), embedding

    def arch_json(self) -> dict:
        """The architecture as JSON, enough to rebuild the module before loading weights."""
        return {
            "obs_dim": self.obs_dim,
            "n_actions": self.n_actions,
            "hidden": list(self.hidden),
            "activation": self.activation,
        }

    @classmethod
    def from_arch_json(cls, arch: dict) -> StudentPolicy:
        try:
            return cls(arch["obs_dim"], arch["n_actions"], arch["hidden"], arch.get("activation", "tanh"))
        except KeyError as exc:
            raise KdxError(f"student architecture is missing field {exc}; the students config is corrupt") from None


def masked_logits(logits: torch.Tensor, mask: torch.Tensor | None) -> torch.Tensor:
    """Illegal actions (``mask`` False) get the most negative finite value, so softmax gives 0."""
    if mask is None:
        return logits
    return logits.masked_fill(~mask, torch.finfo(logits.dtype).min)
