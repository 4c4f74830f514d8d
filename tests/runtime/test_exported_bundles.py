"""Bundles written by the real exporter (kdx export) run on every runtime backend with the same
actions, including the recurrent MAPPO teacher, int8 Q/DQ and fp16 graphs, and in closed loop.

Needs the training extras (torch) to write the bundle; the runtime side stays torch-free."""

from __future__ import annotations

import dataclasses
from pathlib import Path

import numpy as np
import pytest

pytest.importorskip("torch", reason="writing a bundle with kdx export needs torch")
pytest.importorskip("onnx", reason="kdx export needs onnx")


@pytest.fixture(scope="module", params=["x86", "rpi"])
def exported(request: pytest.FixtureRequest, tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A tiny simple_spread run (random students, recurrent teacher), exported for the target."""
    import torch

    try:
        from kdx.envs.registry import make
        from kdx.export.bundle import ExportConfig, export_bundle
        from kdx.trainer.distill.store import save_students
        from kdx.trainer.distill.students import StudentPolicy
        from kdx.trainer.teacher.config import TeacherConfig
        from kdx.trainer.teacher.model import Teacher
        from kdx.trainer.teacher.store import save_teacher
    except ImportError as exc:  # the exporter or trainer is not in this tree
        pytest.skip(f"exporter/trainer not importable: {exc}")
    torch.manual_seed(0)
    torch.set_num_threads(1)
    run = tmp_path_factory.mktemp(request.param) / "run"
    spec = make("mpe/simple_spread", num_envs=1, seed=0).spec
    students = {a.name: StudentPolicy(a.obs_dim, a.n_actions, (32,)).eval() for a in spec.agents}
    for student in students.values():
        student.set_obs_normalisation(torch.randn(student.obs_dim), torch.rand(student.obs_dim) + 0.5)
    save_students(run, "mpe/simple_spread", students)
    save_teacher(run, Teacher.build(TeacherConfig(env="mpe/simple_spread", hidden="32,32", recurrent=True), spec))
    return export_bundle(ExportConfig(run, request.param)).bundle_dir


def test_every_backend_agrees_on_exported_models(exported: Path) -> None:
    from kdx.runtime.bundle import Bundle
    from kdx.runtime.policy import Policy

    bundle = Bundle.load(exported)
    rng = np.random.default_rng(0)
    for entry in bundle.manifest.entries():
        reference = bundle.policy(entry.name, "onnxruntime", entry.role)
        graph_only = dataclasses.replace(entry, files=[f for f in entry.files if f.kind != "npz"])
        interpreted = Policy(graph_only, bundle.open_backend(graph_only, "numpy"))
        candidates = [interpreted]
        if entry.precision == "fp32":  # the npz sidecar holds the float weights
            candidates.append(bundle.policy(entry.name, "numpy", entry.role))
        for _ in range(60):
            obs = rng.standard_normal(entry.obs_dim).astype(np.float32)
            mask = rng.random(entry.n_actions) < 0.6
            mask[0] = True
            expected = reference.act(obs, mask)
            for policy in candidates:
                assert policy.act(obs, mask) == expected, (entry.role, entry.name)
                np.testing.assert_allclose(policy.last_logits(), reference.last_logits(), atol=2e-3)


def test_exported_students_run_closed_loop(exported: Path) -> None:
    pytest.importorskip("mpe2")
    from kdx.runtime.bundle import Bundle
    from kdx.runtime.closed_loop import make_parallel_env, run_episodes

    bundle = Bundle.load(exported)
    policies = {name: bundle.policy(name) for name in bundle.agent_names}
    result = run_episodes(make_parallel_env("pettingzoo:mpe2.simple_spread_v3", 5), policies, 2)
    assert result.steps == 10 and len(result.latency_samples_ns) == 30


def test_the_exported_tarball_loads_like_the_folder(exported: Path) -> None:
    from kdx.runtime.bundle import Bundle

    tarball = exported.parent / f"{exported.name}.tar.gz"
    assert tarball.is_file()
    from_tar, from_folder = Bundle.load(tarball), Bundle.load(exported)
    assert from_tar.manifest == from_folder.manifest
    obs = np.zeros(from_folder.manifest.agents[0].obs_dim, np.float32)
    assert from_tar.policy("agent_0").act(obs) == from_folder.policy("agent_0").act(obs)
