"""`kdx demo` wires the real commands together: a tiny end-to-end run of every stage."""

import json

from kdx.demo import STAGES, DemoConfig, run_demo
from kdx.layout import RunLayout


def test_tiny_demo_runs_every_stage_and_writes_the_report(tmp_path):
    out = tmp_path / "demo"
    cfg = DemoConfig(
        out=out,
        teacher_steps=800,
        distill_steps=3200,
        eval_episodes=4,
        bench_iters=50,
        run_episodes=1,
        extra_train_args=("--num-envs", "16", "--hidden", "32,32", "--threads", "1"),
    )
    outcomes = run_demo(cfg)
    assert list(outcomes) == list(STAGES)
    assert all(o["outcome"] == "ok" for o in outcomes.values()), outcomes
    evaluation = json.loads(RunLayout(out).eval_json.read_text())
    assert "students" in evaluation
    for target in cfg.targets:
        assert (RunLayout(out).bundle(target) / "manifest.json").exists()
        assert RunLayout(out).bundle_archive(target).exists()
    assert json.loads((RunLayout(out).devices / "this-host.json").read_text())
    html = RunLayout(out).report_html.read_text()
    assert "data:image/png;base64" in html
    assert RunLayout(out).report_md.exists()
    # a second demo resumes the finished stages (README: "A second `make demo` resumes")
    again = run_demo(cfg)
    assert all(o["outcome"] == "ok" for o in again.values()), again
    assert json.loads(RunLayout(out).eval_json.read_text())["students"] == evaluation["students"]


def test_ctrl_c_during_the_teachers_stage_stops_the_demo_and_says_how_to_continue(tmp_path):
    """SIGINT (from a timer, once the teacher has logged an update) stops `kdx train` after that
    update; the demo does not go on to distil a half-trained teacher but says how to continue."""
    import os
    import signal
    import threading
    import time

    import pytest

    from kdx.demo import stage_train
    from kdx.errors import KdxError
    from kdx.trainer.teacher.mappo import read_metrics

    out = tmp_path / "demo"
    cfg = DemoConfig(out=out, teacher_steps=16 * 25 * 4000, teacher_minutes=10,
                     extra_train_args=("--num-envs", "16", "--hidden", "16", "--threads", "1"))
    metrics = RunLayout(out).teacher.metrics

    def interrupt_once_training():
        deadline = time.monotonic() + 60
        while not (metrics.exists() and metrics.read_text().strip()) and time.monotonic() < deadline:
            time.sleep(0.01)
        os.kill(os.getpid(), signal.SIGINT)

    timer = threading.Thread(target=interrupt_once_training, daemon=True)
    timer.start()
    with pytest.raises(KdxError, match="stopped by a signal after checkpointing; run `kdx demo` again"):
        stage_train(cfg)
    timer.join()
    stopped = read_metrics(out)[-1]["update"]
    assert 0 < stopped < 4000 and RunLayout(out).teacher.weights.exists()
