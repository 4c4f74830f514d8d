"""The one cost rule (kdx.devices.cost) on kdx's real networks, cross-checked by two independent
counters: torch.utils.flop_counter (2 x weight multiply-adds, no bias) and ptflops' aten backend
(weight multiply-adds + bias adds). Students and the teacher actor seen from each agent: shared
and per-group actors, padded observations, with and without input norm, with a GRU."""

from __future__ import annotations

import io

import pytest
import torch
from torch import nn
from torch.utils.flop_counter import FlopCounterMode

from kdx.devices.cost import NetworkCost
from kdx.devices.mlp import StudentArch, student_cost
from kdx.envs.base import AgentSpec, EnvSpec
from kdx.trainer.common.layers import describe_layers, module_cost
from kdx.trainer.distill.students import StudentPolicy
from kdx.trainer.teacher.networks import TeacherActor

# speaker (3 obs) and listener (11 obs) in different groups: the shared actor pads the speaker.
SPEC = EnvSpec("test/two_groups", (AgentSpec("speaker_0", 3, 3, "speaker"), AgentSpec("listener_0", 11, 5, "listener")),
               state_dim=14, episode_limit=25)


def torch_counter_macs(module: nn.Module, *inputs: torch.Tensor) -> int:
    """torch's FlopCounter counts 2 x M x N x K per matrix product (no bias): / 2 = weight MACs."""
    counter = FlopCounterMode(display=False)
    with torch.no_grad(), counter:
        module(*inputs)
    return counter.get_total_flops() // 2


def ptflops_macs(module: nn.Module, input_dim: int) -> int:
    """ptflops (aten backend, explicit: the default changed between releases) counts each
    addmm's weight multiply-adds plus its bias adds."""
    from ptflops import get_model_complexity_info

    class FirstOutput(nn.Module):
        def __init__(self) -> None:
            super().__init__()
            self.net = module

        def forward(self, x: torch.Tensor) -> torch.Tensor:
            out = self.net(x)
            return out[0] if isinstance(out, tuple) else out

    with torch.no_grad():
        macs, _ = get_model_complexity_info(FirstOutput().eval(), (input_dim,), as_strings=False,
                                            print_per_layer_stat=False, backend="aten", ost=io.StringIO())
    return int(macs)


def bias_adds(module: nn.Module) -> int:
    return sum(p.numel() for m in module.modules() if isinstance(m, (nn.Linear, nn.GRUCell))
               for name, p in m.named_parameters(recurse=False) if name.startswith("bias"))


def trainable(module: nn.Module) -> int:
    return sum(p.numel() for p in module.parameters())


@pytest.mark.parametrize("obs_dim, n_actions, hidden, activation", [
    (18, 5, (32, 16), "tanh"), (3, 3, (8,), "relu"), (80, 14, (64, 64), "relu"),
])
def test_student_cost_agrees_with_both_counters_and_with_sizing(obs_dim, n_actions, hidden, activation):
    student = StudentPolicy(obs_dim, n_actions, hidden, activation).eval()
    cost = module_cost(student)
    assert cost == student_cost(StudentArch(hidden), obs_dim, n_actions)  # the module and sizing agree
    assert cost.params == trainable(student)  # obs_mean/obs_std are buffers, not parameters
    assert cost.macs == torch_counter_macs(student, torch.zeros(1, obs_dim))
    pytest.importorskip("ptflops")
    assert cost.macs == ptflops_macs(student, obs_dim) - bias_adds(student)


@pytest.mark.parametrize("per_group", [False, True], ids=["shared", "per-group"])
@pytest.mark.parametrize("recurrent", [False, True], ids=["mlp", "gru"])
@pytest.mark.parametrize("input_norm", [True, False], ids=["input-norm", "raw"])
def test_teacher_actor_views_agree_with_both_counters(per_group, recurrent, input_norm):
    pytest.importorskip("ptflops")
    actor = TeacherActor(SPEC, (32, 24), recurrent=recurrent, per_group=per_group, input_norm=input_norm).eval()
    for i, agent in enumerate(SPEC.agents):
        view = actor.agent_view(i, agent.n_actions, agent.obs_dim)
        cost = module_cost(view)
        assert cost.params == trainable(view)
        hidden = torch.zeros(1, 24) if recurrent else None
        assert cost.macs == torch_counter_macs(view, torch.zeros(1, agent.obs_dim), hidden)
        # by hand: the group's widest observation plus the 2 agent ids in, the group's widest action count out
        width_in = (agent.obs_dim if per_group else 11) + 2
        width_out = agent.n_actions if per_group else 5
        gru = 3 * 24 * (24 + 24) if recurrent else 0
        assert cost.macs == width_in * 32 + 32 * 24 + gru + 24 * width_out
        assert cost.macs == ptflops_macs(view, agent.obs_dim) - bias_adds(view)


def test_a_layer_without_a_description_is_refused_not_skipped():
    with pytest.raises(TypeError, match="Conv1d"):
        describe_layers(nn.Sequential(nn.Linear(4, 4), nn.Conv1d(1, 1, 3)))
    assert module_cost(nn.Sequential(nn.Linear(4, 3), nn.ReLU(), nn.LayerNorm(3))) == NetworkCost(4 * 3 + 3 + 6, 12)
