"""The one cost rule (kdx.devices.cost) on hand-computed networks. Torch-free; the cross-checks
against torch's FlopCounter and ptflops are in test_cost_cross_check.py."""

from __future__ import annotations

import pytest

from kdx.devices.cost import (
    COST_RULE,
    AgentCost,
    GRUCell,
    LayerNorm,
    Linear,
    NetworkCost,
    count_cost,
    mlp_layers,
)


def test_linear_counts_weight_multiply_adds_and_every_parameter():
    assert count_cost([Linear(18, 32)]) == NetworkCost(params=18 * 32 + 32, macs=18 * 32)
    assert count_cost([Linear(18, 32, bias=False)]) == NetworkCost(params=18 * 32, macs=18 * 32)


def test_layernorm_has_parameters_and_no_macs():
    assert count_cost([LayerNorm(64)]) == NetworkCost(params=128, macs=0)
    assert count_cost([LayerNorm(64, affine=False)]) == NetworkCost(params=0, macs=0)


def test_gru_cell_counts_its_three_gates_input_and_hidden_products():
    # torch GRUCell(10, 8): weight_ih [24, 10], weight_hh [24, 8], bias_ih [24], bias_hh [24]
    assert count_cost([GRUCell(10, 8)]) == NetworkCost(params=24 * 10 + 24 * 8 + 48, macs=24 * 10 + 24 * 8)
    assert count_cost([GRUCell(10, 8, bias=False)]).params == 24 * 18


def test_a_teacher_like_stack_by_hand():
    # input LayerNorm(21), 21 -> 64 (+LN) -> 64 (+LN), GRU 64, LN, head 64 -> 5
    layers = [LayerNorm(21), Linear(21, 64), LayerNorm(64), Linear(64, 64), LayerNorm(64), GRUCell(64, 64),
              LayerNorm(64), Linear(64, 5)]
    cost = count_cost(layers)
    assert cost.macs == 21 * 64 + 64 * 64 + 3 * 64 * 128 + 64 * 5
    assert cost.params == 42 + (21 * 64 + 64) + 128 + (64 * 64 + 64) + 128 + (3 * 64 * 128 + 6 * 64) + 128 + (64 * 5 + 5)
    assert cost.flops == 2 * cost.macs


def test_mlp_layers_chain_the_widths():
    assert mlp_layers(18, (32, 16), 5) == (Linear(18, 32), Linear(32, 16), Linear(16, 5))
    assert mlp_layers(3, (8,), 2, layer_norm=True) == (Linear(3, 8), LayerNorm(8), Linear(8, 2))


def test_agent_cost_ratios_and_eval_json_entry():
    cost = AgentCost("a", student=NetworkCost(50, 40), teacher=NetworkCost(500, 800), student_hidden=(8,))
    assert cost.ratio("macs") == pytest.approx(20.0) and cost.ratio("params") == pytest.approx(10.0)
    assert cost.to_json() == {"student_hidden": [8], "teacher_params": 500, "teacher_macs": 800,
                              "student_params": 50, "student_macs": 40, "param_ratio": 10.0, "mac_ratio": 20.0}
    alone = AgentCost("a", student=NetworkCost(50, 40))
    assert alone.ratio("macs") is None and alone.to_json()["teacher_macs"] is None


def test_the_rule_is_stated_once_and_says_what_is_left_out():
    assert "bias adds" in COST_RULE and "not counted" in COST_RULE and "FLOPs = 2 x MACs" in COST_RULE
