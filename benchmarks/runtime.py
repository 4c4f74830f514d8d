"""Runtime latency targets, measured side by side in one run (issue 7).

Builds a bundle like the one `kdx export` writes for MPE simple_spread (3 students obs 18 ->
32 -> 32 -> 5, tanh; a shared 3 x 256 MAPPO-style teacher with LayerNorm and a one-hot agent id)
with random weights (plus a one-hidden-layer 18 -> 32 -> 5 student), then measures, batch 1,
one process:

* bare onnxruntime IOBinding on the student model: the public ``run_with_iobinding`` call, and
  the C++ binding with a preallocated RunOptions (what the runtime uses), each with and without
  copying a fresh observation into the bound input;
* ``policy.act`` on every backend and on ``auto`` (which times the backends per model and keeps
  the fastest), students and teacher, and the teacher/student p50 ratio within each runtime
  (onnxruntime/onnxruntime, numpy/numpy, auto/auto);
* the ``serve`` round trip (server in a subprocess, client here, loopback TCP), with the default
  receive spin on both ends and with spinning off (``--spin-us 0``: blocking receives only), and
  over a Unix domain socket (``--unix``);
* resident memory over 1,000,000 decisions.

Usage: .venv/bin/python benchmarks/runtime.py [--iters N] [--memory-decisions N]
Prints a table and writes benchmarks/results/runtime.json (raw samples included).
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
from rich.console import Console
from rich.table import Table

from kdx.fileio import atomic_write_text
from kdx.runtime.bench import bench_policy, random_observations
from kdx.runtime.bundle import AUTO, Bundle
from kdx.runtime.profiler import LatencyStats, current_rss_mib, device_info, time_calls
from kdx.runtime.protocol import Client
from kdx.runtime.testing import make_test_bundle, start_serve_process, targets_table

REPO = Path(__file__).resolve().parents[1]
RESULTS = REPO / "benchmarks" / "results"
RUNTIMES = ("onnxruntime", "numpy", AUTO)
SMALL = "student 18-32-5"  # the role label of the one-hidden-layer student's rows


def bare_onnxruntime(model: Path, iters: int, warmup: int) -> dict[str, tuple[LatencyStats, np.ndarray]]:
    """The same student model run directly with onnxruntime IOBinding (no kdx code on the path
    except the shared session options)."""
    import onnxruntime as ort

    from kdx.runtime.backends.onnxruntime_backend import make_session_options

    session = ort.InferenceSession(model.read_bytes(), make_session_options(ort), providers=["CPUExecutionProvider"])
    obs_buf = np.zeros((1, 18), np.float32)
    logits = np.zeros((1, 5), np.float32)
    action = np.zeros((1,), np.int64)
    values = [ort.OrtValue.ortvalue_from_numpy(a) for a in (obs_buf, logits, action)]
    binding = session.io_binding()
    binding.bind_ortvalue_input("obs", values[0])
    binding.bind_ortvalue_output("logits", values[1])
    binding.bind_ortvalue_output("action", values[2])
    run_options = ort.RunOptions()
    c_run, c_binding = session._sess.run_with_iobinding, binding._iobinding
    rows = list(random_observations(18))
    n = len(rows)
    public = session.run_with_iobinding

    def public_copy(i: int) -> int:
        obs_buf[0] = rows[i % n]
        public(binding)
        return action.item()

    def c_level_copy(i: int) -> int:
        obs_buf[0] = rows[i % n]
        c_run(c_binding, run_options)
        return action.item()

    out = {}
    for name, call in (("public run_with_iobinding", lambda i: public(binding)),
                       ("public + obs copy + action read", public_copy),
                       ("C++ binding + RunOptions", lambda i: c_run(c_binding, run_options)),
                       ("C++ binding + obs copy + action read", c_level_copy)):
        samples = time_calls(call, iters, warmup)
        out[name] = (LatencyStats.from_samples_ns(samples), samples)
    return out


SERVE_SPIN_US = 200.0  # the default of `kdx-runtime serve --spin-us` and of Client


def serve_round_trip(bundle_dir: Path, iters: int, warmup: int, backend: str, spin_us: float,
                     unix: Path | None = None) -> tuple[LatencyStats, np.ndarray, dict]:
    """Round trips of one client here against ``kdx-runtime serve`` in a subprocess; ``spin_us``
    is both the server's ``--spin-us`` and the client's receive spin; ``unix``: serve on that
    Unix domain socket instead of TCP loopback."""
    transport = ["--unix", str(unix)] if unix is not None else ["--port", "0"]
    process, address = start_serve_process(bundle_dir, "agent_0", *transport, "--backend", backend,
                                           "--spin-us", str(spin_us), cwd=REPO)
    try:
        rows = list(random_observations(18))
        n = len(rows)
        with Client(**address, spin_us=spin_us) as client:
            act = client.act
            samples = time_calls(lambda i: act(rows[i % n]), iters, warmup)
            stats = client.stats()
    finally:
        process.terminate()
        process.communicate(timeout=10)
    return LatencyStats.from_samples_ns(samples), samples, stats


def memory_growth(bundle: Bundle, backend: str, decisions: int) -> dict[str, float]:
    policy = bundle.policy("agent_0", backend)
    rows = list(random_observations(18))
    n = len(rows)
    act = policy.act
    for i in range(20_000):  # warm-up: allocator pools and caches settle first
        act(rows[i % n])
    before = current_rss_mib()
    start = time.perf_counter()
    for i in range(decisions):
        act(rows[i % n])
    seconds = time.perf_counter() - start
    after = current_rss_mib()
    return {"decisions": decisions, "rss_before_mib": before, "rss_after_mib": after,
            "growth_mib": after - before, "seconds": seconds}


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--iters", type=int, default=20_000, help="timed decisions per row")
    parser.add_argument("--warmup", type=int, default=2_000, help="untimed decisions first")
    parser.add_argument("--memory-decisions", type=int, default=1_000_000)
    parser.add_argument("--out", type=Path, default=RESULTS / "runtime.json")
    args = parser.parse_args(argv)
    console = Console(width=max(Console().width, 140))
    load_before = os.getloadavg()

    with tempfile.TemporaryDirectory() as tmp:
        bundle_dir = make_test_bundle(Path(tmp) / "bundle", student_hidden=(32, 32), student_activation="tanh",
                                      teacher_hidden=(256, 256, 256), teacher_mappo=True)
        bundle = Bundle.load(bundle_dir)
        bare = bare_onnxruntime(bundle_dir / "agent_0.fp32.onnx", args.iters, args.warmup)
        runtime: dict[tuple[str, str, str], tuple[LatencyStats, np.ndarray]] = {}
        chosen: dict[tuple[str, str, str], dict] = {}  # what auto picked, and what it measured

        def measure(bundle: Bundle, backend: str, role: str, agent: str, key_role: str) -> None:
            policy = bundle.policy(agent, backend, role)
            runtime[(backend, key_role, agent)] = bench_policy(policy, args.iters, args.warmup)
            if backend == AUTO:
                chosen[(backend, key_role, agent)] = {"backend": policy.backend_name,
                                                      "auto_selection": policy.selection}
        for backend in RUNTIMES:
            for role, agents in (("student", bundle.agent_names), ("teacher", ["agent_0"])):
                for agent in agents:
                    measure(bundle, backend, role, agent, role)
        # The same students with one hidden layer of 32 (the sizing's smallest MPE student).
        small = Bundle.load(make_test_bundle(Path(tmp) / "small", student_hidden=(32,), student_activation="tanh",
                                             teacher_hidden=None))
        for backend in RUNTIMES:
            measure(small, backend, "student", "agent_0", SMALL)
        serve: dict[str, tuple[LatencyStats, np.ndarray, dict]] = {}
        for backend, spin_us in ((AUTO, SERVE_SPIN_US), (AUTO, 0.0), ("onnxruntime", SERVE_SPIN_US)):
            serve[f"{backend}, spin {spin_us:g} µs"] = serve_round_trip(
                bundle_dir, args.iters, args.warmup, backend, spin_us)
        serve[f"{AUTO}, spin {SERVE_SPIN_US:g} µs, Unix socket"] = serve_round_trip(
            bundle_dir, args.iters, args.warmup, AUTO, SERVE_SPIN_US, unix=Path(tmp) / "serve.sock")
        memory = memory_growth(bundle, "onnxruntime", args.memory_decisions)
        memory_numpy = memory_growth(bundle, "numpy", args.memory_decisions)
    load_after = os.getloadavg()

    table = Table(title=f"kdx runtime latency, batch 1 ({args.iters} timed calls per row after {args.warmup} warm-up)")
    for column in ("what", "p50 µs", "p90 µs", "p99 µs", "max µs", "mean µs", "std µs", "decisions/s"):
        table.add_column(column, justify="left" if column == "what" else "right")

    def add(name: str, s: LatencyStats) -> None:
        table.add_row(name, f"{s.p50_us:.2f}", f"{s.p90_us:.2f}", f"{s.p99_us:.2f}", f"{s.max_us:.1f}",
                      f"{s.mean_us:.2f}", f"{s.std_us:.2f}", f"{s.decisions_per_s:,.0f}")
    for name, (s, _) in bare.items():
        add(f"bare onnxruntime: {name}", s)
    for key, (s, _) in runtime.items():
        backend, role, agent = key
        label = f"{backend} ({chosen[key]['backend']})" if key in chosen else backend
        add(f"policy.act {label} {role} {agent}", s)
    for name, (s, _, _) in serve.items():
        add(f"serve round trip, {name} (client here, server subprocess)", s)
    console.print(table)

    p50 = {k: v[0].p50_us for k, v in runtime.items()}
    ratios = Table(title="teacher (3 x 256, LayerNorm) / student p50, each in the same runtime (target >= 5x)")
    for column in ("runtime", "teacher p50 µs", "student 18-32-32-5 p50 µs", "ratio", "student 18-32-5 p50 µs",
                   "ratio "):
        ratios.add_column(column, justify="left" if column == "runtime" else "right")
    ratio_rows = {}
    for backend in RUNTIMES:
        teacher = p50[(backend, "teacher", "agent_0")]
        student, small_student = p50[(backend, "student", "agent_0")], p50[(backend, SMALL, "agent_0")]
        ratio_rows[backend] = {"teacher_p50_us": teacher, "student_p50_us": student,
                               "student_18_32_5_p50_us": small_student, "ratio": teacher / student,
                               "ratio_18_32_5": teacher / small_student}
        label = f"{backend}/{backend}"
        if backend == AUTO:
            label += (f" ({chosen[(AUTO, 'teacher', 'agent_0')]['backend']}/"
                      f"{chosen[(AUTO, 'student', 'agent_0')]['backend']})")
        ratios.add_row(label, f"{teacher:.2f}", f"{student:.2f}", f"{teacher / student:.2f}x",
                       f"{small_student:.2f}", f"{teacher / small_student:.2f}x")
    console.print(ratios)

    ort_students = [p50[("onnxruntime", "student", a)] for a in bundle.agent_names]
    np_students = [p50[("numpy", "student", a)] for a in bundle.agent_names]
    student_ort = ort_students[0]
    bare_public = bare["public + obs copy + action read"][0].p50_us
    bare_c = bare["C++ binding + obs copy + action read"][0].p50_us
    bare_c_only = bare["C++ binding + RunOptions"][0].p50_us
    serve_default = serve[f"{AUTO}, spin {SERVE_SPIN_US:g} µs"][0].p50_us
    targets = [
        ("student policy.act (onnxruntime) p50 <= 5 µs", student_ort, student_ort <= 5.0),
        ("  / bare public IOBinding call incl. obs copy <= 1.3x", student_ort / bare_public, student_ort / bare_public <= 1.3),
        ("  / bare C++ IOBinding call incl. obs copy <= 1.3x", student_ort / bare_c, student_ort / bare_c <= 1.3),
        ("  / bare C++ IOBinding call alone <= 1.3x", student_ort / bare_c_only, student_ort / bare_c_only <= 1.3),
        *((f"teacher / student p50, {b}/{b} >= 5x", r["ratio"], r["ratio"] >= 5) for b, r in ratio_rows.items()),
        ("teacher / 18-32-5 student p50, auto/auto >= 5x", ratio_rows[AUTO]["ratio_18_32_5"],
         ratio_rows[AUTO]["ratio_18_32_5"] >= 5),
        ("numpy / onnxruntime p50, students (worst agent) <= 1.5x",
         max(a / b for a, b in zip(np_students, ort_students)),
         max(a / b for a, b in zip(np_students, ort_students)) <= 1.5),
        (f"serve round trip p50 <= 50 µs (auto, spin {SERVE_SPIN_US:g} µs)", serve_default, serve_default <= 50),
        (f"RSS growth over {memory['decisions']:,} decisions < 1 MiB (onnxruntime)", memory["growth_mib"],
         memory["growth_mib"] < 1.0),
        (f"RSS growth over {memory_numpy['decisions']:,} decisions < 1 MiB (numpy)", memory_numpy["growth_mib"],
         memory_numpy["growth_mib"] < 1.0),
    ]
    console.print(targets_table(targets))
    info = device_info()
    console.print(f"{info['cpu_model']} ({info['machine']}, {info['cpu_count']} CPUs), numpy {info['numpy']}, "
                  f"onnxruntime {info['onnxruntime']}; load average {load_before[0]:.1f} before, "
                  f"{load_after[0]:.1f} after; {memory['decisions']:,} decisions took {memory['seconds']:.1f} s "
                  f"(onnxruntime), {memory_numpy['seconds']:.1f} s (numpy)", highlight=False)

    args.out.parent.mkdir(parents=True, exist_ok=True)
    result = {
        "device": info, "load_average_before": load_before, "load_average_after": load_after,
        "iters": args.iters, "warmup": args.warmup,
        "bare_onnxruntime": {k: {**s.to_dict(), "samples_ns": x.tolist()} for k, (s, x) in bare.items()},
        "policy_act": [{"backend": b, "role": r, "agent": a, **chosen.get((b, r, a), {}), **s.to_dict(),
                        "samples_ns": x.tolist()} for (b, r, a), (s, x) in runtime.items()],
        "teacher_over_student_p50": ratio_rows,
        "serve_round_trip": [{"configuration": name, **s.to_dict(), "samples_ns": x.tolist(),
                              "server_counters": counters} for name, (s, x, counters) in serve.items()],
        "memory": {"onnxruntime": memory, "numpy": memory_numpy},
        "targets": [{"target": n, "measured": float(v), "met": bool(ok)} for n, v, ok in targets],
    }
    atomic_write_text(args.out, json.dumps(result))
    console.print(f"wrote {args.out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
