"""Tiny trained runs for export tests: students behaviour-cloned from MPE's scripted oracle
(so their logits have real margins, unlike fresh networks) and a small teacher (recurrent on
request), saved the way `kdx distill` and `kdx train` save them."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch

from kdx.envs.registry import make
from kdx.trainer.distill.cloning import clone_students
from kdx.trainer.distill.store import save_students
from kdx.trainer.distill.students import StudentPolicy
from kdx.trainer.teacher.config import TeacherConfig
from kdx.trainer.teacher.model import Teacher
from kdx.trainer.teacher.store import save_teacher


def save_run(run: Path, env_name: str, students: dict[str, StudentPolicy], recurrent_teacher: bool) -> Path:
    """Write RUN/students/ and RUN/teacher/ (an untrained 32x32 teacher) as the trainer does."""
    save_students(run, env_name, students)
    torch.manual_seed(1)
    spec = make(env_name, num_envs=1, seed=0).spec
    save_teacher(run, Teacher.build(TeacherConfig(env=env_name, hidden="32,32", recurrent=recurrent_teacher), spec))
    return run


@pytest.fixture(scope="session")
def spread_students() -> dict[str, StudentPolicy]:
    torch.set_num_threads(1)  # tiny matrices: a second thread only contends with other processes
    return clone_students("mpe/simple_spread")


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
        torch.set_num_threads(1)
        students = clone_students(env_name, train_steps=steps)
        return save_run(tmp_path / env_name.replace("/", "_"), env_name, students, recurrent_teacher)

    return make_run


@pytest.fixture(scope="session")
def run_saver():
    """:func:`save_run` for tests that build their own runs (a conftest is not importable)."""
    return save_run
