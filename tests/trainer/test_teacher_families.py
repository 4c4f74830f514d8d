"""A few MAPPO updates on every env family, then `kdx evaluate` on the result; CLI rules."""

from __future__ import annotations

import json
import math

import pytest
import torch

from kdx.cli import main
from kdx.envs.registry import available, make
from kdx.layout import RunLayout
from kdx.trainer.common.evaluate import (
    RandomPolicy,
    ScriptedPolicy,
    evaluate_policies,
    mean_ci95,
    run_episodes,
)
from kdx.trainer.evaluation import evaluate_run
from kdx.trainer.teacher.config import TeacherConfig
from kdx.trainer.teacher.mappo import read_metrics, train
from kdx.trainer.teacher.store import load_teacher

FAMILY_ENVS = ["mpe/simple_spread", "mpe/simple_speaker_listener", "skirmish/3m", "pettingzoo:mpe2.simple_spread_v3"]


def _needs(env_name: str) -> None:
    if ":" not in env_name and env_name not in available():
        pytest.skip(f"{env_name} is not registered in this checkout")
    if env_name.startswith("pettingzoo:"):
        pytest.importorskip("mpe2")


@pytest.mark.parametrize("env_name", FAMILY_ENVS)
def test_short_training_run_on_each_family(tmp_path, env_name):
    _needs(env_name)
    num_envs = 2 if env_name.startswith("pettingzoo:") else 8
    config = TeacherConfig(env=env_name, total_steps=num_envs * 10 * 3, num_envs=num_envs, rollout_length=10,
                           hidden="16", epochs=2, minibatches=2, threads=1, per_group_actors="speaker" in env_name,
                           checkpoint_every=2)
    train(tmp_path / "run", config, show_progress=False, stop_after_updates=2)
    last = train(tmp_path / "run", resume=True, show_progress=False)  # simulator-backed envs restart episodes
    assert [m["update"] for m in read_metrics(tmp_path / "run")] == [1, 2, 3]
    assert last["update"] == 3 and all(math.isfinite(last[k]) for k in ("policy_loss", "value_loss", "entropy"))
    teacher = load_teacher(tmp_path / "run", env=env_name)
    env = make(env_name, num_envs=2, seed=0)
    step = env.reset()
    actions, _ = teacher.act(step.padded_obs(), step.state, step.padded_action_mask(), greedy=True)
    env.check_actions = True
    env.step(actions)  # legal for the env (masks and per-agent action counts honoured)
    env.close()
    if env_name.startswith("skirmish/"):
        assert last["win_rate"] is None or 0.0 <= last["win_rate"] <= 1.0


def test_mean_ci95_by_hand():
    mean, ci = mean_ci95([1.0, 2.0, 3.0, 4.0])
    assert mean == 2.5
    assert math.isclose(ci, 1.96 * math.sqrt((1.5**2 + 0.5**2 + 0.5**2 + 1.5**2) / 3 / 4))


def test_normalised_score_anchors_random_at_zero_and_oracle_at_one():
    _needs("mpe/simple_spread")
    result = evaluate_policies("mpe/simple_spread", {}, episodes=20)
    pol = result["policies"]
    assert math.isclose(pol["random"]["normalized_score"], 0.0, abs_tol=1e-6)
    assert math.isclose(pol["oracle"]["normalized_score"], 1.0, abs_tol=1e-6)
    assert result["reference"]["oracle_return"] > result["reference"]["random_return"]
    # same seeds, same episodes: a second run is identical
    returns, _ = run_episodes("mpe/simple_spread", RandomPolicy(), 20)
    assert math.isclose(sum(returns) / 20, result["reference"]["random_return"], rel_tol=1e-6)


def test_random_policy_respects_masks_on_toy_env():
    env = make("toy/match", num_envs=32, seed=0)
    step = env.reset()
    policy = RandomPolicy()
    policy.reset(env)
    for _ in range(5):
        a = policy.act(step)
        assert bool((a[:, 1] != 3).all()) and bool((a[:, 0] < 3).all())
        step = env.step(a)


def test_evaluate_cli_writes_eval_json_with_win_rates(tmp_path, capsys):
    config = TeacherConfig(env="toy/match", total_steps=16 * 8 * 15, num_envs=16, rollout_length=8, hidden="32",
                           lr=3e-3, threads=1)
    train(tmp_path / "run", config, show_progress=False)
    result = evaluate_run(tmp_path / "run", episodes=40)
    on_disk = json.loads(RunLayout(tmp_path / "run").eval_json.read_text())
    assert on_disk == json.loads(json.dumps(result))
    pol = on_disk["policies"]
    assert set(pol) == {"teacher_greedy", "teacher_sampled", "random"}
    assert pol["teacher_greedy"]["win_rate"] > pol["random"]["win_rate"]
    assert pol["teacher_greedy"]["mean_return"] > pol["random"]["mean_return"]
    with pytest.raises(SystemExit) as exc:
        main(["evaluate", str(tmp_path / "nothing"), "--episodes", "5"])
    assert exc.value.code == 2
    assert "not a kdx run" in _err(capsys)


def test_scripted_policy_calls_with_or_without_step():
    env = make("toy/match", num_envs=3, seed=0)
    step = env.reset()
    seen = []
    plain = ScriptedPolicy("a", lambda e: seen.append(e) or torch.ones(3, 2, dtype=torch.long))
    plain.reset(env)
    assert plain.act(step).tolist() == [[1, 1]] * 3 and seen == [env]
    p = ScriptedPolicy("b", lambda e, s: torch.zeros(3, 2, dtype=torch.long) + len(s.obs), takes_step=True)
    p.reset(env)
    assert p.act(step).tolist() == [[2, 2]] * 3


def _succeeds(argv: list[str]) -> None:
    try:
        main(argv)
    except SystemExit as exc:  # the entry point may exit explicitly on success
        assert exc.code in (0, None)


def _err(capsys) -> str:
    return " ".join(capsys.readouterr().err.split())  # rich wraps long lines


def test_train_cli_refuses_bad_input_and_existing_runs(tmp_path, capsys):
    run = str(tmp_path / "run")
    base = ["train", "--env", "toy/match", "--steps", "256", "--num-envs", "16", "--rollout-length", "8",
            "--hidden", "8", "--threads", "1", "--quiet"]
    for extra, message in [(["--lr", "-0.1"], "--lr must be positive"),
                           (["--minibatches", "3"], "does not divide --num-envs"),
                           (["--env", "nope/none"], "unknown environment"),
                           (["--teacher-input", "global"], "--teacher-input must be one of local, centralised")]:
        with pytest.raises(SystemExit) as exc:
            main(base + ["--out", run] + extra)
        assert exc.value.code == 2
        assert message in _err(capsys)
    assert not RunLayout(tmp_path / "run").teacher.root.exists()
    _succeeds(base + ["--out", run])
    assert len(read_metrics(run)) == 2
    with pytest.raises(SystemExit) as exc:
        main(base + ["--out", run])
    assert exc.value.code == 2 and "already holds a teacher run" in _err(capsys)
    _succeeds(["train", "--resume", run, "--steps", "512", "--quiet"])
    assert [m["update"] for m in read_metrics(run)] == [1, 2, 3, 4]
    with pytest.raises(SystemExit) as exc:
        main(["train", "--resume", run, "--lr", "0.1"])
    assert exc.value.code == 2 and "only --steps and --minutes may change" in _err(capsys)
