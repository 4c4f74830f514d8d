"""benchmarks/teacher.py on real, tiny run folders of the toy env: the rows of --collect, met / missed
against the bars, the peer row's crossing time against a curve computed by hand, the JSON merge, the
PNG and the Markdown; and one short run-mode call whose safety net must fire."""

from __future__ import annotations

import importlib.util
import json
import shutil
import sys
from dataclasses import replace
from pathlib import Path

import pytest

from kdx.layout import RunLayout
from kdx.trainer.evaluation import evaluate_run
from kdx.trainer.teacher.config import TeacherConfig
from kdx.trainer.teacher.mappo import read_metrics, train

ROOT = Path(__file__).resolve().parents[2]


def _load(name: str, path: Path):
    spec = importlib.util.spec_from_file_location(name, path)
    module = importlib.util.module_from_spec(spec)
    sys.modules[name] = module  # dataclasses look their module up there
    spec.loader.exec_module(module)
    return module


bench = _load("benchmark_teacher", ROOT / "benchmarks" / "teacher.py")
toy = _load("benchmark_teacher_toy_env", ROOT / "tests" / "trainer" / "trainer_toy_env.py")

TOY = "toy/match"
TINY = TeacherConfig(env=TOY, num_envs=16, rollout_length=8, hidden="32,32", epochs=4, minibatches=2, lr=3e-3,
                     threads=1, total_steps=16 * 8 * 6)


@pytest.fixture(scope="module")
def runs(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, Path]:
    """A toy run trained and evaluated in-process, and a copy of it without eval.json."""
    from kdx.envs import registry

    registry.available()
    if TOY not in registry.ENVS:
        registry.register(TOY, toy.ToyMatchEnv, "trainer test env", "toy")
    root = tmp_path_factory.mktemp("teacher-bench")
    train(root / "evaluated", TINY, show_progress=False)
    evaluate_run(root / "evaluated", episodes=20)
    shutil.copytree(root / "evaluated", root / "unevaluated", ignore=shutil.ignore_patterns("eval.json", ".kdx-lock"))
    return root / "evaluated", root / "unevaluated"


def _target(threshold: float | None, minutes: float = 10.0) -> dict[str, bench.Target]:
    return {TOY: bench.Target(TOY, "win_rate", threshold, minutes)}


def test_collected_rows_read_the_run(runs: tuple[Path, Path]) -> None:
    evaluated, unevaluated = runs
    (row,) = bench.rows_for(bench.read_run(evaluated), _target(0.0))
    metrics = read_metrics(evaluated)
    greedy = json.loads(RunLayout(evaluated).eval_json.read_text())["policies"]["teacher_greedy"]
    assert (row["env"], row["metric"], row["limit_min"]) == (TOY, "win_rate", 10.0)
    assert row["env_steps"] == 16 * 8 * 6 and row["updates"] == 6
    assert row["train_s"] == metrics[-1]["time_s"]
    assert (row["greedy"], row["greedy_ci95"], row["eval_episodes"]) == (greedy["win_rate"], greedy["win_rate_ci95"], 20)
    assert row["status"] == "met" and row["why"] == ""
    assert row["recipe"] is None  # trained in-process, not by `kdx train`
    # the config differs from a plain `kdx train --env toy/match` in exactly the fields TINY sets
    assert set(row["not_plain"]) == {"num_envs", "rollout_length", "hidden", "epochs", "minibatches", "lr",
                                     "threads", "total_steps"}
    assert [p["env_steps"] for p in row["curve"]] == [m["env_steps"] for m in metrics]
    assert [p["value"] for p in row["curve"]] == [m["win_rate"] for m in metrics]
    (missing,) = bench.rows_for(bench.read_run(unevaluated), _target(0.0))
    assert (missing["status"], missing["greedy"]) == ("no eval.json", None)
    assert "kdx evaluate" in missing["why"]


def test_met_and_missed_against_the_bars(runs: tuple[Path, Path]) -> None:
    facts = bench.read_run(runs[0])
    greedy = facts.evaluation["policies"]["teacher_greedy"]["win_rate"]
    assert bench.rows_for(facts, _target(greedy))[0]["status"] == "met"  # reaching the bar exactly is enough
    above = bench.rows_for(facts, _target(greedy + 0.01))[0]
    assert above["status"] == "missed" and f"< {greedy + 0.01:.2f}" in above["why"]
    # a limit the run's last update began after: missed on time alone
    late = bench.rows_for(facts, _target(0.0, minutes=1e-6))[0]
    assert late["status"] == "missed" and "last update began" in late["why"]
    assert bench.rows_for(facts, _target(None))[0]["status"] == "curve only"
    # an env without a target gets a curve row
    assert bench.rows_for(facts, {})[0]["status"] == "curve only"


def test_judge_and_last_update_start_by_hand() -> None:
    assert bench.judge(0.9, 600, 0.9, 599.0) == ("met", "")
    assert bench.judge(0.9, 600, 0.95, 600.5) == ("missed", "last update began at 600 s > limit 600 s")
    assert bench.judge(0.9, 600, None, 10.0) == ("missed", "no result < 0.90")
    assert bench.judge(None, 600, 0.1, 9e9) == ("curve only", "")
    lines = [{"update": 10, "time_s": 590.0}, {"update": 12, "time_s": 606.0}]  # 8 s per update
    assert bench.last_update_start_s(lines) == pytest.approx(598.0)


def _curve(returns: list[float]) -> list[dict]:
    return [{"update": i + 1, "env_steps": 1000 * (i + 1), "time_s": 100.0 * (i + 1), "episode_return": r}
            for i, r in enumerate(returns)]


def test_peer_row_crossing_time_from_a_hand_curve() -> None:
    # window 5: line 5 -> mean(-50, -45, -40, -38, -37) = -42.0; line 6 -> -39.2; line 7 -> -36.2 >= -38.3
    metrics = _curve([-50, -45, -40, -38, -37, -36, -30])
    assert bench.smoothed_returns(metrics, 5)[4:] == pytest.approx([-42.0, -39.2, -36.2])
    assert bench.first_crossing(metrics, -38.3, 5) == {"time_s": 700.0, "env_steps": 7000, "return": pytest.approx(-36.2)}
    plain = bench.config_with_recipe(TeacherConfig, "mpe/simple_spread", {"env": "mpe/simple_spread"})[0]
    facts = bench.RunFacts(Path("r"), plain.to_json(), None, metrics, None, False)
    fast = bench.PeerTarget("mpe/simple_spread", "peer", -38.3, peer_time_s=1402.0, peer_env_steps=1)  # limit 701 s
    row = bench.peer_row(facts, fast)
    assert (row["status"], row["crossing"]["time_s"], row["final_return"]) == ("met", 700.0, pytest.approx(-36.2))
    assert row["not_plain"] == {}  # the plain config itself (dataclass defaults + recipe)
    by_hand = bench.RunFacts(Path("r"), {**plain.to_json(), "lr": 0.5}, None, metrics, None, False)
    assert bench.peer_row(by_hand, fast)["not_plain"] == {"lr": 0.5}
    slow = replace(fast, peer_time_s=1400.0)  # limit 700 s: reaching it at 700 s is not "less than"
    assert bench.peer_row(facts, slow)["status"] == "missed"
    never = bench.RunFacts(Path("r"), facts.config, None, _curve([-50] * 9), None, False)
    assert bench.peer_row(never, fast)["why"].startswith("never reached")
    rows = bench.rows_for(facts, {}, fast)
    assert [r["kind"] for r in rows] == ["target", "peer"] and rows[1]["key"] == "peer:mpe/simple_spread"


def test_collect_writes_merged_json_png_and_markdown(runs: tuple[Path, Path], tmp_path: Path) -> None:
    out = tmp_path / "teacher.json"
    kept = {"key": "skirmish/8m", "kind": "target", "env": "skirmish/8m", "metric": "win_rate", "threshold": 0.95,
            "limit_min": 30, "reference": None, "run": "/x/8m", "train_s": 1800.4, "env_steps": 3_000_000,
            "greedy": 0.97, "greedy_ci95": 0.03, "status": "met", "why": "", "recipe": None, "not_plain": {},
            "curve": []}
    legacy = {"env": "skirmish/3m", "reached": True}  # the old format of this file: kept, not shown
    out.write_text(json.dumps({"skirmish/8m": kept, "skirmish/3m": legacy, TOY: {"key": TOY, "stale": True}}))
    md = tmp_path / "table.md"
    rows = bench.main(["--collect", *map(str, runs), "--out", str(out), "--markdown", str(md)], targets=_target(0.0))
    assert [r["status"] for r in rows] == ["met", "no eval.json"]
    merged = json.loads(out.read_text())
    assert merged["skirmish/8m"] == kept and merged["skirmish/3m"] == legacy  # other envs kept
    assert merged[TOY]["run"] == str(runs[1]) and "stale" not in merged[TOY]  # the measured env replaced
    png = out.with_suffix(".png")
    assert png.is_file() and png.read_bytes().startswith(b"\x89PNG") and png.stat().st_size > 5000
    text = md.read_text()
    assert text.startswith("| target | bar |") and "skirmish/3m" not in text
    assert "| skirmish/8m | win_rate >= 95.0% | 30 min | 1800 s | 3,000,000 | 97.0% ± 3.0% | met |" in text
    assert f"| {TOY} | win_rate >= 0.0% |" in text and "no eval.json" in text
    assert text.index("skirmish/8m") < text.index(TOY)  # the target table's order, then other envs


def test_run_mode_safety_net_fires_when_the_run_outlives_its_limit(tmp_path: Path) -> None:
    # mpe/simple_spread given a 1.2 s limit: the recipe's own budget outlives it, so the parent
    # kills the run at 1.2 s + the 2 s grace, with whatever it had written.
    env = "mpe/simple_spread"
    target = {env: bench.Target(env, "normalized_score", 0.9, minutes=0.02)}
    out = tmp_path / "t.json"
    rows = bench.main(["--env", env, "--runs-dir", str(tmp_path / "runs"), "--grace", "2", "--sample-every", "0.5",
                       "--out", str(out)], targets=target)
    row = rows[0]
    assert row["safety_net_fired"] is True
    assert 3.2 <= row["wall_s"] < 3.2 + 15
    assert row["load"]["cores"] >= 1 and row["load"]["during"] and row["load"]["after"] >= 0
    assert row["status"] in ("failed", "evaluate failed", "met", "missed", "no metrics")
    assert json.loads(out.read_text())[env]["safety_net_fired"] is True


def test_collect_evaluate_runs_kdx_evaluate_and_normalises_the_curve(tmp_path: Path) -> None:
    env = "mpe/simple_spread"
    run = tmp_path / "spread"
    train(run, replace(TINY, env=env, num_envs=8, rollout_length=25, total_steps=8 * 25 * 3), show_progress=False)
    assert not RunLayout(run).eval_json.exists()
    (row, peer) = bench.main(["--collect", str(run), "--evaluate", "--out", str(tmp_path / "t.json")],
                             targets={env: bench.Target(env, "normalized_score", -100.0, 10)})
    evaluation = json.loads(RunLayout(run).eval_json.read_text())  # written by the `kdx evaluate` subprocess
    assert row["status"] == "met" and row["greedy"] == evaluation["policies"]["teacher_greedy"]["normalized_score"]
    ref = evaluation["reference"]
    first = read_metrics(run)[0]["episode_return"]
    expected = (first - ref["random_return"]) / (ref["oracle_return"] - ref["random_return"])
    assert row["curve"][0]["value"] == pytest.approx(expected)
    assert peer["kind"] == "peer" and peer["status"] == "missed"  # 3 updates never average 5
