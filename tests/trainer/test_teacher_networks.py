"""Actor/critic shapes, masking, per-agent views, per-group actors, GRU; config validation."""

from __future__ import annotations

import pytest
import torch

from kdx.envs.registry import make
from kdx.errors import KdxError
from kdx.trainer.common.config_options import field_help
from kdx.trainer.common.sampling import masked_logits, sample_actions
from kdx.trainer.teacher.config import TeacherConfig
from kdx.trainer.teacher.model import Teacher
from kdx.trainer.teacher.networks import TeacherActor, TeacherCritic


@pytest.fixture()
def toy_step():
    env = make("toy/match", num_envs=6, seed=0)
    return env, env.reset()


@pytest.mark.parametrize("per_group", [False, True])
@pytest.mark.parametrize("recurrent", [False, True])
def test_actor_shapes_and_agent_view_agree(toy_step, per_group, recurrent):
    env, step = toy_step
    spec = env.spec
    torch.manual_seed(0)
    actor = TeacherActor(spec, (16, 8), "tanh", recurrent=recurrent, per_group=per_group)
    obs = step.padded_obs()
    hidden = actor.initial_hidden(6)
    out = actor(obs, hidden)
    assert out.logits.shape == (6, 2, spec.max_actions)
    assert out.embedding.shape == (6, 2, 8)
    assert (out.hidden is not None) == recurrent
    assert len(actor.nets) == (2 if per_group else 1)
    for i, agent in enumerate(spec.agents):
        view = actor.agent_view(i, agent.n_actions, agent.obs_dim)
        logits, _ = view(step.obs[i], None if hidden is None else hidden[:, i])
        assert logits.shape == (6, agent.n_actions)
        torch.testing.assert_close(logits, out.logits[:, i, : agent.n_actions])


def test_masked_and_padded_actions_are_never_sampled(toy_step):
    env, step = toy_step
    actor = TeacherActor(env.spec, (8,))
    with torch.no_grad():
        logits = actor(step.padded_obs()).logits * 0 + 5.0  # make illegal actions attractive
    mask = step.padded_action_mask()
    g = torch.Generator().manual_seed(0)
    for _ in range(50):
        a = sample_actions(masked_logits(logits, mask), g)
        assert bool(mask.gather(-1, a.unsqueeze(-1)).all())
    assert not bool(mask[:, 0, 3].any()), "agent 0 has 3 actions: its 4th is padding"


def test_critic_global_and_agent_specific(toy_step):
    env, step = toy_step
    obs = step.padded_obs()
    for agent_specific in (False, True):
        for input_norm in (False, True):
            critic = TeacherCritic(env.spec, (16,), agent_specific=agent_specific, input_norm=input_norm)
            assert critic(step.state, obs).shape == (6, 2)
            assert isinstance(critic.trunk[0], torch.nn.LayerNorm) == input_norm


def test_teacher_values_are_denormalised(toy_step):
    env, step = toy_step
    teacher = Teacher.build(TeacherConfig(env="toy/match", hidden="8"), env.spec)
    teacher.value_norm.update(torch.tensor([100.0, 104.0]))
    raw = teacher.critic(step.state, step.padded_obs())
    torch.testing.assert_close(teacher.values(step.state, step.padded_obs()), raw * teacher.value_norm.std.float() + 102.0)


@pytest.mark.parametrize(
    ("changes", "message"),
    [
        ({"lr": -1e-3}, "--lr must be positive"),
        ({"num_envs": 10, "minibatches": 3}, "does not divide --num-envs"),
        ({"gamma": 1.5}, "--gamma must be between 0 and 1"),
        ({"hidden": "64,x"}, "--hidden"),
        ({"activation": "gelu"}, "--activation"),
        ({"total_steps": 10, "num_envs": 8}, "less than one rollout"),
        ({"epochs": 0}, "--epochs must be a positive integer"),
    ],
)
def test_bad_config_is_a_clear_error(changes, message):
    with pytest.raises(KdxError, match=message):
        TeacherConfig(**changes).validate()


def test_every_config_field_has_a_one_line_description():
    helps = field_help(TeacherConfig)
    assert helps and all(h and "\n" not in h for h in helps.values())
    TeacherConfig().validate()
