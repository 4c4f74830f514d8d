"""Retention of distilled students against their teacher, and an ablation of the loss terms.

    # teachers first (stage 1), e.g.
    kdx train --env mpe/simple_spread --out runs/spread
    # then, for every teacher run given:
    .venv/bin/python benchmarks/distill.py runs/spread runs/3m                 # full composite loss
    .venv/bin/python benchmarks/distill.py runs/spread runs/3m --ablation      # + PG / KL+CE / KL+CE+PG
    .venv/bin/python benchmarks/distill.py runs/spread --set lr=1e-2 --steps 300000

Each variant distils into its own folder under benchmarks/results/distill_runs/ (the teacher
folder is linked, never copied or modified), with the same device profile and therefore the
same student sizes, then ``kdx.trainer.evaluation.evaluate_run`` runs teacher,
students and references on the same seeds. Targets: retention >= 95% and every student at
>= 30x fewer MACs than the teacher actor. Prints tables and writes benchmarks/results/distill.json
(with the machine's load average: other work sharing the cores slows wall-clock times).
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import time
from dataclasses import fields
from pathlib import Path

from rich.console import Console
from rich.table import Table

from kdx.layout import RunLayout
from kdx.trainer.common.recipes import recipe_for
from kdx.trainer.distill.config import DistillConfig
from kdx.trainer.distill.loop import distill, read_distill_metrics
from kdx.trainer.evaluation import evaluate_run
from kdx.trainer.teacher.store import read_teacher_config

RESULTS = Path(__file__).parent / "results"
RETENTION_TARGET = 0.95
MAC_RATIO_TARGET = 30.0

# Loss-term ablation at equal student size (all other settings as in the full composite).
OFF = {"w_pg": 0.0, "w_kl": 0.0, "w_ce": 0.0, "w_rel": 0.0, "w_role": 0.0}
VARIANTS: dict[str, dict[str, float]] = {
    "full": {},
    "pg": {**OFF, "w_pg": 1.0},
    "kl_ce": {**OFF, "w_kl": 1.0, "w_ce": 0.5},
    "kl_ce_pg": {**OFF, "w_kl": 1.0, "w_ce": 0.5, "w_pg": 1.0},
}

def _parse_set(items: list[str]) -> dict:
    kinds = {f.name: f.type for f in fields(DistillConfig)}
    out = {}
    for item in items:
        name, _, text = item.partition("=")
        kind = kinds[name]
        if kind in ("bool", bool):
            out[name] = text.lower() in ("1", "true", "yes")
        else:
            out[name] = {"int": int, "float": float}.get(kind, str)(text)
    return out


def run_variant(teacher_run: Path, variant: str, settings: dict, episodes: int, console: Console,
                work_root: Path = RESULTS / "distill_runs", reuse: bool = False) -> dict:
    """Distil ``teacher_run``'s teacher with ``VARIANTS[variant]`` and evaluate; one result row."""
    env = read_teacher_config(RunLayout(teacher_run).teacher)[0].env
    work = work_root / env.replace("/", "_") / variant
    # the env's distillation recipe (what `kdx distill` uses), then the command line's, then the variant's loss weights
    config = DistillConfig(**{**recipe_for(env, DistillConfig).values, **settings, **VARIANTS[variant]})
    load0 = os.getloadavg()[0]
    if reuse and RunLayout(work).students.config.is_file():  # evaluate the students already there
        last = read_distill_metrics(work)[-1]
        config = DistillConfig.from_json(json.loads(RunLayout(work).students.config.read_text())["distill"])
        distill_s = last["time_s"]
    else:
        shutil.rmtree(work, ignore_errors=True)
        work.mkdir(parents=True)
        RunLayout(work).teacher.root.symlink_to(RunLayout(teacher_run).teacher.root.resolve())
        t0 = time.perf_counter()
        last = distill(work, config, show_progress=False)
        distill_s = time.perf_counter() - t0
    result = evaluate_run(work, episodes=episodes, torch_device=config.torch_device)
    s = result["students"]
    mode = s["mode"]
    pol = result["policies"]
    score_key = "win_rate" if pol["teacher_greedy"]["win_rate"] is not None else "normalized_score"
    if pol["teacher_greedy"].get(score_key) is None:
        score_key = "mean_return"
    row = {
        "env": env, "variant": variant, "mode": mode, "score": score_key,
        "teacher": pol[f"teacher_{mode}"][score_key], "teacher_ci95": pol[f"teacher_{mode}"][f"{score_key}_ci95"
                                                                                              if score_key != "mean_return" else "return_ci95"],
        "student": pol[f"students_{mode}"][score_key], "student_ci95": pol[f"students_{mode}"][f"{score_key}_ci95"
                                                                                              if score_key != "mean_return" else "return_ci95"],
        "retention": s["retention"], "retention_per_mode": s["per_mode"],
        "min_mac_ratio": min(c["mac_ratio"] for c in s["cost"].values()),
        "students": {a: c["student_hidden"] for a, c in s["cost"].items()},
        "cost": s["cost"], "teacher_agreement": last.get("teacher_agreement"),
        "distill_steps": last.get("env_steps"), "distill_s": distill_s, "load_avg_start": load0,
        "load_avg_end": os.getloadavg()[0], "config": config.to_json(),
    }
    console.print(f"{env} {variant}: retention {row['retention']}, teacher {row['teacher']:.3f}, student {row['student']:.3f}, "
                  f"{distill_s:.0f} s")
    return row


def print_tables(rows: list[dict], console: Console) -> None:
    table = Table(title="teacher vs students (same seeds; 95% CI)")
    for col in ("env", "variant", "measure", "teacher", "students", "retention", "min MACs ratio", "students hidden",
                "agreement", "distill time"):
        table.add_column(col, justify="left" if col in ("env", "variant", "measure", "students hidden") else "right")
    for r in rows:
        ret = r["retention"]
        ok = ret is not None and ret >= RETENTION_TARGET and r["min_mac_ratio"] >= MAC_RATIO_TARGET
        hidden = ", ".join(sorted({"x".join(map(str, h)) for h in r["students"].values()}))
        table.add_row(
            r["env"], r["variant"], f"{r['score']} ({r['mode']})", f"{r['teacher']:.3f} ± {r['teacher_ci95']:.3f}",
            f"{r['student']:.3f} ± {r['student_ci95']:.3f}",
            ("-" if ret is None else f"[{'green' if ok else 'red'}]{ret:.1%}[/]"), f"{r['min_mac_ratio']:.0f}x",
            hidden, "-" if r["teacher_agreement"] is None else f"{r['teacher_agreement']:.2f}", f"{r['distill_s']:.0f} s",
        )
    console.print(table)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("runs", nargs="+", type=Path, help="Teacher run folders (each holds teacher/).")
    parser.add_argument("--ablation", action="store_true", help="Also run the PG / KL+CE / KL+CE+PG variants.")
    parser.add_argument("--variants", default="", help="Comma-separated variants to run (default: full, + ablation).")
    parser.add_argument("--profile", default="x86-cpu", help="Device profile sizing the students.")
    parser.add_argument("--torch-device", default="cpu", help="Torch device of distillation and evaluation (cpu or cuda).")
    parser.add_argument("--steps", type=int, default=None, help="Distillation env steps (default: DistillConfig's).")
    parser.add_argument("--episodes", type=int, default=100, help="Evaluation episodes per policy.")
    parser.add_argument("--set", action="append", default=[], help="DistillConfig field=value (repeatable).")
    parser.add_argument("--out", type=Path, default=RESULTS / "distill.json")
    parser.add_argument("--reuse", action="store_true", help="Evaluate students already distilled in --work instead of distilling again.")
    parser.add_argument("--work", type=Path, default=RESULTS / "distill_runs", help="Where the variants' run folders go.")
    args = parser.parse_args()
    console = Console()
    settings = {"profile": args.profile, "torch_device": args.torch_device, **_parse_set(args.set)}
    if args.steps:
        settings["total_steps"] = args.steps
    variants = args.variants.split(",") if args.variants else (list(VARIANTS) if args.ablation else ["full"])
    rows = []
    for run in args.runs:
        for variant in variants:
            rows.append(run_variant(run, variant, settings, args.episodes, console, args.work, args.reuse))
            args.out.parent.mkdir(parents=True, exist_ok=True)
            args.out.write_text(json.dumps({"rows": rows, "cpu_count": os.cpu_count()}, indent=2))
    print_tables(rows, console)
    console.print(f"wrote {args.out}")


if __name__ == "__main__":
    main()
