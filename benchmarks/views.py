"""Retention and student MACs against view strength (issue 15 item 7): what students keep of their
teacher when they observe less than it does, and whether the structural loss terms help there.

    .venv/bin/python benchmarks/views.py --envs mpe/simple_spread --teacher-minutes 8
    .venv/bin/python benchmarks/views.py --envs mpe/simple_spread --views full,sight4 --losses full,no_struct \\
        --teachers local --seeds 1,2 --teacher-run runs/spread      # reuse a trained teacher
    .venv/bin/python benchmarks/views.py --table                    # print what the JSON holds, run nothing
    .venv/bin/python benchmarks/views.py --merge a.json b.json --out views.json  # parallel processes' JSONs

The grid: envs (``ENVS``) x teachers (``TEACHERS``: the actor reads its own observation, or also
the global state) x views (``VIEWS``, per env: the same strengths expressed in each env's
features) x losses (``LOSSES``: the full composite; the structural terms off, w_rel = w_role = 0;
the PPO term alone) x seeds. Each teacher is trained once per env and kind with the env's recipe
(what ``kdx train`` uses) under a ``--teacher-minutes`` budget of training time (``total_steps``
stays the lr-decay horizon), or taken from ``--teacher-run`` (its env and teacher input are read
from its config). Each run (one cell, one seed) distils with the env's distillation recipe plus
the cell's views, loss weights and seed into its own folder under ``--work`` (the teacher folder
is linked, never copied), then ``evaluate_run`` scores teacher and students on the same episodes.
Every finished run is written to the JSON at once and skipped when the JSON already holds it, so
a long grid runs in pieces; an interrupted distillation is resumed from its checkpoint.

Per cell over seeds: mean and 95% Student-t interval of the retention (``evaluate_run``'s
headline: student / teacher score in the teacher's better action mode) and of the students' MACs
(mean over agents; sizing follows the view's input width, so it only moves with the view). And,
to answer "do the structural terms help", the seed-paired difference full - no_struct with its
t-interval. Every run records the machine's load average: the 2-core build box is shared.

MPE has no sight range of its own; its views use world units (the arena is about 2 x 2, so a
typical distance is ~1): ``sight6`` -> sight 1.0, ``sight4`` -> sight 0.5 (the stronger cut, as 4
of SMAC's 9); "ally features" are the other agents' offsets (``agent.*``); 4-bit sensors clip at
+-2 world units (``quant:4:2``) since MPE offsets exceed skirmish's [-1, 1].
"""

from __future__ import annotations

import argparse
import json
import math
import os
import shutil
import time
from collections.abc import Iterable, Sequence
from pathlib import Path

import torch
from rich.console import Console
from rich.table import Table

from kdx.envs import make
from kdx.layout import RunLayout
from kdx.trainer.common.recipes import recipe_for
from kdx.trainer.distill.config import DistillConfig
from kdx.trainer.distill.loop import distill
from kdx.trainer.distill.views import StudentViews
from kdx.trainer.evaluation import evaluate_run
from kdx.trainer.teacher.config import TeacherConfig
from kdx.trainer.teacher.mappo import train
from kdx.trainer.teacher.store import read_teacher_config

RESULTS = Path(__file__).parent / "results"
ENVS = ("skirmish/8m", "skirmish/MMM", "mpe/simple_spread")
TEACHERS = ("local", "centralised")  # TeacherConfig.teacher_input
SEP = "|"  # joins env, teacher, view, loss (and seed) into JSON keys

# Loss variants at equal student size: weights replacing the recipe's.
LOSSES: dict[str, dict[str, float]] = {
    "full": {},
    "no_struct": {"w_rel": 0.0, "w_role": 0.0},
    "pg": {"w_pg": 1.0, "w_kl": 0.0, "w_ce": 0.0, "w_margin": 0.0, "w_rel": 0.0, "w_role": 0.0},
}

# Per env, per view name: `kdx distill --view` entries (AGENT_OR_GROUP=OPS); () is the full view.
# Skirmish features are divided by the sight range 9, so sight:R is in SMAC's world units.
VIEWS: dict[str, dict[str, tuple[str, ...]]] = {
    "skirmish/8m": {
        "full": (), "sight6": ("marine=sight:6",), "sight4": ("marine=sight:4",), "no_ally": ("marine=-ally.*",),
        "noise": ("marine=noise:0.1",), "quant4": ("marine=quant:4",),
        # half the squad short-sighted, two without ally sensing, two with cheap 4-bit sensors
        "hetero": ("marine=sight:4", "agent_4=-ally.*", "agent_5=-ally.*", "agent_6=quant:4", "agent_7=quant:4"),
    },
    "skirmish/MMM": {
        "full": (), "sight6": ("marine=sight:6", "marauder=sight:6", "medivac=sight:6"),
        "sight4": ("marine=sight:4", "marauder=sight:4", "medivac=sight:4"),
        # the medivac's heals target allies, so a view must keep part of their blocks: it loses
        # their unit types and keeps what it heals by (visible, distance, offsets, health)
        "no_ally": ("marine=-ally.*", "marauder=-ally.*", "medivac=-ally.*.type_*"),
        "noise": ("marine=noise:0.1", "marauder=noise:0.1", "medivac=noise:0.1"),
        "quant4": ("marine=quant:4", "marauder=quant:4", "medivac=quant:4"),
        # marines short-sighted, marauders blind to allies, the medivac (which heals allies) full but noisy
        "hetero": ("marine=sight:4", "marauder=-ally.*", "medivac=noise:0.1"),
    },
    "mpe/simple_spread": {
        "full": (), "sight6": ("agents=sight:1",), "sight4": ("agents=sight:0.5",), "no_ally": ("agents=-agent.*",),
        "noise": ("agents=noise:0.1",), "quant4": ("agents=quant:4:2",),
        "hetero": ("agent_1=sight:0.5", "agent_2=-agent.* noise:0.1"),  # agent_0 keeps the full view
    },
}
VIEW_NAMES = tuple(VIEWS[ENVS[0]])

# Two-sided 95% Student-t quantiles t(0.975, df) for df = 1..30 (standard tables).
_T975 = (12.706, 4.303, 3.182, 2.776, 2.571, 2.447, 2.365, 2.306, 2.262, 2.228, 2.201, 2.179, 2.160, 2.145, 2.131,
         2.120, 2.110, 2.101, 2.093, 2.086, 2.080, 2.074, 2.069, 2.064, 2.060, 2.056, 2.052, 2.048, 2.045, 2.042)


def t975(df: int) -> float:
    """t(0.975, df): the table up to 30, then the Cornish-Fisher expansion around z = 1.96 (error < 1e-3)."""
    if df < 1:
        raise ValueError(f"a t quantile needs df >= 1, got {df}")
    if df <= len(_T975):
        return _T975[df - 1]
    z = 1.959964
    return z + (z**3 + z) / (4 * df) + (5 * z**5 + 16 * z**3 + 3 * z) / (96 * df**2)


def t_interval(values: Sequence[float]) -> tuple[float, float]:
    """Mean and half-width of the two-sided 95% Student-t interval (nan half-width below 2 values)."""
    n = len(values)
    if n == 0:
        raise ValueError("t_interval of no values")
    mean = sum(values) / n
    if n < 2:
        return mean, float("nan")
    sd = math.sqrt(sum((v - mean) ** 2 for v in values) / (n - 1))
    return mean, t975(n - 1) * sd / math.sqrt(n)


def view_entries(env: str, view: str) -> tuple[str, ...]:
    """The ``--view`` entries of ``view`` on ``env``."""
    return VIEWS[env][view]


def resolve_view(env_name: str, view: str) -> StudentViews:
    """``view`` resolved against ``env_name``'s layouts (``KdxError`` on a wrong name or op)."""
    return StudentViews.resolve(view_entries(env_name, view), make(env_name, num_envs=1))


def cell_key(env: str, teacher: str, view: str, loss: str) -> str:
    return SEP.join((env, teacher, view, loss))


def run_key(env: str, teacher: str, view: str, loss: str, seed: int) -> str:
    return f"{cell_key(env, teacher, view, loss)}{SEP}{seed}"


def summarise(runs: dict[str, dict]) -> list[dict]:
    """One row per cell (env, teacher, view, loss) over its seeds: mean and t-interval half-width
    of retention and student MACs."""
    cells: dict[str, list[dict]] = {}
    for key, run in runs.items():
        cells.setdefault(key.rsplit(SEP, 1)[0], []).append(run)
    rows = []
    for key, group in cells.items():
        env, teacher, view, loss = key.split(SEP)
        group = sorted(group, key=lambda r: r["seed"])
        kept = [r["retention"] for r in group if r["retention"] is not None]
        ret, ret_ci = t_interval(kept) if kept else (None, None)
        macs, macs_ci = t_interval([r["student_macs"] for r in group])
        rows.append({"env": env, "teacher": teacher, "view": view, "loss": loss, "seeds": [r["seed"] for r in group],
                     "retention": ret, "retention_ci95": ret_ci, "student_macs": macs, "student_macs_ci95": macs_ci,
                     "min_mac_ratio": min(r["min_mac_ratio"] for r in group),
                     "input_width": group[0]["input_width"], "teacher_score": t_interval([r["teacher"] for r in group])[0]})
    return sorted(rows, key=_grid_order)


def _grid_order(row: dict) -> tuple[int, ...]:
    """Sort key of a row with some of env, teacher, view, loss: the grid's order."""
    order = {"env": ENVS, "teacher": TEACHERS, "view": VIEW_NAMES, "loss": tuple(LOSSES)}
    return tuple(names.index(row[k]) if row[k] in names else len(names) for k, names in order.items() if k in row)


def paired_differences(runs: dict[str, dict], a: str = "full", b: str = "no_struct") -> list[dict]:
    """Per (env, teacher, view): retention of loss ``a`` minus loss ``b`` on the same seeds, mean
    and t-interval half-width (the structural terms' effect when a = full, b = no_struct)."""
    out = []
    for key, run in runs.items():
        env, teacher, view, loss, seed = key.split(SEP)
        other = runs.get(run_key(env, teacher, view, b, int(seed)))
        if loss != a or other is None or run["retention"] is None or other["retention"] is None:
            continue
        out.append(((env, teacher, view), run["retention"] - other["retention"]))
    grouped: dict[tuple, list[float]] = {}
    for cell, d in out:
        grouped.setdefault(cell, []).append(d)
    return sorted(({"env": e, "teacher": t, "view": v, "diff": f"{a} - {b}", "n": len(ds),
                    "mean": t_interval(ds)[0], "ci95": t_interval(ds)[1]} for (e, t, v), ds in grouped.items()),
                  key=_grid_order)


def read_results(path: Path) -> dict:
    return json.loads(path.read_text()) if path.is_file() else {"teachers": {}, "runs": {}}


def write_results(path: Path, results: dict) -> None:
    """Atomic: a kill mid-write leaves the previous JSON."""
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_suffix(".tmp")
    tmp.write_text(json.dumps(results, indent=2))
    os.replace(tmp, path)


def train_teacher(env: str, kind: str, minutes: float, work: Path, threads: int, console: Console) -> dict:
    """Train (or resume, or find finished) the ``kind`` teacher of ``env`` with its recipe under
    ``minutes`` of training time; its record for the JSON."""
    run = work / env.replace("/", "_") / f"teacher_{kind}"
    budget_s = minutes * 60
    config = TeacherConfig(**{**recipe_for(env, TeacherConfig).values, "env": env, "teacher_input": kind,
                              "threads": threads})
    resume = RunLayout(run).teacher.weights.is_file()
    done_s = last_time_s(RunLayout(run).teacher.metrics) if resume else 0.0
    load0 = os.getloadavg()[0]
    if done_s < budget_s:
        if not resume:
            shutil.rmtree(run, ignore_errors=True)  # a start that wrote no checkpoint
        console.print(f"[bold]teacher[/] {env} {kind}: {budget_s - done_s:.0f} s of training left -> {run}")
        train(run, None if resume else config, resume=resume, show_progress=False,
              callback=lambda metrics, _teacher: metrics["time_s"] >= budget_s)
    return teacher_record(run, minutes, load0)


def last_time_s(metrics: Path) -> float:
    """Training seconds of a stage's last metrics line (0 without one)."""
    lines = metrics.read_text().splitlines() if metrics.is_file() else []
    return json.loads(lines[-1])["time_s"] if lines else 0.0


def teacher_record(run: Path, minutes: float | None, load0: float | None = None) -> dict:
    config = read_teacher_config(RunLayout(run).teacher)[0]
    lines = RunLayout(run).teacher.metrics.read_text().splitlines()
    last = json.loads(lines[-1]) if lines else {}
    return {"run": str(run.resolve()), "env": config.env, "teacher_input": config.teacher_input,
            "budget_min": minutes, "train_s": last.get("time_s"), "env_steps": last.get("env_steps"),
            "load_avg_start": load0, "load_avg_end": os.getloadavg()[0], "config": config.to_json(),
            "curve": teacher_curve(run)}


def teacher_curve(run: Path, points: int = 30) -> list[dict]:
    """The teacher's training curve, about ``points`` metrics lines evenly spaced plus the last:
    env steps, training seconds and the (sampled-action) training win rate or episode return."""
    lines = RunLayout(run).teacher.metrics.read_text().splitlines()
    every = max(1, len(lines) // points)
    picked = [json.loads(line) for line in lines[every - 1::every]]
    if lines and (not picked or picked[-1] != json.loads(lines[-1])):
        picked.append(json.loads(lines[-1]))
    return [{k: m.get(k) for k in ("env_steps", "time_s", "win_rate", "episode_return")} for m in picked]


def merge_results(parts: Sequence[dict]) -> dict:
    """One results dict from several (e.g. one process per teacher kind, each writing its own
    JSON so that no two processes write one file): the union of their teachers and runs; a key
    that two parts hold with different records is an error."""
    merged: dict = {"teachers": {}, "runs": {}}
    for part in parts:
        for section in ("teachers", "runs"):
            for key, record in part.get(section, {}).items():
                if merged[section].get(key, record) != record:
                    raise ValueError(f"{section} {key!r} differs between the merged files; keep one of them")
                merged[section][key] = record
        for key, value in part.items():
            if key not in ("teachers", "runs"):
                merged.setdefault(key, value)
    return merged


def run_cell(teacher_run: Path, env: str, teacher: str, view: str, loss: str, seed: int, settings: dict,
             episodes: int, work: Path, console: Console) -> dict:
    """Distil one seed of one cell (resuming an interrupted distillation) and evaluate it."""
    folder = work / env.replace("/", "_") / teacher / view / loss / f"seed{seed}"
    layout = RunLayout(folder)
    config = DistillConfig(**{**recipe_for(env, DistillConfig).values, **settings, **LOSSES[loss],
                              "views": view_entries(env, view), "seed": seed})
    load0 = os.getloadavg()[0]
    t0 = time.perf_counter()
    checkpoints = layout.students.checkpoints
    if checkpoints.is_dir() and any(checkpoints.iterdir()):  # interrupted (or finished but not recorded)
        last = distill(folder, resume=True, show_progress=False)
    else:
        shutil.rmtree(folder, ignore_errors=True)
        folder.mkdir(parents=True)
        layout.teacher.root.symlink_to(RunLayout(teacher_run).teacher.root.resolve())
        last = distill(folder, config, show_progress=False)
    distill_s = time.perf_counter() - t0
    result = evaluate_run(folder, episodes=episodes, torch_device=config.torch_device)
    s, pol = result["students"], result["policies"]
    mode = s["mode"]
    score = "win_rate" if pol["teacher_greedy"]["win_rate"] is not None else "normalized_score"
    cost = s["cost"]
    widths = StudentViews.resolve(config.views, make(env, num_envs=1)).widths()
    row = {
        "seed": seed, "mode": mode, "score": score, "teacher": pol[f"teacher_{mode}"][score],
        "student": pol[f"students_{mode}"][score], "retention": s["retention"], "retention_per_mode": s["per_mode"],
        "student_macs": sum(c["student_macs"] for c in cost.values()) / len(cost),
        "min_mac_ratio": min(c["mac_ratio"] for c in cost.values()),
        "students": {a: c["student_hidden"] for a, c in cost.items()}, "input_width": widths,
        "views": list(config.views), "loss_weights": {t: config.weight(t) for t in ("pg", "kl", "ce", "rel", "role")},
        "teacher_agreement": last.get("teacher_agreement"), "distill_steps": last.get("env_steps"),
        "distill_s": distill_s, "load_avg_start": load0, "load_avg_end": os.getloadavg()[0], "work": str(folder),
    }
    console.print(f"{run_key(env, teacher, view, loss, seed)}: retention {row['retention']}, teacher "
                  f"{row['teacher']:.3f}, student {row['student']:.3f}, {distill_s:.0f} s, load {row['load_avg_end']:.2f}")
    return row


def _fmt(mean: float | None, ci: float | None, pct: bool = False) -> str:
    if mean is None:
        return "-"
    text = f"{mean:.1%}" if pct else f"{mean:,.0f}"
    if ci is None or math.isnan(ci):
        return text
    return f"{text} ± {ci:.1%}" if pct else f"{text} ± {ci:,.0f}"


def print_tables(results: dict, console: Console) -> None:
    table = Table(title="retention and student MACs by view (mean ± 95% t-interval half-width over seeds)")
    for col in ("env", "teacher", "view", "loss", "seeds", "input width", "retention", "student MACs", "min MACs ratio",
                "teacher score"):
        table.add_column(col, justify="left" if col in ("env", "teacher", "view", "loss", "input width") else "right")
    for r in summarise(results["runs"]):
        widths = sorted(set(r["input_width"].values()))
        table.add_row(r["env"], r["teacher"], r["view"], r["loss"], ",".join(map(str, r["seeds"])),
                      "/".join(map(str, widths)), _fmt(r["retention"], r["retention_ci95"], True),
                      _fmt(r["student_macs"], r["student_macs_ci95"]), f"{r['min_mac_ratio']:.0f}x",
                      f"{r['teacher_score']:.3f}")
    console.print(table)
    diffs = paired_differences(results["runs"])
    if diffs:
        dt = Table(title="structural terms: retention(full) - retention(no_struct), paired by seed (95% t-interval)")
        for col in ("env", "teacher", "view", "n", "difference"):
            dt.add_column(col)
        for d in diffs:
            dt.add_row(d["env"], d["teacher"], d["view"], str(d["n"]), _fmt(d["mean"], d["ci95"], True))
        console.print(dt)


def _subset(text: str, known: Iterable[str], what: str) -> list[str]:
    items = [x for x in text.split(",") if x]
    bad = [x for x in items if x not in known]
    if bad:
        raise SystemExit(f"unknown {what} {', '.join(bad)}; choose from {', '.join(known)}")
    return items


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--envs", default=",".join(ENVS), help="Comma-separated envs.")
    parser.add_argument("--teachers", default=",".join(TEACHERS), help="Comma-separated teacher inputs.")
    parser.add_argument("--views", default=",".join(VIEW_NAMES), help="Comma-separated view names.")
    parser.add_argument("--losses", default=",".join(LOSSES), help="Comma-separated loss variants.")
    parser.add_argument("--seeds", default="1,2", help="Comma-separated distillation seeds (>= 2 for an interval).")
    parser.add_argument("--teacher-run", action="append", type=Path, default=[],
                        help="A trained teacher run to use for its env and teacher input (repeatable).")
    parser.add_argument("--teacher-minutes", type=float, default=10.0, help="Training-time budget of each teacher.")
    parser.add_argument("--profile", default="x86-cpu", help="Device profile sizing the students.")
    parser.add_argument("--steps", type=int, default=None, help="Distillation env steps (default: the recipe's).")
    parser.add_argument("--episodes", type=int, default=100, help="Evaluation episodes per policy.")
    parser.add_argument("--threads", type=int, default=1, help="Torch threads of every job (one job runs at a time).")
    parser.add_argument("--out", type=Path, default=RESULTS / "views.json")
    parser.add_argument("--work", type=Path, default=RESULTS / "views_runs", help="Where teachers and students go.")
    parser.add_argument("--table", action="store_true", help="Only print the tables of --out.")
    parser.add_argument("--merge", type=Path, nargs="+", default=[],
                        help="Merge these result JSONs (e.g. one per parallel process) into --out, print, run nothing.")
    args = parser.parse_args()
    console = Console(width=200)
    if args.merge:
        merged = merge_results([read_results(p) for p in args.merge])
        for record in merged["teachers"].values():  # records written before the curve was recorded
            if "curve" not in record and RunLayout(Path(record["run"])).teacher.metrics.is_file():
                record["curve"] = teacher_curve(Path(record["run"]))
        write_results(args.out, merged)
        print_tables(merged, console)
        console.print(f"wrote {args.out}")
        return
    results = read_results(args.out)
    if args.table:
        print_tables(results, console)
        return
    torch.set_num_threads(args.threads)
    envs = _subset(args.envs, ENVS, "env")
    teachers, views = _subset(args.teachers, TEACHERS, "teacher"), _subset(args.views, VIEW_NAMES, "view")
    losses, seeds = _subset(args.losses, LOSSES, "loss"), [int(s) for s in args.seeds.split(",") if s]
    given = {}
    for run in args.teacher_run:
        config = read_teacher_config(RunLayout(run).teacher)[0]
        given[cell_key(config.env, config.teacher_input, "", "")] = run
    settings = {"profile": args.profile, "threads": args.threads, **({"total_steps": args.steps} if args.steps else {})}
    # order: env, teacher, loss group (full and no_struct before pg), view, seed -> the most useful cells first
    for env in envs:
        for teacher in teachers:
            tkey = cell_key(env, teacher, "", "")
            if tkey in given:
                results["teachers"][tkey] = teacher_record(given[tkey], None)
            elif tkey not in results["teachers"] or not Path(results["teachers"][tkey]["run"]).is_dir():
                results["teachers"][tkey] = train_teacher(env, teacher, args.teacher_minutes, args.work, args.threads,
                                                          console)
                write_results(args.out, results)
            teacher_run = Path(results["teachers"][tkey]["run"])
            for loss_group in ([x for x in losses if x != "pg"], [x for x in losses if x == "pg"]):
                for seed in seeds:
                    for view in views:
                        for loss in loss_group:
                            key = run_key(env, teacher, view, loss, seed)
                            if key in results["runs"]:
                                continue
                            results["runs"][key] = run_cell(teacher_run, env, teacher, view, loss, seed, settings,
                                                            args.episodes, args.work, console)
                            write_results(args.out, results)
    results["cpu_count"] = os.cpu_count()
    write_results(args.out, results)
    print_tables(results, console)
    console.print(f"wrote {args.out}")


if __name__ == "__main__":
    main()
