"""FLOP counting against hand-computed counts of known MLPs."""

from torch import nn

from kdx.report.flops import count_network_cost
from kdx.trainer.distill.students import StudentPolicy


def test_student_mlp_counts_by_hand():
    # obs 18 -> 32 -> 16 -> 5, tanh, with biases
    net = StudentPolicy(obs_dim=18, n_actions=5, hidden=(32, 16))
    cost = count_network_cost(net, 18)
    weight_macs = 18 * 32 + 32 * 16 + 16 * 5
    bias = 32 + 16 + 5
    assert cost.params == weight_macs + bias
    assert cost.bias_macs == bias
    assert cost.macs == weight_macs + bias
    assert cost.flops == 2 * cost.macs
    assert cost.torch_flops == 2 * weight_macs
    assert cost.cross_check_ok


def test_activations_and_layernorm_are_not_counted():
    net = nn.Sequential(nn.LayerNorm(10), nn.Linear(10, 64), nn.ReLU(), nn.Linear(64, 3, bias=False))
    cost = count_network_cost(net, 10)
    assert cost.macs == 10 * 64 + 64 + 64 * 3
    assert cost.params == 20 + 10 * 64 + 64 + 64 * 3
    assert cost.cross_check_ok
