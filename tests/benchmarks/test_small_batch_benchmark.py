"""benchmarks/small_batch.py's measuring side on a tiny case, and its peer fallback: the rows it
tabulates carry rates that match their own step counts, and a missing peer interpreter is
reported as "peer not installed" instead of failing the benchmark."""

from __future__ import annotations

import argparse
import importlib.util
from pathlib import Path

import pytest

SCRIPT = Path(__file__).resolve().parents[2] / "benchmarks" / "small_batch.py"
_spec = importlib.util.spec_from_file_location("benchmark_small_batch", SCRIPT)
bench = importlib.util.module_from_spec(_spec)
_spec.loader.exec_module(bench)


def test_worker_times_env_steps_and_rollout_steps() -> None:
    rows = bench.worker(["3m"], [4], list(bench.KINDS), seconds=0.02, threads=1)
    assert [(r["kind"], r["map"], r["num_envs"]) for r in rows] == [
        ("env.step", "3m", 4), ("rollout step", "3m", 4)]
    for r in rows:
        assert r["steps"] >= 1 and r["env_steps_per_s"] > 0
        # ms per env step (one step of all envs) and env-steps per CPU second describe one clock
        assert r["ms_per_step"] == pytest.approx(4 / r["env_steps_per_s"] * 1e3)


def test_missing_peer_interpreter_says_not_installed(tmp_path) -> None:
    args = argparse.Namespace(peer_python=str(tmp_path / "no-python"), threads=1, maps="3m", envs="4",
                              seconds=0.01)
    assert "peer not installed" in bench.run_peer(args)["error"]
