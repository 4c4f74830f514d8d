"""A centralised teacher (it reads the global state) is skipped by export with a note; the
students export as they do from any run."""

from __future__ import annotations

import torch

from kdx.envs.registry import make
from kdx.export.bundle import ExportConfig, export_bundle
from kdx.runtime.manifest import load_manifest
from kdx.trainer.distill.store import save_students
from kdx.trainer.teacher.config import TeacherConfig
from kdx.trainer.teacher.model import Teacher
from kdx.trainer.teacher.store import save_teacher


def test_export_skips_a_centralised_teacher_and_exports_students(tmp_path, spread_students):
    run = tmp_path / "run"
    save_students(run, "mpe/simple_spread", spread_students)
    torch.manual_seed(1)
    spec = make("mpe/simple_spread", num_envs=1, seed=0).spec
    config = TeacherConfig(env="mpe/simple_spread", hidden="32,32", teacher_input="centralised")
    save_teacher(run, Teacher.build(config, spec))
    log: list[str] = []
    result = export_bundle(ExportConfig(run, "x86"), log=log.append)
    notes = [line for line in log if "teacher actor not exported" in line]
    assert len(notes) == 1 and "centralised" in notes[0]
    assert any("teacher actor not exported" in w for w in result.warnings)
    manifest = load_manifest(result.bundle_dir)
    assert manifest.teacher == [] and sorted(a.name for a in manifest.agents) == sorted(spread_students)
    assert not (result.bundle_dir / "teacher").exists()
