"""Data-parallel teacher training: 2 gloo ranks under torchrun stay identical and resume exactly."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
import torch
from safetensors.torch import load_file

from kdx.errors import KdxError
from kdx.layout import RunLayout
from kdx.trainer.common.update_loop import TIMING_METRICS
from kdx.trainer.teacher.distributed import (
    check_world_size,
    combine_moments,
    option_args,
    torchrun_command,
)
from kdx.trainer.teacher.mappo import read_metrics, train
from kdx.trainer.teacher.store import checkpoint_store

NUM_ENVS, ROLLOUT, WORLD = 4, 8, 2
STEPS_PER_UPDATE = NUM_ENVS * ROLLOUT * WORLD  # over both ranks
TINY = ["--env", "mpe/simple_spread", "--num-envs", str(NUM_ENVS), "--rollout-length", str(ROLLOUT),
        "--hidden", "16,16", "--epochs", "2", "--minibatches", "2", "--checkpoint-every", "2",
        "--threads", "1", "--no-lr-decay", "--quiet"]


def _torchrun(args: list[str], cwd: Path, via_nproc: bool = False) -> None:
    """``torchrun ... -m kdx ARGS``, or ``kdx ARGS --nproc 2`` (which starts torchrun itself)."""
    env = {**os.environ, "KDX_CHECK_RANK_SYNC": "1", "OMP_NUM_THREADS": "1"}
    env.pop("WORLD_SIZE", None)
    cmd = [sys.executable, "-m", "kdx", *args, "--nproc", str(WORLD)] if via_nproc else torchrun_command(WORLD, args)
    result = subprocess.run(cmd, cwd=cwd, env=env, capture_output=True, text=True, timeout=120)
    assert result.returncode == 0, result.stdout[-3000:] + result.stderr[-3000:]


def _sync_hashes(run: Path) -> list[list[dict]]:
    folder = RunLayout(run).teacher.rank_sync
    return [[json.loads(line) for line in (folder / f"rank{r}.jsonl").read_text().splitlines()] for r in range(WORLD)]


def _deterministic(lines):
    return [{k: v for k, v in m.items() if k not in TIMING_METRICS} for m in lines]


@pytest.fixture(scope="module")
def runs(tmp_path_factory):
    """A 6-update 2-rank run, and a copy of it cut back to its update-4 checkpoint, then resumed
    with ``kdx train --resume RUN --nproc 2``.

    Removing the newest checkpoint is what a kill between checkpoints 4 and 6 leaves behind
    (two torchrun launches instead of three keeps the test inside its time budget).
    """
    root = tmp_path_factory.mktemp("dist")
    _torchrun(["train", "--out", str(root / "full"), "--steps", str(6 * STEPS_PER_UPDATE), *TINY], root)
    shutil.copytree(root / "full", root / "cut")
    newest = checkpoint_store(RunLayout(root / "cut").teacher).complete()
    assert [p.name for p in newest] == ["000004", "000006"]
    shutil.rmtree(newest[-1])
    _torchrun(["train", "--resume", str(root / "cut"), "--quiet"], root, via_nproc=True)
    return root


def test_ranks_hold_identical_weights_after_every_update(runs):
    root = runs
    rank0, rank1 = _sync_hashes(root / "full")
    assert [h["update"] for h in rank0] == list(range(1, 7))
    assert rank0 == rank1
    assert len({h["sha256"] for h in rank0}) == 6  # the weights do change every update
    metrics = read_metrics(root / "full")
    assert [m["env_steps"] for m in metrics] == [STEPS_PER_UPDATE * u for u in range(1, 7)]
    assert all(m["world_size"] == WORLD for m in metrics)
    # one writer: rank 0's metrics file has one line per update, not one per rank
    assert len(metrics) == 6


def test_checkpoint_holds_each_ranks_own_env_state(runs):
    root = runs
    ckpt = checkpoint_store(RunLayout(root / "full").teacher).complete()[-1]
    state = load_file(str(ckpt / "state.safetensors"))
    progress = json.loads((ckpt / "progress.json").read_text())
    assert progress["world_size"] == WORLD and progress["env_steps_all_ranks"] == 6 * STEPS_PER_UPDATE
    rank1 = {k[len("rank1."):]: v for k, v in state.items() if k.startswith("rank1.")}
    rank0 = {k: v for k, v in state.items() if not k.startswith("rank")}
    assert rank1.keys() == rank0.keys() and "rng.sample" in rank0 and "step.state" in rank0
    # different env seeds per rank: the ranks' envs are in different states
    assert not torch.equal(rank0["step.state"], rank1["step.state"])
    assert not torch.equal(rank0["rng.sample"], rank1["rng.sample"])


def test_resume_under_torchrun_continues_exactly(runs):
    root = runs
    full, cut = read_metrics(root / "full"), read_metrics(root / "cut")
    assert [m["update"] for m in cut] == list(range(1, 7))  # lines after update 4 were dropped and redone
    assert _deterministic(cut) == _deterministic(full)
    hashes_full, hashes_cut = _sync_hashes(root / "full"), _sync_hashes(root / "cut")
    for r in range(WORLD):  # each resumed rank redoes updates 5-6 and reaches the very same weights
        assert [h["update"] for h in hashes_cut[r]] == [1, 2, 3, 4, 5, 6, 5, 6]
        assert hashes_cut[r][-2:] == hashes_full[r][-2:]
    w_full = load_file(str(RunLayout(root / "full").teacher.weights))
    w_cut = load_file(str(RunLayout(root / "cut").teacher.weights))
    assert all(torch.equal(w_full[k], w_cut[k]) for k in w_full)


def test_resume_with_another_world_size_is_refused(runs):
    root = runs
    before = RunLayout(root / "full").teacher.metrics.read_text()
    with pytest.raises(KdxError, match="written by 2 process"):
        train(root / "full", resume=True, total_steps=8 * STEPS_PER_UPDATE, show_progress=False)
    assert RunLayout(root / "full").teacher.metrics.read_text() == before
    with pytest.raises(KdxError, match="written by 1 process"):
        check_world_size({"update": 3}, 2)


def test_combine_moments_matches_the_moments_of_the_union():
    torch.manual_seed(0)
    parts = [torch.randn(n, dtype=torch.float64) * s + m for n, s, m in ((7, 1.0, 0.0), (30, 3.0, 5.0), (1, 1.0, -2.0))]
    counts = torch.tensor([float(len(p)) for p in parts], dtype=torch.float64)
    means = torch.stack([p.mean() for p in parts])
    variances = torch.stack([p.var(unbiased=False) for p in parts])
    total, mean, var = combine_moments(counts, means, variances)
    union = torch.cat(parts)
    assert float(total) == len(union)
    assert torch.allclose(mean, union.mean()) and torch.allclose(var, union.var(unbiased=False))


def test_launcher_command_lines():
    assert option_args({"num_envs": 8, "lr_decay": False, "input_norm": True}) == [
        "--num-envs", "8", "--no-lr-decay", "--input-norm"]
    cmd = torchrun_command(3, ["train", "--out", "x"])
    assert cmd[:3] == [sys.executable, "-m", "torch.distributed.run"]
    assert "--nproc_per_node=3" in cmd and cmd[-5:] == ["-m", "kdx", "train", "--out", "x"]
