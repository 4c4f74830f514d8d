"""Metrics of a training stage: ``metrics.jsonl`` (always) and TensorBoard (when installed).

Shared by stage 1 (``RUN/teacher/``) and stage 2 (``RUN/students/``). A resume first drops the
lines logged after the checkpoint it starts from, so the file never holds an update twice.
"""

from __future__ import annotations

import json
import math
from pathlib import Path
from typing import Any

from kdx.trainer.checkpoint import atomic_write_text


def mean_or_none(xs: list[float]) -> float | None:
    """The mean of ``xs``, or None when no episode ended (nothing to report)."""
    return sum(xs) / len(xs) if xs else None


def open_tensorboard(folder: Path):
    """A TensorBoard ``SummaryWriter`` on ``folder``, or None without tensorboard installed."""
    try:
        from torch.utils.tensorboard import SummaryWriter
    except ImportError:  # tensorboard is in the [train] extra; metrics.jsonl is always written
        return None
    return SummaryWriter(str(folder))


def append_metrics(path: Path, tb, metrics: dict[str, Any], tag: str) -> None:
    """Append one JSON line to ``path`` and the finite scalars to TensorBoard as ``tag/<key>``."""
    path.parent.mkdir(parents=True, exist_ok=True)
    with open(path, "a") as f:
        f.write(json.dumps(metrics) + "\n")
    if tb is not None:
        for key, value in metrics.items():
            if key not in ("update", "env_steps") and isinstance(value, (int, float)) and math.isfinite(value):
                tb.add_scalar(f"{tag}/{key}", value, metrics["env_steps"])


def truncate_metrics(path: Path, update: int) -> None:
    """Drop metrics lines logged after ``update`` (a resume redoes them)."""
    if not path.is_file():
        return
    kept = []
    for line in path.read_text().splitlines():
        try:
            if json.loads(line)["update"] <= update:
                kept.append(line)
        except (json.JSONDecodeError, KeyError, TypeError):
            break  # a line cut short by a kill: everything after it is newer
    atomic_write_text(path, "".join(line + "\n" for line in kept))


def read_metrics_file(path: Path) -> list[dict[str, Any]]:
    """Every metrics line of ``path`` (empty when the stage has not logged yet)."""
    if not path.is_file():
        return []
    return [json.loads(line) for line in path.read_text().splitlines() if line.strip()]
