"""Export targets (issue 6), measured: export time per target, parity and latency per model,
and the int8 (rpi) students' closed-loop return against the fp32 students'. Every int8 recipe
(``kdx.export.quantize.INT8_RECIPES``) is also forced on every student and measured on held-out
observations (another rollout seed than the calibration rows), in the closed loop and in latency.

Usage:
    .venv/bin/python benchmarks/export.py [--run RUN] [--episodes N] [--iters N]

With ``--run`` the run's students/ and teacher/ are copied into a scratch folder (the run itself
is not touched) and exported there; without it a 3-agent MPE simple_spread run is made on the
spot: students behaviour-cloned from the scripted oracle, and an untrained recurrent teacher
(only its export is measured). Prints tables and writes benchmarks/results/export.json.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import tempfile
import time
from pathlib import Path

import numpy as np
import torch
from rich.console import Console
from rich.table import Table

from kdx.devices.targets import TARGETS
from kdx.export.bundle import ExportConfig, export_bundle
from kdx.export.parity import NEAR_TIE_GAP
from kdx.layout import RunLayout
from kdx.runtime.bench import bench_policy
from kdx.runtime.bundle import Bundle
from kdx.runtime.manifest import load_manifest
from kdx.runtime.profiler import device_info

REPO = Path(__file__).resolve().parents[1]
RESULTS = REPO / "benchmarks" / "results"


def make_bc_run(run: Path, env_name: str = "mpe/simple_spread", steps: int = 300) -> Path:
    """A run folder with oracle-cloned students (hidden 32, tanh) and an untrained GRU teacher."""
    from kdx.envs.registry import make
    from kdx.trainer.distill.cloning import clone_students
    from kdx.trainer.distill.store import save_students
    from kdx.trainer.teacher.config import TeacherConfig
    from kdx.trainer.teacher.model import Teacher
    from kdx.trainer.teacher.store import save_teacher

    spec = make(env_name, num_envs=1).spec
    students = clone_students(env_name, num_envs=128, rollout_steps=50, train_steps=steps)
    save_students(run, env_name, students, {"note": "behaviour cloning (benchmark)"})
    save_teacher(run, Teacher.build(TeacherConfig(env=env_name, hidden="64,64", recurrent=True), spec))
    return run


def _per_row_actions(step, deciders) -> torch.Tensor:
    """Actions ``long [envs, agents]`` from one batch-1 decision per env and agent:
    ``deciders[i](obs_row, mask_row) -> int`` (float32 observation, bool mask)."""
    n = step.obs[0].shape[0]
    out = torch.zeros(n, len(deciders), dtype=torch.long)
    for i, decide in enumerate(deciders):
        obs = step.obs[i].numpy().astype(np.float32)
        mask = step.action_mask[i].numpy()
        for row in range(n):
            out[row, i] = decide(obs[row], mask[row])
    return out

class BundlePolicy:
    """Evaluation adapter: one runtime policy per agent, batch-1 calls over the env copies."""

    def __init__(self, bundle: Bundle, name: str, backend: str = "onnxruntime") -> None:
        self.name = name
        self.policies = [bundle.policy(a, backend) for a in bundle.agent_names]

    def reset(self, env) -> None:
        for p in self.policies:
            p.reset()

    def act(self, step) -> torch.Tensor:
        return _per_row_actions(step, [policy.act for policy in self.policies])


class ForcedInt8Students:
    """Every student quantised to int8 with ``recipe`` (every matmul), shipped or not: what int8
    costs in the closed loop even where the parity bar sent the bundle back to fp32.

    Quantised on the rpi bundle's recorded observations; parity is measured on ``heldout``
    (observations recorded with another seed), so the calibration rows are not the test rows."""

    def __init__(self, recipe: str, x86_bundle: Path, calib_path: Path, heldout, folder: Path, sources: list,
                 iters: int) -> None:
        import onnxruntime as ort

        from kdx.export.calib import CalibData
        from kdx.export.parity import measure_parity
        from kdx.export.quantize import quantize_int8, with_static_batch

        self.name = f"students_int8_forced_{recipe}"
        calib = CalibData.load(calib_path)
        folder.mkdir(parents=True, exist_ok=True)
        self.sessions, self.parity, self.quantize_s, self.p50_us = [], {}, 0.0, {}
        for source in sources:
            out = folder / f"{source.name}.{recipe}.int8.onnx"
            t = time.perf_counter()
            quantize_int8(x86_bundle / f"{source.name}.fp32.onnx", out, calib.inputs(source), recipe=recipe)
            self.quantize_s += time.perf_counter() - t
            static = with_static_batch(out, folder / f"{source.name}.{recipe}.int8.b1.onnx")
            self.parity[source.name] = {
                "calib_rows": measure_parity(source, static, "int8", calib.inputs(source)).to_json(),
                "heldout_rows": measure_parity(source, static, "int8", heldout.inputs(source)).to_json(),
            }
            options = ort.SessionOptions()
            options.intra_op_num_threads = 1
            self.sessions.append(ort.InferenceSession(str(static), options, providers=["CPUExecutionProvider"]))
            self.p50_us[source.name] = _session_p50_us(self.sessions[-1], calib.inputs(source), iters)

    def reset(self, env) -> None:
        pass

    def act(self, step) -> torch.Tensor:
        def decide(session):
            def act(obs, mask):
                feed = {"obs": obs[None], "action_mask": mask[None]}
                return int(session.run(["action"], feed)[0].reshape(-1)[0])
            return act
        return _per_row_actions(step, [decide(s) for s in self.sessions])


def _session_p50_us(session, inputs: dict, iters: int) -> float:
    """Median batch-1 ``session.run`` time over recorded rows, after 200 warm-up calls."""
    feeds = [{"obs": inputs["obs"][r:r + 1], "action_mask": inputs["action_mask"][r:r + 1]} for r in range(200)]
    for feed in feeds:
        session.run(["action"], feed)
    samples = []
    for i in range(iters):
        start = time.perf_counter_ns()
        session.run(["action"], feeds[i % len(feeds)])
        samples.append(time.perf_counter_ns() - start)
    return float(np.percentile(samples, 50)) / 1e3


class TorchStudents:
    """The fp32 torch students, greedy: the reference the int8 students are compared with."""

    name = "students_fp32_torch"

    def __init__(self, students: dict) -> None:
        self.students = list(students.values())

    def reset(self, env) -> None:
        pass

    @torch.no_grad()
    def act(self, step) -> torch.Tensor:
        cols = []
        for i, s in enumerate(self.students):
            logits = s(step.obs[i].float())[0].masked_fill(~step.action_mask[i], -1e9)
            cols.append(logits.argmax(-1))
        return torch.stack(cols, dim=1)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--run", type=Path, default=None, help="run folder with students/ (and teacher/)")
    parser.add_argument("--episodes", type=int, default=200, help="closed-loop episodes per policy")
    parser.add_argument("--iters", type=int, default=5000, help="latency samples per model")
    args = parser.parse_args()
    console = Console(width=200)  # wide tables even when piped
    torch.set_num_threads(1)
    load_before = os.getloadavg()
    scratch = Path(tempfile.mkdtemp(prefix="kdx-export-bench-"))
    run = scratch / "run"
    if args.run is not None:
        run.mkdir()
        for part in ("students", "teacher"):
            if (args.run / part).exists():
                shutil.copytree(args.run / part, run / part, ignore=shutil.ignore_patterns("checkpoints", "tb"))
        source = str(args.run)
    else:
        t = time.perf_counter()
        make_bc_run(run)
        source = f"behaviour-cloned students (made in {time.perf_counter() - t:.1f} s)"

    exports, parity_rows, latency_rows = {}, [], []
    for target in TARGETS:
        start = time.perf_counter()
        result = export_bundle(ExportConfig(run, target, force=True))
        wall = time.perf_counter() - start
        exports[target] = {"wall_s": wall, "phases_s": result.seconds, "warnings": result.warnings,
                           "bundle_bytes": sum(p.stat().st_size for p in result.bundle_dir.rglob("*") if p.is_file()),
                           "tar_bytes": result.tarball.stat().st_size}
        shipped = {(e.role, e.name): e for e in result.manifest.entries()}
        for r in result.parity:
            row = {"target": target, **r.to_json(),
                   "shipped": shipped[(r.role, r.agent)].file_of_kind("onnx").path.endswith(r.model)}
            parity_rows.append(row)
        bundle = Bundle.load(result.bundle_dir)
        for entry in result.manifest.entries():
            policy = bundle.policy(entry.name, "onnxruntime", role=entry.role)
            stats, _ = bench_policy(policy, args.iters, warmup=500)
            latency_rows.append({"target": target, "role": entry.role, "agent": entry.name,
                                 "precision": entry.precision, "backend": "onnxruntime",
                                 "model_bytes": entry.file_of_kind("onnx").size_bytes, **stats.to_dict()})
    export_sum = sum(e["wall_s"] for e in exports.values())

    from kdx.export.calib import record_rollouts
    from kdx.export.quantize import INT8_RECIPES
    from kdx.export.sources import load_students, student_sources
    from kdx.trainer.common.evaluate import evaluate_policies

    students, env_name = load_students(run)
    env_name = env_name or json.loads(RunLayout(run).teacher.config.read_text())["teacher"]["env"]
    sources = student_sources(students, None)
    heldout = record_rollouts(env_name, sources, (), 4096, 16, seed=31_337)  # the bundles record with 20_000
    forced = {recipe: ForcedInt8Students(recipe, RunLayout(run).bundle("x86"), RunLayout(run).bundle("rpi") / "calib.npz",
                                         heldout, scratch / "forced_int8", sources, args.iters)
              for recipe in INT8_RECIPES}
    rpi_precisions = {e.name: e.precision for e in load_manifest(RunLayout(run).bundle("rpi")).agents}
    policies = {
        "students_fp32_torch": TorchStudents(students),
        "students_fp32_onnx_x86": BundlePolicy(Bundle.load(RunLayout(run).bundle("x86")), "students_fp32_onnx_x86"),
        "students_rpi_bundle": BundlePolicy(Bundle.load(RunLayout(run).bundle("rpi")), "students_rpi_bundle"),
        **{f.name: f for f in forced.values()},
        "students_fp16_onnx_jetson": BundlePolicy(Bundle.load(RunLayout(run).bundle("jetson")), "students_fp16_onnx_jetson"),
    }
    t = time.perf_counter()
    closed = evaluate_policies(env_name, policies, args.episodes)
    eval_s = time.perf_counter() - t
    ref = closed["policies"]["students_fp32_torch"]
    for r in closed["policies"].values():
        if ref["normalized_score"] and r["normalized_score"] is not None:
            r["score_retention_vs_fp32"] = r["normalized_score"] / ref["normalized_score"]
        r["return_ratio_vs_fp32"] = r["mean_return"] / ref["mean_return"] if ref["mean_return"] else None

    table = Table(title=f"export time per target (source: {source})")
    for col in ("target", "precision", "wall s", "record s", "export+parity s", "write s", "bundle KiB", "tar KiB", "warnings"):
        table.add_column(col, justify="right" if col not in ("target", "warnings") else "left")
    for target, e in exports.items():
        m = json.loads((RunLayout(run).bundle(target) / "manifest.json").read_text())
        table.add_row(target, m["precision"], f"{e['wall_s']:.2f}", f"{e['phases_s']['record']:.2f}",
                      f"{e['phases_s']['export_and_parity']:.2f}", f"{e['phases_s']['write']:.2f}",
                      f"{e['bundle_bytes'] / 1024:.0f}", f"{e['tar_bytes'] / 1024:.0f}", str(len(e["warnings"])))
    console.print(table)
    console.print(f"all three targets: {export_sum:.2f} s (target < 30 s on a 2-core machine)")

    table = Table(title="parity (onnxruntime vs torch, recorded observations) and batch-1 latency (onnxruntime)")
    for col in ("target", "role", "agent", "model", "how", "agreement", f"agree gap>{NEAR_TIE_GAP}", "max |Δlogit|",
                "max gap flipped", "passed", "shipped", "p50 µs", "p99 µs"):
        table.add_column(col, justify="left" if col in ("target", "role", "agent", "model") else "right")
    lat = {(r["target"], r["role"], r["agent"]): r for r in latency_rows}
    for r in parity_rows:
        if "dynamic" in r["model"]:
            continue
        shipped = r["shipped"] and r["passed"]
        la = lat.get((r["target"], r["role"], r["agent"])) if shipped else None
        how = ", ".join(x for x in (r["note"], r.get("int8_recipe", "")) if x)
        table.add_row(r["target"], r["role"], r["agent"], r["model"], how, f"{r['action_agreement']:.2%}",
                      f"{r['action_agreement_beyond_near_ties']:.2%}", f"{r['max_abs_logit_diff']:.2e}", f"{r['max_ref_gap_where_disagreeing']:.3f}",
                      "yes" if r["passed"] else "no",
                      "yes" if shipped else "no",
                      f"{la['p50_us']:.1f}" if la else "-", f"{la['p99_us']:.1f}" if la else "-")
    console.print(table)

    table = Table(title=f"closed loop, {env_name}, {args.episodes} episodes per policy, same seeds ({eval_s:.0f} s)")
    for col in ("policy", "mean return ± 95% CI", "normalised score", "score retention vs fp32"):
        table.add_column(col, justify="left" if col == "policy" else "right")
    for name, r in closed["policies"].items():
        score = "-" if r["normalized_score"] is None else f"{r['normalized_score']:.3f} ± {r['normalized_score_ci95']:.3f}"
        retention = r.get("score_retention_vs_fp32")
        table.add_row(name, f"{r['mean_return']:.2f} ± {r['return_ci95']:.2f}", score,
                      "-" if retention is None else f"{retention:.1%}")
    console.print(table)
    console.print(f"rpi bundle precisions: {rpi_precisions}")
    table = Table(title="int8 forced on every student (every matmul int8), per recipe: parity on the rpi bundle's "
                        "calibration rows and on 4096 held-out rows (another seed), batch-1 onnxruntime latency")
    for col in ("recipe", "agent", "agreement calib", "agreement held-out", f"held-out gap>{NEAR_TIE_GAP}",
                "near ties", "max |Δlogit|", "mean |Δlogit|", "max gap flipped", "p50 µs"):
        table.add_column(col, justify="left" if col in ("recipe", "agent") else "right")
    fp32_p50 = {}  # the fp32 students timed the same way (bare session.run) as the forced int8 ones
    import onnxruntime as ort

    for source in sources:
        options = ort.SessionOptions()
        options.intra_op_num_threads = 1
        session = ort.InferenceSession(str(RunLayout(run).bundle("x86") / f"{source.name}.fp32.onnx"), options,
                                       providers=["CPUExecutionProvider"])
        fp32_p50[source.name] = _session_p50_us(session, heldout.inputs(source), args.iters)
    for recipe, f in forced.items():
        for agent, both in f.parity.items():
            c, h = both["calib_rows"], both["heldout_rows"]
            table.add_row(recipe, agent, f"{c['action_agreement']:.2%}", f"{h['action_agreement']:.2%}",
                          f"{h['action_agreement_beyond_near_ties']:.2%}", f"{h['near_tie_fraction']:.1%}",
                          f"{h['max_abs_logit_diff']:.3f}", f"{h['mean_abs_logit_diff']:.4f}",
                          f"{h['max_ref_gap_where_disagreeing']:.3f}", f"{f.p50_us[agent]:.1f}")
    console.print(table)
    console.print("fp32 students, batch-1 onnxruntime session.run p50 µs (as the int8 column): "
                  + ", ".join(f"{a} {v:.1f}" for a, v in fp32_p50.items()))
    console.print("int8 recipes: " + "; ".join(f"{k}: {r.description}" for k, r in INT8_RECIPES.items())
                  + f" (rpi uses {TARGETS['rpi'].int8_recipe})")
    load_after = os.getloadavg()
    console.print(f"load average before/after: {load_before[0]:.2f} / {load_after[0]:.2f}; cpus: {os.cpu_count()}")

    RESULTS.mkdir(parents=True, exist_ok=True)
    out = {"source": source, "device": device_info(), "load_average_before": load_before,
           "load_average_after": load_after, "exports": exports, "export_total_s": export_sum,
           "parity": parity_rows, "latency": latency_rows, "closed_loop": closed, "closed_loop_s": eval_s,
           "rpi_precisions": rpi_precisions, "fp32_session_p50_us": fp32_p50,
           "forced_int8": {recipe: {"parity": f.parity, "quantize_s": f.quantize_s, "p50_us": f.p50_us}
                           for recipe, f in forced.items()}}
    (RESULTS / "export.json").write_text(json.dumps(out, indent=2, default=str))
    console.print(f"wrote {RESULTS / 'export.json'}")
    shutil.rmtree(scratch, ignore_errors=True)


if __name__ == "__main__":
    main()
