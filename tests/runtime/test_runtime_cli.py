"""The kdx-runtime commands end to end: info, bench (JSON), run (closed loop on mpe2), serve
(a real subprocess on a loopback socket)."""

from __future__ import annotations

import json
import re
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from kdx.errors import KdxError
from kdx.runtime.bundle import Bundle
from kdx.runtime.cli import app
from kdx.runtime.cli import main as cli_main
from kdx.runtime.protocol import Client
from kdx.runtime.testing import stop_serve_process

REPO = Path(__file__).resolve().parents[2]


def raw(argv: list[str]) -> None:
    """Run ``kdx-runtime argv`` in-process and let its KdxError through (the entry point would
    print it, wrapped to the terminal's width)."""
    app(args=argv, standalone_mode=False)


def main(argv: list[str]) -> None:
    """Run ``kdx-runtime argv`` in-process; the entry point always exits, 0 on success."""
    with pytest.raises(SystemExit) as info:
        cli_main(argv)
    if info.value.code not in (0, None):
        raise SystemExit(info.value.code)


def test_info_lists_agents_files_and_backends(spread_bundle: Path, capsys: pytest.CaptureFixture) -> None:
    main(["info", str(spread_bundle)])
    out = capsys.readouterr().out
    for text in ("agent_0", "agent_2", "teacher", "256x256x256", "32x32", "agent_1.fp32.onnx",
                 "teacher.fp32.npz", "backends available here", "numpy", "fp32"):
        assert text in out, text


def test_version_lists_the_backends_usable_here(capsys: pytest.CaptureFixture) -> None:
    from kdx.runtime.backends import available_backends

    main(["version"])
    listed = capsys.readouterr().out.strip().split("backends: ")[1].split(", ")
    assert listed == sorted(name for name, why in available_backends().items() if why is None)
    assert "numpy" in listed


def test_bench_writes_stats_samples_and_device(spread_bundle: Path, tmp_path: Path,
                                               capsys: pytest.CaptureFixture) -> None:
    out_json = tmp_path / "lat.json"
    main(["bench", str(spread_bundle), "--agent", "agent_1", "--backend", "numpy", "--iters", "300",
          "--warmup", "20", "--json", str(out_json)])
    printed = capsys.readouterr().out
    assert "teacher p50 / student p50" in printed
    data = json.loads(out_json.read_text())
    assert [(r["agent"], r["role"]) for r in data["results"]] == [("agent_1", "student"), ("agent_1", "teacher")]
    for result in data["results"]:
        assert result["backend"] == "numpy" and len(result["samples_ns"]) == 300
        samples_us = np.asarray(result["samples_ns"]) / 1e3
        assert result["p50_us"] == pytest.approx(np.percentile(samples_us, 50))
        assert result["max_us"] == pytest.approx(samples_us.max())
        assert result["min_us"] <= result["p50_us"] <= result["p90_us"] <= result["p99_us"] <= result["max_us"]
        assert result["decisions_per_s"] == pytest.approx(1e6 / samples_us.mean())
    teacher, student = data["results"][1], data["results"][0]
    assert data["teacher_over_student_p50"]["agent_1"] == pytest.approx(teacher["p50_us"] / student["p50_us"])
    assert teacher["params"] > 50 * student["params"]
    assert data["peak_rss_mib"] > 10
    for key in ("platform", "machine", "cpu_model", "numpy", "onnxruntime", "python"):
        assert key in data["device"]


def test_bench_errors_are_reported_without_traceback(tmp_path: Path, capsys: pytest.CaptureFixture) -> None:
    with pytest.raises(SystemExit) as info:
        main(["bench", str(tmp_path)])
    assert info.value.code == 2
    assert "manifest.json" in capsys.readouterr().err


def test_run_closed_loop_on_mpe2(spread_bundle: Path, tmp_path: Path, capsys: pytest.CaptureFixture) -> None:
    pytest.importorskip("mpe2", reason="mpe2 provides the PettingZoo env of this test")
    out_json = tmp_path / "run.json"
    main(["run", str(spread_bundle), "--env", "pettingzoo:mpe2.simple_spread_v3", "--episodes", "2",
          "--max-cycles", "10", "--backend", "numpy", "--deadline-us", "1000000", "--json", str(out_json)])
    printed = capsys.readouterr().out
    assert "team return" in printed and "per-decision latency" in printed
    data = json.loads(out_json.read_text())
    assert data["episodes"] == 2 and data["steps"] == 20
    assert len(data["latency_samples_ns"]) == 60  # 3 agents x 10 steps x 2 episodes
    assert data["step_latency"]["n"] == 20
    assert data["step_latency"]["mean_us"] == pytest.approx(3 * data["latency"]["mean_us"])
    assert "per-step latency" in printed
    assert data["deadline"]["decisions"] == 60 and data["deadline"]["late"] == 0
    assert np.isfinite(data["team_return_mean"])


def test_run_plays_the_env_the_manifest_records(tmp_path: Path) -> None:
    """No --env: the manifest's kdx env plays in its PettingZoo twin (from kdx.envs.twins)."""
    pytest.importorskip("mpe2", reason="mpe2 provides the twin of mpe/simple_spread")
    from kdx.runtime.testing import make_test_bundle

    bundle = make_test_bundle(tmp_path / "b", teacher_hidden=None, with_onnx=False, env="mpe/simple_spread")
    out_json = tmp_path / "run.json"
    main(["run", str(bundle), "--episodes", "1", "--max-cycles", "4", "--json", str(out_json)])
    data = json.loads(out_json.read_text())
    assert data["env"] == "pettingzoo:mpe2.simple_spread_v3" and data["steps"] == 4


def test_run_env_option_overrides_the_manifest(tmp_path: Path) -> None:
    """A bundle recording skirmish/3m (no twin) still runs where --env names a PettingZoo env."""
    pytest.importorskip("mpe2", reason="mpe2 provides the PettingZoo env of this test")
    from kdx.runtime.testing import make_test_bundle

    bundle = make_test_bundle(tmp_path / "b", teacher_hidden=None, with_onnx=False, env="skirmish/3m")
    out_json = tmp_path / "run.json"
    main(["run", str(bundle), "--env", "pettingzoo:mpe2.simple_spread_v3", "--episodes", "1",
          "--max-cycles", "3", "--json", str(out_json)])
    assert json.loads(out_json.read_text())["env"] == "pettingzoo:mpe2.simple_spread_v3"
    with pytest.raises(KdxError, match="no torch-free PettingZoo twin"):
        raw(["run", str(bundle)])  # without --env: the manifest's skirmish/3m


def test_run_without_a_twin_names_the_kdx_command_that_plays_it(tmp_path: Path) -> None:
    """skirmish/3m has no PettingZoo twin: the error names `kdx run`, and that command works."""
    from kdx.runtime.testing import make_test_bundle

    bundle = make_test_bundle(tmp_path / "b", obs_dim=30, n_actions=9, teacher_hidden=None,
                              with_onnx=False, env="skirmish/3m")
    with pytest.raises(KdxError) as info:
        raw(["run", str(bundle), "--episodes", "1"])
    message = str(info.value)
    assert "'skirmish/3m' has no torch-free PettingZoo twin" in message and "kdx[train]" in message
    suggested = re.search(r"`kdx (run [^`]+)`", message).group(1).split()
    assert suggested == ["run", str(bundle), "--env", "skirmish/3m"]
    pytest.importorskip("torch", reason="kdx run plays kdx's own (torch) envs")
    from kdx.cli import main as kdx_main

    out_json = tmp_path / "run.json"
    with pytest.raises(SystemExit) as info:
        kdx_main([*suggested, "--episodes", "2", "--backend", "numpy", "--json", str(out_json)])
    assert info.value.code in (0, None)
    data = json.loads(out_json.read_text())
    assert data["env"] == "skirmish/3m" and data["episodes"] == 2
    assert 2 <= data["steps"] <= 2 * 60 and len(data["latency_samples_ns"]) == 3 * data["steps"]


def test_run_needs_an_env_when_the_manifest_has_none(tmp_path: Path) -> None:
    from kdx.runtime.testing import make_test_bundle

    bundle = make_test_bundle(tmp_path / "b", teacher_hidden=None, with_onnx=False, env="")
    with pytest.raises(KdxError, match="the manifest records no env; name one with --env"):
        raw(["run", str(bundle)])


def test_run_is_decentralised_and_deterministic(spread_bundle: Path) -> None:
    """Each agent gets exactly its own observation: replaying the env with the same seed and
    calling each policy by hand on env.observations gives the same returns."""
    mpe2 = pytest.importorskip("mpe2")
    from kdx.runtime.closed_loop import make_parallel_env, run_episodes

    bundle = Bundle.load(spread_bundle)
    policies = {a: bundle.policy(a, "numpy") for a in bundle.agent_names}
    result = run_episodes(make_parallel_env("pettingzoo:mpe2.simple_spread_v3", 8), policies, 1, seed=5)
    env = mpe2.simple_spread_v3.parallel_env(continuous_actions=False, max_cycles=8)
    obs, _ = env.reset(seed=5)
    total = 0.0
    while env.agents:
        obs, rewards, _, _, _ = env.step({a: policies[a].act(obs[a]) for a in env.agents})
        total += sum(rewards.values())
    assert result.team_returns[0] == pytest.approx(total)


def test_serve_subprocess_over_loopback(masked_bundle: Path) -> None:
    process = subprocess.Popen(
        [sys.executable, "-m", "kdx.runtime.cli", "serve", str(masked_bundle), "--agent", "agent_2",
         "--port", "0", "--backend", "numpy", "--deadline-us", "100000"],
        cwd=REPO, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    try:
        line = process.stdout.readline()
        match = re.search(r"on ([\d.]+):(\d+) protocol 1", line)
        assert match, line + process.stderr.read()
        local = Bundle.load(masked_bundle).policy("agent_2", "numpy")
        rng = np.random.default_rng(2)
        with Client(match.group(1), int(match.group(2))) as client:
            for _ in range(20):
                obs = rng.standard_normal(18).astype(np.float32)
                assert client.act(obs) == local.act(obs)
            bad = np.full(18, np.inf, np.float32)
            with pytest.raises(Exception, match="NaN or inf"):
                client.act(bad)
            assert client.act(obs) == local.act(obs)
    finally:
        stats = stop_serve_process(process)
    assert stats["decisions"] == 21 and stats["errors"] == 1 and stats["late"] == 0


def test_run_with_a_deadline_nobody_meets_uses_the_fallback(spread_bundle: Path) -> None:
    pytest.importorskip("mpe2")
    from kdx.runtime.closed_loop import make_parallel_env, run_episodes
    from kdx.runtime.policy import Deadline

    bundle = Bundle.load(spread_bundle)
    policies = {a: bundle.policy(a, "numpy") for a in bundle.agent_names}
    deadline = Deadline(budget_us=0.001, fallback_action=0)  # 1 ns: every decision is late
    result = run_episodes(make_parallel_env("pettingzoo:mpe2.simple_spread_v3", 4), policies, 1,
                          deadline=deadline)
    assert result.deadline["late"] == result.deadline["fallbacks_used"] == 12
    with pytest.raises(KdxError, match="fallback action 9"):
        run_episodes(make_parallel_env("pettingzoo:mpe2.simple_spread_v3", 4), policies, 1,
                     deadline=Deadline(budget_us=1.0, fallback_action=9))
