"""The student MLP's architecture and its layers. Torch-free.

A student maps an agent's observation to action logits through fully connected layers,
``obs_dim -> hidden[0] -> ... -> hidden[-1] -> n_actions``, with an activation after each
hidden layer (and optionally a LayerNorm). What it costs is counted by
:func:`kdx.devices.cost.count_cost` from :func:`student_layers`, under the one rule of
:data:`kdx.devices.cost.COST_RULE` (Linear weight multiply-adds at batch 1, no bias adds;
parameters include biases and LayerNorm gains and biases) -- the rule behind every cost that
sizing.json, eval.json, the manifest and the report hold.
"""

from __future__ import annotations

from dataclasses import dataclass

from kdx.devices.cost import Layer, NetworkCost, count_cost, mlp_layers

ACTIVATIONS = ("relu", "tanh")


@dataclass(frozen=True)
class StudentArch:
    """A student MLP's hidden layers, e.g. ``StudentArch((64, 64))``; input/output come from the agent."""

    hidden: tuple[int, ...]
    activation: str = "relu"
    layer_norm: bool = False

    def __post_init__(self) -> None:
        # Internal invariant: user input is validated by parse_overrides before reaching here.
        if not self.hidden or any(int(w) != w or w < 1 for w in self.hidden):
            raise ValueError(f"hidden sizes must be positive integers, got {self.hidden!r}")
        if self.activation not in ACTIVATIONS:
            raise ValueError(f"activation must be one of {ACTIVATIONS}, got {self.activation!r}")

    @property
    def label(self) -> str:
        """The override syntax for this architecture, e.g. ``"64x64"``."""
        return "x".join(str(w) for w in self.hidden)


def student_layers(arch: StudentArch, obs_dim: int, n_actions: int) -> tuple[Layer, ...]:
    """The student's layers, input to output, as :mod:`kdx.devices.cost` describes them."""
    return mlp_layers(obs_dim, arch.hidden, n_actions, arch.layer_norm)


def student_cost(arch: StudentArch, obs_dim: int, n_actions: int) -> NetworkCost:
    """Parameters and MACs of the student (see :data:`kdx.devices.cost.COST_RULE`)."""
    return count_cost(student_layers(arch, obs_dim, n_actions))
