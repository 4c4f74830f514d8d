"""The teacher targets of issue 16 with plain defaults: ``kdx train --env ENV --out RUN``, stopped at
the time limit, then ``kdx evaluate RUN``, on this machine.

    .venv/bin/python benchmarks/teacher.py                            # the main targets, in order
    .venv/bin/python benchmarks/teacher.py --env skirmish/3m --keep --runs-dir /work/runs/bench
    .venv/bin/python benchmarks/teacher.py --hard                     # the hard maps (2 h each)
    .venv/bin/python benchmarks/teacher.py --collect /work/runs/ss1 /work/runs/sl1 --markdown t.md
    .venv/bin/python benchmarks/teacher.py --collect RUN --evaluate   # runs `kdx evaluate RUN` first

Run mode trains each env with ``python -m kdx train --env ENV --out RUN --quiet`` (no other flag:
the env's recipe, whose ``minutes`` should be the target's limit, decides everything), with a hard
kill at the limit + ``--grace`` seconds as a safety net (recorded when it fires), then runs
``python -m kdx evaluate RUN``. The machine's load (``os.getloadavg``) is sampled before, every
``--sample-every`` seconds during, and after each run, with the number of cores: other work sharing
the cores makes wall-clock results pessimistic. ``--collect`` tabulates finished run folders
(e.g. the ones trained by hand with the README commands) instead of training; a run without
``eval.json`` is reported as such unless ``--evaluate`` is given.

Each row: target, limit, training time used, env steps, greedy result of ``kdx evaluate`` (95% CI),
met / missed (the greedy result reaches the bar and the last update began within the limit), the
recipe recorded in the run's config and any setting that differs from today's plain defaults.
The peer row reads simple_spread's training curve: the first training time at which the return
(mean of the last 5 logged updates) reaches JaxMARL MAPPO's final -38.3, against half its 717 s.

Prints a table, merges the rows into ``--out`` (JSON; entries of other envs are kept), draws the
training curves of every entry to ``--png`` (win rate / normalised score of the sampled training
policy against env steps and against training time; the bar, the limit, the greedy result, and
for the hard maps the published MAPPO figure) and, with ``--markdown FILE``, writes the table as
Markdown.
"""

from __future__ import annotations

import argparse
import datetime
import fcntl
import json
import os
import shutil
import signal
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from rich.console import Console
from rich.table import Table

from kdx.errors import KdxError
from kdx.fileio import atomic_write_text
from kdx.layout import RunLayout
from kdx.trainer.common.metrics_log import read_metrics_file
from kdx.trainer.common.recipes import config_with_recipe
from kdx.trainer.teacher.config import TeacherConfig


# ------------------------------------------------------------------ the targets, as data
@dataclass(frozen=True)
class Target:
    """One row of the target table: ``metric`` of the greedy teacher (``kdx evaluate``) must reach
    ``threshold`` (None: curve only) within ``minutes`` of training; ``reference`` is a published
    figure shown beside it (not a bar)."""

    env: str
    metric: str  # "normalized_score" (MPE) or "win_rate" (skirmish)
    threshold: float | None
    minutes: float
    reference: float | None = None

    @property
    def limit_s(self) -> float:
        return self.minutes * 60.0


@dataclass(frozen=True)
class PeerTarget:
    """The side-by-side peer: kdx's training return on ``env`` (mean of the last ``window`` logged
    updates) must reach the peer's final return within ``limit_s`` (half the peer's time)."""

    env: str
    peer: str
    final_return: float
    peer_time_s: float
    peer_env_steps: int
    window: int = 5

    @property
    def limit_s(self) -> float:
        return self.peer_time_s / 2


TARGETS: dict[str, Target] = {t.env: t for t in (
    Target("mpe/simple_spread", "normalized_score", 0.90, 10),
    Target("mpe/simple_speaker_listener", "normalized_score", 0.90, 10),
    Target("skirmish/3m", "win_rate", 0.95, 15),
    Target("skirmish/8m", "win_rate", 0.95, 30),
    Target("skirmish/2s3z", "win_rate", 0.95, 60),
    Target("skirmish/MMM", "win_rate", 0.95, 60),
)}
# Published MAPPO win rates on StarCraft II after 10-25M steps (a reference: skirmish is not SC2).
HARD_TARGETS: dict[str, Target] = {t.env: t for t in (
    Target("skirmish/5m_vs_6m", "win_rate", 0.75, 120, reference=0.89),
    Target("skirmish/3s5z", "win_rate", 0.90, 120, reference=0.97),
    Target("skirmish/3s_vs_5z", "win_rate", 0.80, 120),
    Target("skirmish/MMM2", "win_rate", 0.60, 120, reference=0.91),
    Target("skirmish/27m_vs_30m", "win_rate", None, 120, reference=0.94),
    Target("skirmish/6h_vs_8z", "win_rate", None, 120, reference=0.88),
)}
# JaxMARL's MAPPO (GRU, its default MPE settings), 3M env steps, measured on this machine.
PEER = PeerTarget("mpe/simple_spread", "JaxMARL MAPPO", final_return=-38.3, peer_time_s=717.0,
                  peer_env_steps=3_000_000)
REFERENCE_NOTE = "published MAPPO on StarCraft II after 10-25M steps"
CURVE_POINTS = 200
GRACE_S = 60.0
SAMPLE_EVERY_S = 30.0


def peer_key(peer: PeerTarget) -> str:
    return f"peer:{peer.env}"


# ------------------------------------------------------------------ reading a run folder
def _lock_held(layout: RunLayout) -> bool:
    """True while a kdx stage holds the run's writer lock (the run is still training)."""
    if not layout.lock.is_file():
        return False
    fd = os.open(layout.lock, os.O_RDONLY)
    try:
        fcntl.flock(fd, fcntl.LOCK_SH | fcntl.LOCK_NB)
    except BlockingIOError:
        return True
    finally:
        os.close(fd)  # closing releases a lock we took
    return False


@dataclass(frozen=True)
class RunFacts:
    """What a run folder says about its teacher: ``config`` (``teacher`` of config.json), ``recipe``
    as recorded, the metrics lines, ``eval.json`` (None when absent) and whether it is still training."""

    run: Path
    config: dict[str, Any]
    recipe: dict[str, Any] | None
    metrics: list[dict[str, Any]]
    evaluation: dict[str, Any] | None
    training: bool

    @property
    def env(self) -> str:
        return self.config["env"]


def read_run(run: Path) -> RunFacts:
    """The facts of ``run``; ``KdxError`` when it holds no teacher config."""
    layout = RunLayout(Path(run))
    if not layout.teacher.config.is_file():
        raise KdxError(f"{run} is not a kdx run: {layout.teacher.config} is missing (train one with `kdx train`)")
    document = json.loads(layout.teacher.config.read_text())
    evaluation = json.loads(layout.eval_json.read_text()) if layout.eval_json.is_file() else None
    return RunFacts(layout.run, document["teacher"], document.get("recipe"), read_metrics_file(layout.teacher.metrics),
                    evaluation, _lock_held(layout))


def non_default_settings(config: dict[str, Any]) -> dict[str, Any]:
    """The settings of a run's config that differ from what a plain ``kdx train --env ENV`` gives
    today (flags given by hand, or a recipe changed since)."""
    plain, _ = config_with_recipe(TeacherConfig, config["env"], {"env": config["env"]})
    plain_json = plain.to_json()
    return {k: v for k, v in config.items() if k in plain_json and plain_json[k] != v}


def greedy_result(evaluation: dict[str, Any], metric: str) -> tuple[float | None, float | None]:
    """The greedy teacher's ``metric`` and its 95% CI half-width from ``eval.json``."""
    r = evaluation["policies"]["teacher_greedy"]
    return r.get(metric), r.get(f"{metric}_ci95")


def smoothed_returns(metrics: list[dict[str, Any]], window: int) -> list[float | None]:
    """Per metrics line, the mean episode return of the last ``window`` lines (None before ``window``)."""
    returns = [m["episode_return"] for m in metrics]
    return [None if i + 1 < window else sum(returns[i + 1 - window:i + 1]) / window for i in range(len(returns))]


def first_crossing(metrics: list[dict[str, Any]], bar: float, window: int) -> dict[str, Any] | None:
    """The first metrics line whose smoothed return reaches ``bar``: its ``time_s``, ``env_steps``
    and smoothed ``return``; None when the curve never reaches it."""
    for m, r in zip(metrics, smoothed_returns(metrics, window)):
        if r is not None and r >= bar:
            return {"time_s": m["time_s"], "env_steps": m["env_steps"], "return": r}
    return None


def last_update_start_s(metrics: list[dict[str, Any]]) -> float:
    """Training time at which the run's last update began (the loop stops after the update that
    spends the budget, so this is what must lie within the limit)."""
    last = metrics[-1]
    if len(metrics) < 2:
        return 0.0
    prev = metrics[-2]
    per_update = (last["time_s"] - prev["time_s"]) / max(1, last["update"] - prev["update"])
    return last["time_s"] - per_update


def normalised_score(ret: float, reference: dict[str, Any] | None) -> float | None:
    """``ret`` as a normalised score with the random and oracle returns of an ``eval.json``'s
    ``reference`` (None without them)."""
    rand, oracle = (reference or {}).get("random_return"), (reference or {}).get("oracle_return")
    return None if rand is None or oracle is None or oracle == rand else (ret - rand) / (oracle - rand)


def training_curve(metrics: list[dict[str, Any]], metric: str, evaluation: dict[str, Any] | None,
                   points: int = CURVE_POINTS) -> list[dict[str, Any]]:
    """At most ``points`` (+ the last) metrics lines as ``env_steps``, ``time_s``, ``episode_return``
    and ``value``: the training (sampled) win rate, or for a normalised-score target the training
    return normalised with ``eval.json``'s random and oracle returns (None without them)."""
    ref = (evaluation or {}).get("reference")

    def value(m: dict[str, Any]) -> float | None:
        return m.get("win_rate") if metric == "win_rate" else normalised_score(m["episode_return"], ref)

    stride = max(1, -(-len(metrics) // points))
    picked = metrics[stride - 1::stride]
    if metrics and (not picked or picked[-1] is not metrics[-1]):
        picked.append(metrics[-1])
    return [{"env_steps": m["env_steps"], "time_s": round(m["time_s"], 2), "episode_return": m["episode_return"],
             "value": value(m)} for m in picked]


# ------------------------------------------------------------------ rows
def judge(threshold: float | None, limit_s: float, value: float | None, started_s: float) -> tuple[str, str]:
    """``(status, why)``: "met" when ``value`` reaches ``threshold`` and the last update began
    within ``limit_s``; "missed" with the reason(s) otherwise; "curve only" without a bar."""
    if threshold is None:
        return "curve only", ""
    reasons = []
    if value is None or value < threshold:
        reasons.append(f"{'no result' if value is None else f'{value:.3f}'} < {threshold:.2f}")
    if started_s > limit_s:
        reasons.append(f"last update began at {started_s:.0f} s > limit {limit_s:.0f} s")
    return ("missed", "; ".join(reasons)) if reasons else ("met", "")


def target_row(facts: RunFacts, target: Target) -> dict[str, Any]:
    """The JSON row of ``target`` measured by the run ``facts``."""
    m = facts.metrics
    row: dict[str, Any] = {
        "key": target.env, "kind": "hard" if target.env in HARD_TARGETS else "target", "env": target.env,
        "metric": target.metric, "threshold": target.threshold, "limit_min": target.minutes,
        "reference": target.reference, "run": str(facts.run),
        "measured_at": datetime.datetime.now(datetime.timezone.utc).isoformat(timespec="seconds"),
        "config_minutes": facts.config.get("minutes"), "train_s": m[-1]["time_s"] if m else None,
        "env_steps": m[-1]["env_steps"] if m else None, "updates": m[-1]["update"] if m else None,
        "greedy": None, "greedy_ci95": None, "eval_episodes": None,
        "recipe": facts.recipe, "not_plain": non_default_settings(facts.config),
        "eval_reference": (facts.evaluation or {}).get("reference"),
        "curve": training_curve(m, target.metric, facts.evaluation),
    }
    if facts.training:
        row.update(status="training", why="its writer lock is held")
    elif not m:
        row.update(status="no metrics", why="teacher/metrics.jsonl is empty")
    elif facts.evaluation is None:
        row.update(status="no eval.json", why="run `kdx evaluate RUN` (or pass --evaluate)")
    else:
        row["greedy"], row["greedy_ci95"] = greedy_result(facts.evaluation, target.metric)
        row["eval_episodes"] = facts.evaluation.get("episodes")
        row["status"], row["why"] = judge(target.threshold, target.limit_s, row["greedy"], last_update_start_s(m))
    return row


def peer_row(facts: RunFacts, peer: PeerTarget) -> dict[str, Any]:
    """The JSON row of the peer comparison read from ``facts``' training curve."""
    m = facts.metrics
    hit = first_crossing(m, peer.final_return, peer.window)
    final = smoothed_returns(m, peer.window)[-1] if m else None
    row = {"key": peer_key(peer), "kind": "peer", "env": peer.env, "metric": "training return",
           "threshold": peer.final_return, "limit_s": peer.limit_s, "peer": peer.peer,
           "peer_time_s": peer.peer_time_s, "peer_env_steps": peer.peer_env_steps, "window": peer.window,
           "run": str(facts.run), "crossing": hit, "final_return": final,
           "train_s": m[-1]["time_s"] if m else None, "env_steps": m[-1]["env_steps"] if m else None,
           "not_plain": non_default_settings(facts.config), "recipe": facts.recipe}
    if not m:
        row.update(status="no metrics", why="teacher/metrics.jsonl is empty")
    elif hit is not None and hit["time_s"] < peer.limit_s:
        row.update(status="met", why="")
    else:
        why = "never reached" if hit is None else f"reached at {hit['time_s']:.0f} s"
        row.update(status="training" if facts.training and hit is None else "missed",
                   why=f"{why}; must be < {peer.limit_s:.1f} s")
    return row


def rows_for(facts: RunFacts, targets: dict[str, Target], peer: PeerTarget | None = PEER) -> list[dict[str, Any]]:
    """The rows a run measures: its env's target (a bare curve row for an env without one) and,
    for the peer's env, the peer row."""
    target = targets.get(facts.env) or Target(facts.env, "win_rate" if facts.env.startswith("skirmish/")
                                              else "normalized_score", None, facts.config.get("minutes") or 0.0)
    rows = [target_row(facts, target)]
    if peer is not None and facts.env == peer.env:
        rows.append(peer_row(facts, peer))
    return rows


# ------------------------------------------------------------------ run mode
def _load1() -> float:
    return round(os.getloadavg()[0], 2)


def _subprocess_env() -> dict[str, str]:
    """The child's environment: this checkout importable, nothing else changed."""
    root = str(Path(__file__).resolve().parents[1])
    path = os.environ.get("PYTHONPATH", "")
    return {**os.environ, "PYTHONPATH": root + (os.pathsep + path if path else "")}


def _stop(proc: subprocess.Popen) -> None:
    """SIGTERM the child's process group, SIGKILL it 10 s later if it still runs."""
    os.killpg(proc.pid, signal.SIGTERM)
    try:
        proc.wait(timeout=10)
    except subprocess.TimeoutExpired:
        os.killpg(proc.pid, signal.SIGKILL)
        proc.wait()


def train_plain(env: str, run: Path, limit_s: float, grace_s: float, sample_every_s: float,
                console: Console) -> dict[str, Any]:
    """``python -m kdx train --env ENV --out RUN --quiet`` with a kill at ``limit_s + grace_s``;
    the run's wall time, exit code, whether the safety net fired and the load samples."""
    plain, _ = config_with_recipe(TeacherConfig, env, {"env": env})
    if abs(plain.minutes * 60 - limit_s) > 1e-6:
        console.print(f"[yellow]{env}: the recipe's minutes is {plain.minutes:g}, the limit is "
                      f"{limit_s / 60:g} min; the safety net ends the run at the limit + {grace_s:.0f} s[/]")
    cmd = [sys.executable, "-m", "kdx", "train", "--env", env, "--out", str(run), "--quiet"]
    console.print(f"[bold]{env}[/]: {' '.join(cmd[1:])} (limit {limit_s / 60:g} min)")
    load = {"before": _load1(), "during": [], "cores": os.cpu_count()}
    t0 = time.monotonic()
    proc = subprocess.Popen(cmd, env=_subprocess_env(), start_new_session=True)
    fired = False
    try:
        while True:
            remaining = limit_s + grace_s - (time.monotonic() - t0)
            if remaining <= 0:
                fired = True
                _stop(proc)
                break
            try:
                proc.wait(timeout=min(sample_every_s, remaining))
                break
            except subprocess.TimeoutExpired:
                load["during"].append(_load1())
    except BaseException:  # Ctrl-C does not reach the child's own session: stop it, then re-raise
        _stop(proc)
        raise
    wall_s = time.monotonic() - t0
    load["after"] = _load1()
    during = load["during"] or [load["after"]]
    load.update(during_mean=round(sum(during) / len(during), 2), during_max=max(during))
    return {"wall_s": round(wall_s, 1), "returncode": proc.returncode, "safety_net_fired": fired, "load": load}


def evaluate_plain(run: Path) -> str:
    """``python -m kdx evaluate RUN``; "" on success, else the tail of its output."""
    done = subprocess.run([sys.executable, "-m", "kdx", "evaluate", str(run)], env=_subprocess_env(),
                          capture_output=True, text=True)
    return "" if done.returncode == 0 else (done.stderr or done.stdout).strip()[-300:]


def measure(target: Target, runs_dir: Path, grace_s: float, sample_every_s: float,
            console: Console) -> list[dict[str, Any]]:
    """Train ``target.env`` with plain defaults, evaluate it, and return its rows."""
    run = runs_dir / target.env.replace("/", "_")
    training = train_plain(target.env, run, target.limit_s, grace_s, sample_every_s, console)
    if not RunLayout(run).teacher.config.is_file():
        return [{"key": target.env, "kind": "target", "env": target.env, "metric": target.metric,
                 "threshold": target.threshold, "limit_min": target.minutes, "reference": target.reference,
                 "run": str(run), "status": "failed", "why": f"kdx train wrote no teacher (exit code "
                 f"{training['returncode']})", **training}]
    failed = evaluate_plain(run)
    rows = rows_for(read_run(run), {target.env: target})
    for row in rows:
        row.update(training)
        if failed and row["kind"] != "peer":
            row.update(status="evaluate failed", why=failed)
    return rows


# ------------------------------------------------------------------ results: JSON, table, markdown
def merge_results(path: Path, rows: list[dict[str, Any]]) -> dict[str, Any]:
    """``path``'s entries with ``rows`` replacing the ones of the same key; written atomically."""
    previous = json.loads(path.read_text()) if path.is_file() else {}
    merged = {**previous, **{r["key"]: r for r in rows}}
    path.parent.mkdir(parents=True, exist_ok=True)
    atomic_write_text(path, json.dumps(merged, indent=2))
    return merged


def ordered_rows(results: dict[str, Any]) -> list[dict[str, Any]]:
    """The entries of this benchmark (older formats skipped) in table order: targets, peer, hard maps, others."""
    order = [*TARGETS, peer_key(PEER), *HARD_TARGETS]
    rows = [r for r in results.values() if isinstance(r, dict) and "kind" in r and "status" in r]
    return sorted(rows, key=lambda r: (order.index(r["key"]) if r["key"] in order else len(order), r["key"]))


def _pct(x: float | None, metric: str) -> str:
    return "-" if x is None else f"{x:.1%}" if metric == "win_rate" else f"{x:.3f}"


def table_cells(row: dict[str, Any]) -> dict[str, str]:
    """One row as the table's text cells (formatting happens only here)."""
    cores = (row.get("load") or {}).get("cores")
    load = row.get("load")
    load_text = (f"{load['before']:.1f}/{load['during_mean']:.1f}/{load['after']:.1f} ({cores} cores)"
                 if load else "not sampled")
    if row.get("safety_net_fired"):
        load_text += "; killed by the safety net"
    flags = " ".join(f"{k}={v}" for k, v in (row.get("not_plain") or {}).items())
    recipe = row.get("recipe") or {}
    settings = (recipe.get("name", "-") + ": " + " ".join(f"{k}={v}" for k, v in recipe.get("values", {}).items())
                if recipe else "no recipe recorded")
    if flags:
        settings += f" | differs from plain defaults: {flags}"
    if row["kind"] == "peer":
        hit = row.get("crossing")
        return {"target": f"{row['env']} vs {row['peer']}", "bar": f"return >= {row['threshold']}",
                "limit": f"< {row['limit_s']:.1f} s",
                "time used": f"{hit['time_s']:.0f} s" if hit else "-",
                "env steps": f"{hit['env_steps']:,}" if hit else "-",
                "result": "-" if row.get("final_return") is None else f"final return {row['final_return']:.1f}",
                "status": f"{row['status']}" + (f" ({row['why']})" if row.get("why") else ""),
                "settings": settings, "load": load_text, "run": Path(row["run"]).name}
    metric = row["metric"]
    ci = row.get("greedy_ci95")
    result = _pct(row.get("greedy"), metric) + (f" ± {_pct(ci, metric)}" if ci is not None and ci == ci else "")
    bar = "-" if row["threshold"] is None else f"{metric} >= {_pct(row['threshold'], metric)}"
    if row.get("reference") is not None:
        bar += f" (SC2 ref {row['reference']:.0%})"
    return {"target": row["env"], "bar": bar, "limit": f"{row['limit_min']:g} min",
            "time used": "-" if row.get("train_s") is None else f"{row['train_s']:.0f} s",
            "env steps": "-" if row.get("env_steps") is None else f"{row['env_steps']:,}",
            "result": result, "status": row["status"] + (f" ({row['why']})" if row.get("why") else ""),
            "settings": settings, "load": load_text, "run": Path(row["run"]).name}


COLUMNS = ("target", "bar", "limit", "time used", "env steps", "result", "status", "settings", "load", "run")


def print_table(rows: list[dict[str, Any]], console: Console) -> None:
    table = Table(title="kdx train with plain defaults, stopped at the limit, then kdx evaluate (greedy, 95% CI); "
                        "load: 1-min average before/during/after")
    for col in COLUMNS:
        table.add_column(col)
    for row in rows:
        table.add_row(*table_cells(row).values())
    console.print(table)


def markdown_table(rows: list[dict[str, Any]]) -> str:
    """The table as Markdown (for the closing note and ``benchmarks/measured/``)."""
    lines = ["| " + " | ".join(COLUMNS) + " |", "|" + "---|" * len(COLUMNS)]
    for row in rows:
        lines.append("| " + " | ".join(c.replace("|", "\\|") for c in table_cells(row).values()) + " |")
    note = (f"\nGreedy results from `kdx evaluate` (95% CI). Hard-map SC2 ref: {REFERENCE_NOTE} (not a bar). "
            "Load: `os.getloadavg()` 1-min average before/during(mean)/after the run.\n")
    return "\n".join(lines) + "\n" + note


# ------------------------------------------------------------------ curves
def plot_curves(rows: list[dict[str, Any]], path: Path, peer: PeerTarget | None = PEER) -> None:
    """One column per env row: the training curve against env steps (top) and training minutes
    (bottom), the bar, the limit, the greedy result as a marker, the SC2 reference dashed; on the
    peer's env, the peer's final return (dotted) and half its time."""
    import matplotlib

    matplotlib.use("Agg", force=True)
    import matplotlib.pyplot as plt

    rows = [r for r in rows if r.get("curve")]
    if not rows:
        return
    fig, axes = plt.subplots(2, len(rows), figsize=(4 * len(rows), 6.5), squeeze=False)
    for col, row in enumerate(rows):
        curve = row["curve"]
        values = [p["value"] for p in curve]
        normalised = any(v is not None for v in values)
        ys = values if normalised else [p["episode_return"] for p in curve]
        label = "training (sampled) " + (row["metric"].replace("_", " ") if normalised else "return")
        last = curve[-1]
        for ax, xs, x_last in ((axes[0][col], [p["env_steps"] for p in curve], last["env_steps"]),
                               (axes[1][col], [p["time_s"] / 60 for p in curve], last["time_s"] / 60)):
            ax.plot(xs, [float("nan") if y is None else y for y in ys], lw=1.2, label=label)
            if normalised and row.get("threshold") is not None:
                ax.axhline(row["threshold"], color="tab:green", lw=0.8, label="target")
            if normalised and row.get("reference") is not None:
                ax.axhline(row["reference"], color="tab:gray", ls="--", lw=0.8, label="SC2 MAPPO (reference)")
            if normalised and row.get("greedy") is not None:
                ax.plot([x_last], [row["greedy"]], "r*", ms=10, label="greedy (kdx evaluate)")
            if peer is not None and row["env"] == peer.env:
                level = normalised_score(peer.final_return, row.get("eval_reference")) if normalised else peer.final_return
                if level is not None:
                    ax.axhline(level, color="tab:purple", ls=":", lw=1.0,
                               label=f"{peer.peer} final ({peer.peer_env_steps / 1e6:g}M steps, {peer.peer_time_s:g} s)")
            ax.grid(alpha=0.3)
        if peer is not None and row["env"] == peer.env:
            axes[1][col].axvline(peer.limit_s / 60, color="tab:purple", ls=":", lw=0.8, label="half the peer's time")
        axes[1][col].axvline(row["limit_min"], color="tab:red", lw=0.8, label="time limit")
        axes[0][col].set_title(f"{row['env']}: {row['status']}", fontsize=9)
        axes[0][col].set_xlabel("env steps")
        axes[1][col].set_xlabel("training minutes")
        axes[0][col].legend(fontsize=6, loc="best")
        axes[1][col].legend(fontsize=6, loc="best")
    fig.tight_layout()
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=90)
    plt.close(fig)


# ------------------------------------------------------------------ the command
def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--env", action="append", help="train only this target env (repeatable)")
    p.add_argument("--hard", action="store_true", help="train the hard maps (2 h each) instead of the main targets")
    p.add_argument("--collect", nargs="+", metavar="RUN", help="tabulate finished run folders instead of training")
    p.add_argument("--evaluate", action="store_true",
                   help="with --collect: run `kdx evaluate RUN` first on each run that is not still training")
    p.add_argument("--runs-dir", help="where run mode trains (default: a temporary folder)")
    p.add_argument("--keep", action="store_true", help="keep the runs of a temporary --runs-dir")
    p.add_argument("--grace", type=float, default=GRACE_S, help="seconds past the limit before the hard kill")
    p.add_argument("--sample-every", type=float, default=SAMPLE_EVERY_S, help="seconds between load samples")
    p.add_argument("--out", default="benchmarks/results/teacher.json", help="results JSON (merged)")
    p.add_argument("--png", help="curves PNG (default: next to --out)")
    p.add_argument("--markdown", help="also write the table as Markdown to this file")
    return p.parse_args(argv)


def collect(runs: list[str], evaluate: bool, targets: dict[str, Target], console: Console) -> list[dict[str, Any]]:
    """The rows of finished run folders (``kdx evaluate`` first on each with ``evaluate``)."""
    rows = []
    for run in map(Path, runs):
        if evaluate and not _lock_held(RunLayout(run)):
            failed = evaluate_plain(run)
            if failed:
                console.print(f"[red]{run}: kdx evaluate failed[/]: {failed}")
        rows += rows_for(read_run(run), targets)
    return rows


def main(argv: list[str] | None = None, targets: dict[str, Target] | None = None) -> list[dict[str, Any]]:
    """Run or collect, then write the JSON, PNG and Markdown and print the table; the rows measured.
    ``targets`` replaces the target table (tests inject a short toy target)."""
    args = parse_args(argv)
    known = targets if targets is not None else {**TARGETS, **HARD_TARGETS}
    console = Console(width=240)
    if args.collect:
        rows = collect(args.collect, args.evaluate, known, console)
    else:
        chosen = args.env or list(targets or (HARD_TARGETS if args.hard else TARGETS))
        unknown = [e for e in chosen if e not in known]
        if unknown:
            raise KdxError(f"no target for {unknown}; known: {', '.join(known)}")
        runs_dir = Path(args.runs_dir) if args.runs_dir else Path(tempfile.mkdtemp(prefix="kdx-teacher-bench-"))
        runs_dir.mkdir(parents=True, exist_ok=True)
        rows = []
        for env in chosen:
            rows += measure(known[env], runs_dir, args.grace, args.sample_every, console)
            merge_results(Path(args.out), rows)  # hours of runs: keep each result as soon as it is in
        if args.runs_dir or args.keep:
            console.print(f"runs kept in {runs_dir}")
        else:
            shutil.rmtree(runs_dir, ignore_errors=True)
    out = Path(args.out)
    merged = merge_results(out, rows)
    shown = ordered_rows(merged)
    print_table(shown, console)
    png = Path(args.png) if args.png else out.with_suffix(".png")
    plot_curves([r for r in shown if r["kind"] != "peer"], png)
    console.print(f"wrote {out} and {png}")
    if args.markdown:
        Path(args.markdown).write_text(markdown_table(shown))
        console.print(f"wrote {args.markdown}")
    return rows


if __name__ == "__main__":
    try:
        main()
    except KdxError as exc:
        sys.exit(f"error: {exc}")
