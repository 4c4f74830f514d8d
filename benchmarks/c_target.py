"""The native C target (issue 18), measured side by side in one run.

For every student of a demo-like run (MPE simple_spread, 18 -> 32 -> 5) and of an 8m run
(skirmish/8m, 80 -> 32 -> 32 -> 14), batch 1, one process, one torch thread:

* **C**: the bundle's own harness (``c/harness.c``, built with the bundle's Makefile: ``-O2``)
  timing the policies in a C loop with ``clock_gettime`` on the distinct held-out observations
  (``./harness --bench N``: blocks of 100 calls, per-call ns = block time / 100; p50/p99 over
  the blocks);
* **Python**: ``Policy.act`` on the ``c`` backend (ctypes), ``numpy`` and ``onnxruntime``, on
  1024 distinct random observations (``kdx.runtime.bench.bench_policy``);
* **Cortex-M4**: flash and RAM per agent of the int8 C code built for the stm32f4 profile
  (``c/footprint.json`` of a ``--target stm32f4`` export: measured with arm-none-eabi-gcc/-size
  when installed, else the estimate, labelled).

Timing uses an fp32 export (``--target c``); the flash/RAM an int8 one (``--target stm32f4``).
Teachers are not exported (not needed here). The runs are copied, never modified. Without
``--demo-run``/``--8m-run`` the script makes its own short runs (``kdx train`` + ``kdx distill``
with small budgets; quality is irrelevant for timing).

Usage: .venv/bin/python benchmarks/c_target.py [--demo-run RUN] [--8m-run RUN] [--quick]
Prints a table and writes benchmarks/results/c_target.json (raw samples of the Python rows included).
"""

from __future__ import annotations

import argparse
import json
import os
import re
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
from rich.console import Console
from rich.table import Table

from kdx.fileio import atomic_write_text
from kdx.runtime.bench import bench_policy, random_observations
from kdx.runtime.bundle import BackendMissing, Bundle
from kdx.runtime.c_footprint import read_footprint_json
from kdx.runtime.profiler import LatencyStats, device_info
from kdx.runtime.testing import targets_table

REPO = Path(__file__).resolve().parents[1]
RESULTS = REPO / "benchmarks" / "results"
PY_BACKENDS = ("c", "numpy", "onnxruntime")
M4_PROFILE = "stm32f4"
KIB = 1024
# (env, profile the students are sized for, student overrides, label)
RUN_RECIPES = {
    "demo": ("mpe/simple_spread", "rpi5", (), "demo (simple_spread)"),
    "8m": ("skirmish/8m", M4_PROFILE, tuple(f"agent_{i}=32x32" for i in range(8)), "8m (skirmish)"),
}
_BENCH_LINE = re.compile(r"^(\S+)\s+(\S+)\s+(\S+)\s+p50\s+([0-9.eE+-]+)\s+ns\s+p99\s+([0-9.eE+-]+)\s+ns")


def kdx(*args: str) -> None:
    """Run one ``kdx`` command in a subprocess (the CLI is the interface a user has)."""
    done = subprocess.run([sys.executable, "-m", "kdx", *args], cwd=REPO, capture_output=True, text=True,
                          env={**os.environ, "PYTHONPATH": str(REPO), "OMP_NUM_THREADS": "1"})
    if done.returncode != 0:
        raise SystemExit(f"kdx {' '.join(args)} failed:\n{done.stdout[-2000:]}\n{done.stderr[-2000:]}")


def make_run(kind: str, folder: Path, quick: bool) -> Path:
    """A short teacher + students run of ``RUN_RECIPES[kind]`` (timing does not need quality)."""
    env, profile, students, _ = RUN_RECIPES[kind]
    steps = "1024" if quick else "4096"
    small = ["--steps", steps, "--num-envs", "8", "--rollout-length", "32", "--minibatches", "2", "--threads", "1",
             "--quiet"]
    kdx("train", "--env", env, "--out", str(folder), *small)
    kdx("distill", str(folder), "--profile", profile, *(a for s in students for a in ("--student", s)), *small)
    return folder


def copy_run(run: Path, dest: Path) -> Path:
    """The run's teacher and students (not its bundles), so exports never touch the original."""
    dest.mkdir(parents=True)
    for part in ("teacher", "students"):
        shutil.copytree(run / part, dest / part, ignore=shutil.ignore_patterns("checkpoints", "tb"))
    return dest


def export(run: Path, target: str) -> Path:
    kdx("export", str(run), "--target", target, "--no-teacher", "--force")
    return run / "bundles" / "c"


def c_loop(bundle_dir: Path, work: Path, decisions: int) -> dict[str, tuple[float, float]]:
    """Per student: (p50 ns, p99 ns) of the bundle's harness timing loop, built -O2 here."""
    folder = work / "c"
    shutil.copytree(bundle_dir / "c", folder)
    done = subprocess.run(["make", "-s", "harness"], cwd=folder, capture_output=True, text=True)
    if done.returncode != 0:
        raise SystemExit(f"building the C harness failed:\n{done.stderr[-2000:]}")
    done = subprocess.run(["./harness", "--bench", str(decisions)], cwd=folder, capture_output=True, text=True)
    out = {}
    for line in done.stdout.splitlines():
        match = _BENCH_LINE.match(line.strip())
        if match and match.group(1) == "student":
            out[match.group(2)] = (float(match.group(4)), float(match.group(5)))
    if not out:
        raise SystemExit(f"the C harness printed no timings:\n{done.stdout[-2000:]}\n{done.stderr[-2000:]}")
    return out


BLOCK = 100  # calls per timed block: the C loop's method, for the Python rows too


def block_p50_us(policy, iters: int, seed: int = 0) -> float:
    """``Policy.act`` per call, the way the C harness times the C loop: the clock read around
    blocks of :data:`BLOCK` calls on distinct observations; the p50 over blocks of block time /
    BLOCK (without the ~0.1-0.3 µs that reading the clock around every call adds)."""
    rows = list(random_observations(policy.obs_dim, seed=seed))
    act, n, clock = policy.act, len(rows), time.perf_counter_ns
    per_call = []
    for b in range(max(1, iters // BLOCK)):
        chunk = [rows[(b * BLOCK + i) % n] for i in range(BLOCK)]
        start = clock()
        for obs in chunk:
            act(obs)
        per_call.append((clock() - start) / BLOCK / 1e3)
    return float(np.median(per_call))


def python_rows(bundle_dir: Path, iters: int, warmup: int) -> dict[tuple[str, str], tuple[LatencyStats, list[int], float]]:
    """Per (backend, student): ``Policy.act`` latency on that backend (each call timed: stats and
    samples), and the block-timed p50 in µs (``block_p50_us``)."""
    bundle = Bundle.load(bundle_dir)
    out = {}
    for backend in PY_BACKENDS:
        for agent in bundle.agent_names:
            try:
                policy = bundle.policy(agent, backend)
            except BackendMissing as exc:
                print(f"skipped {backend} {agent}: {exc}")
                continue
            stats, samples = bench_policy(policy, iters, warmup)
            out[(backend, agent)] = (stats, samples.tolist(), block_p50_us(policy, iters))
    return out


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--demo-run", type=Path, help="a simple_spread run with students (default: make one)")
    parser.add_argument("--8m-run", dest="m8_run", type=Path, help="a skirmish/8m run with students (default: make one)")
    parser.add_argument("--iters", type=int, default=20_000, help="timed Policy.act calls per row")
    parser.add_argument("--warmup", type=int, default=2_000, help="untimed calls first")
    parser.add_argument("--c-decisions", type=int, default=1_000_000, help="decisions per student in the C loop")
    parser.add_argument("--quick", action="store_true", help="smoke run: few iterations, tiny runs")
    parser.add_argument("--out", type=Path, default=RESULTS / "c_target.json")
    args = parser.parse_args(argv)
    if args.quick:
        args.iters, args.warmup, args.c_decisions = 2_000, 200, 50_000
    console = Console(width=max(Console().width, 140))
    load_before = os.getloadavg()
    given = {"demo": args.demo_run, "8m": args.m8_run}
    results: dict[str, dict] = {}
    with tempfile.TemporaryDirectory(prefix="kdx-c-bench-") as tmp:
        for kind, run in given.items():
            work = Path(tmp) / kind
            source = run if run is not None else make_run(kind, work / "made", args.quick)
            timing_run = copy_run(source, work / "fp32")
            size_run = copy_run(source, work / "int8")
            fp32 = export(timing_run, "c")
            int8 = export(size_run, M4_PROFILE)
            results[kind] = {
                "run": str(run) if run is not None else f"made here ({RUN_RECIPES[kind][0]})",
                "manifest": {e.name: e for e in Bundle.load(fp32).manifest.agents},
                "c": c_loop(fp32, work, args.c_decisions),
                "python": python_rows(fp32, args.iters, args.warmup),
                "m4": {r.agent: r for r in read_footprint_json(int8) if r.profile == M4_PROFILE and r.role == "student"},
            }
    load_after = os.getloadavg()

    table = Table(title=f"C target, batch 1: C loop ({args.c_decisions:,} decisions, -O2), Policy.act "
                        f"({args.iters:,} calls after {args.warmup:,}), Cortex-M4 int8 footprint")
    for column in ("run", "student", "arch", "C p50 µs", "C p99 µs", *(f"{b} p50 µs" for b in PY_BACKENDS),
                   "numpy / c", "c p50 µs, blocks", "numpy p50 µs, blocks", "numpy / c, blocks",
                   "M4 flash", "M4 RAM", "M4 basis"):
        table.add_column(column, justify="left" if column in ("run", "student", "arch", "M4 basis") else "right")
    doc_rows = []
    for kind, r in results.items():
        for agent, entry in r["manifest"].items():
            arch = "-".join(str(w) for w in (entry.obs_dim, *entry.hidden_sizes, entry.n_actions))
            c_p50, c_p99 = (v / 1e3 for v in r["c"].get(agent, (float("nan"), float("nan"))))
            py = {b: r["python"][(b, agent)][0] for b in PY_BACKENDS if (b, agent) in r["python"]}
            m4 = r["m4"].get(agent)
            ratio = py["numpy"].p50_us / py["c"].p50_us if "c" in py and "numpy" in py else float("nan")
            nan = float("nan")
            blocks = {b: r["python"][(b, agent)][2] for b in py}
            block_ratio = blocks.get("numpy", nan) / blocks.get("c", nan)
            table.add_row(RUN_RECIPES[kind][3], agent, arch, f"{c_p50:.3f}", f"{c_p99:.3f}",
                          *(f"{py[b].p50_us:.2f}" if b in py else "-" for b in PY_BACKENDS), f"{ratio:.1f}x",
                          f"{blocks.get('c', nan):.2f}", f"{blocks.get('numpy', nan):.2f}", f"{block_ratio:.1f}x",
                          f"{m4.flash_bytes / KIB:.1f} KiB" if m4 else "-", f"{m4.ram_bytes / KIB:.2f} KiB" if m4 else "-",
                          m4.basis if m4 else "-")
            doc_rows.append({
                "run": kind, "agent": agent, "arch": arch, "c_loop_p50_us": c_p50, "c_loop_p99_us": c_p99,
                "policy_act": {b: {**s.to_dict(), "samples_ns": r["python"][(b, agent)][1]} for b, s in py.items()},
                "numpy_over_c_p50": ratio, "cortex_m4": m4.to_dict() if m4 else None,
                "policy_act_block_p50_us": blocks, "numpy_over_c_block_p50": block_ratio,
            })
    console.print(table)

    def worst(kind: str, key) -> float:
        return max(key(row) for row in doc_rows if row["run"] == kind)

    def best(kind: str, key) -> float:
        return min(key(row) for row in doc_rows if row["run"] == kind)

    c_small, c_8m = worst("demo", lambda x: x["c_loop_p50_us"]), worst("8m", lambda x: x["c_loop_p50_us"])
    py_c = worst("demo", lambda x: x["policy_act"]["c"]["p50_us"])
    speedup = best("demo", lambda x: x["numpy_over_c_p50"])
    py_c_blocks = worst("demo", lambda x: x["policy_act_block_p50_us"]["c"])
    speedup_blocks = best("demo", lambda x: x["numpy_over_c_block_p50"])
    flash = worst("8m", lambda x: x["cortex_m4"]["flash_bytes"]) / KIB
    ram = worst("8m", lambda x: x["cortex_m4"]["ram_bytes"]) / KIB
    targets = [
        ("C loop p50, 18-32-5 students (worst) <= 0.2 µs", c_small, c_small <= 0.2),
        ("C loop p50, 80-32-32-14 students (worst) <= 1.5 µs", c_8m, c_8m <= 1.5),
        ("Policy.act c backend p50, 18-32-5 (worst) <= 1.0 µs", py_c, py_c <= 1.0),
        ("numpy / c backend p50, 18-32-5 (least) >= 2x", speedup, speedup >= 2.0),
        ("same, blocks of 100 calls timed: c backend p50 <= 1.0 µs", py_c_blocks, py_c_blocks <= 1.0),
        ("same, blocks of 100 calls timed: numpy / c (least) >= 2x", speedup_blocks, speedup_blocks >= 2.0),
        ("8m student Cortex-M4 flash, int8 (KiB, worst) <= 16", flash, flash <= 16),
        ("8m student Cortex-M4 RAM (KiB, worst) <= 4", ram, ram <= 4),
    ]
    console.print(targets_table(targets))
    info = device_info()
    bases = sorted({row["cortex_m4"]["basis"] for row in doc_rows if row["cortex_m4"]})
    console.print(f"{info['cpu_model']} ({info['machine']}, {info['cpu_count']} CPUs), numpy {info['numpy']}, "
                  f"onnxruntime {info['onnxruntime']}; load average {load_before[0]:.1f} before, {load_after[0]:.1f} "
                  f"after; Cortex-M4 footprint {'/'.join(bases)}", highlight=False)
    args.out.parent.mkdir(parents=True, exist_ok=True)
    atomic_write_text(args.out, json.dumps({
        "device": info, "load_average_before": load_before, "load_average_after": load_after,
        "iters": args.iters, "warmup": args.warmup, "c_decisions": args.c_decisions, "quick": args.quick,
        "runs": {k: r["run"] for k, r in results.items()},
        "c_loop": "bundle harness --bench: clock_gettime around blocks of 100 calls on distinct held-out "
                  "observations, -O2; per-call ns = block / 100, p50/p99 over blocks",
        "rows": doc_rows,
        "targets": [{"target": n, "measured": float(v), "met": bool(ok)} for n, v, ok in targets],
    }))
    console.print(f"wrote {args.out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
