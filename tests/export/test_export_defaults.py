"""`kdx export RUN` with no --target: the bundle is for the device profile the students were
distilled for (its target, at its default precision); --target and --precision override that."""

from __future__ import annotations

import shutil
from pathlib import Path

import pytest

import kdx.devices
from kdx.devices.targets import TARGETS
from kdx.errors import KdxError
from kdx.export.bundle import ExportConfig, export_bundle, export_target
from kdx.layout import RunLayout
from kdx.runtime.manifest import load_manifest
from kdx.trainer.distill.config import DistillConfig
from kdx.trainer.distill.loop import distill
from kdx.trainer.distill.store import read_students_config, write_students_config
from kdx.trainer.teacher.config import TeacherConfig
from kdx.trainer.teacher.mappo import train


@pytest.fixture(scope="module")
def distilled_run(tmp_path_factory) -> Path:
    """A real `kdx train` + `kdx distill` (a few updates each) for a profile of our own: x86 at
    fp16. Every shipped profile's default precision is also its target's, so only a profile like
    this one tells "the profile's precision" from "the target's"."""
    root = tmp_path_factory.mktemp("defaults")
    shipped = Path(kdx.devices.__file__).parent / "profiles" / "x86-cpu.toml"
    profile = root / "x86-half.toml"
    profile.write_text(shipped.read_text().replace('name = "x86-cpu"', 'name = "x86-half"')
                       .replace('default_precision = "fp32"', 'default_precision = "fp16"'))
    run = root / "run"
    train(run, TeacherConfig(env="mpe/simple_spread", num_envs=8, rollout_length=10, hidden="32,32", epochs=1,
                             threads=1, total_steps=160), show_progress=False)
    distill(run, DistillConfig(profile=str(profile), total_steps=128, num_envs=16, rollout_length=8,
                               obs_norm_steps=2, threads=1), show_progress=False)
    return run


def _copy_run(run: Path, dest: Path, students: bool = True) -> Path:
    shutil.copytree(RunLayout(run).teacher.root, RunLayout(dest).teacher.root)
    if students:
        shutil.copytree(RunLayout(run).students.root, RunLayout(dest).students.root)
    return dest


def test_export_defaults_to_the_students_profile(distilled_run: Path) -> None:
    assert read_students_config(distilled_run)["profile"] == {"name": "x86-half", "target": "x86", "precision": "fp16"}
    result = export_bundle(ExportConfig(distilled_run, include_teacher=False))
    assert result.bundle_dir == RunLayout(distilled_run).bundle("x86")
    manifest = load_manifest(result.bundle_dir)
    assert (manifest.target, manifest.precision) == ("x86", "fp16")  # x86's own default is fp32
    assert all(a.precision in ("fp16", "fp32") for a in manifest.agents)  # fp32: a per-agent fallback
    # --precision and --target still override the profile
    assert export_target(ExportConfig(distilled_run, precision="int8")) == (TARGETS["x86"], "int8")
    assert export_target(ExportConfig(distilled_run, "rpi")) == (TARGETS["rpi"], "int8")
    assert export_target(ExportConfig(distilled_run, "jetson-orin-nano")) == (TARGETS["jetson"], "fp16")


def test_cli_export_without_target_and_its_overrides(distilled_run: Path, tmp_path: Path, capsys, run_kdx) -> None:
    run = _copy_run(distilled_run, tmp_path / "run")
    assert run_kdx(["export", str(run), "--no-teacher", "--precision", "fp32"]) == 0
    manifest = load_manifest(RunLayout(run).bundle("x86"))
    assert (manifest.target, manifest.precision) == ("x86", "fp32")
    capsys.readouterr()
    teacher_only = _copy_run(distilled_run, tmp_path / "teacher-only", students=False)
    assert run_kdx(["export", str(teacher_only)]) == 2
    err = " ".join(capsys.readouterr().err.split())
    assert "has no students" in err and "--target" in err and "kdx distill" in err


def test_runs_written_before_the_profile_record(distilled_run: Path, tmp_path: Path) -> None:
    """Older students configs name the profile only (``device_profile``): a shipped one still gives
    the target; a profile file kdx does not ship cannot, and the error asks for --target."""
    run = _copy_run(distilled_run, tmp_path / "run")
    doc = read_students_config(run)
    del doc["profile"]
    write_students_config(RunLayout(run).students, {**doc, "device_profile": "rpi5"})
    assert export_target(ExportConfig(run)) == (TARGETS["rpi"], "int8")
    write_students_config(RunLayout(run).students, {**doc, "device_profile": "boards/mine.toml"})
    with pytest.raises(KdxError, match=r"'boards/mine.toml'.*pass --target"):
        export_target(ExportConfig(run))
    assert export_target(ExportConfig(run, "x86")) == (TARGETS["x86"], "fp32")
