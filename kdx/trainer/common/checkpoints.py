"""Kill-safe checkpoints of a training stage: the one store both stages use.

A stage folder (``RUN/teacher/`` or ``RUN/students/``, see ``kdx.layout``) keeps its resumable
checkpoints in ``checkpoints/NNNNNN/``, each written at a rollout boundary::

    weights.safetensors      the stage's modules (flat ``{name.param: tensor}``)
    optimizer.safetensors    Adam state; its param groups as JSON metadata
    state.safetensors        env tensors (``env.*``), the pending EnvStep (``step.*``), GRU and
                             RNG states: everything an exact resume needs
    progress.json            counters (update, env steps, episodes, time)

A checkpoint is written into ``checkpoints/.tmp-NNNNNN-PID`` and renamed into place (one atomic
rename), so a run killed at any moment leaves only complete checkpoints. Single files (the
published weights) go to ``.NAME.tmp-PID`` and are renamed with ``os.replace``. Opening a store
for a resume removes the temp files a killed writer left. Nothing is pickled.
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
from torch import nn

from kdx.errors import KdxError
from kdx.fileio import dead_writer_temporaries, remove_path
from kdx.layout import StageFolder

KEEP_CHECKPOINTS = 2
_CHECKPOINT_NAME = re.compile(r"^\d{6,}$")
_TEMP_NAME = re.compile(r"^\..*\.?tmp-(?:\d{6,}-)?(\d+)$")


# ------------------------------------------------------------------ durable writes
def fsync_path(path: Path) -> None:
    """Flush a file or a folder (its entries) to disk."""
    fd = os.open(path, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def _cpu(tensors: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    return {k: v.detach().contiguous().cpu() for k, v in tensors.items()}


def atomic_save_tensors(path: Path, tensors: dict[str, torch.Tensor], metadata: dict[str, str] | None = None) -> None:
    """Write a safetensors file to a temp name, flush it, rename it into place."""
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.tmp-{os.getpid()}")
    save_file(_cpu(tensors), str(tmp), metadata=metadata)
    fsync_path(tmp)
    os.replace(tmp, path)


# ------------------------------------------------------------------ modules <-> flat tensors
def module_tensors(modules: dict[str, nn.Module], prefix: str = "") -> dict[str, torch.Tensor]:
    """``{f"{prefix}{name}.{param}": tensor}`` over the state dicts of ``modules``."""
    return {f"{prefix}{name}.{k}": v for name, m in modules.items() for k, v in m.state_dict().items()}


def load_module_tensors(modules: dict[str, nn.Module], tensors: dict[str, torch.Tensor], source: Path,
                        prefix: str = "", fix: str = "the checkpoint is damaged") -> None:
    """Inverse of :func:`module_tensors` (strict); ``KdxError`` naming ``source`` when a part does not fit."""
    for name, m in modules.items():
        head = f"{prefix}{name}."
        part = {k[len(head):]: v for k, v in tensors.items() if k.startswith(head)}
        problem = _misfit(m.state_dict(), part)
        if problem:
            raise KdxError(f"{source}: {head[:-1]} does not fit ({problem}); {fix}")
        m.load_state_dict(part, strict=True)


def _misfit(expected: dict[str, torch.Tensor], found: dict[str, torch.Tensor], show: int = 3) -> str:
    """What keeps ``found`` from loading into a module whose state dict is ``expected`` ('' if it fits)."""
    def names(keys: list[str]) -> str:
        return ", ".join(keys[:show]) + (f" and {len(keys) - show} more" if len(keys) > show else "")

    missing = sorted(set(expected) - set(found))
    unexpected = sorted(set(found) - set(expected))
    shapes = [f"{k} {tuple(found[k].shape)} instead of {tuple(v.shape)}" for k, v in expected.items()
              if k in found and found[k].shape != v.shape]
    parts = ([f"missing {names(missing)}"] if missing else []) + \
        ([f"unexpected {names(unexpected)}"] if unexpected else []) + ([names(shapes)] if shapes else [])
    return "; ".join(parts)


def optimizer_tensors(optimizer: torch.optim.Optimizer) -> tuple[dict[str, torch.Tensor], dict[str, str]]:
    """Adam's state as flat tensors plus its param groups as JSON metadata."""
    sd = optimizer.state_dict()
    tensors = {f"state.{idx}.{name}": (v if isinstance(v, torch.Tensor) else torch.tensor(v))
               for idx, st in sd["state"].items() for name, v in st.items()}
    return tensors, {"param_groups": json.dumps(sd["param_groups"])}


def load_optimizer_tensors(optimizer: torch.optim.Optimizer, tensors: dict[str, torch.Tensor], metadata: dict[str, str]) -> None:
    """Inverse of :func:`optimizer_tensors`."""
    state: dict[int, dict[str, torch.Tensor]] = {}
    for key, v in tensors.items():
        _, idx, name = key.split(".", 2)
        state.setdefault(int(idx), {})[name] = v
    optimizer.load_state_dict({"state": state, "param_groups": json.loads(metadata["param_groups"])})


# ------------------------------------------------------------------ the store
@dataclass
class Checkpoint:
    """One complete checkpoint, as :meth:`CheckpointStore.load_newest` returns it."""

    path: Path
    weights: dict[str, torch.Tensor]
    optimizer: dict[str, torch.Tensor]
    optimizer_meta: dict[str, str]
    state: dict[str, torch.Tensor]
    progress: dict[str, Any]


@dataclass(frozen=True)
class CheckpointStore:
    """The checkpoints of one stage folder; ``kind`` is recorded in each weights file's metadata."""

    folder: StageFolder
    kind: str
    keep: int = KEEP_CHECKPOINTS

    @property
    def root(self) -> Path:
        return self.folder.checkpoints

    def save(self, update: int, weights: dict[str, torch.Tensor],
             optimizer: tuple[dict[str, torch.Tensor], dict[str, str]],
             state: dict[str, torch.Tensor], progress: dict[str, Any]) -> Path:
        """Write checkpoint ``update`` atomically and keep the newest ``keep``; returns its folder."""
        self.root.mkdir(parents=True, exist_ok=True)
        final = self.root / f"{update:06d}"
        tmp = self.root / f".tmp-{update:06d}-{os.getpid()}"
        if tmp.exists():
            shutil.rmtree(tmp)
        tmp.mkdir()
        save_file(_cpu(weights), str(tmp / "weights.safetensors"), metadata={"format": self.kind, "update": str(update)})
        opt_tensors, opt_meta = optimizer
        save_file(_cpu(opt_tensors), str(tmp / "optimizer.safetensors"), metadata=opt_meta)
        save_file(_cpu(state), str(tmp / "state.safetensors"))
        (tmp / "progress.json").write_text(json.dumps(progress, indent=2))
        for f in tmp.iterdir():
            fsync_path(f)
        fsync_path(tmp)
        if final.exists():  # the same update written before a kill: that copy is complete too
            shutil.rmtree(tmp)
        else:
            os.rename(tmp, final)
        fsync_path(self.root)
        for old in self.complete()[:-self.keep]:
            shutil.rmtree(old, ignore_errors=True)
        return final

    def complete(self) -> list[Path]:
        """Complete checkpoint folders, oldest first (temp folders of killed writes are ignored)."""
        if not self.root.is_dir():
            return []
        return sorted(p for p in self.root.iterdir() if p.is_dir() and _CHECKPOINT_NAME.match(p.name))

    def remove_stale_temps(self) -> list[Path]:
        """Delete the temp files and folders that writers killed mid-write left behind.

        Looks in the stage folder and its checkpoints folder; a temp whose writer process is
        still alive is left alone. Returns what was removed.
        """
        removed = [*dead_writer_temporaries(self.folder.root, _TEMP_NAME),
                   *dead_writer_temporaries(self.root, _TEMP_NAME)]
        for path in removed:
            remove_path(path)
        return removed

    def resume_point(self, resume: bool) -> Checkpoint | None:
        """What a stage continues from: the newest checkpoint when ``resume`` is asked and one
        exists; None for a fresh start, and for a run stopped before its first checkpoint (it
        restarts from scratch: there is nothing to lose)."""
        if not resume:
            return None
        if not self.complete():
            self.remove_stale_temps()
            return None
        return self.load_newest()

    def load_newest(self) -> Checkpoint:
        """The newest readable checkpoint, after removing stale temps; ``KdxError`` when there is none."""
        self.remove_stale_temps()
        errors = []
        for path in reversed(self.complete()):
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
        raise KdxError(f"{self.folder.root} has no complete checkpoint to resume from{detail}; "
                       "start this stage again without --resume")
