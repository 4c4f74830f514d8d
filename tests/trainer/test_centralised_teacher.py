"""``--teacher-input centralised``: the actor reads its obs plus the global state; training,
resume, evaluation and distillation feed it that input; local teachers are unchanged."""

from __future__ import annotations

import math

import pytest
import torch

from kdx.cli import main
from kdx.envs.registry import make
from kdx.errors import KdxError
from kdx.trainer.common.evaluate import run_episodes
from kdx.trainer.distill.config import DistillConfig
from kdx.trainer.distill.loop import distill, read_distill_metrics
from kdx.trainer.teacher.config import TeacherConfig
from kdx.trainer.teacher.evaluate import TeacherPolicy
from kdx.trainer.teacher.mappo import read_metrics, train
from kdx.trainer.teacher.model import Teacher
from kdx.trainer.teacher.networks import count_parameters
from kdx.trainer.teacher.store import (
    load_teacher,
    load_teacher_tensors,
    save_teacher,
    teacher_tensors,
)


def test_config_field_validated_and_old_configs_load_as_local():
    assert TeacherConfig().teacher_input == "local" and not TeacherConfig().centralised_actor
    assert TeacherConfig(teacher_input="centralised").validate().centralised_actor
    with pytest.raises(KdxError, match="--teacher-input"):
        TeacherConfig(teacher_input="global").validate()
    old = TeacherConfig().to_json()
    del old["teacher_input"]
    assert TeacherConfig.from_json(old).teacher_input == "local"


def test_centralised_actor_gets_the_scaled_entropy_bonus(tmp_path):
    assert TeacherConfig(entropy_coef=0.01).effective_entropy_coef == 0.01  # local: unscaled
    assert TeacherConfig(entropy_coef=0.01, teacher_input="centralised").effective_entropy_coef == pytest.approx(0.02)
    with pytest.raises(KdxError, match="--centralised-entropy-scale"):
        TeacherConfig(centralised_entropy_scale=-1.0).validate()
    entropy = {}
    for scale in (0.0, 20.0):  # the bonus is what the PPO loss uses: a large one keeps the policy near uniform
        config = TeacherConfig(env="toy/match", total_steps=16 * 8 * 6, num_envs=16, rollout_length=8, hidden="16",
                               lr=0.01, threads=1, teacher_input="centralised", entropy_coef=0.05,
                               centralised_entropy_scale=scale)
        train(tmp_path / f"scale{scale}", config, show_progress=False)
        entropy[scale] = read_metrics(tmp_path / f"scale{scale}")[-1]["entropy"]
    assert entropy[20.0] > entropy[0.0] + 0.05, entropy


@pytest.mark.parametrize("kw", [{}, {"per_group_actors": True, "recurrent": True}])
def test_local_parameter_counts_unchanged(kw):
    """Pinned counts from before ``teacher_input`` existed: a local teacher builds the same networks."""
    spec = make("mpe/simple_spread", num_envs=1).spec
    teacher = Teacher.build(TeacherConfig(env="mpe/simple_spread", hidden="32,32", **kw), spec)
    assert count_parameters(teacher.actor) == (8495 if kw else 2095)
    assert count_parameters(teacher.critic) == 3151


@pytest.mark.parametrize("kw", [{}, {"per_group_actors": True, "recurrent": True}, {"agent_specific_state": True}])
def test_centralised_actor_reads_the_state(kw):
    env = make("mpe/simple_spread", num_envs=4, seed=0)
    spec, step = env.spec, env.reset()
    torch.manual_seed(0)
    teacher = Teacher.build(TeacherConfig(env="mpe/simple_spread", hidden="16", teacher_input="centralised", **kw),
                            spec).eval()
    for net in teacher.actor.nets.values():
        assert net.in_dim == spec.max_obs_dim + spec.n_agents and net.state_in[-1].in_features == spec.state_dim
    obs, mask = step.padded_obs(), step.padded_action_mask()
    hidden = teacher.actor.initial_hidden(4)
    other = step.state + torch.randn(step.state.shape, generator=torch.Generator().manual_seed(1))
    # fresh, the state's projection is zero: the actor acts as a local one whatever the state says
    a = teacher.forward_actor(obs, step.state, mask, hidden)
    torch.testing.assert_close(a.logits, teacher.forward_actor(obs, other, mask, hidden).logits,
                               rtol=0, atol=0)
    # ... yet the gradient reaches the state's weights, so training can make use of it
    teacher.actor.train()
    for p in teacher.actor.parameters():
        p.requires_grad_(True)
    teacher.forward_actor(obs, step.state, mask, hidden).logits.logsumexp(-1).sum().backward()
    assert all(net.state_in[-1].weight.grad.abs().sum() > 0 for net in teacher.actor.nets.values())
    with torch.no_grad():
        for net in teacher.actor.nets.values():
            net.state_in[-1].weight.normal_()
    a = teacher.forward_actor(obs, step.state, mask, hidden)
    b = teacher.forward_actor(obs, other, mask, hidden)
    assert a.logits.shape == (4, spec.n_agents, spec.max_actions)
    assert not torch.allclose(a.logits, b.logits) and not torch.allclose(a.embedding, b.embedding)
    with pytest.raises(AssertionError, match="state"):
        teacher.forward_actor(obs, step.state[:, :-1], mask, hidden)
    local = Teacher.build(TeacherConfig(env="mpe/simple_spread", hidden="16", **kw), spec).eval()
    torch.testing.assert_close(local.forward_actor(obs, step.state, mask, hidden).logits,
                               local.forward_actor(obs, step.state + 1.0, mask, hidden).logits, rtol=0, atol=0)


@pytest.mark.parametrize("env_name", ["toy/match", "mpe/simple_spread"])
def test_centralised_teacher_trains_resumes_and_evaluates(tmp_path, env_name):
    config = TeacherConfig(env=env_name, total_steps=8 * 10 * 3, num_envs=8, rollout_length=10, hidden="16",
                           epochs=2, minibatches=2, threads=1, checkpoint_every=1, teacher_input="centralised")
    train(tmp_path / "run", config, show_progress=False, stop_after_updates=2)
    last = train(tmp_path / "run", resume=True, show_progress=False)
    assert [m["update"] for m in read_metrics(tmp_path / "run")] == [1, 2, 3]
    assert all(math.isfinite(last[k]) for k in ("policy_loss", "value_loss", "entropy"))
    teacher = load_teacher(tmp_path / "run")  # rebuilt with the wider actor from the saved config
    assert teacher.actor.centralised and teacher.config.teacher_input == "centralised"
    spec = teacher.spec
    assert [(n.in_dim, n.state_in[-1].in_features) for n in teacher.actor.nets.values()] == \
        [(spec.max_obs_dim + spec.n_agents, spec.state_dim)]
    returns, _ = run_episodes(env_name, TeacherPolicy(teacher, greedy=True), 4)
    assert len(returns) == 4 and all(math.isfinite(r) for r in returns)


def test_distillation_from_a_centralised_teacher_runs_and_resumes(tmp_path):
    spec = make("toy/match", num_envs=1).spec
    config = DistillConfig(total_steps=16 * 4 * 3, checkpoint_every=1, num_envs=16, rollout_length=4, threads=1,
                           obs_norm_steps=4, epochs=2, minibatches=2)
    for name in ("straight", "resumed"):
        torch.manual_seed(0)
        teacher_config = TeacherConfig(env="toy/match", hidden="32,32", teacher_input="centralised")
        save_teacher(tmp_path / name, Teacher.build(teacher_config, spec))
    distill(tmp_path / "straight", config, show_progress=False)
    distill(tmp_path / "resumed", config, show_progress=False, stop_after_updates=2)
    distill(tmp_path / "resumed", resume=True, show_progress=False)
    lines, straight = read_distill_metrics(tmp_path / "resumed"), read_distill_metrics(tmp_path / "straight")
    assert [m["update"] for m in lines] == [1, 2, 3]
    assert lines[-1]["loss"] == straight[-1]["loss"] and math.isfinite(lines[-1]["loss"])


def test_train_cli_takes_teacher_input(tmp_path):
    run = tmp_path / "run"
    try:
        main(["train", "--out", str(run), "--env", "toy/match", "--steps", "128", "--num-envs", "16",
              "--rollout-length", "8", "--hidden", "8", "--threads", "1", "--teacher-input", "centralised", "--quiet"])
    except SystemExit as exc:  # the entry point may exit explicitly on success
        assert exc.code in (0, None)
    assert load_teacher(run).actor.centralised and len(read_metrics(run)) == 1


def test_weights_that_do_not_fit_are_refused_naming_the_tensors(tmp_path):
    spec = make("toy/match", num_envs=1).spec
    teacher = Teacher.build(TeacherConfig(env="toy/match", hidden="8", teacher_input="centralised"), spec)
    tensors = teacher_tensors(teacher)
    old_layout = {k: v for k, v in tensors.items() if ".state_in." not in k}  # how kdx saved them before
    with pytest.raises(KdxError, match=r"missing nets\.shared\.state_in\..*retrain it with `kdx train --teacher-input"):
        load_teacher_tensors(teacher, old_layout, tmp_path / "weights.safetensors")
    local = Teacher.build(TeacherConfig(env="toy/match", hidden="8"), spec)
    wide = Teacher.build(TeacherConfig(env="toy/match", hidden="16"), spec)
    with pytest.raises(KdxError, match=r"actor does not fit \(.*instead of .*\); the weights do not fit"):
        load_teacher_tensors(local, teacher_tensors(wide), tmp_path / "weights.safetensors")
    load_teacher_tensors(teacher, tensors, tmp_path / "weights.safetensors")  # its own weights load
