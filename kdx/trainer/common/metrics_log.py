"""Metrics of a training stage: ``metrics.jsonl`` (always) and TensorBoard (when installed).

Shared by stage 1 (``RUN/teacher/``) and stage 2 (``RUN/students/``). A resume first drops the
lines logged after the checkpoint it starts from, so the file never holds an update twice.
"""

from __future__ import annotations

import json
import math
from pathlib import Path
from typing import Any

from kdx.fileio import atomic_write_text


def mean_or_none(xs: list[float]) -> float | None:
    """The mean of ``xs``, or None when no episode ended (nothing to report)."""
    return sum(xs) / len(xs) if xs else None


def open_tensorboard(folder: Path, purge_step: int | None = None):
    """A TensorBoard ``SummaryWriter`` on ``folder``, or None without tensorboard installed.

    ``purge_step``: a resumed stage hides the events it logged at env steps >= this one before it
    was stopped (it logs them again), as ``truncate_metrics`` does for metrics.jsonl."""
    try:
        from torch.utils.tensorboard import SummaryWriter
    except ImportError:  # tensorboard is in the [train] extra; metrics.jsonl is always written
        return None
    return SummaryWriter(str(folder), purge_step=purge_step)


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
    """Drop metrics lines logged after ``update`` (a resume redoes them) and any line cut short."""
    if not path.is_file():
        return
    kept = [json.dumps(row) for row in read_metrics_file(path) if row.get("update", 0) <= update]
    atomic_write_text(path, "".join(line + "\n" for line in kept))


def read_metrics_file(path: Path, problems: list[str] | None = None) -> list[dict[str, Any]]:
    """Every metrics line of ``path`` (empty when the stage has not logged yet).

    The one reader of ``metrics.jsonl``. A line that is not a JSON object (a writer killed
    mid-line) ends the read: everything after it is newer than the checkpoint a resume starts
    from. It is noted in ``problems`` when a list is given.
    """
    if not path.is_file():
        return []
    rows = []
    for number, line in enumerate(path.read_text(encoding="utf-8", errors="replace").splitlines(), 1):
        if not line.strip():
            continue
        try:
            row = json.loads(line)
        except json.JSONDecodeError:
            row = None
        if not isinstance(row, dict):
            if problems is not None:
                problems.append(f"{path}: line {number} is not a JSON object; later lines ignored")
            break
        rows.append(row)
    return rows
