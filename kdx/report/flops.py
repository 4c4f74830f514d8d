"""Parameters, MACs and FLOPs of a network, counted two independent ways.

Convention (the report prints it, see ``CONVENTION``):

- **MACs** are counted by ptflops with ``backend="pytorch"`` passed explicitly (its default has
  changed between releases): one MAC per weight multiply-add of every ``nn.Linear`` (and
  ``nn.GRU``) plus one per bias add, for one decision (batch 1). Activations, LayerNorm and the
  input normalisation are *not* included: they are element-wise and cost a few percent of an MLP.
- **FLOPs = 2 x MACs.**
- Cross-check: ``torch.utils.flop_counter`` counts ``2·M·N·K`` per matrix multiply and no bias,
  so for Linear-only networks ``torch_flops / 2 + bias_macs == macs`` exactly; ``cross_check_ok``
  records whether that holds (GRU networks are compared within 5%).
"""

from __future__ import annotations

import io
from dataclasses import asdict, dataclass

import torch
from torch import nn
from torch.utils.flop_counter import FlopCounterMode

CONVENTION = (
    "MACs: ptflops (backend=pytorch), Linear/GRU multiply-adds + bias adds, batch 1; activations, "
    "LayerNorm and input normalisation excluded. FLOPs = 2 x MACs. Cross-checked with "
    "torch.utils.flop_counter (2*M*N*K, no bias)."
)

_NOT_COUNTED = [nn.ReLU, nn.ELU, nn.LeakyReLU, nn.PReLU, nn.ReLU6, nn.LayerNorm, nn.BatchNorm1d]


@dataclass(frozen=True)
class NetworkCost:
    """The cost of one forward pass at batch 1. Integers, no formatting."""

    params: int
    macs: int
    flops: int
    torch_flops: int
    bias_macs: int
    cross_check_ok: bool

    def to_json(self) -> dict:
        return asdict(self)


class _FirstOutput(nn.Module):
    """Wraps a network whose forward returns a tuple, so counters see a single tensor."""

    def __init__(self, net: nn.Module) -> None:
        super().__init__()
        self.net = net

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        out = self.net(x)
        return out[0] if isinstance(out, tuple) else out


def _bias_adds(net: nn.Module) -> int:
    total = 0
    for m in net.modules():
        if isinstance(m, nn.Linear) and m.bias is not None:
            total += m.out_features
        elif isinstance(m, nn.GRU) and m.bias:
            total += sum(getattr(m, f"bias_{k}_l{i}").numel() for k in ("ih", "hh") for i in range(m.num_layers))
    return total


def count_network_cost(net: nn.Module, input_dim: int) -> NetworkCost:
    """Params, MACs and FLOPs of ``net`` for one input of shape ``[1, input_dim]``."""
    from ptflops import get_model_complexity_info

    wrapped = _FirstOutput(net).eval()
    params = sum(p.numel() for p in net.parameters())
    with torch.no_grad():
        macs, _ = get_model_complexity_info(
            wrapped,
            (input_dim,),
            as_strings=False,
            print_per_layer_stat=False,
            backend="pytorch",
            ignore_modules=_NOT_COUNTED,
            backend_specific_config={"count_functional": False},
            ost=io.StringIO(),
        )
        counter = FlopCounterMode(display=False)
        with counter:
            wrapped(torch.zeros(1, input_dim))
    torch_flops = int(counter.get_total_flops())
    bias = _bias_adds(net)
    macs = int(macs)
    has_gru = any(isinstance(m, nn.GRU) for m in net.modules())
    expected = torch_flops // 2 + bias
    ok = abs(expected - macs) <= 0.05 * macs if has_gru else expected == macs
    return NetworkCost(params=params, macs=macs, flops=2 * macs, torch_flops=torch_flops, bias_macs=bias,
                       cross_check_ok=bool(ok))
