"""The one checkpoint store of both stages: atomic checkpoints, keep-newest, stale temps, fallbacks."""

from __future__ import annotations

import os
import subprocess
import sys

import pytest
import torch

from kdx.errors import KdxError
from kdx.layout import RunLayout
from kdx.trainer.common.checkpoints import CheckpointStore


def _save(store: CheckpointStore, update: int) -> None:
    weights = {"actor.w": torch.full((2, 2), float(update))}
    optimizer = ({"state.0.step": torch.tensor(float(update))}, {"param_groups": "[]"})
    store.save(update, weights, optimizer, {"rng.sample": torch.arange(3)}, {"update": update})


def test_keeps_the_newest_and_loads_the_newest(tmp_path):
    store = CheckpointStore(RunLayout(tmp_path).teacher, "kdx-test", keep=2)
    for update in (1, 2, 3):
        _save(store, update)
    assert [p.name for p in store.complete()] == ["000002", "000003"]
    newest = store.load_newest()
    assert newest.progress["update"] == 3 and float(newest.weights["actor.w"][0, 0]) == 3.0
    assert newest.optimizer_meta == {"param_groups": "[]"}


def test_a_corrupt_newest_checkpoint_falls_back_to_the_previous_one(tmp_path):
    store = CheckpointStore(RunLayout(tmp_path).students, "kdx-test")
    _save(store, 1)
    _save(store, 2)
    (store.complete()[-1] / "state.safetensors").write_bytes(b"garbage")
    assert store.load_newest().progress["update"] == 1


def test_no_checkpoint_is_a_clear_error(tmp_path):
    with pytest.raises(KdxError, match="no complete checkpoint.*without --resume"):
        CheckpointStore(RunLayout(tmp_path).teacher, "kdx-test").load_newest()


def test_stale_temps_of_dead_writers_are_removed_live_ones_kept(tmp_path):
    folder = RunLayout(tmp_path).teacher
    store = CheckpointStore(folder, "kdx-test")
    _save(store, 1)
    dead = subprocess.run([sys.executable, "-c", "import os; print(os.getpid())"], capture_output=True, text=True)
    dead_pid = int(dead.stdout)  # that process has exited
    live_pid = os.getppid()
    stale = [store.root / f".tmp-000002-{dead_pid}", folder.root / f".weights.safetensors.tmp-{dead_pid}"]
    live = [store.root / f".tmp-000002-{live_pid}", folder.root / f".optimizer.safetensors.tmp-{live_pid}"]
    for path in (stale[0], live[0]):
        path.mkdir()
    for path in (stale[1], live[1]):
        path.write_bytes(b"partial")
    assert store.load_newest().progress["update"] == 1
    assert not any(p.exists() for p in stale)
    assert all(p.exists() for p in live)
    assert [p.name for p in store.complete()] == ["000001"]
