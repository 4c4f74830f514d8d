"""Student sizing: parameter/MAC counts, the capacity rule, budgets, overrides and errors."""

from __future__ import annotations

from dataclasses import replace
from types import SimpleNamespace

import numpy as np
import pytest
from hypothesis import given
from hypothesis import strategies as st

from kdx.devices.profile import Budget
from kdx.devices.registry import PROFILES
from kdx.devices.sizing import (
    CapacityRule,
    StudentArch,
    mlp_teacher_costs,
    parse_overrides,
    size_students,
    student_cost,
)
from kdx.errors import KdxError

# (name, obs_dim, n_actions) of the envs kdx ships (MPE and SMAC sizes from REFERENCE.md).
TYPICAL_AGENTS = [
    ("speaker_0", 3, 3), ("listener_0", 11, 5), ("spread_0", 18, 5), ("reference_0", 21, 50),
    ("m3", 30, 9), ("m5v6", 55, 12), ("m8", 80, 14), ("s2z3", 80, 11), ("s3z5", 128, 14),
    ("mmm", 160, 16), ("mmm2", 176, 18),
]


def generous(profile_name: str = "x86-cpu"):
    """A profile whose budget never binds, to see the capacity rule alone."""
    p = PROFILES[profile_name]
    return replace(p, budget=Budget(10**9, 10**9, p.budget.latency_budget_us))


# --- counting -------------------------------------------------------------------------------


def test_counts_match_hand_computed_values():
    # 18 -> 32 -> 5: MACs 18*32 + 32*5; params add the biases 32 + 5.
    assert student_cost(StudentArch((32,)), 18, 5).macs == 576 + 160
    assert student_cost(StudentArch((32,)), 18, 5).params == 576 + 32 + 160 + 5
    # 80 -> 64 -> 64 -> 14
    assert student_cost(StudentArch((64, 64)), 80, 14).macs == 5120 + 4096 + 896
    assert student_cost(StudentArch((64, 64)), 80, 14).params == 5120 + 64 + 4096 + 64 + 896 + 14
    # LayerNorm adds a gain and a bias per hidden unit and no MACs.
    ln = StudentArch((64, 64), layer_norm=True)
    assert student_cost(ln, 80, 14).params == student_cost(StudentArch((64, 64)), 80, 14).params + 2 * 128
    assert student_cost(ln, 80, 14).macs == student_cost(StudentArch((64, 64)), 80, 14).macs
    # The 3x256 teacher actor on simple_spread (18 obs, 5 actions).
    assert student_cost(StudentArch((256, 256, 256)), 18, 5).macs == 18 * 256 + 2 * 256 * 256 + 256 * 5


@given(
    hidden=st.lists(st.integers(1, 300), min_size=1, max_size=4),
    obs_dim=st.integers(1, 400),
    n_actions=st.integers(1, 60),
)
def test_counts_match_the_sizes_of_real_weight_arrays(hidden, obs_dim, n_actions):
    dims = [obs_dim, *hidden, n_actions]
    weights = [np.zeros((o, i), np.float32) for i, o in zip(dims[:-1], dims[1:])]
    biases = [np.zeros(o, np.float32) for o in dims[1:]]
    x = np.ones(obs_dim, np.float32)
    macs = 0
    for w, b in zip(weights, biases):  # a plain forward pass, counting multiply-adds
        macs += w.shape[0] * w.shape[1]
        x = np.maximum(w @ x + b, 0)
    arch = StudentArch(tuple(hidden))
    assert student_cost(arch, obs_dim, n_actions).params == sum(w.size + b.size for w, b in zip(weights, biases))
    assert student_cost(arch, obs_dim, n_actions).macs == macs
    assert x.shape == (n_actions,)


# --- the capacity rule ----------------------------------------------------------------------


def test_rule_picks_powers_of_two_with_one_or_two_layers_in_range():
    rule = CapacityRule()
    for obs_dim in range(1, 400, 7):
        for n_actions in range(1, 40, 3):
            arch = rule.preferred(obs_dim, n_actions)
            assert len(arch.hidden) in (1, 2) and len(set(arch.hidden)) == 1
            width = arch.hidden[0]
            assert rule.min_width <= width <= rule.max_width and width & (width - 1) == 0


def test_bigger_observation_never_gets_a_smaller_student():
    profile = generous()
    for n_actions in (2, 5, 9, 14, 18, 50):
        agents = [(f"a{o}", o, n_actions) for o in range(1, 300)]
        rows = size_students(agents, profile)
        for small, big in zip(rows, rows[1:]):
            assert big.params >= small.params and big.macs >= small.macs
            assert len(big.arch.hidden) >= len(small.arch.hidden)
            assert max(big.arch.hidden) >= max(small.arch.hidden)
    # ... and more actions never give a smaller student either.
    rows = size_students([(f"n{n}", 30, n) for n in range(1, 60)], profile)
    assert all(b.arch.hidden[0] >= a.arch.hidden[0] for a, b in zip(rows, rows[1:]))


def test_capacity_follows_observation_complexity_on_kdx_envs():
    rows = {r.agent: r for r in size_students(TYPICAL_AGENTS, generous())}
    assert rows["speaker_0"].arch == StudentArch((16,))  # 3 inputs, 3 actions: the smallest
    assert rows["speaker_0"].macs < rows["listener_0"].macs < rows["m8"].macs
    assert len(rows["m8"].arch.hidden) == 2 and len(rows["spread_0"].arch.hidden) == 1


# --- budgets --------------------------------------------------------------------------------


@pytest.mark.parametrize("name", sorted(PROFILES))
def test_auto_students_respect_the_profile_budget(name):
    profile = PROFILES[name]
    rule = CapacityRule()
    for row in size_students(TYPICAL_AGENTS, profile):
        assert row.source == "auto" and row.within_budget
        assert row.macs <= profile.budget.max_macs_per_agent
        assert row.param_bytes == row.params * profile.bytes_per_param
        assert row.param_bytes <= profile.budget.max_param_bytes_per_agent
        if row.arch != row.preferred:
            assert row.limited_by
            # Maximal: every bigger candidate under the preferred one breaks the budget.
            for cand in rule.candidates(row.preferred):
                if student_cost(cand, row.obs_dim, row.n_actions).macs > row.macs:
                    over_macs = student_cost(cand, row.obs_dim, row.n_actions).macs > profile.budget.max_macs_per_agent
                    over_mem = (
                        student_cost(cand, row.obs_dim, row.n_actions).params * profile.bytes_per_param
                        > profile.budget.max_param_bytes_per_agent
                    )
                    assert over_macs or over_mem
        else:
            assert row.limited_by == ()


def test_tighter_profile_never_gets_a_bigger_student():
    big = {r.agent: r for r in size_students(TYPICAL_AGENTS, PROFILES["x86-cpu"])}
    small = {r.agent: r for r in size_students(TYPICAL_AGENTS, PROFILES["rpi4"])}
    assert all(small[a].macs <= big[a].macs for a in big)
    assert any(small[a].macs < big[a].macs for a in big)  # rpi4's budget actually binds


def test_teacher_ratio_caps_students_at_30x_fewer_macs():
    teacher = mlp_teacher_costs(TYPICAL_AGENTS, (256, 256, 256))
    assert teacher["spread_0"].macs == 18 * 256 + 2 * 256 * 256 + 256 * 5  # weight multiply-adds only
    assert teacher["spread_0"].params == teacher["spread_0"].macs + 3 * 256 + 5  # plus the biases
    rows = size_students(TYPICAL_AGENTS, generous(), teacher=teacher)
    for row in rows:
        assert (row.teacher_params, row.teacher_macs) == (teacher[row.agent].params, teacher[row.agent].macs)
        assert row.cost.teacher == teacher[row.agent] and row.cost.student.macs == row.macs
        assert row.mac_reduction >= 30.0
    uncapped = {r.agent: r for r in size_students(TYPICAL_AGENTS, generous())}
    assert any("teacher ratio" in r.limited_by and r.macs < uncapped[r.agent].macs for r in rows)
    with pytest.raises(KdxError, match="no teacher cost for agent.*spread_0"):
        size_students(TYPICAL_AGENTS, generous(), teacher={k: v for k, v in teacher.items() if k != "spread_0"})


def test_impossible_budget_says_by_how_much():
    tiny = replace(PROFILES["rpi4"], budget=Budget(1000, 100_000, 1000.0))
    # smallest student for 100 obs / 5 actions: 100*16 + 16*5 = 1680 MACs -> short by 680.
    with pytest.raises(KdxError) as info:
        size_students([("ok", 3, 3), ("big", 100, 5)], tiny)
    message = str(info.value)
    assert "'big'" in message and "'ok'" not in message
    assert "1680 MACs" in message and "short by 680 MACs" in message and "68%" in message
    # Memory shortfall: int8, 1000 bytes; smallest for 100/5 has 1600+16+80+5 = 1701 params.
    no_memory = replace(PROFILES["rpi4"], budget=Budget(10**6, 1000, 1000.0))
    with pytest.raises(KdxError, match="short by 701 bytes"):
        size_students([("big", 100, 5)], no_memory)


def test_an_overridden_agent_is_not_held_to_the_smallest_student_check():
    tiny = replace(PROFILES["rpi4"], budget=Budget(1000, 100_000, 1000.0))
    rows = size_students([("big", 100, 5)], tiny, overrides={"big": StudentArch((8,))})
    assert rows[0].arch == StudentArch((8,)) and rows[0].within_budget is True


# --- overrides ------------------------------------------------------------------------------


def test_overrides_replace_the_rule_and_are_flagged_when_over_budget():
    agents = [("listener_0", 11, 5), ("speaker_0", 3, 3), ("agent_1", 80, 14)]
    overrides = parse_overrides(["listener_0=16", "agent_1=64x64"], [a[0] for a in agents])
    assert overrides == {"listener_0": StudentArch((16,)), "agent_1": StudentArch((64, 64))}
    rows = {r.agent: r for r in size_students(agents, PROFILES["rpi4"], overrides)}
    assert rows["listener_0"].source == "override" and rows["listener_0"].arch.hidden == (16,)
    assert rows["speaker_0"].source == "auto"
    big = rows["agent_1"]
    assert big.arch.hidden == (64, 64) and big.macs == 10112  # kept as given, never shrunk
    assert big.within_budget is False  # 10112 MACs > rpi4's 4096


def test_agents_can_be_objects_with_the_agent_spec_attributes():
    agents = [SimpleNamespace(name="a", obs_dim=18, n_actions=5, group="x")]
    assert size_students(agents, PROFILES["rpi5"])[0].macs == size_students([("a", 18, 5)], PROFILES["rpi5"])[0].macs


def test_agents_from_kdx_env_specs():
    base = pytest.importorskip("kdx.envs.base", reason="needs the training extras (torch)")
    agents = [base.AgentSpec("speaker_0", 3, 3, "speaker"), base.AgentSpec("listener_0", 11, 5, "listener")]
    rows = size_students(agents, PROFILES["jetson-nano"])
    assert [r.agent for r in rows] == ["speaker_0", "listener_0"]


@pytest.mark.parametrize(
    "spec",
    ["listener_0", "listener_0=", "listener_0=16x", "listener_0=x16", "listener_0=0", "listener_0=16,32",
     "listener_0=-4", "=16", "listener_0=abc", "listener_0=16X16"],
)
def test_malformed_override_states_the_syntax(spec):
    with pytest.raises(KdxError) as info:
        parse_overrides([spec], ["listener_0"])
    assert "malformed" in str(info.value) and "AGENT=W1xW2" in str(info.value)


def test_override_of_unknown_agent_lists_the_agents():
    with pytest.raises(KdxError) as info:
        parse_overrides(["agent_9=32"], ["agent_0", "agent_1"])
    assert "agent_9" in str(info.value) and "agent_0, agent_1" in str(info.value)
    with pytest.raises(KdxError, match="agents: a, b"):
        size_students([("a", 3, 3), ("b", 3, 3)], PROFILES["rpi4"], overrides={"c": StudentArch((8,))})


def test_override_twice_and_absurd_sizes_are_rejected():
    with pytest.raises(KdxError, match="twice"):
        parse_overrides(["a=16", "a=32"], ["a"])
    with pytest.raises(KdxError, match="at most"):
        parse_overrides(["a=100000"], ["a"])


@given(st.lists(st.integers(1, 4096), min_size=1, max_size=8))
def test_override_syntax_round_trips(widths):
    arch = StudentArch(tuple(widths))
    assert parse_overrides([f"a={arch.label}"], ["a"]) == {"a": arch}


def test_bad_agent_descriptions_are_rejected():
    with pytest.raises(KdxError, match="unique"):
        size_students([("a", 3, 3), ("a", 4, 3)], PROFILES["rpi4"])
    with pytest.raises(KdxError, match="obs_dim must be a positive integer"):
        size_students([("a", 0, 3)], PROFILES["rpi4"])
    with pytest.raises(KdxError, match="at least one agent"):
        size_students([], PROFILES["rpi4"])


def test_layer_norm_and_activation_apply_to_every_student():
    agents = [("a", 80, 14), ("b", 18, 5)]
    plain = {r.agent: r for r in size_students(agents, PROFILES["x86-cpu"])}
    rows = size_students(agents, PROFILES["x86-cpu"], {"b": StudentArch((32,))}, activation="tanh", layer_norm=True)
    for row in rows:
        assert row.arch.activation == "tanh" and row.arch.layer_norm
        assert row.params == student_cost(row.arch, row.obs_dim, row.n_actions).params
    assert rows[0].arch.hidden == plain["a"].arch.hidden
    assert rows[0].params == plain["a"].params + 2 * sum(plain["a"].arch.hidden)
    with pytest.raises(KdxError, match="relu, tanh"):
        size_students(agents, PROFILES["x86-cpu"], activation="gelu")
