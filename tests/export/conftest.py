"""Tiny trained runs for export tests: students behaviour-cloned from MPE's scripted oracle
(so their logits have real margins, unlike fresh networks) and a small teacher (recurrent on
request), saved the way `kdx distill` and `kdx train` save them."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch

from kdx.envs.mpe.oracles import ORACLES
from kdx.envs.registry import make
from kdx.layout import RunLayout
from kdx.trainer.common.checkpoints import atomic_save_tensors
from kdx.trainer.distill.store import publish_students, write_students_config
from kdx.trainer.distill.students import StudentPolicy
from kdx.trainer.teacher.config import TeacherConfig
from kdx.trainer.teacher.model import Teacher
from kdx.trainer.teacher.store import teacher_tensors, write_teacher_config


def train_students(env_name: str, hidden: tuple[int, ...] = (32,), steps: int = 150,
                   seed: int = 0) -> dict[str, StudentPolicy]:
    """Behaviour-clone the env's oracle into one StudentPolicy per agent (~1 s, one thread)."""
    torch.set_num_threads(1)  # tiny matrices: a second thread only contends with other processes
    torch.manual_seed(seed)
    env = make(env_name, num_envs=64, seed=seed)
    step = env.reset()
    names = env.spec.agent_names
    obs = {n: [] for n in names}
    acts = {n: [] for n in names}
    for _ in range(40):
        actions = ORACLES[env_name](env)
        for i, n in enumerate(names):
            obs[n].append(step.obs[i])
            acts[n].append(actions[:, i])
        step = env.step(actions)
    students = {}
    for spec in env.spec.agents:
        x, y = torch.cat(obs[spec.name]), torch.cat(acts[spec.name])
        student = StudentPolicy(spec.obs_dim, spec.n_actions, hidden)
        student.set_obs_normalisation(x.mean(0), x.std(0))
        opt = torch.optim.Adam(student.parameters(), 1e-2)
        for _ in range(steps):
            loss = torch.nn.functional.cross_entropy(student(x)[0], y)
            opt.zero_grad()
            loss.backward()
            opt.step()
        students[spec.name] = student.eval()
    return students


def save_run(run: Path, env_name: str, students: dict[str, StudentPolicy], recurrent_teacher: bool) -> Path:
    """Write RUN/students/ and RUN/teacher/ as the trainer does."""
    paths = RunLayout(run).students
    config = {"env": env_name, "distill": {}, "agents": {n: s.arch_json() for n, s in students.items()}}
    write_students_config(paths, config)
    publish_students(paths, students)
    torch.manual_seed(1)
    spec = make(env_name, num_envs=1, seed=0).spec
    teacher_config = TeacherConfig(env=env_name, hidden="32,32", recurrent=recurrent_teacher)
    teacher = Teacher.build(teacher_config, spec)
    run_paths = RunLayout(run).teacher
    write_teacher_config(run_paths, teacher_config, spec.to_json())
    atomic_save_tensors(run_paths.weights, teacher_tensors(teacher))
    return run


@pytest.fixture(scope="session")
def spread_students() -> dict[str, StudentPolicy]:
    torch.set_num_threads(1)
    return train_students("mpe/simple_spread")


@pytest.fixture
def spread_run(tmp_path: Path, spread_students) -> Path:
    """A simple_spread run (3 agents) with trained students and a recurrent teacher."""
    return save_run(tmp_path / "run", "mpe/simple_spread", spread_students, recurrent_teacher=True)


@pytest.fixture(scope="module")
def rpi_export(tmp_path_factory, spread_students):
    """One int8 (rpi) export of a 3-agent run with a recurrent teacher and dynamic-batch models."""
    from kdx.export.bundle import ExportConfig, export_bundle

    run = save_run(tmp_path_factory.mktemp("rpi") / "run", "mpe/simple_spread", spread_students,
                   recurrent_teacher=True)
    return export_bundle(ExportConfig(run, "rpi", dynamic_batch=True))


@pytest.fixture
def make_bc_run(tmp_path: Path):
    """``make_bc_run(env_name, steps=..., recurrent_teacher=...) -> run folder`` for other envs."""

    def make_run(env_name: str, steps: int = 150, recurrent_teacher: bool = False) -> Path:
        students = train_students(env_name, steps=steps)
        return save_run(tmp_path / env_name.replace("/", "_"), env_name, students, recurrent_teacher)

    return make_run
