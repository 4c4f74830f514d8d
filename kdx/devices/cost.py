"""What a network costs, counted one way everywhere in kdx. Torch-free.

A network is described by its layers (:class:`Linear`, :class:`LayerNorm`, :class:`GRUCell`);
:func:`count_cost` turns that description into parameters and MACs under the one rule,
:data:`COST_RULE`:

- **MACs**: weight multiply-adds of one decision at batch 1: ``in x out`` per Linear layer,
  ``3 x hidden x (input + hidden)`` per GRU cell (its three gates' input and hidden products).
  Bias adds, activations, LayerNorm and input normalisation are not counted: they are
  ``O(width)`` next to the ``O(width^2)`` products, and counters disagree about them. This is
  the usual MAC convention; ``torch.utils.flop_counter`` / 2 gives the same number exactly (the
  tests check it, and check ptflops' count minus the bias adds).
- **FLOPs** = 2 x MACs.
- **Parameters**: every trainable parameter: weights, biases, LayerNorm gains and biases, GRU
  weights and biases. Fixed buffers (observation statistics, agent ids) are not parameters.

Every stored or printed cost comes from here: sizing counts students with it (``kdx.devices.mlp``);
``kdx distill`` counts the students and the teacher actor seen from each agent once, at its
start, and stores them in ``students/sizing.json``; eval.json, the bundle manifest and the
report read them from there.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass
from typing import Any, Union

COST_RULE = (
    "MACs = weight multiply-adds of one decision at batch 1: in x out per Linear layer, "
    "3 x hidden x (input + hidden) per GRU cell; bias adds, activations, LayerNorm and input "
    "normalisation not counted (torch.utils.flop_counter / 2 gives the same number). "
    "FLOPs = 2 x MACs. Parameters = every trainable parameter (weights, biases, LayerNorm and GRU "
    "included)."
)


@dataclass(frozen=True)
class Linear:
    """``y = x W^T (+ b)``, ``W [out, in]``."""

    in_features: int
    out_features: int
    bias: bool = True

    @property
    def params(self) -> int:
        return self.in_features * self.out_features + (self.out_features if self.bias else 0)

    @property
    def macs(self) -> int:
        return self.in_features * self.out_features


@dataclass(frozen=True)
class LayerNorm:
    """Normalisation over ``width`` features, with a gain and a bias when ``affine``."""

    width: int
    affine: bool = True

    @property
    def params(self) -> int:
        return 2 * self.width if self.affine else 0

    @property
    def macs(self) -> int:
        return 0


@dataclass(frozen=True)
class GRUCell:
    """One GRU step: three gates, each with an input and a hidden product (torch ``GRUCell``)."""

    input_size: int
    hidden_size: int
    bias: bool = True

    @property
    def params(self) -> int:
        return self.macs + (6 * self.hidden_size if self.bias else 0)

    @property
    def macs(self) -> int:
        return 3 * self.hidden_size * (self.input_size + self.hidden_size)


Layer = Union[Linear, LayerNorm, GRUCell]


@dataclass(frozen=True)
class NetworkCost:
    """Parameters and MACs of one forward pass at batch 1 (see :data:`COST_RULE`)."""

    params: int
    macs: int

    @property
    def flops(self) -> int:
        return 2 * self.macs


def count_cost(layers: Iterable[Layer]) -> NetworkCost:
    """The cost of a network made of ``layers``, each run once per decision."""
    layers = tuple(layers)
    return NetworkCost(params=sum(layer.params for layer in layers), macs=sum(layer.macs for layer in layers))


def mlp_layers(in_dim: int, hidden: Iterable[int], out_dim: int, layer_norm: bool = False) -> tuple[Layer, ...]:
    """``in_dim -> hidden[0] -> ... -> out_dim`` Linear layers with biases, and a LayerNorm after
    each hidden layer when ``layer_norm``."""
    layers: list[Layer] = []
    width = in_dim
    for h in hidden:
        layers.append(Linear(width, h))
        if layer_norm:
            layers.append(LayerNorm(h))
        width = h
    layers.append(Linear(width, out_dim))
    return tuple(layers)


@dataclass(frozen=True)
class AgentCost:
    """One agent's student and the teacher actor seen from that agent (None where unknown)."""

    agent: str
    student: NetworkCost | None = None
    teacher: NetworkCost | None = None
    student_hidden: tuple[int, ...] = ()

    def ratio(self, what: str) -> float | None:
        """Teacher / student ``"params"`` or ``"macs"``, when both are known."""
        if self.teacher is None or self.student is None:
            return None
        return getattr(self.teacher, what) / getattr(self.student, what)

    def to_json(self) -> dict[str, Any]:
        """The per-agent ``cost`` entry of eval.json."""
        s, t = self.student, self.teacher
        return {
            "student_hidden": list(self.student_hidden),
            "teacher_params": t and t.params, "teacher_macs": t and t.macs,
            "student_params": s and s.params, "student_macs": s and s.macs,
            "param_ratio": self.ratio("params"), "mac_ratio": self.ratio("macs"),
        }
