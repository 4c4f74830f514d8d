"""Sweeps: distil and evaluate students for many device profiles x seeds x loss ablations.

``run_sweep(run, out, config)`` plans one *job* per (device profile, seed, ablation), checks every
job's ``DistillConfig`` before starting anything, then runs the jobs ``config.workers`` at a time.

Parallelism: each job is its own OS process (``python -m kdx.trainer.sweep JOB_DIR``) supervised
by a ``concurrent.futures.ThreadPoolExecutor`` (threads only wait on children). Processes give
every job its own torch thread pool, RNG and memory, and a job that crashes fails only its own
row; the standard library is the whole engine, so a sweep needs nothing beyond ``kdx[train]``.

Layout of ``OUT`` (default ``RUN/sweep``)::

    <profile>-s<seed>-<ablation>/  a run folder of its own: teacher/ (config + weights copied
                                   from RUN), students/, eval.json, job.json, result.json, log.txt
    sweep.json  sweep.md           one row per job, plus mean/std retention per (profile, ablation)

A job whose ``result.json`` says ``ok`` is reused when the sweep is run again (a stopped sweep
continues where it was); any other job folder is cleared and redone.
"""

from __future__ import annotations

import json
import math
import os
import shutil
import subprocess
import sys
import time
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor, as_completed
from dataclasses import asdict, dataclass, field, fields
from pathlib import Path
from typing import Any

from kdx.errors import KdxError
from kdx.layout import RunLayout, TeacherFolder

# Loss ablations: name -> DistillConfig fields to override (a weight of 0 switches a term off).
ABLATIONS: dict[str, dict[str, float]] = {
    "full": {},
    "no-pg": {"w_pg": 0.0},
    "no-kl": {"w_kl": 0.0},
    "no-ce": {"w_ce": 0.0},
    "no-rel": {"w_rel": 0.0},
    "no-role": {"w_role": 0.0},
    "no-structure": {"w_rel": 0.0, "w_role": 0.0},
    "actions-only": {"w_pg": 0.0, "w_rel": 0.0, "w_role": 0.0},
}

SUMMARY_JSON, SUMMARY_MD = "sweep.json", "sweep.md"


@dataclass(frozen=True)
class SweepConfig:
    """What a sweep runs. ``distill`` holds extra ``DistillConfig`` fields shared by every job."""

    profiles: tuple[str, ...]
    seeds: int = 1
    first_seed: int = 1
    ablations: tuple[str, ...] = ("full",)
    workers: int = 1
    episodes: int = 100
    torch_device: str = "cpu"
    distill: dict[str, Any] = field(default_factory=dict)

    def validate(self) -> SweepConfig:
        if not self.profiles:
            raise KdxError("say which device profiles to sweep: --profiles rpi5,jetson-orin-nano")
        for name in ("seeds", "workers", "episodes"):
            if getattr(self, name) < 1:
                raise KdxError(f"--{name} must be a positive integer (got {getattr(self, name)})")
        unknown = [a for a in self.ablations if a not in ABLATIONS]
        if unknown or not self.ablations:
            raise KdxError(f"unknown ablation(s) {unknown}; choose from {', '.join(ABLATIONS)}")
        return self


@dataclass(frozen=True)
class SweepJob:
    """One distil + evaluate job: students for device profile ``profile``."""

    profile: str
    seed: int
    ablation: str

    @property
    def name(self) -> str:
        stem = Path(self.profile).stem if self.profile.endswith(".toml") else self.profile
        return f"{stem}-s{self.seed}-{self.ablation}"


def plan_jobs(config: SweepConfig) -> list[SweepJob]:
    """Every (profile, seed, ablation) combination, in a stable order."""
    return [SweepJob(p, config.first_seed + s, a) for p in config.profiles for a in config.ablations
            for s in range(config.seeds)]


def job_distill_config(job: SweepJob, config: SweepConfig):
    """The checked ``DistillConfig`` of one job (raises ``KdxError`` on a bad option)."""
    from kdx.trainer.distill.config import DistillConfig

    known = {f.name for f in fields(DistillConfig)}
    bad = sorted(set(config.distill) - known)
    if bad:
        raise KdxError(f"unknown distill option(s) {bad}; see `kdx distill --help` for the fields")
    threads = max(1, len(os.sched_getaffinity(0)) // config.workers)
    base = {"threads": threads, "torch_device": config.torch_device, **config.distill}
    try:
        dc = DistillConfig(profile=job.profile, seed=job.seed, **{**base, **ABLATIONS[job.ablation]})
    except TypeError as exc:
        raise KdxError(f"bad distill option: {exc}") from None
    return dc.validate()


# ------------------------------------------------------------------ one job (child process)
def run_job(job_dir: Path) -> dict[str, Any]:
    """Distil and evaluate the job described by ``job_dir/job.json``; write ``result.json``."""
    from kdx.trainer.distill.config import DistillConfig
    from kdx.trainer.distill.loop import distill
    from kdx.trainer.evaluation import evaluate_run

    spec = json.loads((job_dir / "job.json").read_text())
    t0 = time.perf_counter()
    config = DistillConfig.from_json(spec["distill"])
    distill(job_dir, config, show_progress=False)
    t1 = time.perf_counter()
    result = evaluate_run(job_dir, episodes=spec["episodes"], torch_device=config.torch_device)
    row = {**spec["job"], **summarise_eval(result), "status": "ok",
           "distill_s": t1 - t0, "eval_s": time.perf_counter() - t1}
    from kdx.fileio import atomic_write_text

    atomic_write_text(job_dir / "result.json", json.dumps(row, indent=2))
    return row


def summarise_eval(result: dict[str, Any]) -> dict[str, Any]:
    """Retention and cost of one job's ``eval.json`` (students summed over agents)."""
    s = result["students"]
    cost = s["cost"].values()
    teacher_macs, student_macs = sum(c["teacher_macs"] for c in cost), sum(c["student_macs"] for c in cost)
    mode = s["mode"]
    pol = result["policies"]
    return {
        "retention": s["retention"],
        "retention_mode": mode,
        "measure": s["measure"],
        "teacher_return": pol[f"teacher_{mode}"]["mean_return"],
        "student_return": pol[f"students_{mode}"]["mean_return"],
        "teacher_win_rate": pol[f"teacher_{mode}"]["win_rate"],
        "student_win_rate": pol[f"students_{mode}"]["win_rate"],
        "teacher_macs": teacher_macs,
        "student_macs": student_macs,
        "mac_ratio": teacher_macs / student_macs,
        "student_params": sum(c["student_params"] for c in cost),
        "students": {agent: "x".join(map(str, c["student_hidden"])) for agent, c in s["cost"].items()},
    }


# ------------------------------------------------------------------ the sweep (parent)
def _teacher_files(folder: TeacherFolder) -> tuple[Path, Path]:
    return folder.config, folder.weights


def _prepare_job_dir(run: Path, job_dir: Path, job: SweepJob, distill_config, episodes: int) -> None:
    if job_dir.exists():
        shutil.rmtree(job_dir)
    source, copy = RunLayout(run).teacher, RunLayout(job_dir).teacher
    copy.root.mkdir(parents=True)
    for path in _teacher_files(source):  # what distillation reads of the teacher
        shutil.copy2(path, copy.root / path.name)
    spec = {"job": {"job": job.name, **asdict(job)}, "distill": distill_config.to_json(), "episodes": episodes}
    (job_dir / "job.json").write_text(json.dumps(spec, indent=2))


def _finished_row(job_dir: Path) -> dict[str, Any] | None:
    try:
        row = json.loads((job_dir / "result.json").read_text())
    except (OSError, json.JSONDecodeError):
        return None
    return row if row.get("status") == "ok" else None


def _reusable(job_dir: Path, distill_config, episodes: int) -> bool:
    """A finished job of the very same settings (a changed option redoes the job)."""
    if _finished_row(job_dir) is None:
        return False
    try:
        spec = json.loads((job_dir / "job.json").read_text())
    except (OSError, json.JSONDecodeError):
        return False
    return spec.get("distill") == distill_config.to_json() and spec.get("episodes") == episodes


def _run_child(job: SweepJob, job_dir: Path) -> dict[str, Any]:
    t0 = time.perf_counter()
    with open(job_dir / "log.txt", "w") as log:
        proc = subprocess.run([sys.executable, "-m", "kdx.trainer.sweep", str(job_dir)],
                              stdout=log, stderr=subprocess.STDOUT, check=False)
    row = _finished_row(job_dir)
    if proc.returncode == 0 and row is not None:
        return {**row, "wall_s": time.perf_counter() - t0}
    tail = (job_dir / "log.txt").read_text(errors="replace").strip().splitlines()[-1:] or ["no output"]
    return {"job": job.name, **asdict(job), "status": "failed", "error": f"exit {proc.returncode}: {tail[0]}",
            "wall_s": time.perf_counter() - t0}


def run_sweep(run_dir: str | Path, out: str | Path | None, config: SweepConfig,
              on_done: Callable[[dict[str, Any]], None] | None = None) -> dict[str, Any]:
    """Run every job of ``config`` for the teacher of ``run_dir``; write and return the summary."""
    from kdx.devices.registry import get_profile
    from kdx.fileio import atomic_write_text

    run = Path(run_dir)
    config = config.validate()
    paths = RunLayout(run).teacher
    missing = [p.name for p in _teacher_files(paths) if not p.is_file()]
    if missing:
        raise KdxError(f"{run} has no trained teacher ({', '.join(missing)} missing in {paths.root}); "
                       "train one with `kdx train` first")
    for profile in config.profiles:
        get_profile(profile)  # unknown profile: KdxError naming the choices
    jobs = plan_jobs(config)
    distill_configs = {job: job_distill_config(job, config) for job in jobs}  # all checked before any work
    out = Path(out) if out is not None else RunLayout(run).sweep
    out.mkdir(parents=True, exist_ok=True)

    rows: dict[str, dict[str, Any]] = {}
    todo = []
    for job in jobs:
        if _reusable(out / job.name, distill_configs[job], config.episodes):
            rows[job.name] = {**_finished_row(out / job.name), "reused": True}
        else:
            _prepare_job_dir(run, out / job.name, job, distill_configs[job], config.episodes)
            todo.append(job)
    t0 = time.perf_counter()
    with ThreadPoolExecutor(max_workers=config.workers) as pool:
        futures = {pool.submit(_run_child, job, out / job.name): job for job in todo}
        for fut in as_completed(futures):
            row = fut.result()
            rows[row["job"]] = row
            if on_done is not None:
                on_done(row)
    summary = {
        "run": str(run),
        "config": {**asdict(config), "jobs": len(jobs)},
        "wall_s": time.perf_counter() - t0,
        "rows": [rows[job.name] for job in jobs],
        "groups": group_rows([rows[job.name] for job in jobs]),
    }
    atomic_write_text(out / SUMMARY_JSON, json.dumps(summary, indent=2))
    atomic_write_text(out / SUMMARY_MD, summary_markdown(summary))
    return summary


def group_rows(rows: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """Mean, std and min retention over seeds per (profile, ablation); MACs are the same across seeds."""
    groups: dict[tuple[str, str], list[dict[str, Any]]] = {}
    for row in rows:
        groups.setdefault((row["profile"], row["ablation"]), []).append(row)
    out = []
    for (profile, ablation), members in groups.items():
        ok = [r for r in members if r["status"] == "ok"]
        vals = [r["retention"] for r in ok if r.get("retention") is not None]
        mean = sum(vals) / len(vals) if vals else None
        std = math.sqrt(sum((v - mean) ** 2 for v in vals) / (len(vals) - 1)) if len(vals) > 1 else None
        out.append({
            "profile": profile, "ablation": ablation, "jobs": len(members), "ok": len(ok),
            "retention_mean": mean, "retention_std": std, "retention_min": min(vals) if vals else None,
            "student_macs": ok[0]["student_macs"] if ok else None,
            "mac_ratio": ok[0]["mac_ratio"] if ok else None,
        })
    return out


def _pct(x: float | None) -> str:
    return "-" if x is None else f"{x:.1%}"


def summary_markdown(summary: dict[str, Any]) -> str:
    """The summary as Markdown: retention vs MACs per group, then one row per job."""
    lines = [f"# Sweep of `{summary['run']}`", "",
             f"{summary['config']['jobs']} jobs, {summary['config']['workers']} workers, "
             f"{summary['wall_s']:.0f} s wall.", "",
             "## Retention vs MACs (over seeds)", "",
             "| profile | ablation | ok/jobs | retention mean | std | min | student MACs | MACs ratio |",
             "|---|---|---|---|---|---|---|---|"]
    for g in summary["groups"]:
        lines.append(f"| {g['profile']} | {g['ablation']} | {g['ok']}/{g['jobs']} | {_pct(g['retention_mean'])} | "
                     f"{_pct(g['retention_std'])} | {_pct(g['retention_min'])} | "
                     f"{'-' if g['student_macs'] is None else format(g['student_macs'], ',')} | "
                     f"{'-' if g['mac_ratio'] is None else format(g['mac_ratio'], '.1f') + 'x'} |")
    lines += ["", "## Jobs", "",
              "| job | status | retention | teacher | student | student MACs | MACs ratio | students | wall s |",
              "|---|---|---|---|---|---|---|---|---|"]
    for r in summary["rows"]:
        if r["status"] != "ok":
            lines.append(f"| {r['job']} | failed: {r.get('error', '')} | - | - | - | - | - | - | {r.get('wall_s', 0):.0f} |")
            continue
        score = "win_rate" if r["teacher_win_rate"] is not None else "return"
        fmt = _pct if score == "win_rate" else (lambda x: f"{x:.2f}")
        students = ", ".join(f"{a}: {h}" for a, h in r["students"].items())
        lines.append(f"| {r['job']} | ok | {_pct(r['retention'])} | {fmt(r['teacher_' + score])} | "
                     f"{fmt(r['student_' + score])} | {r['student_macs']:,} | {r['mac_ratio']:.1f}x | {students} | "
                     f"{r.get('wall_s', 0):.0f} |")
    return "\n".join(lines) + "\n"


if __name__ == "__main__":  # one job, in its own process (see run_sweep)
    from kdx.errors import KdxError as _KdxError

    try:
        run_job(Path(sys.argv[1]))
    except _KdxError as exc:
        print(f"error: {exc}", file=sys.stderr)
        sys.exit(2)
