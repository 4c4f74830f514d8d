"""Data-parallel teacher training: 1 process vs 2 gloo processes (torchrun) at equal env steps.

    .venv/bin/python benchmarks/distributed.py                       # simple_spread, 1M steps each
    .venv/bin/python benchmarks/distributed.py --steps 300000 --env mpe/simple_spread

Settings (``SETUPS``), every one at the same ``--steps`` (summed over ranks):

- ``1 proc x 256 envs``: the single-process baseline, with 1 torch thread and with 2;
- ``2 procs x 128 envs``: the same global batch split over two ranks (same number of updates);
- ``2 procs x 256 envs``: twice the batch per update, half the updates (the usual scale-out).

Each run is a real ``kdx train`` (``torchrun --standalone`` for 2 processes, one torch thread
per rank). Reported: wall time of the whole command (process start-up included), training time
and env-steps/s from the metrics, and the final score of the greedy teacher (100 evaluation
episodes on fixed seeds, normalised score on MPE: 0 = random, 1 = scripted oracle). Prints a
table and writes benchmarks/results/distributed.json with the machine's load average: other
work sharing the cores makes these numbers pessimistic.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from rich.console import Console
from rich.table import Table

from kdx.trainer.evaluation import evaluate_run
from kdx.trainer.teacher.config import TeacherConfig
from kdx.trainer.teacher.distributed import option_args, torchrun_command
from kdx.trainer.teacher.mappo import read_metrics

# A tuned simple_spread teacher setting (benchmarks/teacher.py's before recipes), except num_envs (per setup).
BASE = {"epochs": 5, "minibatches": 2, "lr": 2e-3, "hidden": "64,64", "input_norm": False}
# torchrun gives each rank one torch thread; the baseline runs with 1 thread and with 2 (all cores).
SETUPS: dict[str, dict] = {
    "1 proc x 256 envs, 1 thread": {"nproc": 1, "num_envs": 256, "threads": 1},
    "1 proc x 256 envs, 2 threads": {"nproc": 1, "num_envs": 256, "threads": 2},
    "2 procs x 128 envs": {"nproc": 2, "num_envs": 128, "threads": 1},
    "2 procs x 256 envs": {"nproc": 2, "num_envs": 256, "threads": 1},
}


def run_setup(name: str, setup: dict, env: str, steps: int, workdir: Path, episodes: int, seed: int = 1) -> dict:
    run = workdir / name.replace(" ", "_").replace(",", "")
    nproc = setup["nproc"]
    options = {"env": env, "steps": steps, "seed": seed, "num_envs": setup["num_envs"], "threads": setup["threads"],
               **BASE, "checkpoint_every": 1_000_000}
    args = ["train", "--out", str(run), "--quiet", *option_args(options)]
    cmd = torchrun_command(nproc, args) if nproc > 1 else [sys.executable, "-m", "kdx", *args]
    load_before = os.getloadavg()[0]
    t0 = time.perf_counter()
    child_env = {**os.environ, "OMP_NUM_THREADS": str(setup["threads"])}  # as torchrun does for its ranks
    proc = subprocess.run(cmd, capture_output=True, text=True, check=False, env=child_env)
    wall = time.perf_counter() - t0
    metrics = read_metrics(run)
    if proc.returncode != 0:
        Console(stderr=True).print(f"{name}: exit code {proc.returncode}\n{proc.stdout[-1500:]}\n{proc.stderr[-3000:]}")
        expected = max(1, (steps // nproc) // (setup["num_envs"] * TeacherConfig().rollout_length))
        if not metrics or metrics[-1]["update"] < expected:
            raise SystemExit(f"{name} failed before finishing its steps")
    last = metrics[-1]
    tail = [m["episode_return"] for m in metrics[-5:] if m["episode_return"] is not None]
    result = evaluate_run(run, episodes=episodes)
    greedy = result["policies"]["teacher_greedy"]
    return {
        "setup": name, "seed": seed, "nproc": nproc, "num_envs_per_rank": setup["num_envs"], "torch_threads_per_rank": options["threads"],
        "exit_code": proc.returncode, "env_steps": last["env_steps"], "updates": last["update"],
        "wall_s": wall, "train_s": last["time_s"], "env_steps_per_s": last["env_steps"] / last["time_s"],
        "train_return_last5": sum(tail) / len(tail) if tail else None,
        "final_normalized_score": greedy["normalized_score"], "final_normalized_score_ci95": greedy["normalized_score_ci95"],
        "final_return": greedy["mean_return"],
        "load_avg_1m_before": load_before, "load_avg_1m_after": os.getloadavg()[0],
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--env", default="mpe/simple_spread")
    parser.add_argument("--steps", type=int, default=1_000_000, help="env steps per setup (summed over ranks)")
    parser.add_argument("--episodes", type=int, default=100, help="evaluation episodes of the final teacher")
    parser.add_argument("--seed", type=int, default=1, help="base seed (rank r's envs use seed + r)")
    parser.add_argument("--only", action="append", help="run only these setups (repeatable)")
    parser.add_argument("--out", default="benchmarks/results/distributed.json")
    args = parser.parse_args()

    console = Console()
    rows = []
    with tempfile.TemporaryDirectory(prefix="kdx-dist-bench-") as tmp:
        for name, setup in SETUPS.items():
            if args.only and name not in args.only:
                continue
            console.print(f"running {name} ({args.steps:,} env steps on {args.env}) ...")
            rows.append(run_setup(name, setup, args.env, args.steps, Path(tmp), args.episodes, args.seed))
            shutil.rmtree(Path(tmp) / name.replace(" ", "_").replace(",", ""), ignore_errors=True)

    table = Table(title=f"{args.env}: 1 vs 2 processes (gloo) at {args.steps:,} env steps; "
                        f"{len(os.sched_getaffinity(0))} cores")
    for col in ("setup", "updates", "wall s", "train s", "env-steps/s", "train return (last 5)",
                "final score (greedy)", "load 1m"):
        table.add_column(col, justify="left" if col == "setup" else "right")
    for r in rows:
        score = r["final_normalized_score"]
        table.add_row(r["setup"], str(r["updates"]), f"{r['wall_s']:.0f}", f"{r['train_s']:.0f}",
                      f"{r['env_steps_per_s']:,.0f}",
                      "-" if r["train_return_last5"] is None else f"{r['train_return_last5']:.2f}",
                      "-" if score is None else f"{score:.3f} ± {r['final_normalized_score_ci95']:.3f}",
                      f"{r['load_avg_1m_before']:.1f}/{r['load_avg_1m_after']:.1f}")
    console.print(table)
    out = Path(args.out)
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps({"env": args.env, "steps": args.steps, "cores": len(os.sched_getaffinity(0)),
                               "torch": __import__("torch").__version__, "rows": rows}, indent=2))
    console.print(f"wrote {out}")


if __name__ == "__main__":
    main()
