"""A torch module as the layer description that :func:`kdx.devices.cost.count_cost` counts.

The one cost rule lives in ``kdx.devices.cost`` (torch-free); this is the bridge from a built
network (a student, or the teacher actor seen from one agent) to that description.
"""

from __future__ import annotations

from torch import nn

from kdx.devices.cost import GRUCell, Layer, LayerNorm, Linear, NetworkCost, count_cost


def describe_layers(module: nn.Module) -> tuple[Layer, ...]:
    """Every layer of ``module`` that holds parameters, in registration order.

    Linear, LayerNorm and GRUCell are described; modules without parameters of their own
    (activations, containers) add nothing. Any other module with parameters raises
    ``TypeError``, so that a new layer type cannot go uncounted. Each layer is taken to run once
    per decision, as in kdx's students and teacher actors.
    """
    layers: list[Layer] = []
    for m in module.modules():
        if isinstance(m, nn.Linear):
            layers.append(Linear(m.in_features, m.out_features, m.bias is not None))
        elif isinstance(m, nn.LayerNorm):
            width = 1
            for n in m.normalized_shape:
                width *= n
            layers.append(LayerNorm(width, m.elementwise_affine))
        elif isinstance(m, nn.GRUCell):
            layers.append(GRUCell(m.input_size, m.hidden_size, m.bias))
        elif any(True for _ in m.parameters(recurse=False)):
            raise TypeError(f"kdx.devices.cost has no description of {type(m).__name__}; add one before counting it")
    return tuple(layers)


def module_cost(module: nn.Module) -> NetworkCost:
    """Parameters and MACs of ``module`` under ``kdx.devices.cost.COST_RULE``."""
    return count_cost(describe_layers(module))
