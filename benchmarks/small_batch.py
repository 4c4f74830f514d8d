"""Small-batch step cost of skirmish (issue 16 item 6): where per-step overhead dominates.

Measures, with 1 torch thread, env-steps per second of
- ``env.step`` alone (``check_actions=False``; random legal actions drawn before each timed step),
- one rollout step as the MAPPO trainer takes it (``collect_rollout``: policy forward, masked
  sampling, critic, ``env.step``, buffer bookkeeping), with the map's teacher recipe,
on skirmish/3m and skirmish/8m at 16, 64 and 256 envs, and the load average around each run.

``--base DIR``: also time the simulator of another checkout (e.g. ``git worktree add DIR main``),
alternating with this one round by round in fresh subprocesses, so both see the same machine
load; the table then gives the speed-up per round and its median.

``--peer``: also time JaxMARL's SMAX (``HeuristicEnemySMAX``, the built-in-AI setting skirmish
mirrors) with ``benchmarks/smax_peer.py`` in a separate interpreter (``--peer-python``, default
``$KDX_PEER_PYTHON`` or ``/work/jaxvenv/bin/python``; jax is never a kdx dependency). Without it
the rows say "peer not installed".

    python benchmarks/small_batch.py                       # kdx only
    python benchmarks/small_batch.py --base /work/wt-base --rounds 3 --peer
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import time
from pathlib import Path

RESULTS = Path(__file__).parent / "results" / "small_batch.json"
HERE = Path(__file__).resolve().parent
DEFAULT_PEER_PYTHON = os.environ.get("KDX_PEER_PYTHON", "/work/jaxvenv/bin/python")
KINDS = ("env.step", "rollout step")


# ---------------------------------------------------------------------------- worker side
class Clock:
    """Sums the CPU time (this process, all threads) and wall time of the timed blocks.

    The CPU-time rate is the headline: on a shared box (and under ``nice``) wall time mostly
    measures how long the scheduler kept this process waiting, CPU time what the work cost."""

    def __init__(self, steps_per_call: int = 1) -> None:
        self.cpu = self.wall = 0.0
        self.steps, self.per_call = 0, steps_per_call

    def __enter__(self) -> Clock:
        self._c0, self._w0 = time.process_time_ns(), time.perf_counter_ns()
        return self

    def __exit__(self, *exc) -> None:
        self.cpu += (time.process_time_ns() - self._c0) * 1e-9
        self.wall += (time.perf_counter_ns() - self._w0) * 1e-9
        self.steps += self.per_call

    def rates(self, num_envs: int) -> dict:
        return {"steps": self.steps, "env_steps_per_s": self.steps * num_envs / self.cpu,
                "env_steps_per_s_wall": self.steps * num_envs / self.wall,
                "ms_per_step": self.cpu / self.steps * 1e3}


def time_env_step(map_name: str, num_envs: int, seconds: float, seed: int = 0) -> dict:
    """env-steps/s of ``env.step`` alone, actions drawn outside the timed region."""
    from kdx.envs.skirmish import SkirmishEnv

    env = SkirmishEnv(map_name, num_envs=num_envs, seed=seed, check_actions=False)
    env.reset()
    for _ in range(5):  # warm-up
        env.step(env.sample_random_actions())
    clock = Clock()
    while clock.cpu < seconds:
        actions = env.sample_random_actions()
        with clock:
            env.step(actions)
    return clock.rates(num_envs)


def time_rollout_step(map_name: str, num_envs: int, seconds: float, seed: int = 0) -> dict:
    """env-steps/s of ``collect_rollout`` (the trainer's acting loop) with the map's recipe."""
    import torch

    from kdx.envs.registry import make
    from kdx.trainer.common.recipes import config_with_recipe
    from kdx.trainer.teacher.config import TeacherConfig
    from kdx.trainer.teacher.model import Teacher
    from kdx.trainer.teacher.rollout import collect_rollout

    env_name = f"skirmish/{map_name}"
    config, _ = config_with_recipe(TeacherConfig, env_name, {"num_envs": num_envs})
    env = make(env_name, num_envs=num_envs, seed=seed)
    env.check_actions = False  # as the trainer does: actions come from masked distributions
    torch.manual_seed(seed)
    teacher = Teacher.build(config, env.spec)
    gen = torch.Generator().manual_seed(seed + 1)
    step = env.reset()
    hidden = teacher.actor.initial_hidden(num_envs, torch.device("cpu"))
    length = 10  # short rollouts: several timings fit in a few seconds (60 in the recipes)
    _, step, hidden = collect_rollout(env, teacher, step, hidden, length, gen)  # warm-up
    clock = Clock(steps_per_call=length)
    while clock.cpu < seconds:
        with clock:
            _, step, hidden = collect_rollout(env, teacher, step, hidden, length, gen)
    return {**clock.rates(num_envs), "hidden": config.hidden, "recurrent": config.recurrent}


def worker(maps: list[str], sizes: list[int], kinds: list[str], seconds: float, threads: int) -> list[dict]:
    import torch

    torch.set_num_threads(threads)
    timers = {"env.step": time_env_step, "rollout step": time_rollout_step}
    rows = []
    for kind in kinds:
        for map_name in maps:
            for n in sizes:
                load = os.getloadavg()[0]
                r = timers[kind](map_name, n, seconds)
                rows.append({"kind": kind, "map": map_name, "num_envs": n, "threads": threads,
                             "load_1min": load, **r})
    return rows


# ---------------------------------------------------------------------------- driver side
def run_worker(code_root: Path, args, kinds: list[str]) -> list[dict]:
    """One measuring subprocess importing kdx from ``code_root``."""
    env = {**os.environ, "PYTHONPATH": str(code_root), "OMP_NUM_THREADS": str(args.threads)}
    cmd = [sys.executable, str(Path(__file__).resolve()), "--worker", "--maps", args.maps,
           "--envs", args.envs, "--kinds", ",".join(kinds), "--seconds", str(args.seconds),
           "--threads", str(args.threads)]
    out = subprocess.run(cmd, env=env, cwd=code_root, capture_output=True, text=True, check=False)
    if out.returncode != 0:
        raise SystemExit(f"worker for {code_root} failed:\n{out.stderr[-3000:]}")
    return json.loads(out.stdout.strip().splitlines()[-1])


def run_peer(args) -> dict:
    """SMAX rows from the peer interpreter, or ``{"error": why}``."""
    python = Path(args.peer_python)
    if not python.exists():
        return {"error": f"peer not installed ({python} missing)"}
    # XLA's CPU runtime: one intra-op thread, as kdx's 1 torch thread.
    env = {**os.environ, "XLA_FLAGS": "--xla_cpu_multi_thread_eigen=false intra_op_parallelism_threads=1",
           "OMP_NUM_THREADS": str(args.threads)}
    env.pop("PYTHONPATH", None)
    cmd = [str(python), str(HERE / "smax_peer.py"), "--maps", args.maps, "--envs", args.envs,
           "--seconds", str(args.seconds)]
    out = subprocess.run(cmd, env=env, capture_output=True, text=True, check=False)
    if out.returncode != 0:
        tail = out.stderr.strip().splitlines()[-1:] or ["(no output)"]
        return {"error": f"peer not installed or failed: {tail[0][:300]}"}
    return json.loads(out.stdout.strip().splitlines()[-1])


def key(r: dict) -> tuple:
    return r["kind"], r["map"], r["num_envs"]


def print_table(console, args, results: dict) -> None:
    from rich.table import Table

    title = (f"skirmish small-batch speed, env-steps/s per CPU second ({args.threads} torch thread(s), "
             f"{os.cpu_count()} cores, load {results['load_before'][0]:.2f} -> {results['load_after'][0]:.2f})")
    table = Table(title=title)
    cols = ["what", "map", "envs", "steps/s", "wall steps/s", "ms/step"]
    if args.base:
        cols += ["base steps/s", "speed-up (rounds)"]
    if args.peer:
        cols += ["SMAX steps/s", "kdx/SMAX"]
    for c in cols:
        table.add_column(c, justify="right")
    for row in results["table"]:
        cells = [row["kind"], row["map"], str(row["num_envs"]), f"{row['env_steps_per_s']:,.0f}",
                 f"{row['env_steps_per_s_wall']:,.0f}", f"{row['ms_per_step']:.2f}"]
        if args.base:
            rounds = ", ".join(f"{s:.2f}" for s in row["speedup_per_round"])
            cells += [f"{row['base_env_steps_per_s']:,.0f}", f"{row['speedup']:.2f}x ({rounds})"]
        if args.peer:
            has = "smax_env_steps_per_s" in row
            cells += [f"{row['smax_env_steps_per_s']:,.0f}" if has else "-", f"{row['vs_smax']:.2f}" if has else "-"]
        table.add_row(*cells)
    console.print(table)
    if args.peer and "error" in results["peer"]:
        console.print(f"peer: {results['peer']['error']}")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--maps", default="3m,8m", help="comma-separated skirmish maps")
    parser.add_argument("--envs", default="16,64,256", help="comma-separated env counts")
    parser.add_argument("--kinds", default=",".join(KINDS), help=f"what to time: {', '.join(KINDS)}")
    parser.add_argument("--seconds", type=float, default=1.5, help="timed seconds per measurement")
    parser.add_argument("--threads", type=int, default=1, help="torch threads")
    parser.add_argument("--base", default=None, help="another checkout's root to compare against")
    parser.add_argument("--rounds", type=int, default=3, help="alternating rounds with --base")
    parser.add_argument("--peer", action="store_true", help="also time JaxMARL's SMAX (separate venv)")
    parser.add_argument("--peer-python", default=DEFAULT_PEER_PYTHON, help="interpreter with jax + jaxmarl")
    parser.add_argument("--out", default=str(RESULTS), help="JSON file to write")
    parser.add_argument("--worker", action="store_true", help=argparse.SUPPRESS)
    args = parser.parse_args()
    maps, sizes = args.maps.split(","), [int(n) for n in args.envs.split(",")]
    kinds = args.kinds.split(",")
    if args.worker:
        print(json.dumps(worker(maps, sizes, kinds, args.seconds, args.threads)))
        return

    from rich.console import Console

    from kdx.fileio import atomic_write_text

    console = Console(width=None if sys.stdout.isatty() else 150)  # a log file gets the whole table
    this_root = HERE.parent
    started = time.time()
    results: dict = {"cpu_count": os.cpu_count(), "threads": args.threads, "load_before": os.getloadavg(),
                     "base": args.base, "rounds": [], "peer": None}
    n_rounds = args.rounds if args.base else 1
    for i in range(n_rounds):
        rnd = {"this": run_worker(this_root, args, kinds)}
        if args.base:
            rnd["base"] = run_worker(Path(args.base).resolve(), args, kinds)
        results["rounds"].append(rnd)
        console.print(f"round {i + 1}/{n_rounds} done ({time.time() - started:.0f} s, load {os.getloadavg()[0]:.2f})")
    if args.peer:
        results["peer"] = run_peer(args)
    results["load_after"] = os.getloadavg()

    # One row per (kind, map, envs): the median over rounds; with --base, the median per-round ratio.
    rows = []
    for r in results["rounds"][0]["this"]:
        k = key(r)
        this = [next(x for x in rnd["this"] if key(x) == k) for rnd in results["rounds"]]
        rate = statistics.median(x["env_steps_per_s"] for x in this)
        row = {"kind": k[0], "map": k[1], "num_envs": k[2], "env_steps_per_s": rate,
               "env_steps_per_s_wall": statistics.median(x["env_steps_per_s_wall"] for x in this),
               "ms_per_step": k[2] / rate * 1e3}
        if args.base:
            base = [next(x for x in rnd["base"] if key(x) == k)["env_steps_per_s"] for rnd in results["rounds"]]
            row["base_env_steps_per_s"] = statistics.median(base)
            row["speedup_per_round"] = [a["env_steps_per_s"] / b for a, b in zip(this, base)]
            row["speedup"] = statistics.median(row["speedup_per_round"])
        rows.append(row)
    peer = results["peer"] or {}
    peer_rows = {(r["map"], r["num_envs"]): r for r in peer.get("rows", [])}
    for row in rows:
        p = peer_rows.get((row["map"], row["num_envs"]))
        if row["kind"] == "env.step" and p:
            row["smax_env_steps_per_s"] = p["env_steps_per_s"]
            row["vs_smax"] = row["env_steps_per_s"] / p["env_steps_per_s"]
    results["table"] = rows
    print_table(console, args, results)
    out = atomic_write_text(args.out, json.dumps(results, indent=2))
    console.print(f"wrote {out}")


if __name__ == "__main__":
    main()
