"""Env-steps per second of the vectorised MPE simple_spread against mpe2's own env.

    .venv/bin/python benchmarks/envs.py
    .venv/bin/python benchmarks/envs.py --threads 1 --seconds 3     # one thread count only

An env-step is one environment advancing one step: a batched step of ``num_envs`` copies counts
``num_envs``. Actions are generated before the clock starts (the policy is not measured), and
the kdx env runs with ``check_actions=False`` (trainers that sample from masked distributions
do so); one extra row at 4096 envs keeps the checks on. mpe2 runs as one parallel env
(``simple_spread_v3.parallel_env``), stepped with dicts of pre-generated actions and reset when
its episode ends, exactly as a single-env trainer would use it.

Both wall-clock and process CPU time are recorded, with the machine's load average: other work
sharing the cores makes wall-clock numbers pessimistic, while CPU time (summed over threads)
is not inflated by waiting. The kdx rows are repeated for each torch thread count asked for
(default 1 and 2: on a shared, busy machine two intra-op threads can be much slower than one).
Prints a table and writes benchmarks/results/envs.json.
"""

from __future__ import annotations

import argparse
import json
import os
import time
from pathlib import Path

import numpy as np
import torch
from rich.console import Console
from rich.table import Table

from kdx.envs import make
from kdx.fileio import atomic_write_text

ENV = "mpe/simple_spread"
BATCH_SIZES = (1, 64, 1024, 4096)
TARGET_STEPS_PER_S = 1_000_000  # at 4096 envs
TARGET_SPEEDUP = 200  # over mpe2's single env


def _timed(step_once, steps: int) -> tuple[float, float]:
    wall0, cpu0 = time.perf_counter(), time.process_time()
    for i in range(steps):
        step_once(i)
    return time.perf_counter() - wall0, time.process_time() - cpu0


def bench_kdx(num_envs: int, seconds: float, check_actions: bool, threads: int) -> dict:
    torch.set_num_threads(threads)
    env = make(ENV, num_envs=num_envs, seed=0, check_actions=check_actions)
    env.reset()
    # Enough pre-generated actions for the run (cycled), so no sampling happens on the clock.
    pool = torch.randint(0, 5, (64, num_envs, env.spec.n_agents), generator=torch.Generator().manual_seed(0))
    for i in range(20):  # warm-up
        env.step(pool[i % 64])
    # Calibrate the step count to roughly ``seconds`` of work.
    probe_wall, _ = _timed(lambda i: env.step(pool[i % 64]), 20)
    steps = max(50, int(seconds / max(probe_wall / 20, 1e-7)))
    wall, cpu = _timed(lambda i: env.step(pool[i % 64]), steps)
    return {
        "impl": "kdx",
        "threads": threads,
        "num_envs": num_envs,
        "check_actions": check_actions,
        "batched_steps": steps,
        "env_steps": steps * num_envs,
        "wall_s": wall,
        "cpu_s": cpu,
        "env_steps_per_s": steps * num_envs / wall,
        "env_steps_per_cpu_s": steps * num_envs / cpu,
    }


def bench_mpe2(seconds: float) -> dict:
    from mpe2 import simple_spread_v3

    env = simple_spread_v3.parallel_env(continuous_actions=False)
    env.reset(seed=0)
    agents = list(env.possible_agents)
    actions = np.random.default_rng(0).integers(0, 5, size=(4096, len(agents)))
    dicts = [{a: int(actions[i, j]) for j, a in enumerate(agents)} for i in range(len(actions))]

    def step_once(i: int) -> None:
        if not env.agents:
            env.reset()
        env.step(dicts[i % len(dicts)])

    for i in range(50):
        step_once(i)
    probe_wall, _ = _timed(step_once, 100)
    steps = max(200, int(seconds / max(probe_wall / 100, 1e-7)))
    wall, cpu = _timed(step_once, steps)
    return {
        "impl": "mpe2",
        "threads": 1,
        "num_envs": 1,
        "check_actions": True,
        "batched_steps": steps,
        "env_steps": steps,
        "wall_s": wall,
        "cpu_s": cpu,
        "env_steps_per_s": steps / wall,
        "env_steps_per_cpu_s": steps / cpu,
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--threads", default="1,2", help="torch intra-op thread counts, comma-separated")
    parser.add_argument("--seconds", type=float, default=2.0, help="measured time per row (roughly)")
    parser.add_argument("--out", default="benchmarks/results/envs.json", help="where the JSON goes")
    args = parser.parse_args()
    thread_counts = [int(t) for t in args.threads.split(",")]
    console = Console(width=120)
    load_before = os.getloadavg()

    rows = [bench_mpe2(args.seconds)]
    for threads in thread_counts:
        for n in BATCH_SIZES:
            rows.append(bench_kdx(n, args.seconds, check_actions=False, threads=threads))
        rows.append(bench_kdx(BATCH_SIZES[-1], args.seconds, check_actions=True, threads=threads))
    base, base_cpu = rows[0]["env_steps_per_s"], rows[0]["env_steps_per_cpu_s"]
    for r in rows:
        r["speedup_vs_mpe2"] = r["env_steps_per_s"] / base
        r["cpu_speedup_vs_mpe2"] = r["env_steps_per_cpu_s"] / base_cpu

    table = Table(title=f"{ENV}: env-steps/s ({os.cpu_count()} cores)")
    for col in ("impl", "threads", "envs", "checks", "env-steps/s (wall)", "env-steps/CPU-s", "x mpe2 (wall)", "x mpe2 (CPU)"):
        table.add_column(col, justify="right")
    for r in rows:
        table.add_row(
            r["impl"],
            str(r["threads"]),
            str(r["num_envs"]),
            "on" if r["check_actions"] else "off",
            f"{r['env_steps_per_s']:,.0f}",
            f"{r['env_steps_per_cpu_s']:,.0f}",
            f"{r['speedup_vs_mpe2']:,.1f}",
            f"{r['cpu_speedup_vs_mpe2']:,.1f}",
        )
    console.print(table)

    # The verdict uses the best thread count at 4096 envs without checks.
    big = max(
        (r for r in rows if r["impl"] == "kdx" and r["num_envs"] == BATCH_SIZES[-1] and not r["check_actions"]),
        key=lambda r: r["env_steps_per_s"],
    )
    verdict = {
        "target_env_steps_per_s": TARGET_STEPS_PER_S,
        "target_speedup": TARGET_SPEEDUP,
        "met_env_steps_per_s": big["env_steps_per_s"] >= TARGET_STEPS_PER_S,
        "met_speedup": big["speedup_vs_mpe2"] >= TARGET_SPEEDUP,
    }
    load_after = os.getloadavg()
    console.print(
        f"4096 envs, {big['threads']} thread(s): {big['env_steps_per_s']:,.0f} env-steps/s wall (target {TARGET_STEPS_PER_S:,}: "
        f"{'met' if verdict['met_env_steps_per_s'] else 'NOT met'}), {big['speedup_vs_mpe2']:,.0f}x mpe2 "
        f"(target {TARGET_SPEEDUP}x: {'met' if verdict['met_speedup'] else 'NOT met'}). "
        f"Load average before/after: {load_before[0]:.2f}/{load_after[0]:.2f}"
    )
    out = Path(args.out)
    out.parent.mkdir(parents=True, exist_ok=True)
    payload = {
        "env": ENV,
        "torch_threads": thread_counts,
        "cpu_count": os.cpu_count(),
        "torch_version": torch.__version__,
        "load_average_before": list(load_before),
        "load_average_after": list(load_after),
        "rows": rows,
        "verdict": verdict,
    }
    atomic_write_text(out, json.dumps(payload, indent=2))
    console.print(f"wrote {out}")


if __name__ == "__main__":
    main()
