"""Behaviour-cloned students (kdx.trainer.distill.cloning) and run folders written outside the
training loops (save_teacher, save_students) that load like trained ones."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch

from kdx.envs.mpe.oracles import oracle_actions
from kdx.envs.registry import make
from kdx.errors import KdxError
from kdx.trainer.distill.cloning import clone_students, record_demonstrations
from kdx.trainer.distill.store import load_students, read_students_config, save_students
from kdx.trainer.teacher.config import TeacherConfig
from kdx.trainer.teacher.model import Teacher
from kdx.trainer.teacher.store import load_teacher, save_teacher, teacher_tensors


@pytest.fixture(scope="module")
def spread_students():
    torch.set_num_threads(1)
    return clone_students("mpe/simple_spread")


def test_cloned_students_agree_with_the_oracle_on_held_out_states(spread_students):
    env = make("mpe/simple_spread", num_envs=64, seed=123)  # another seed than the demonstrations
    held_out = record_demonstrations(env, oracle_actions, 40)
    assert tuple(spread_students) == env.spec.agent_names
    for name, (obs, actions) in held_out.items():
        with torch.no_grad():
            right = spread_students[name](obs)[0].argmax(-1) == actions
        # the oracle mostly stays put once on its landmark (~70% of steps): the moves are what
        # was learnt, so the bar is also on the mean recall over the oracle's actions (chance 0.2)
        recall = [right[actions == a].float().mean().item() for a in actions.unique()]
        assert right.float().mean().item() > 0.65, name
        assert sum(recall) / len(recall) > 0.35 and min(recall) > 0.1, (name, recall)


def test_cloning_follows_the_given_policy():
    """toy/match: the right action is a function of the agent's own observation, so a student
    cloned from the policy that always plays it is exact."""
    def right_answers(env):
        return env.target.clone()

    students = clone_students("toy/match", right_answers, hidden=(16,), num_envs=32, rollout_steps=8,
                              train_steps=200)
    env = make("toy/match", num_envs=32, seed=5)
    for name, (obs, actions) in record_demonstrations(env, right_answers, 4).items():
        with torch.no_grad():
            assert torch.equal(students[name](obs)[0].argmax(-1), actions), name


def test_cloning_needs_a_policy_where_the_env_has_no_oracle():
    with pytest.raises(KdxError, match="no scripted oracle"):
        clone_students("toy/match", num_envs=2, rollout_steps=1, train_steps=1)


def test_a_saved_run_loads_like_a_trained_one(tmp_path: Path, spread_students):
    run = tmp_path / "run"
    save_students(run, "mpe/simple_spread", spread_students, {"note": "behaviour cloning"})
    spec = make("mpe/simple_spread", num_envs=1).spec
    torch.manual_seed(1)
    teacher = Teacher.build(TeacherConfig(env="mpe/simple_spread", hidden="32,32", recurrent=True), spec)
    save_teacher(run, teacher)

    loaded = load_teacher(run, env="mpe/simple_spread")
    assert loaded.config == teacher.config and loaded.spec.to_json() == spec.to_json()
    saved, again = teacher_tensors(teacher), teacher_tensors(loaded)
    assert saved.keys() == again.keys() and all(torch.equal(saved[k], again[k]) for k in saved)

    students = load_students(run)
    assert list(students) == list(spread_students)
    assert read_students_config(run)["distill"] == {"note": "behaviour cloning"}
    obs = torch.randn(16, spec.agents[0].obs_dim)
    for name, student in students.items():
        assert student.arch_json() == spread_students[name].arch_json()
        with torch.no_grad():
            assert torch.equal(student(obs)[0], spread_students[name](obs)[0])
