"""``kdx sweep``: a tiny 2 profiles x 1 seed sweep with 2 workers, its summary, reuse and bad input."""

from __future__ import annotations

import json
from dataclasses import replace

import pytest

from kdx.cli import main
from kdx.errors import KdxError
from kdx.layout import RunLayout
from kdx.trainer.distill.config import DistillConfig
from kdx.trainer.sweep import (
    ABLATIONS,
    SweepConfig,
    group_rows,
    job_distill_config,
    plan_jobs,
    run_sweep,
)
from kdx.trainer.sweep_commands import parse_settings
from kdx.trainer.teacher.config import TeacherConfig
from kdx.trainer.teacher.mappo import train

TINY_DISTILL = {"total_steps": 128, "num_envs": 16, "rollout_length": 8, "obs_norm_steps": 2}


@pytest.fixture(scope="module")
def teacher_run(tmp_path_factory):
    # a real registered env: the jobs run in their own processes, which know only registered envs
    run = tmp_path_factory.mktemp("sweep") / "run"
    config = TeacherConfig(env="mpe/simple_spread", num_envs=8, rollout_length=10, hidden="32,32", epochs=1,
                           threads=1, total_steps=160)
    train(run, config, show_progress=False)
    return run


def test_sweep_runs_every_job_and_writes_one_summary(teacher_run, capsys):
    try:
        main(["sweep", str(teacher_run), "--profiles", "rpi5,jetson-orin-nano", "--workers", "2", "--episodes", "3",
              "--steps", "128", "--set", "num_envs=16", "--set", "rollout_length=8", "--set", "obs-norm-steps=2"])
    except SystemExit as exc:  # the console-script entry point exits with the command's status
        assert exc.code in (0, None)
    out = teacher_run / "sweep"
    summary = json.loads((out / "sweep.json").read_text())
    rows = summary["rows"]
    assert [r["job"] for r in rows] == ["rpi5-s1-full", "jetson-orin-nano-s1-full"]
    assert all(r["status"] == "ok" for r in rows), rows
    for r in rows:
        job_dir = out / r["job"]
        saved = json.loads(RunLayout(job_dir).students.config.read_text())["distill"]
        assert saved["profile"] == r["profile"] and saved["total_steps"] == 128 and saved["num_envs"] == 16
        evaluation = json.loads(RunLayout(job_dir).eval_json.read_text())
        assert evaluation["episodes"] == 3 and "students_greedy" in evaluation["policies"]
        assert r["student_macs"] == sum(c["student_macs"] for c in evaluation["students"]["cost"].values()) > 0
        assert r["mac_ratio"] == pytest.approx(r["teacher_macs"] / r["student_macs"])
    assert [(g["profile"], g["ablation"], g["ok"]) for g in summary["groups"]] == [
        ("rpi5", "full", 1), ("jetson-orin-nano", "full", 1)]
    md = (out / "sweep.md").read_text()
    assert "rpi5-s1-full | ok" in md and "jetson-orin-nano-s1-full | ok" in md
    assert "2/2 jobs ok" in " ".join(capsys.readouterr().out.split())

    # run again with the same settings: finished jobs are reused, not redone
    config = SweepConfig(profiles=("rpi5",), workers=2, episodes=3, distill=dict(TINY_DISTILL))
    again = run_sweep(teacher_run, None, config)
    assert again["rows"][0].get("reused") is True and again["rows"][0]["retention"] == rows[0]["retention"]


def test_bad_sweep_input_fails_before_any_job(teacher_run, tmp_path):
    base = SweepConfig(profiles=("rpi5",), distill=dict(TINY_DISTILL))
    with pytest.raises(KdxError, match="unknown device profile .rpi5x."):
        run_sweep(teacher_run, tmp_path / "a", replace(base, profiles=("rpi5x",)))
    with pytest.raises(KdxError, match="unknown ablation"):
        run_sweep(teacher_run, tmp_path / "b", replace(base, ablations=("no-such-term",)))
    with pytest.raises(KdxError, match="unknown distill option"):
        run_sweep(teacher_run, tmp_path / "c", replace(base, distill={"warp_speed": 9}))
    with pytest.raises(KdxError, match="no trained teacher"):
        run_sweep(tmp_path / "nothing", tmp_path / "d", base)
    assert not any((tmp_path / name).exists() for name in "abcd")
    with pytest.raises(KdxError, match="not a valid int"):
        parse_settings(["num_envs=many"])
    with pytest.raises(KdxError, match="FIELD=VALUE"):
        parse_settings(["seed=3"])
    assert parse_settings(["lr_decay=false", "lr=0.01"]) == {"lr_decay": False, "lr": 0.01}


def test_jobs_cover_every_combination_with_their_ablation_applied():
    config = SweepConfig(profiles=("rpi5", "rpi4"), seeds=2, first_seed=7, ablations=("full", "no-rel"), workers=2,
                         distill=dict(TINY_DISTILL))
    jobs = plan_jobs(config)
    assert len(jobs) == 8 and len({j.name for j in jobs}) == 8
    assert {j.seed for j in jobs} == {7, 8}
    for job in jobs:
        dc = job_distill_config(job, config)
        assert dc.profile == job.profile and dc.seed == job.seed
        assert dc.w_rel == (0.0 if job.ablation == "no-rel" else DistillConfig().w_rel) and dc.threads >= 1
        for name, value in ABLATIONS[job.ablation].items():
            assert getattr(dc, name) == value


def test_groups_average_retention_over_seeds():
    rows = [{"profile": "rpi5", "ablation": "full", "status": "ok", "retention": r, "student_macs": 100, "mac_ratio": 30.0}
            for r in (0.9, 1.0, 0.95)]
    rows.append({"profile": "rpi5", "ablation": "full", "status": "failed"})
    (g,) = group_rows(rows)
    assert g["jobs"] == 4 and g["ok"] == 3
    assert g["retention_mean"] == pytest.approx(0.95) and g["retention_std"] == pytest.approx(0.05)
    assert g["retention_min"] == 0.9 and g["mac_ratio"] == 30.0
