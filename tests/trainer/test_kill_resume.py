"""SIGKILL a real `kdx train` process, check its checkpoints, resume it, compare with an uninterrupted run.

The resume runs in-process (``train(run, resume=True)``, what `kdx train --resume` calls); the
CLI path of --resume is covered in test_teacher_families.py.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time

from kdx.layout import RunLayout
from kdx.trainer.common.update_loop import TIMING_METRICS
from kdx.trainer.teacher.commands import teacher_config
from kdx.trainer.teacher.config import TeacherConfig
from kdx.trainer.teacher.mappo import read_metrics, train
from kdx.trainer.teacher.store import checkpoint_store, load_teacher

ARGS = {"env": "mpe/simple_spread", "steps": 8 * 5 * 60, "num-envs": 8, "rollout-length": 5,
        "hidden": "16", "epochs": 1, "checkpoint-every": 5, "threads": 1, "seed": 3}


def _kdx(*args: str) -> list[str]:
    return [sys.executable, "-m", "kdx", *args]


def test_sigkill_loses_at_most_one_interval_and_resume_matches(tmp_path):
    run = tmp_path / "run"
    cli = [f"--{k}={v}" for k, v in ARGS.items()]
    proc = subprocess.Popen(_kdx("train", "--out", str(run), "--quiet", *cli), stdout=subprocess.DEVNULL,
                            stderr=subprocess.PIPE)
    paths = RunLayout(run).teacher
    deadline = time.monotonic() + 90
    while len(checkpoint_store(paths).complete()) < 2 and proc.poll() is None and time.monotonic() < deadline:
        time.sleep(0.02)
    time.sleep(0.037)  # land somewhere inside an interval (possibly inside a checkpoint write)
    assert proc.poll() is None, f"training ended before it could be killed: {proc.stderr.read().decode()[-2000:]}"
    os.kill(proc.pid, signal.SIGKILL)
    proc.wait()

    logged = read_metrics(run)
    ckpt = checkpoint_store(paths).load_newest()  # the newest complete checkpoint loads
    assert ckpt.progress["update"] >= 10
    assert logged[-1]["update"] - ckpt.progress["update"] <= int(ARGS["checkpoint-every"])
    for folder in checkpoint_store(paths).complete():
        assert {p.name for p in folder.iterdir()} == {"weights.safetensors", "optimizer.safetensors",
                                                     "state.safetensors", "progress.json"}
    load_teacher(run)  # the published weights are whole, too

    train(run, resume=True, show_progress=False)  # in-process: a second interpreter start costs seconds

    reference = tmp_path / "reference"
    config, _ = teacher_config({k.replace("-", "_"): v for k, v in ARGS.items()})  # as `kdx train` resolves it (recipe included)
    assert config == TeacherConfig.from_json(json.loads(paths.config.read_text())["teacher"])
    train(reference, config, show_progress=False)
    resumed, uninterrupted = read_metrics(run), read_metrics(reference)
    assert [m["update"] for m in resumed] == list(range(1, 61))

    def strip(ms):
        return [{k: v for k, v in m.items() if k not in TIMING_METRICS} for m in ms]

    assert strip(resumed) == strip(uninterrupted)
    assert json.loads(paths.config.read_text())["teacher"]["total_steps"] == ARGS["steps"]


def test_ctrl_c_stops_after_the_update_with_its_checkpoint_and_says_how_to_resume(tmp_path):
    run = tmp_path / "run"
    args = {**ARGS, "steps": 8 * 5 * 2000}
    proc = subprocess.Popen(_kdx("train", "--out", str(run), "--quiet", *[f"--{k}={v}" for k, v in args.items()]),
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    paths = RunLayout(run).teacher
    deadline = time.monotonic() + 90
    while not checkpoint_store(paths).complete() and proc.poll() is None and time.monotonic() < deadline:
        time.sleep(0.02)
    assert proc.poll() is None, f"training ended before it could be stopped: {proc.stderr.read()[-2000:]}"
    proc.send_signal(signal.SIGINT)
    out, err = proc.communicate(timeout=60)
    assert proc.returncode == 128 + signal.SIGINT, err[-2000:]  # 130, as a shell reports Ctrl-C
    assert "SIGINT: stopping after this update" in err
    assert f"kdx train --resume {run}" in " ".join(out.split())
    logged = read_metrics(run)
    ckpt = checkpoint_store(paths).load_newest()
    assert ckpt.progress["update"] == logged[-1]["update"] < 2000  # the stopping update: logged and checkpointed
    assert load_teacher(run) is not None
    train(run, resume=True, show_progress=False, total_steps=(logged[-1]["update"] + 3) * 8 * 5)
    assert [m["update"] for m in read_metrics(run)][-4:] == [logged[-1]["update"] + i for i in range(4)]
