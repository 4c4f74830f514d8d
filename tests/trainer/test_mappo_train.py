"""Short MAPPO runs: learning on the toy env, resume equivalence, run-folder rules, load_teacher."""

from __future__ import annotations

import json
from dataclasses import replace

import pytest
import torch
from safetensors.torch import load_file

from kdx.errors import KdxError
from kdx.layout import RunLayout
from kdx.trainer.common.update_loop import TIMING_METRICS
from kdx.trainer.teacher.config import TeacherConfig
from kdx.trainer.teacher.mappo import read_metrics, train
from kdx.trainer.teacher.store import checkpoint_store, load_teacher

TINY = TeacherConfig(env="toy/match", num_envs=16, rollout_length=8, hidden="32,32", epochs=4,
                     minibatches=2, lr=3e-3, threads=1, checkpoint_every=3, lr_decay=True)


def _deterministic(lines):
    return [{k: v for k, v in m.items() if k not in TIMING_METRICS} for m in lines]


def test_toy_env_is_learned_and_teacher_loads(tmp_path):
    config = replace(TINY, total_steps=16 * 8 * 20, per_group_actors=True)
    last = train(tmp_path / "run", config, show_progress=False)
    metrics = read_metrics(tmp_path / "run")
    assert len(metrics) == 20 and last["update"] == 20
    first_return = metrics[0]["episode_return"]
    assert last["episode_return"] > first_return + 1.0, (first_return, last["episode_return"])
    paths = RunLayout(tmp_path / "run").teacher
    assert paths.weights.is_file() and paths.optimizer.is_file() and paths.config.is_file()
    assert any(paths.tensorboard.iterdir())
    teacher = load_teacher(tmp_path / "run")
    assert not any(p.requires_grad for p in teacher.actor.parameters())
    obs = torch.zeros(4, 2, 5)
    out = teacher.forward_actor(obs, torch.zeros(4, 6))
    assert out.logits.shape == (4, 2, 4) and out.embedding.shape == (4, 2, 32)
    assert teacher.values(torch.zeros(4, 6), obs).shape == (4, 2)
    with pytest.raises(KdxError, match="not for 'mpe/simple_spread'"):
        load_teacher(tmp_path / "run", env="mpe/simple_spread")


@pytest.mark.parametrize("recurrent", [False, True])
def test_resumed_run_matches_an_uninterrupted_one(tmp_path, recurrent):
    config = replace(TINY, total_steps=16 * 8 * 8, recurrent=recurrent)
    train(tmp_path / "full", config, show_progress=False)
    # interrupted after 5 updates: the newest checkpoint is at update 3, so updates 4-5 are redone
    train(tmp_path / "cut", config, show_progress=False, stop_after_updates=5)
    assert [p.name for p in checkpoint_store(RunLayout(tmp_path / "cut").teacher).complete()] == ["000003"]
    assert len(read_metrics(tmp_path / "cut")) == 5
    train(tmp_path / "cut", resume=True, show_progress=False)
    full, cut = read_metrics(tmp_path / "full"), read_metrics(tmp_path / "cut")
    assert [m["update"] for m in cut] == list(range(1, 9))
    assert _deterministic(cut) == _deterministic(full)
    w_full = load_file(str(RunLayout(tmp_path / "full").teacher.weights))
    w_cut = load_file(str(RunLayout(tmp_path / "cut").teacher.weights))
    assert w_full.keys() == w_cut.keys()
    assert all(torch.equal(w_full[k], w_cut[k]) for k in w_full)


def test_existing_run_is_never_overwritten_and_bad_input_fails_before_work(tmp_path):
    config = replace(TINY, total_steps=16 * 8 * 2)
    train(tmp_path / "run", config, show_progress=False)
    before = RunLayout(tmp_path / "run").teacher.metrics.read_text()
    with pytest.raises(KdxError, match="already holds a teacher run"):
        train(tmp_path / "run", config, show_progress=False)
    assert RunLayout(tmp_path / "run").teacher.metrics.read_text() == before
    with pytest.raises(KdxError, match="unknown environment"):
        train(tmp_path / "other", replace(config, env="nope/nothing"), show_progress=False)
    assert not RunLayout(tmp_path / "other").teacher.root.exists()
    with pytest.raises(KdxError, match="--lr must be positive"):
        train(tmp_path / "other2", replace(config, lr=-1.0), show_progress=False)
    assert not (tmp_path / "other2").exists()
    with pytest.raises(KdxError, match="not a kdx run"):
        train(tmp_path / "missing", resume=True, show_progress=False)


def test_load_teacher_rejects_missing_or_corrupt_weights(tmp_path):
    config = replace(TINY, total_steps=16 * 8 * 2)
    train(tmp_path / "run", config, show_progress=False)
    paths = RunLayout(tmp_path / "run").teacher
    paths.weights.write_bytes(b"\x00" * 100)
    with pytest.raises(KdxError, match="corrupt"):
        load_teacher(tmp_path / "run")
    paths.weights.unlink()
    with pytest.raises(KdxError, match="missing"):
        load_teacher(tmp_path / "run")
    data = json.loads(paths.config.read_text())
    assert data["teacher"]["env"] == "toy/match" and data["env_spec"]["agents"][1]["obs_dim"] == 5


def test_resume_restores_tensors_an_env_creates_lazily(tmp_path):
    config = replace(TINY, env="toy/lazy", total_steps=16 * 8 * 4)
    train(tmp_path / "full", config, show_progress=False)
    train(tmp_path / "cut", config, show_progress=False, stop_after_updates=3)
    train(tmp_path / "cut", resume=True, show_progress=False)
    assert _deterministic(read_metrics(tmp_path / "cut")) == _deterministic(read_metrics(tmp_path / "full"))


def test_a_time_budget_ends_the_run_annealed_and_a_resume_can_extend_it(tmp_path):
    # far more steps than 1.2 s allows: the budget ends the run, and the lr has decayed over it
    config = replace(TINY, total_steps=16 * 8 * 100_000, minutes=0.02)
    last = train(tmp_path / "run", config, show_progress=False)
    lines = read_metrics(tmp_path / "run")
    assert 1 <= last["update"] < config.num_updates
    assert last["time_s"] >= 1.2 and lines[-1]["update"] == last["update"]
    assert last["lr"] < 0.5 * TINY.lr  # decayed with the clock, not with the (tiny) step fraction
    assert checkpoint_store(RunLayout(tmp_path / "run").teacher).complete()[-1].name == f"{last['update']:06d}"
    saved = json.loads(RunLayout(tmp_path / "run").teacher.config.read_text())
    assert saved["teacher"]["minutes"] == 0.02
    more = train(tmp_path / "run", resume=True, minutes=0.04, show_progress=False)
    assert more["update"] > last["update"] and more["time_s"] >= 2.4
