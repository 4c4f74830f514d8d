"""The torch module of each hidden activation kdx networks may use, for teacher and students.

The names are ``kdx.devices.mlp.ACTIVATIONS`` (torch-free: configs, sizing and the runtime's
npz format check against it); this is their one torch side.
"""

from __future__ import annotations

from torch import nn

from kdx.devices.mlp import ACTIVATIONS
from kdx.errors import KdxError

TORCH_ACTIVATIONS: dict[str, type[nn.Module]] = {"relu": nn.ReLU, "tanh": nn.Tanh}


def activation_module(name: str) -> nn.Module:
    """A fresh ``nn.Module`` for activation ``name`` (one of ``ACTIVATIONS``)."""
    if name not in TORCH_ACTIVATIONS:
        raise KdxError(f"unknown activation {name!r}; choose one of {', '.join(ACTIVATIONS)}")
    return TORCH_ACTIVATIONS[name]()
