"""Training throughput against ``--threads``, on a quiet box and beside one busy process.

    .venv/bin/python benchmarks/threads.py                 # every case below
    .venv/bin/python benchmarks/threads.py --quick         # fewer steps (a smoke run)

Each measurement is one ``kdx train --env ENV --out TMP --steps N --threads T`` process
(the env's recipe otherwise, i.e. what a user gets), for T in 1, every core, and 0 (the default:
adapt to the cores other processes leave free, ``kdx.trainer.common.threads``). "busy" runs the
same with one other process spinning on a core for the whole measurement. The number is the
last metrics line's ``env_steps_per_s`` (env steps over training wall time, updates included).
Target (issue 16): the default is within 20% of the best fixed count in both load cases.
Prints a table and writes benchmarks/results/threads.json; the 1-minute load average before
each run is recorded (a quiet box reads < 0.3).
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
from contextlib import contextmanager
from pathlib import Path

from rich.console import Console
from rich.table import Table

from kdx.layout import RunLayout
from kdx.trainer.common.metrics_log import read_metrics_file

ROOT = Path(__file__).resolve().parent.parent
# (label, env, extra flags, env steps for a full run)
CASES = [
    ("mpe/simple_spread (recipe, 256 envs)", "mpe/simple_spread", [], 400_000),
    ("skirmish/8m (recipe, 64 envs)", "skirmish/8m", [], 120_000),
    ("skirmish/8m, 4096 envs", "skirmish/8m", ["--num-envs", "4096", "--rollout-length", "30"], 600_000),
]
TOLERANCE = 0.8  # the default must reach 80% of the best fixed thread count


@contextmanager
def busy_core(enabled: bool):
    """One other process spinning on a core while the block runs (nothing if not ``enabled``)."""
    spinner = subprocess.Popen([sys.executable, "-c", "while True: pass"]) if enabled else None
    try:
        yield
    finally:
        if spinner is not None:
            spinner.kill()
            spinner.wait()


def steps_per_s(env: str, flags: list[str], steps: int, threads: int) -> dict:
    """One training process; its env steps per second and the thread counts it used."""
    with tempfile.TemporaryDirectory(prefix="kdx-threads-") as tmp:
        run = Path(tmp) / "run"
        cmd = [sys.executable, "-m", "kdx", "train", "--env", env, "--out", str(run), "--steps", str(steps),
               "--threads", str(threads), "--quiet", *flags]
        subprocess.run(cmd, check=True, cwd=ROOT, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
        rows = read_metrics_file(RunLayout(run).teacher.metrics)
    return {"env_steps_per_s": rows[-1]["env_steps_per_s"],
            "torch_threads": sorted({int(r["torch_threads"]) for r in rows if "torch_threads" in r})}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--quick", action="store_true", help="a quarter of the steps")
    parser.add_argument("--out", default=str(ROOT / "benchmarks" / "results" / "threads.json"))
    args = parser.parse_args()
    cores = len(os.sched_getaffinity(0))
    settings = [("1", 1), (f"{cores} (all)", cores), ("0 (default)", 0)]
    results = []
    for label, env, flags, steps in CASES:
        steps = steps // 4 if args.quick else steps
        for load in ("quiet", "busy"):
            row = {"case": label, "load": load, "steps": steps, "cores": cores}
            with busy_core(load == "busy"):
                for name, threads in settings:
                    row[f"load_before_{threads}"] = os.getloadavg()[0]
                    row[name] = steps_per_s(env, flags, steps, threads)
            best = max(row[name]["env_steps_per_s"] for name, t in settings if t > 0)
            row["default_vs_best"] = row["0 (default)"]["env_steps_per_s"] / best
            row["met"] = row["default_vs_best"] >= TOLERANCE
            results.append(row)
            print(json.dumps({k: row[k] for k in ("case", "load", "default_vs_best")}), flush=True)

    table = Table(title=f"env steps/s of kdx train by --threads ({cores} cores); target: default >= "
                        f"{TOLERANCE:.0%} of the best")
    for column in ("case", "load", *(name for name, _ in settings), "default / best", "met"):
        table.add_column(column)
    for row in results:
        cells = [f"{row[name]['env_steps_per_s']:,.0f}" + (f" ({'/'.join(map(str, row[name]['torch_threads']))} thr)"
                                                           if t == 0 else "") for name, t in settings]
        table.add_row(row["case"], row["load"], *cells, f"{row['default_vs_best']:.2f}", "yes" if row["met"] else "NO")
    Console().print(table)
    out = Path(args.out)
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps({"cores": cores, "results": results}, indent=2))
    print(f"wrote {out}")


if __name__ == "__main__":
    main()
