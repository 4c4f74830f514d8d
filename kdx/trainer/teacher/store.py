"""The teacher's files in a run folder (``RUN/teacher/``, see ``kdx.layout``) and ``load_teacher``.

    config.json              TeacherConfig, the env spec and, for runs of ``kdx train``, the recipe it
                             used (``RecipeUse.to_json``; older runs have none); written once, at the start
    weights.safetensors      actor.*, critic.*, value_norm.* of the newest checkpoint
    optimizer.safetensors    Adam state of the newest checkpoint
    metrics.jsonl  tb/       one JSON line per logged update
    checkpoints/NNNNNN/      resumable checkpoints (``kdx.trainer.common.checkpoints``)

After each checkpoint the weights and optimizer are published at the top level (atomically), which
is what later stages load. Nothing is pickled.
"""

from __future__ import annotations

import json
from pathlib import Path

import torch
from safetensors import SafetensorError
from safetensors.torch import load_file

from kdx.errors import KdxError
from kdx.fileio import atomic_write_text
from kdx.layout import RunLayout, TeacherFolder
from kdx.trainer.common.checkpoints import (
    CheckpointStore,
    atomic_save_tensors,
    load_module_tensors,
    module_tensors,
)
from kdx.trainer.common.recipes import RecipeUse
from kdx.trainer.teacher.config import TeacherConfig
from kdx.trainer.teacher.model import Teacher, spec_from_json

CHECKPOINT_KIND = "kdx-teacher"


def teacher_modules(teacher: Teacher) -> dict[str, torch.nn.Module]:
    """The teacher's saved modules by the prefix of their tensors."""
    return {"actor": teacher.actor, "critic": teacher.critic, "value_norm": teacher.value_norm}


def teacher_tensors(teacher: Teacher) -> dict[str, torch.Tensor]:
    """Actor, critic and value normaliser as flat ``{prefix.param: tensor}``."""
    return module_tensors(teacher_modules(teacher))


def load_teacher_tensors(teacher: Teacher, tensors: dict[str, torch.Tensor], source: Path) -> None:
    """Inverse of :func:`teacher_tensors`."""
    fix = "the weights do not fit the network described by config.json; retrain the run"
    if teacher.actor.centralised and not any(".state_in." in k for k in tensors):
        fix = ("it is a centralised teacher saved before kdx gave the global state its own input layer "
               "(the state was appended to the observation then); retrain it with `kdx train --teacher-input "
               "centralised`")
    load_module_tensors(teacher_modules(teacher), tensors, source, fix=fix)


def checkpoint_store(folder: TeacherFolder) -> CheckpointStore:
    """The teacher stage's checkpoints."""
    return CheckpointStore(folder, CHECKPOINT_KIND)


def publish_teacher(folder: TeacherFolder, weights: dict[str, torch.Tensor],
                    optimizer: tuple[dict[str, torch.Tensor], dict[str, str]], update: int) -> None:
    """Replace the top-level weights and optimizer (what later stages and ``--resume`` read) atomically."""
    atomic_save_tensors(folder.weights, weights, metadata={"format": CHECKPOINT_KIND, "update": str(update)})
    opt_tensors, opt_meta = optimizer
    atomic_save_tensors(folder.optimizer, opt_tensors, metadata=opt_meta)


def write_teacher_config(folder: TeacherFolder, config: TeacherConfig, spec_json: dict,
                         recipe: RecipeUse | None = None) -> None:
    folder.root.mkdir(parents=True, exist_ok=True)
    document = {"teacher": config.to_json(), "env_spec": spec_json}
    if recipe is not None:
        document["recipe"] = recipe.to_json()
    atomic_write_text(folder.config, json.dumps(document, indent=2))


def save_teacher(run_dir: str | Path, teacher: Teacher) -> TeacherFolder:
    """Write ``teacher`` into ``RUN/teacher/`` as ``kdx train`` publishes it (config.json and
    weights.safetensors; no optimizer or checkpoints, so it loads but does not resume): for
    teachers made outside ``kdx train``, e.g. in tests and benchmarks."""
    folder = RunLayout(Path(run_dir)).teacher
    write_teacher_config(folder, teacher.config, teacher.spec.to_json())
    atomic_save_tensors(folder.weights, teacher_tensors(teacher), metadata={"format": CHECKPOINT_KIND})
    return folder


def read_teacher_config(folder: TeacherFolder) -> tuple[TeacherConfig, dict]:
    """The teacher's config and env spec; ``KdxError`` when the run has none or it is damaged."""
    if not folder.config.is_file():
        raise KdxError(f"{folder.root.parent} is not a kdx run: {folder.config} is missing (train one with `kdx train`)")
    try:
        data = json.loads(folder.config.read_text())
        return TeacherConfig.from_json(data["teacher"]), data["env_spec"]
    except (json.JSONDecodeError, KeyError, TypeError) as exc:
        raise KdxError(f"{folder.config} is not a valid teacher config ({exc}); the run folder is damaged") from None


def load_teacher(run_dir: str | Path, device: str = "cpu", env: str | None = None) -> Teacher:
    """The frozen teacher of ``run_dir`` (eval mode, no grads) on ``device``.

    Raises ``KdxError`` when the run has no teacher, its weights are missing or corrupt, or
    ``env`` is given and differs from the env the teacher was trained on.
    """
    folder = RunLayout(Path(run_dir)).teacher
    config, spec_json = read_teacher_config(folder)
    if env is not None and env != config.env:
        raise KdxError(f"{run_dir} holds a teacher for {config.env!r}, not for {env!r}")
    if not folder.weights.is_file():
        raise KdxError(f"{folder.weights} is missing: the run has no checkpoint yet (train longer, or resume it)")
    try:
        tensors = load_file(str(folder.weights))
    except (OSError, SafetensorError) as exc:
        raise KdxError(f"{folder.weights} is corrupt ({exc}); resume or retrain the run") from None
    spec = spec_from_json(spec_json)
    teacher = Teacher.build(config, spec)
    load_teacher_tensors(teacher, tensors, folder.weights)
    return teacher.to(device).eval()
