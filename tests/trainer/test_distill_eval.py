"""Teacher-vs-student evaluation and the `kdx distill` command (toy env, random-weight teacher)."""

from __future__ import annotations

import json
import sys
from pathlib import Path

import pytest

from kdx.devices.cost import COST_RULE
from kdx.layout import RunLayout
from kdx.trainer.distill.config import DistillConfig
from kdx.trainer.distill.evaluate import retention
from kdx.trainer.distill.loop import distill
from kdx.trainer.evaluation import evaluate_run

sys.path.insert(0, str(Path(__file__).parent))
from test_distill import TOY, make_teacher_run  # noqa: E402


def test_eval_json_compares_teacher_and_students_on_cost_and_score(tmp_path):
    make_teacher_run(tmp_path)  # teacher 32x32, shared actor: input 3 (padded to 5) + 2 agent ids
    distill(tmp_path, DistillConfig(total_steps=16 * 4 * 2, students=("a0=8", "a1=8"), **TOY), show_progress=False)
    result = evaluate_run(tmp_path, episodes=12)
    assert set(result["policies"]) >= {"teacher_greedy", "teacher_sampled", "students_greedy", "students_sampled", "random"}
    assert json.loads(RunLayout(tmp_path).eval_json.read_text())["students"] == result["students"]
    cost = result["students"]["cost"]["a0"]
    # MACs = weight multiply-adds, no bias adds (COST_RULE). Student 3->8->3; teacher 7->32->32->4.
    assert cost["student_macs"] == 3 * 8 + 8 * 3
    assert cost["teacher_macs"] == 7 * 32 + 32 * 32 + 32 * 4
    # params: weights and biases, and the teacher's LayerNorms (input 7, after each hidden layer 32)
    assert cost["student_params"] == cost["student_macs"] + 8 + 3
    assert cost["teacher_params"] == cost["teacher_macs"] + 32 + 32 + 4 + 2 * (7 + 32 + 32)
    assert cost["mac_ratio"] == pytest.approx(cost["teacher_macs"] / cost["student_macs"])
    assert result["students"]["cost_counted"] == COST_RULE
    # what eval.json says is what distillation stored, not a recount
    stored = {row["agent"]: row for row in json.loads(RunLayout(tmp_path).students.sizing.read_text())["agents"]}
    for agent, c in result["students"]["cost"].items():
        assert (c["student_params"], c["student_macs"]) == (stored[agent]["params"], stored[agent]["macs"])
        assert (c["teacher_params"], c["teacher_macs"]) == (stored[agent]["teacher_params"], stored[agent]["teacher_macs"])
    assert result["students"]["mode"] in ("greedy", "sampled")
    assert result["students"]["measure"].startswith("win rate")


def _result(win_t, win_s, ret_t=0.0, ret_s=0.0, rand=0.0):
    def pol(win, ret):
        return {"win_rate": win, "mean_return": ret}

    return {"reference": {"random_return": rand},
            "policies": {"teacher_greedy": pol(win_t[0], ret_t), "teacher_sampled": pol(win_t[1], ret_t),
                         "students_greedy": pol(win_s[0], ret_s), "students_sampled": pol(win_s[1], ret_s)}}


def test_retention_uses_win_rates_or_returns_above_random():
    r = retention(_result((0.8, 0.6), (0.6, 0.6)))
    assert r["per_mode"] == {"greedy": pytest.approx(0.75), "sampled": pytest.approx(1.0)}
    assert r["mode"] == "greedy" and r["retention"] == pytest.approx(0.75)
    # no win flag: (student - random) / (teacher - random) = ratio of normalised scores
    r = retention(_result((None, None), (None, None), ret_t=-20.0, ret_s=-30.0, rand=-60.0))
    assert r["retention"] == pytest.approx(30 / 40)
    # a teacher no better than random leaves retention undefined rather than dividing by ~0
    assert retention(_result((0.0, 0.0), (0.5, 0.5)))["retention"] is None


def test_cli_distill_writes_students_and_reports_bad_input(tmp_path, capsys, monkeypatch, run_kdx):
    monkeypatch.setenv("COLUMNS", "250")  # rich tables unwrapped
    make_teacher_run(tmp_path)
    common = ["--steps", "64", "--num-envs", "16", "--rollout-length", "4", "--threads", "1", "--obs-norm-steps", "2"]
    assert run_kdx(["distill", str(tmp_path), *common, "--quiet"]) == 2 and "--profile PROFILE" in " ".join(capsys.readouterr().err.split())
    assert run_kdx(["distill", str(tmp_path), "--profile", "rpi4", "--student", "nobody=16", *common, "--quiet"]) == 2 and "agents: a0, a1" in " ".join(capsys.readouterr().err.split())
    assert run_kdx(["distill", str(tmp_path), "--profile", "rpi4", "--student", "a1=16x16", "--w-rel", "0", *common]) == 0
    out = capsys.readouterr().out
    assert "students for rpi4" in out and "a1" in out  # the sizing table
    saved = json.loads(RunLayout(tmp_path).students.config.read_text())
    assert saved["distill"]["w_rel"] == 0.0 and saved["agents"]["a1"]["hidden"] == [16, 16]
    # resuming with the same profile and students is what a second `make demo` does; another profile is refused
    assert run_kdx(["distill", str(tmp_path), "--resume", "--profile", "rpi5", "--quiet"]) == 2
    assert "--resume continues with the saved config" in " ".join(capsys.readouterr().err.split())
    assert run_kdx(["distill", str(tmp_path), "--resume", "--profile", "rpi4", "--student", "a1=16x16",
                    "--steps", "128", "--quiet"]) == 0
    lines = RunLayout(tmp_path).students.metrics.read_text().splitlines()
    assert json.loads(lines[-1])["env_steps"] == 128
    capsys.readouterr()
    assert run_kdx(["evaluate", str(tmp_path), "--episodes", "4"]) == 0
    out = capsys.readouterr().out
    assert "students_greedy" in out and "retention" in out and "MACs ratio" in out
    assert "cost" in json.loads(RunLayout(tmp_path).eval_json.read_text())["students"]


def test_evaluate_loads_each_model_once_and_writes_eval_json_once(tmp_path, monkeypatch):
    """Spies count the calls; the real loaders and writer still do the work."""
    import kdx.trainer.evaluation as evaluation

    make_teacher_run(tmp_path)
    distill(tmp_path, DistillConfig(total_steps=16 * 4 * 2, **TOY), show_progress=False)
    calls: dict[str, list] = {"load_teacher": [], "load_students": [], "atomic_write_text": []}
    for name in calls:
        real = getattr(evaluation, name)

        def spy(*args, _real=real, _name=name, **kwargs):
            calls[_name].append(args[0])
            return _real(*args, **kwargs)

        monkeypatch.setattr(evaluation, name, spy)
    evaluate_run(tmp_path, episodes=4)
    assert [len(v) for v in calls.values()] == [1, 1, 1]
    assert calls["atomic_write_text"] == [RunLayout(tmp_path).eval_json]
