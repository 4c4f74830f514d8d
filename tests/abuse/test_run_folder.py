"""Careless use of run folders: two writers, a file as --out, demo --fresh, a run killed before its
first checkpoint, TensorBoard after a resume. Each ends in a clear KdxError or just works; nothing
is lost."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import textwrap
from dataclasses import replace
from pathlib import Path

import pytest

from kdx.demo import DemoConfig, run_demo
from kdx.errors import KdxError
from kdx.export.bundle import ExportConfig, export_bundle
from kdx.layout import RunLayout
from kdx.trainer.distill.config import DistillConfig
from kdx.trainer.distill.loop import distill
from kdx.trainer.teacher.config import TeacherConfig
from kdx.trainer.teacher.mappo import read_metrics, train
from kdx.trainer.teacher.store import checkpoint_store

TINY = TeacherConfig(env="mpe/simple_spread", num_envs=8, rollout_length=5, hidden="16,16", epochs=1,
                     total_steps=8 * 5 * 40, checkpoint_every=100, threads=1)


def _hold_lock(run: Path) -> subprocess.Popen:
    """Another process holding the run's writer lock (the real lock), until it is killed."""
    code = textwrap.dedent(f"""
        import sys, time
        from kdx.layout import RunLayout
        with RunLayout({str(run)!r}).writing("kdx train", create=True):
            print("held", flush=True)
            time.sleep(60)
    """)
    proc = subprocess.Popen([sys.executable, "-c", code], stdout=subprocess.PIPE, text=True)
    assert proc.stdout.readline().strip() == "held"
    return proc


WRITERS = {
    "train": lambda run: train(run, TINY, show_progress=False),
    "train --resume": lambda run: train(run, resume=True, show_progress=False),
    "distill": lambda run: distill(run, DistillConfig(), show_progress=False),
    "export": lambda run: export_bundle(ExportConfig(run, "x86")),
    "demo": lambda run: run_demo(DemoConfig(out=run)),
}


@pytest.mark.parametrize("stage", WRITERS)
def test_a_second_writer_is_refused_with_the_holder_pid(tmp_path, stage):
    run = tmp_path / "run"
    holder = _hold_lock(run)
    try:
        with pytest.raises(KdxError, match=f"being written by PID {holder.pid} \\(kdx train\\)"):
            WRITERS[stage](run)
    finally:
        holder.kill()
        holder.wait()
    assert sorted(p.name for p in run.iterdir()) == [".kdx-lock"]  # the refused writer wrote nothing


def test_the_lock_dies_with_its_holder(tmp_path):
    run = tmp_path / "run"
    holder = _hold_lock(run)
    os.kill(holder.pid, signal.SIGKILL)
    holder.wait()
    with RunLayout(run).writing("kdx export"):
        assert RunLayout(run).lock.read_text().split()[0] == str(os.getpid())


def test_a_file_as_the_run_folder_is_a_clear_error(tmp_path):
    not_a_folder = tmp_path / "notes.txt"
    not_a_folder.write_text("mine")
    with pytest.raises(KdxError, match="is a file, not a run folder"):
        train(not_a_folder, TINY, show_progress=False)
    with pytest.raises(KdxError, match="is a file"):
        run_demo(DemoConfig(out=not_a_folder))
    assert not_a_folder.read_text() == "mine"


def test_demo_fresh_deletes_only_a_kdx_run_and_checks_arguments_first(tmp_path):
    precious = tmp_path / "thesis"
    precious.mkdir()
    (precious / "chapter1.tex").write_text("years of work")
    with pytest.raises(KdxError, match="not a kdx run"):
        run_demo(DemoConfig(out=precious, fresh=True))
    assert (precious / "chapter1.tex").read_text() == "years of work"

    run = tmp_path / "run"
    RunLayout(run).teacher.root.mkdir(parents=True)
    RunLayout(run).teacher.config.write_text("{}")
    with pytest.raises(KdxError, match="nope"):  # an unknown profile: refused before deleting anything
        run_demo(DemoConfig(out=run, fresh=True, profile="nope"))
    with pytest.raises(KdxError, match="--teacher-steps must be a positive integer"):
        run_demo(DemoConfig(out=run, fresh=True, teacher_steps=0))
    assert RunLayout(run).teacher.config.read_text() == "{}"


def test_a_run_killed_before_its_first_checkpoint_resumes_from_the_start(tmp_path):
    run = tmp_path / "run"
    train(run, TINY, show_progress=False, stop_after_updates=2)  # stopped before any checkpoint
    assert checkpoint_store(RunLayout(run).teacher).complete() == []
    with pytest.raises(KdxError, match="--resume"):
        train(run, TINY, show_progress=False)  # a new run never overwrites
    train(run, resume=True, show_progress=False, stop_after_updates=3)
    assert [m["update"] for m in read_metrics(run)] == [1, 2, 3]


def test_tensorboard_shows_each_update_once_after_a_resume(tmp_path):
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    run = tmp_path / "run"
    config = replace(TINY, checkpoint_every=2, total_steps=8 * 5 * 6)
    train(run, config, show_progress=False, stop_after_updates=3)  # logs update 3, checkpoint at 2
    train(run, resume=True, show_progress=False)
    events = EventAccumulator(str(RunLayout(run).teacher.tensorboard))
    events.Reload()
    steps = [e.step for e in events.Scalars("teacher/policy_loss")]
    assert steps == sorted(set(steps)) and len(steps) == 6


@pytest.mark.parametrize("name", ["cuda9", "gpu", "cuda:99", "meta"])
def test_a_torch_device_that_is_not_here_is_a_clear_error(tmp_path, name):
    with pytest.raises(KdxError, match="--torch-device"):
        train(tmp_path / "run", replace(TINY, torch_device=name), show_progress=False)
    with pytest.raises(KdxError, match="--torch-device"):
        DistillConfig(torch_device=name).validate()
    assert not (tmp_path / "run").exists()


def test_an_unwritable_place_is_one_line_not_a_traceback(tmp_path, capsys):
    from kdx.cli import main

    blocker = tmp_path / "file"
    blocker.write_text("in the way")
    with pytest.raises(SystemExit) as exit_info:  # a folder is needed where a file stands
        main(["train", "--out", str(blocker / "run"), "--steps", "400", "--num-envs", "8", "--rollout-length", "5",
              "--quiet"])
    assert exit_info.value.code == 2
    err = " ".join(capsys.readouterr().err.split())
    assert "cannot write" in err and str(blocker) in err and "Traceback" not in err
