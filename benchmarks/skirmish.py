"""Skirmish benchmark: scripted policies' win rates per map, and simulator speed.

Win rates: ``--episodes`` envs (>= 500) play one episode each (the first episode of every env,
so short and long battles count alike) against the built-in AI, for every map and every scripted
policy. Speed: env-steps per second of ``env.step`` (actions checks off, random legal actions
sampled outside the timed region) on 8m and 27m_vs_30m at 1024 and 4096 envs, as wall-clock
rate and as CPU-time rate (the rate this process would reach with its threads' cores to itself;
they differ when the machine is shared).

    python benchmarks/skirmish.py                      # everything
    python benchmarks/skirmish.py --maps 3m,8m --skip-speed
"""

from __future__ import annotations

import argparse
import json
import os
import time
from pathlib import Path

import torch
from rich.console import Console
from rich.table import Table

from kdx.envs.skirmish import MAPS, SkirmishEnv
from kdx.envs.skirmish.scripted import SCRIPTED_POLICIES, random_policy
from kdx.fileio import atomic_write_text

RESULTS = Path(__file__).parent / "results" / "skirmish.json"


def win_rate(map_name: str, policy: str, episodes: int, seed: int) -> dict:
    """Win rate of ``policy`` over the first episode of ``episodes`` envs."""
    env = SkirmishEnv(map_name, num_envs=episodes, seed=seed, check_actions=False)
    out = env.reset()
    finished = torch.zeros(episodes, dtype=torch.bool)
    won = torch.zeros(episodes, dtype=torch.bool)
    length = torch.zeros(episodes)
    ret = torch.zeros(episodes)
    for _ in range(env.spec.episode_limit):
        out = env.step(SCRIPTED_POLICIES[policy](env, out))
        first = out.done & ~finished
        won |= first & out.info["won"]
        length = torch.where(first, out.info["episode_length"].float(), length)
        ret = torch.where(first, out.info["episode_return"] / env.spec.n_agents, ret)
        finished |= out.done
        if bool(finished.all()):
            break
    return {"map": map_name, "policy": policy, "episodes": episodes, "win_rate": float(won.float().mean()),
            "mean_length": float(length.mean()), "mean_team_return": float(ret.mean())}


def speed(map_name: str, num_envs: int, steps: int, seed: int = 0) -> dict:
    env = SkirmishEnv(map_name, num_envs=num_envs, seed=seed, check_actions=False)
    out = env.reset()
    for _ in range(3):  # warm-up
        out = env.step(random_policy(env, out))
    wall = cpu = 0.0
    for _ in range(steps):
        actions = random_policy(env, out)
        t0, c0 = time.perf_counter(), time.process_time()
        out = env.step(actions)
        wall += time.perf_counter() - t0
        cpu += time.process_time() - c0
    threads = torch.get_num_threads()
    return {"map": map_name, "num_envs": num_envs, "steps": steps, "threads": threads,
            "env_steps_per_s_wall": steps * num_envs / wall,
            "env_steps_per_s_cpu": steps * num_envs * threads / cpu,
            "ms_per_step_wall": wall / steps * 1e3}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--maps", default=",".join(MAPS), help="comma-separated maps for win rates")
    parser.add_argument("--episodes", type=int, default=512, help="episodes per map and policy (>= 500)")
    parser.add_argument("--speed-steps", type=int, default=20, help="timed steps per speed setting")
    parser.add_argument("--threads", type=int, default=0, help="torch threads (0: torch's default)")
    parser.add_argument("--skip-speed", action="store_true")
    parser.add_argument("--skip-win-rates", action="store_true")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--out", default=str(RESULTS), help="JSON file to write")
    args = parser.parse_args()
    if args.threads:
        torch.set_num_threads(args.threads)
    console = Console()
    results: dict = {"cpu_count": os.cpu_count(), "torch_threads": torch.get_num_threads(),
                     "win_rates": [], "speed": []}

    if not args.skip_win_rates:
        table = Table(title=f"scripted policies vs the built-in AI ({args.episodes} episodes each)")
        table.add_column("map")
        for p in SCRIPTED_POLICIES:
            table.add_column(f"{p} win", justify="right")
        table.add_column("focus-fire len", justify="right")
        for name in args.maps.split(","):
            rows = [win_rate(name, p, args.episodes, args.seed) for p in SCRIPTED_POLICIES]
            results["win_rates"] += rows
            table.add_row(name, *[f"{r['win_rate']:.1%}" for r in rows], f"{rows[-1]['mean_length']:.1f}")
            console.print(f"{name}: " + ", ".join(f"{r['policy']} {r['win_rate']:.1%}" for r in rows))
        console.print(table)

    if not args.skip_speed:
        table = Table(title=f"env.step speed ({torch.get_num_threads()} torch threads, {os.cpu_count()} cores)")
        for col in ("map", "envs", "env-steps/s (wall)", "env-steps/s (CPU time)", "ms/step"):
            table.add_column(col, justify="right")
        for name in ("8m", "27m_vs_30m"):
            for n in (1024, 4096):
                r = speed(name, n, args.speed_steps)
                results["speed"].append(r)
                table.add_row(name, str(n), f"{r['env_steps_per_s_wall']:,.0f}",
                              f"{r['env_steps_per_s_cpu']:,.0f}", f"{r['ms_per_step_wall']:.1f}")
        console.print(table)

    out = atomic_write_text(args.out, json.dumps(results, indent=2))
    console.print(f"wrote {out}")


if __name__ == "__main__":
    main()
