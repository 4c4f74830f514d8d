"""The students' files in a run folder (``RUN/students/``, see ``kdx.layout``) and ``load_students``.

    config.json              DistillConfig, env name, device profile (name, target, precision),
                             the recipe `kdx distill` used (none in older runs),
                             teacher fingerprint,
                             per-agent architecture (``StudentPolicy.arch_json``), env spec,
                             per-agent views when given (``StudentViews.to_json``: ops, text,
                             input features; absent = full observations)
    <agent>.safetensors      one StudentPolicy state dict per agent (weights + obs normalisation)
    sizing.json              the sizing table (kdx.devices.sizing) with every agent's costs, student
                             and teacher actor view, counted once (kdx.trainer.distill.costs)
    metrics.jsonl  tb/       one JSON line per logged update
    checkpoints/NNNNNN/      students + projection heads, optimizer, env/RNG state, progress
                             (``kdx.trainer.common.checkpoints``)

Per-agent files are published atomically after each checkpoint. Nothing is pickled.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from safetensors import SafetensorError
from safetensors.torch import load_file

from kdx.devices.profile import DeviceProfile
from kdx.errors import KdxError
from kdx.fileio import atomic_write_text, sha256_file
from kdx.layout import RunLayout, StudentsFolder
from kdx.trainer.common.checkpoints import CheckpointStore, atomic_save_tensors
from kdx.trainer.distill.students import StudentPolicy

CHECKPOINT_KIND = "kdx-students"


def checkpoint_store(folder: StudentsFolder) -> CheckpointStore:
    """The distillation stage's checkpoints."""
    return CheckpointStore(folder, CHECKPOINT_KIND)


def teacher_fingerprint(run_dir: Path) -> str:
    """sha256 of the teacher's published weights: a resume must distil from the same teacher."""
    return sha256_file(RunLayout(run_dir).teacher.weights)


def write_students_config(folder: StudentsFolder, document: dict[str, Any]) -> None:
    folder.root.mkdir(parents=True, exist_ok=True)
    atomic_write_text(folder.config, json.dumps(document, indent=2))


def read_students_config(run_dir: str | Path) -> dict[str, Any]:
    """``RUN/students/config.json`` as a dict; ``KdxError`` when missing or damaged."""
    folder = RunLayout(Path(run_dir)).students
    if not folder.config.is_file():
        raise KdxError(f"{run_dir} has no students: {folder.config} is missing (distil them with `kdx distill {run_dir} --profile PROFILE`)")
    try:
        doc = json.loads(folder.config.read_text())
        if not isinstance(doc.get("agents"), dict) or not isinstance(doc.get("distill"), dict):
            raise KeyError("agents/distill")
        return doc
    except (json.JSONDecodeError, KeyError, AttributeError) as exc:
        raise KdxError(f"{folder.config} is not a valid students config ({exc}); re-run `kdx distill`") from None


def profile_record(profile: DeviceProfile) -> dict[str, str]:
    """What ``students/config.json`` keeps of the device profile the students were sized for: its
    name, export target and default precision (what ``kdx export`` defaults to)."""
    return {"name": profile.name, "target": profile.target, "precision": profile.default_precision}


def students_profile(doc: dict[str, Any]) -> dict[str, str | None]:
    """The profile record of a students config (see ``profile_record``). Runs written before the
    record existed keep only ``"device_profile": NAME``; their target and precision come from the
    shipped profile of that name, or are None for a profile kdx does not ship."""
    record = doc.get("profile")
    if isinstance(record, dict):
        return {key: record.get(key) for key in ("name", "target", "precision")}
    name = doc.get("device_profile")
    from kdx.devices.registry import PROFILES

    shipped = PROFILES.get(name) if isinstance(name, str) else None
    return {"name": name if isinstance(name, str) else None,
            "target": shipped.target if shipped else None,
            "precision": shipped.default_precision if shipped else None}


def publish_students(folder: StudentsFolder, students: dict[str, StudentPolicy]) -> None:
    """Write each student's state dict to ``RUN/students/<agent>.safetensors`` atomically."""
    for name, student in students.items():
        atomic_save_tensors(folder.weights(name), dict(student.state_dict()), metadata={"format": "kdx-student", "agent": name})


def save_students(run_dir: str | Path, env_name: str, students: dict[str, StudentPolicy],
                  distill: dict[str, Any] | None = None) -> StudentsFolder:
    """Write ``students`` (one per agent, in env agent order) into ``RUN/students/`` as ``kdx
    distill`` publishes them, with a config naming ``env_name`` and ``distill`` (what made them):
    for students made outside ``kdx distill``, e.g. behaviour-cloned ones
    (``kdx.trainer.distill.cloning``) in tests and benchmarks."""
    folder = RunLayout(Path(run_dir)).students
    write_students_config(folder, {"env": env_name, "distill": dict(distill or {}),
                                   "agents": {name: s.arch_json() for name, s in students.items()}})
    publish_students(folder, students)
    return folder


def load_students(run_dir: str | Path, device: str = "cpu") -> dict[str, StudentPolicy]:
    """``{agent name: StudentPolicy}`` (eval mode) from a run's ``students/`` folder, in env agent order.

    Raises ``KdxError`` when the students config or a weight file is missing, corrupt, or does not
    fit the architecture the config describes.
    """
    folder = RunLayout(Path(run_dir)).students
    doc = read_students_config(run_dir)
    students: dict[str, StudentPolicy] = {}
    for name, arch in doc["agents"].items():
        student = StudentPolicy.from_arch_json(arch)
        path = folder.weights(name)
        if not path.is_file():
            raise KdxError(f"{path} is missing: the distillation has not written its students yet (resume it with `kdx distill --resume`)")
        try:
            tensors = load_file(str(path))
        except (OSError, SafetensorError) as exc:
            raise KdxError(f"{path} is corrupt ({exc}); re-run or resume `kdx distill`") from None
        try:
            student.load_state_dict(tensors, strict=True)
        except RuntimeError as exc:
            raise KdxError(f"{path} does not fit the student described in {folder.config} ({str(exc).splitlines()[0]})") from None
        students[name] = student.to(device).eval()
    return students


def load_student_views(run_dir: str | Path) -> dict[str, Any] | None:
    """The students' views as ``students/config.json`` records them (``StudentViews.to_json``), or
    None when the students read their full observations."""
    views = read_students_config(run_dir).get("views")
    return views or None


FULL_VIEW = "full"  # the text of a view that reads the whole observation


@dataclass(frozen=True)
class StudentInput:
    """What one student reads: its view as text (``sight:4, -ally.*.health``; ``FULL_VIEW`` when it
    reads its agent's whole observation), its input width and the full observation's width."""

    agent: str
    view: str
    input_size: int
    full_input_size: int

    @property
    def fraction(self) -> float:
        """Input width over the full observation's width (1.0 for the full view)."""
        return self.input_size / self.full_input_size if self.full_input_size else 1.0

    def to_json(self) -> dict[str, Any]:
        return {"view": self.view, "input_size": self.input_size, "full_input_size": self.full_input_size}


def student_inputs(run_dir: str | Path) -> dict[str, StudentInput]:
    """Per agent (students' order): the student's view and input size, from ``students/config.json``
    (its ``views`` record, else the full observation: the architecture's ``obs_dim``)."""
    doc = read_students_config(run_dir)
    views = doc.get("views") or {}
    spec_agents = (doc.get("env_spec") or {}).get("agents") or []
    full = {a.get("name"): a.get("obs_dim") for a in spec_agents if isinstance(a, dict)}
    out = {}
    for name, arch in doc["agents"].items():
        view = views.get(name) or {}
        features = view.get("features")
        size = len(features) if isinstance(features, list) else arch.get("obs_dim")
        if not isinstance(size, int):
            raise KdxError(f"{RunLayout(Path(run_dir)).students.config}: agent {name!r} has no input size "
                           "(no view features, no obs_dim); re-run `kdx distill`")
        full_size = full.get(name)
        out[name] = StudentInput(name, ", ".join(view.get("text") or []) or FULL_VIEW, size,
                                 full_size if isinstance(full_size, int) else size)
    return out
