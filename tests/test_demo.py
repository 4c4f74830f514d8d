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
