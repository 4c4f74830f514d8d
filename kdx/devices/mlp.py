"""The student MLP's architecture and what it costs: parameter and MAC counts. Torch-free.

A student maps an agent's observation to action logits through fully connected layers,
``obs_dim -> hidden[0] -> ... -> hidden[-1] -> n_actions``, with an activation after each
hidden layer (and optionally a LayerNorm).

What is counted (the same everywhere in kdx, so numbers in sizing.json, eval.json and the
report agree):

- **MACs**: multiply-accumulates of the Linear layers at batch 1, ``sum(in * out)``. Bias
  additions, activations and LayerNorm are not counted (they are ``O(width)``, negligible next
  to the ``O(width^2)`` matrix products, and FLOP counters disagree about them). FLOPs are
  reported elsewhere as ``2 x MACs``.
- **Parameters**: Linear weights and biases, plus LayerNorm gain and bias (``2 x width`` per
  hidden layer) when the architecture has LayerNorm.
"""

from __future__ import annotations

from dataclasses import dataclass

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


def layer_shapes(arch: StudentArch, obs_dim: int, n_actions: int) -> list[tuple[int, int]]:
    """``(in_features, out_features)`` of each Linear layer, input to output."""
    dims = [obs_dim, *arch.hidden, n_actions]
    return list(zip(dims[:-1], dims[1:]))


def count_macs(arch: StudentArch, obs_dim: int, n_actions: int) -> int:
    """Multiply-accumulates of one forward pass at batch 1 (Linear layers only, no bias)."""
    return sum(i * o for i, o in layer_shapes(arch, obs_dim, n_actions))


def count_params(arch: StudentArch, obs_dim: int, n_actions: int) -> int:
    """Trainable parameters: Linear weights and biases, plus LayerNorm gain/bias if present."""
    linear = sum(i * o + o for i, o in layer_shapes(arch, obs_dim, n_actions))
    norm = sum(2 * w for w in arch.hidden) if arch.layer_norm else 0
    return linear + norm
