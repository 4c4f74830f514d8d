"""The students' files in a run folder, ``load_students`` and the distillation checkpoints.

Layout of ``RUN/students/``::

    config.json              DistillConfig, env name, device profile, teacher fingerprint,
                             per-agent architecture (``StudentPolicy.arch_json``), env spec
    <agent>.safetensors      one StudentPolicy state dict per agent (weights + obs normalisation)
    sizing.json              the sizing table (kdx.devices.sizing)
    metrics.jsonl  tb/       one JSON line per logged update
    checkpoints/000010/      students + projection heads, optimizer, env/RNG state, progress

Checkpoints are written into ``checkpoints/.tmp-*`` and renamed into place; per-agent files are
replaced atomically. Nothing is pickled.
"""

from __future__ import annotations

import hashlib
import json
import os
import shutil
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
from safetensors import SafetensorError, safe_open
from safetensors.torch import load_file, save_file
from torch import nn

from kdx.errors import KdxError
from kdx.trainer.checkpoint import _CKPT_NAME, atomic_save_tensors, atomic_write_text
from kdx.trainer.students import StudentPolicy

STUDENTS_DIR = "students"
KEEP_CHECKPOINTS = 2


@dataclass
class StudentPaths:
    """Where a run's student files live."""

    run: Path

    @property
    def students(self) -> Path:
        return self.run / STUDENTS_DIR

    @property
    def config(self) -> Path:
        return self.students / "config.json"

    @property
    def sizing(self) -> Path:
        return self.students / "sizing.json"

    @property
    def metrics(self) -> Path:
        return self.students / "metrics.jsonl"

    @property
    def tensorboard(self) -> Path:
        return self.students / "tb"

    @property
    def checkpoints(self) -> Path:
        return self.students / "checkpoints"

    def weights(self, agent: str) -> Path:
        return self.students / f"{agent}.safetensors"


def teacher_fingerprint(run_dir: Path) -> str:
    """sha256 of the teacher's published weights: a resume must distil from the same teacher."""
    path = Path(run_dir) / "teacher" / "weights.safetensors"
    return hashlib.sha256(path.read_bytes()).hexdigest()


def write_students_config(paths: StudentPaths, document: dict[str, Any]) -> None:
    paths.students.mkdir(parents=True, exist_ok=True)
    atomic_write_text(paths.config, json.dumps(document, indent=2))


def read_students_config(run_dir: str | Path) -> dict[str, Any]:
    """``RUN/students/config.json`` as a dict; ``KdxError`` when missing or damaged."""
    paths = StudentPaths(Path(run_dir))
    if not paths.config.is_file():
        raise KdxError(f"{paths.run} has no students: {paths.config} is missing (distil them with `kdx distill {paths.run} --device PROFILE`)")
    try:
        doc = json.loads(paths.config.read_text())
        if not isinstance(doc.get("agents"), dict) or not isinstance(doc.get("distill"), dict):
            raise KeyError("agents/distill")
        return doc
    except (json.JSONDecodeError, KeyError, AttributeError) as exc:
        raise KdxError(f"{paths.config} is not a valid students config ({exc}); re-run `kdx distill`") from None


def publish_students(paths: StudentPaths, students: dict[str, StudentPolicy]) -> None:
    """Write each student's state dict to ``RUN/students/<agent>.safetensors`` atomically."""
    for name, student in students.items():
        atomic_save_tensors(paths.weights(name), dict(student.state_dict()), metadata={"format": "kdx-student", "agent": name})


def load_students(run_dir: str | Path, device: str = "cpu") -> dict[str, StudentPolicy]:
    """``{agent name: StudentPolicy}`` (eval mode) from a run's ``students/`` folder, in env agent order.

    Raises ``KdxError`` when the students config or a weight file is missing, corrupt, or does not
    fit the architecture the config describes.
    """
    paths = StudentPaths(Path(run_dir))
    doc = read_students_config(run_dir)
    students: dict[str, StudentPolicy] = {}
    for name, arch in doc["agents"].items():
        student = StudentPolicy.from_arch_json(arch)
        path = paths.weights(name)
        if not path.is_file():
            raise KdxError(f"{path} is missing: the distillation has not written its students yet (resume it with `kdx distill --resume`)")
        try:
            tensors = load_file(str(path))
        except (OSError, SafetensorError) as exc:
            raise KdxError(f"{path} is corrupt ({exc}); re-run or resume `kdx distill`") from None
        try:
            student.load_state_dict(tensors, strict=True)
        except RuntimeError as exc:
            raise KdxError(f"{path} does not fit the student described in {paths.config} ({str(exc).splitlines()[0]})") from None
        students[name] = student.to(device).eval()
    return students


# ------------------------------------------------------------------ checkpoints
def module_tensors(prefix: str, modules: dict[str, nn.Module]) -> dict[str, torch.Tensor]:
    return {f"{prefix}.{name}.{k}": v for name, m in modules.items() for k, v in m.state_dict().items()}


def load_module_tensors(prefix: str, modules: dict[str, nn.Module], tensors: dict[str, torch.Tensor], source: Path) -> None:
    for name, m in modules.items():
        head = f"{prefix}.{name}."
        part = {k[len(head):]: v for k, v in tensors.items() if k.startswith(head)}
        try:
            m.load_state_dict(part, strict=True)
        except RuntimeError as exc:
            raise KdxError(f"{source}: {prefix} {name!r} does not fit ({str(exc).splitlines()[0]}); the checkpoint is damaged") from None


def _fsync(path: Path) -> None:
    fd = os.open(path, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def save_distill_checkpoint(paths: StudentPaths, update: int, weights: dict[str, torch.Tensor],
                            optimizer: tuple[dict[str, torch.Tensor], dict[str, str]],
                            state: dict[str, torch.Tensor], progress: dict[str, Any]) -> Path:
    """Write checkpoint ``update`` into a temp folder, rename it into place, keep the newest few."""
    paths.checkpoints.mkdir(parents=True, exist_ok=True)
    final = paths.checkpoints / f"{update:06d}"
    tmp = paths.checkpoints / f".tmp-{update:06d}-{os.getpid()}"
    if tmp.exists():
        shutil.rmtree(tmp)
    tmp.mkdir()
    save_file({k: v.detach().contiguous().cpu() for k, v in weights.items()}, str(tmp / "weights.safetensors"),
              metadata={"format": "kdx-students", "update": str(update)})
    opt_tensors, opt_meta = optimizer
    save_file({k: v.contiguous().cpu() for k, v in opt_tensors.items()}, str(tmp / "optimizer.safetensors"), metadata=opt_meta)
    save_file({k: v.detach().contiguous().cpu() for k, v in state.items()}, str(tmp / "state.safetensors"))
    (tmp / "progress.json").write_text(json.dumps(progress, indent=2))
    for f in tmp.iterdir():
        _fsync(f)
    _fsync(tmp)
    if final.exists():
        shutil.rmtree(tmp)
    else:
        os.rename(tmp, final)
    _fsync(paths.checkpoints)
    for old in complete_checkpoints(paths)[:-KEEP_CHECKPOINTS]:
        shutil.rmtree(old, ignore_errors=True)
    return final


def complete_checkpoints(paths: StudentPaths) -> list[Path]:
    if not paths.checkpoints.is_dir():
        return []
    return sorted(p for p in paths.checkpoints.iterdir() if p.is_dir() and _CKPT_NAME.match(p.name))


@dataclass
class DistillCheckpoint:
    path: Path
    weights: dict[str, torch.Tensor]
    optimizer: dict[str, torch.Tensor]
    optimizer_meta: dict[str, str]
    state: dict[str, torch.Tensor]
    progress: dict[str, Any]


def load_distill_checkpoint(paths: StudentPaths) -> DistillCheckpoint:
    """The newest readable checkpoint; ``KdxError`` when there is none."""
    for tmp in paths.checkpoints.glob(".tmp-*") if paths.checkpoints.is_dir() else []:
        shutil.rmtree(tmp, ignore_errors=True)
    errors = []
    for path in reversed(complete_checkpoints(paths)):
        try:
            with safe_open(str(path / "optimizer.safetensors"), "pt") as f:
                meta = f.metadata() or {}
            return DistillCheckpoint(path, load_file(str(path / "weights.safetensors")),
                                     load_file(str(path / "optimizer.safetensors")), meta,
                                     load_file(str(path / "state.safetensors")),
                                     json.loads((path / "progress.json").read_text()))
        except (OSError, SafetensorError, json.JSONDecodeError) as exc:
            errors.append(f"{path.name}: {exc}")
    detail = ("; unreadable: " + "; ".join(errors)) if errors else ""
    raise KdxError(f"{paths.students} has no complete checkpoint to resume from{detail}; start the distillation again without --resume")
