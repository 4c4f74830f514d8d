"""Export targets (issue 6), measured: export time per target, parity and latency per model,
and the int8 (rpi) students' closed-loop return against the fp32 students'.

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

from kdx.export.bundle import ExportConfig, export_bundle
from kdx.runtime.bench import bench_policy
from kdx.runtime.bundle import Bundle
from kdx.runtime.manifest import load_manifest
from kdx.runtime.profiler import device_info

REPO = Path(__file__).resolve().parents[1]
RESULTS = REPO / "benchmarks" / "results"
TARGET_ORDER = ("x86", "rpi", "jetson")


def make_bc_run(run: Path, env_name: str = "mpe/simple_spread", steps: int = 300) -> Path:
    """A run folder with oracle-cloned students (hidden 32, tanh) and an untrained GRU teacher."""
    from kdx.envs.mpe.oracles import ORACLES
    from kdx.envs.registry import make
    from kdx.trainer.checkpoint import (
        RunPaths,
        atomic_save_tensors,
        teacher_tensors,
        write_run_config,
    )
    from kdx.trainer.config import TeacherConfig
    from kdx.trainer.student_io import StudentPaths, publish_students, write_students_config
    from kdx.trainer.students import StudentPolicy
    from kdx.trainer.teacher import Teacher

    torch.manual_seed(0)
    env = make(env_name, num_envs=128, seed=0)
    step = env.reset()
    names = env.spec.agent_names
    data = {n: ([], []) for n in names}
    for _ in range(50):
        actions = ORACLES[env_name](env)
        for i, n in enumerate(names):
            data[n][0].append(step.obs[i])
            data[n][1].append(actions[:, i])
        step = env.step(actions)
    students = {}
    for spec in env.spec.agents:
        x, y = torch.cat(data[spec.name][0]), torch.cat(data[spec.name][1])
        student = StudentPolicy(spec.obs_dim, spec.n_actions, (32,))
        student.set_obs_normalisation(x.mean(0), x.std(0))
        opt = torch.optim.Adam(student.parameters(), 1e-2)
        for _ in range(steps):
            loss = torch.nn.functional.cross_entropy(student(x)[0], y)
            opt.zero_grad()
            loss.backward()
            opt.step()
        students[spec.name] = student.eval()
    paths = StudentPaths(run)
    write_students_config(paths, {"env": env_name, "distill": {"note": "behaviour cloning (benchmark)"},
                                  "agents": {n: s.arch_json() for n, s in students.items()}})
    publish_students(paths, students)
    config = TeacherConfig(env=env_name, hidden="64,64", recurrent=True)
    teacher = Teacher.build(config, env.spec)
    write_run_config(RunPaths(run), config, env.spec.to_json())
    atomic_save_tensors(RunPaths(run).weights, teacher_tensors(teacher))
    return run


class BundlePolicy:
    """Evaluation adapter: one runtime policy per agent, batch-1 calls over the env copies."""

    def __init__(self, bundle: Bundle, name: str, backend: str = "onnxruntime") -> None:
        self.name = name
        self.policies = [bundle.policy(a, backend) for a in bundle.agent_names]

    def reset(self, env) -> None:
        for p in self.policies:
            p.reset()

    def act(self, step) -> torch.Tensor:
        n = step.obs[0].shape[0]
        out = torch.zeros(n, len(self.policies), dtype=torch.long)
        for i, policy in enumerate(self.policies):
            obs = step.obs[i].numpy().astype(np.float32)
            mask = step.action_mask[i].numpy()
            for row in range(n):
                out[row, i] = policy.act(obs[row], mask[row])
        return out


class ForcedInt8Students:
    """Every student quantised to int8 (every matmul), shipped or not: what int8 costs in the
    closed loop even where the parity bar sent the bundle back to fp32."""

    name = "students_int8_forced"

    def __init__(self, x86_bundle: Path, calib_path: Path, folder: Path, sources: list) -> None:
        import onnxruntime as ort

        from kdx.export.calib import CalibData
        from kdx.export.parity import measure_parity
        from kdx.export.quantize import quantize_int8

        calib = CalibData.load(calib_path)
        folder.mkdir(parents=True, exist_ok=True)
        self.sessions, self.parity = [], {}
        for source in sources:
            out = folder / f"{source.name}.int8.onnx"
            quantize_int8(x86_bundle / f"{source.name}.fp32.onnx", out, calib.inputs(source))
            self.parity[source.name] = measure_parity(source, out, "int8", calib.inputs(source)).to_json()
            self.sessions.append(ort.InferenceSession(str(out), providers=["CPUExecutionProvider"]))

    def reset(self, env) -> None:
        pass

    def act(self, step) -> torch.Tensor:
        n = step.obs[0].shape[0]
        out = torch.zeros(n, len(self.sessions), dtype=torch.long)
        for i, session in enumerate(self.sessions):
            obs = step.obs[i].numpy().astype(np.float32)
            mask = step.action_mask[i].numpy()
            for row in range(n):
                feed = {"obs": obs[row:row + 1], "action_mask": mask[row:row + 1]}
                out[row, i] = int(session.run(["action"], feed)[0].reshape(-1)[0])
        return out


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
    for target in TARGET_ORDER:
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

    from kdx.export.sources import load_students, student_sources
    from kdx.trainer.evaluate import evaluate_policies

    students, env_name = load_students(run)
    env_name = env_name or json.loads((run / "teacher" / "config.json").read_text())["teacher"]["env"]
    forced = ForcedInt8Students(run / "bundles" / "x86", run / "bundles" / "rpi" / "calib.npz",
                                scratch / "forced_int8", student_sources(students, None))
    rpi_precisions = {e.name: e.precision for e in load_manifest(run / "bundles" / "rpi").agents}
    policies = {
        "students_fp32_torch": TorchStudents(students),
        "students_fp32_onnx_x86": BundlePolicy(Bundle.load(run / "bundles" / "x86"), "students_fp32_onnx_x86"),
        "students_rpi_bundle": BundlePolicy(Bundle.load(run / "bundles" / "rpi"), "students_rpi_bundle"),
        "students_int8_forced": forced,
        "students_fp16_onnx_jetson": BundlePolicy(Bundle.load(run / "bundles" / "jetson"), "students_fp16_onnx_jetson"),
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
        m = json.loads((run / "bundles" / target / "manifest.json").read_text())
        table.add_row(target, m["precision"], f"{e['wall_s']:.2f}", f"{e['phases_s']['record']:.2f}",
                      f"{e['phases_s']['export_and_parity']:.2f}", f"{e['phases_s']['write']:.2f}",
                      f"{e['bundle_bytes'] / 1024:.0f}", f"{e['tar_bytes'] / 1024:.0f}", str(len(e["warnings"])))
    console.print(table)
    console.print(f"all three targets: {export_sum:.2f} s (target < 30 s on a 2-core machine)")

    table = Table(title="parity (onnxruntime vs torch, recorded observations) and batch-1 latency (onnxruntime)")
    for col in ("target", "role", "agent", "model", "how", "agreement", "max |Δlogit|", "max gap flipped", "passed",
                "shipped", "p50 µs", "p99 µs"):
        table.add_column(col, justify="left" if col in ("target", "role", "agent", "model") else "right")
    lat = {(r["target"], r["role"], r["agent"]): r for r in latency_rows}
    for r in parity_rows:
        if "dynamic" in r["model"]:
            continue
        shipped = r["shipped"] and r["passed"]
        la = lat.get((r["target"], r["role"], r["agent"])) if shipped else None
        table.add_row(r["target"], r["role"], r["agent"], r["model"], r["note"], f"{r['action_agreement']:.2%}",
                      f"{r['max_abs_logit_diff']:.2e}", f"{r['max_ref_gap_where_disagreeing']:.3f}",
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
    table = Table(title="int8 forced on every student (every matmul int8), parity on the rpi calibration set")
    for col in ("agent", "agreement", "max |Δlogit|", "mean |Δlogit|", "max gap flipped"):
        table.add_column(col, justify="left" if col == "agent" else "right")
    for agent, r in forced.parity.items():
        table.add_row(agent, f"{r['action_agreement']:.2%}", f"{r['max_abs_logit_diff']:.3f}",
                      f"{r['mean_abs_logit_diff']:.4f}", f"{r['max_ref_gap_where_disagreeing']:.3f}")
    console.print(table)
    load_after = os.getloadavg()
    console.print(f"load average before/after: {load_before[0]:.2f} / {load_after[0]:.2f}; cpus: {os.cpu_count()}")

    RESULTS.mkdir(parents=True, exist_ok=True)
    out = {"source": source, "device": device_info(), "load_average_before": load_before,
           "load_average_after": load_after, "exports": exports, "export_total_s": export_sum,
           "parity": parity_rows, "latency": latency_rows, "closed_loop": closed, "closed_loop_s": eval_s,
           "rpi_precisions": rpi_precisions, "forced_int8_parity": forced.parity}
    (RESULTS / "export.json").write_text(json.dumps(out, indent=2, default=str))
    console.print(f"wrote {RESULTS / 'export.json'}")
    shutil.rmtree(scratch, ignore_errors=True)


if __name__ == "__main__":
    main()
