"""Kill-safe checkpoints of a teacher run, and ``load_teacher`` for later stages.

Layout of ``RUN/teacher/``::

    config.json              TeacherConfig + the env spec (written once, at the start)
    weights.safetensors      actor.*, critic.*, value_norm.* of the newest checkpoint
    optimizer.safetensors    Adam state of the newest checkpoint
    metrics.jsonl            one JSON line per logged update
    tb/                      TensorBoard events
    checkpoints/000040/      everything a resume needs, at a rollout boundary:
        weights.safetensors  optimizer.safetensors
        state.safetensors    env tensors (env.*), the next EnvStep (step.*), GRU state, RNG states
        progress.json        counters (update, env steps, episodes)

A checkpoint is written into ``checkpoints/.tmp-*`` and renamed into place (one atomic rename),
so a run killed at any moment leaves only complete checkpoints; the top-level weights and
optimizer files are then replaced atomically (temp file + ``os.replace``). Nothing is pickled.
"""

from __future__ import annotations

import json
import os
import re
import shutil
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
from safetensors import SafetensorError, safe_open
from safetensors.torch import load_file, save_file

from kdx.errors import KdxError
from kdx.fileio import atomic_write_text  # noqa: F401 (re-exported for the trainer)
from kdx.trainer.config import TeacherConfig
from kdx.trainer.teacher import Teacher, spec_from_json

TEACHER_DIR = "teacher"
CHECKPOINT_DIR = "checkpoints"
KEEP_CHECKPOINTS = 2
_CKPT_NAME = re.compile(r"^\d{6,}$")


# ------------------------------------------------------------------ atomic file helpers
def _fsync_dir(path: Path) -> None:
    fd = os.open(path, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def _fsync_file(path: Path) -> None:
    with open(path, "rb") as f:
        os.fsync(f.fileno())


def atomic_save_tensors(path: Path, tensors: dict[str, torch.Tensor], metadata: dict[str, str] | None = None) -> None:
    tmp = path.with_name(f".{path.name}.tmp-{os.getpid()}")
    save_file({k: v.detach().contiguous().cpu() for k, v in tensors.items()}, str(tmp), metadata=metadata)
    _fsync_file(tmp)
    os.replace(tmp, path)


# ------------------------------------------------------------------ state <-> tensors
def teacher_tensors(teacher: Teacher) -> dict[str, torch.Tensor]:
    out: dict[str, torch.Tensor] = {}
    for prefix, module in (("actor", teacher.actor), ("critic", teacher.critic), ("value_norm", teacher.value_norm)):
        out.update({f"{prefix}.{k}": v for k, v in module.state_dict().items()})
    return out


def load_teacher_tensors(teacher: Teacher, tensors: dict[str, torch.Tensor], source: Path) -> None:
    for prefix, module in (("actor", teacher.actor), ("critic", teacher.critic), ("value_norm", teacher.value_norm)):
        part = {k[len(prefix) + 1 :]: v for k, v in tensors.items() if k.startswith(prefix + ".")}
        try:
            module.load_state_dict(part, strict=True)
        except RuntimeError as exc:
            raise KdxError(
                f"{source}: {prefix} weights do not fit the network described by config.json "
                f"({str(exc).splitlines()[0]}); the run folder is inconsistent, retrain it"
            ) from None


def optimizer_tensors(optimizer: torch.optim.Optimizer) -> tuple[dict[str, torch.Tensor], dict[str, str]]:
    """Adam's state as flat tensors plus its param groups as JSON metadata."""
    sd = optimizer.state_dict()
    tensors = {f"state.{idx}.{name}": (v if isinstance(v, torch.Tensor) else torch.tensor(v))
               for idx, st in sd["state"].items() for name, v in st.items()}
    return tensors, {"param_groups": json.dumps(sd["param_groups"])}


def load_optimizer_tensors(optimizer: torch.optim.Optimizer, tensors: dict[str, torch.Tensor], metadata: dict[str, str]) -> None:
    state: dict[int, dict[str, torch.Tensor]] = {}
    for key, v in tensors.items():
        _, idx, name = key.split(".", 2)
        state.setdefault(int(idx), {})[name] = v
    optimizer.load_state_dict({"state": state, "param_groups": json.loads(metadata["param_groups"])})


# ------------------------------------------------------------------ run folder
@dataclass
class RunPaths:
    """Where a run's teacher files live."""

    run: Path

    @property
    def teacher(self) -> Path:
        return self.run / TEACHER_DIR

    @property
    def config(self) -> Path:
        return self.teacher / "config.json"

    @property
    def weights(self) -> Path:
        return self.teacher / "weights.safetensors"

    @property
    def optimizer(self) -> Path:
        return self.teacher / "optimizer.safetensors"

    @property
    def metrics(self) -> Path:
        return self.teacher / "metrics.jsonl"

    @property
    def tensorboard(self) -> Path:
        return self.teacher / "tb"

    @property
    def checkpoints(self) -> Path:
        return self.teacher / CHECKPOINT_DIR


def write_run_config(paths: RunPaths, config: TeacherConfig, spec_json: dict) -> None:
    paths.teacher.mkdir(parents=True, exist_ok=True)
    atomic_write_text(paths.config, json.dumps({"teacher": config.to_json(), "env_spec": spec_json}, indent=2))


def read_run_config(paths: RunPaths) -> tuple[TeacherConfig, dict]:
    if not paths.config.is_file():
        raise KdxError(f"{paths.run} is not a kdx run: {paths.config} is missing (train one with `kdx train`)")
    try:
        data = json.loads(paths.config.read_text())
        return TeacherConfig.from_json(data["teacher"]), data["env_spec"]
    except (json.JSONDecodeError, KeyError, TypeError) as exc:
        raise KdxError(f"{paths.config} is not a valid teacher config ({exc}); the run folder is damaged") from None


@dataclass
class Checkpoint:
    """What ``load_checkpoint`` returns: tensors and counters of one complete checkpoint."""

    path: Path
    weights: dict[str, torch.Tensor]
    optimizer: dict[str, torch.Tensor]
    optimizer_meta: dict[str, str]
    state: dict[str, torch.Tensor]
    progress: dict[str, Any]


def save_checkpoint(paths: RunPaths, update: int, weights: dict[str, torch.Tensor],
                    optimizer: tuple[dict[str, torch.Tensor], dict[str, str]],
                    state: dict[str, torch.Tensor], progress: dict[str, Any]) -> Path:
    """Write checkpoint ``update`` atomically, publish its weights, keep the newest few."""
    paths.checkpoints.mkdir(parents=True, exist_ok=True)
    final = paths.checkpoints / f"{update:06d}"
    tmp = paths.checkpoints / f".tmp-{update:06d}-{os.getpid()}"
    if tmp.exists():
        shutil.rmtree(tmp)
    tmp.mkdir()
    meta = {"format": "kdx-teacher", "update": str(update)}
    save_file({k: v.detach().contiguous().cpu() for k, v in weights.items()}, str(tmp / "weights.safetensors"), metadata=meta)
    opt_tensors, opt_meta = optimizer
    save_file({k: v.contiguous().cpu() for k, v in opt_tensors.items()}, str(tmp / "optimizer.safetensors"), metadata=opt_meta)
    save_file({k: v.detach().contiguous().cpu() for k, v in state.items()}, str(tmp / "state.safetensors"))
    (tmp / "progress.json").write_text(json.dumps(progress, indent=2))
    for f in tmp.iterdir():
        _fsync_file(f)
    _fsync_dir(tmp)
    if final.exists():  # the same update written before a kill: the older copy is complete too
        shutil.rmtree(tmp)
    else:
        os.rename(tmp, final)
    _fsync_dir(paths.checkpoints)
    atomic_save_tensors(paths.weights, weights, metadata=meta)
    atomic_save_tensors(paths.optimizer, opt_tensors, metadata=opt_meta)
    for old in complete_checkpoints(paths)[:-KEEP_CHECKPOINTS]:
        shutil.rmtree(old, ignore_errors=True)
    return final


def complete_checkpoints(paths: RunPaths) -> list[Path]:
    """Complete checkpoint folders, oldest first (temp folders of killed writes are ignored)."""
    if not paths.checkpoints.is_dir():
        return []
    return sorted(p for p in paths.checkpoints.iterdir() if p.is_dir() and _CKPT_NAME.match(p.name))


def load_checkpoint(paths: RunPaths) -> Checkpoint:
    """The newest readable checkpoint; temp folders of killed writes are removed."""
    for tmp in paths.checkpoints.glob(".tmp-*") if paths.checkpoints.is_dir() else []:
        shutil.rmtree(tmp, ignore_errors=True)
    errors = []
    for path in reversed(complete_checkpoints(paths)):
        try:
            with safe_open(str(path / "optimizer.safetensors"), "pt") as f:
                opt_meta = f.metadata() or {}
            return Checkpoint(
                path=path,
                weights=load_file(str(path / "weights.safetensors")),
                optimizer=load_file(str(path / "optimizer.safetensors")),
                optimizer_meta=opt_meta,
                state=load_file(str(path / "state.safetensors")),
                progress=json.loads((path / "progress.json").read_text()),
            )
        except (OSError, SafetensorError, json.JSONDecodeError) as exc:
            errors.append(f"{path.name}: {exc}")
    detail = ("; unreadable: " + "; ".join(errors)) if errors else ""
    raise KdxError(f"{paths.run} has no complete checkpoint to resume from{detail}. Start a new run instead.")


def load_teacher(run_dir: str | Path, device: str = "cpu", env: str | None = None) -> Teacher:
    """The frozen teacher of ``run_dir`` (eval mode, no grads) on ``device``.

    Raises ``KdxError`` when the run has no teacher, its weights are missing or corrupt, or
    ``env`` is given and differs from the env the teacher was trained on.
    """
    paths = RunPaths(Path(run_dir))
    config, spec_json = read_run_config(paths)
    if env is not None and env != config.env:
        raise KdxError(f"{paths.run} holds a teacher for {config.env!r}, not for {env!r}")
    if not paths.weights.is_file():
        raise KdxError(f"{paths.weights} is missing: the run has no checkpoint yet (train longer, or resume it)")
    try:
        tensors = load_file(str(paths.weights))
    except (OSError, SafetensorError) as exc:
        raise KdxError(f"{paths.weights} is corrupt ({exc}); resume or retrain the run") from None
    spec = spec_from_json(spec_json)
    teacher = Teacher.build(config, spec)
    load_teacher_tensors(teacher, tensors, paths.weights)
    return teacher.to(device).eval()
