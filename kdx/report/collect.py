"""Everything the report shows, gathered from a run folder into plain data (no formatting).

Each part is optional: a run without students, bundles or device files still gives a report;
what is absent is listed in ``ReportData.missing`` and what is present but unreadable (a
malformed device JSON, a corrupt bundle) in ``ReportData.problems``.
"""

from __future__ import annotations

import json
import math
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np

from kdx.devices.cost import AgentCost
from kdx.devices.targets import PRECISIONS
from kdx.errors import KdxError
from kdx.layout import RunLayout
from kdx.trainer.common.metrics_log import read_metrics_file

if TYPE_CHECKING:
    from kdx.trainer.distill.store import StudentInput

ROLES = ("teacher", "student")
THIS_HOST = "this host"
# What identifies a machine in a bench file's ``device`` record (``kdx.runtime.profiler.device_info``):
# the same OS build, architecture, CPU/board model and core count. Library versions and the CPU
# affinity of one run are left out: they change between runs on one machine.
MACHINE_KEYS = ("platform", "machine", "cpu_model", "board_model", "cpu_count")


@dataclass(frozen=True)
class OnnxFile:
    """One exported ONNX model (static batch 1) of a bundle."""

    bundle: str
    role: str
    agent: str
    precision: str
    size_bytes: int


@dataclass
class LatencyResult:
    """Per-decision latency of one (agent, role) policy on one machine, microseconds."""

    agent: str
    role: str
    backend: str
    precision: str
    p50_us: float
    p99_us: float
    macs: int | None
    samples_us: np.ndarray | None = None
    runs: str = ""  # what the backend executes (an ONNX file, or the numpy float32 sidecar)
    # what backend "auto" measured before choosing (backend -> p50 µs of a short probe), when it ran
    probe_us: dict[str, float] = field(default_factory=dict)
    # full timed runs on other backends than ``backend`` (backend -> p50 µs): a student timed on its
    # teacher's backend too, so that the two compare on one backend (``kdx.report.claims``)
    other_backends_us: dict[str, float] = field(default_factory=dict)

    @property
    def timed_us(self) -> dict[str, float]:
        """p50 µs of every full timed run: its own backend first."""
        return {self.backend: self.p50_us, **self.other_backends_us}


@dataclass
class LatencySet:
    """Measurements from one machine for one bundle: this host (measured now, or a device file
    written on this very machine) or another machine's device file."""

    label: str
    kind: str  # "host" or "device"
    source: str  # bundle folder or device JSON path
    device: dict[str, Any]
    bundle: dict[str, Any]
    results: list[LatencyResult]
    machine: str = THIS_HOST  # one name per machine: THIS_HOST, or the device file's label
    bundle_name: str = ""  # the bundle folder's name (RUN/bundles/<name>)

    def result(self, agent: str, role: str) -> LatencyResult | None:
        return next((r for r in self.results if r.agent == agent and r.role == role), None)


@dataclass
class ReportData:
    """The report's content. ``missing``: parts the run does not have yet (and how to make
    them); ``problems``: parts present but unusable (skipped)."""

    run_dir: Path
    env: str | None = None
    sizing_profile: str | None = None  # device profile the students were sized for
    teacher_input: str | None = None  # "local" or "centralised" (kdx train --teacher-input)
    agents: list[str] = field(default_factory=list)
    costs: dict[str, AgentCost] = field(default_factory=dict)  # as kdx distill stored them
    eval: dict[str, Any] | None = None
    onnx: list[OnnxFile] = field(default_factory=list)
    inputs: dict[str, StudentInput] = field(default_factory=dict)  # each student's view and input size
    host: list[LatencySet] = field(default_factory=list)  # this host: measured now or from RUN/devices/
    devices: list[LatencySet] = field(default_factory=list)  # other machines (RUN/devices/)
    teacher_metrics: list[dict[str, Any]] = field(default_factory=list)
    student_metrics: list[dict[str, Any]] = field(default_factory=list)
    missing: list[str] = field(default_factory=list)
    problems: list[str] = field(default_factory=list)
    notes: list[str] = field(default_factory=list)  # how inputs were combined (e.g. one machine, two sources)

    @property
    def retention(self) -> float | None:
        students = (self.eval or {}).get("students") or {}
        value = students.get("retention")
        return float(value) if isinstance(value, (int, float)) else None

    @property
    def retention_per_mode(self) -> dict[str, float]:
        """Team retention in each action mode eval.json has (greedy, sampled)."""
        per_mode = ((self.eval or {}).get("students") or {}).get("per_mode") or {}
        return {m: float(v) for m, v in per_mode.items() if isinstance(v, (int, float)) and not isinstance(v, bool)}

    @property
    def headline_mode(self) -> str:
        return str(((self.eval or {}).get("students") or {}).get("mode") or "greedy")

    @property
    def precisions(self) -> list[str]:
        return sorted({f.precision for f in self.onnx}, key=list(PRECISIONS).index)


# ---------------------------------------------------------------- small readers
def _read_json(path: Path, problems: list[str]) -> Any:
    try:
        return json.loads(path.read_text(encoding="utf-8"))
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as exc:
        problems.append(f"{path}: not readable JSON ({exc}); skipped")
        return None


def _finite_float(value: Any) -> float | None:
    """``value`` as a finite float, or None (not a number, a bool, inf/nan, or an integer too big
    for a float: JSON integers have no size limit, so numpy's isfinite cannot take them)."""
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        return None
    try:
        number = float(value)
    except OverflowError:
        return None
    return number if math.isfinite(number) else None


def _number(value: Any, what: str) -> float:
    number = _finite_float(value)
    if number is None:
        raise ValueError(f"{what} must be a finite number, got {value!r}")
    return number


def parse_bench_json(doc: Any, label: str, source: str, kind: str = "device") -> LatencySet:
    """A ``kdx-runtime bench --json`` document as a :class:`LatencySet`; ValueError saying what
    is wrong when it does not have that form (``results``: list of objects with ``agent``,
    ``role``, ``p50_us``, ``p99_us``; optional ``macs``, ``backend``, ``precision``, ``samples_ns``)."""
    if not isinstance(doc, dict):
        raise ValueError("top level is not a JSON object")
    rows = doc.get("results")
    if not isinstance(rows, list) or not rows:
        raise ValueError("no 'results' list (is it the output of `kdx-runtime bench --json`?)")
    results = []
    for i, row in enumerate(rows):
        where = f"results[{i}]"
        if not isinstance(row, dict):
            raise ValueError(f"{where} is not an object")
        agent, role = row.get("agent"), row.get("role")
        if not isinstance(agent, str) or role not in ROLES:
            raise ValueError(f"{where} needs 'agent' (text) and 'role' (student or teacher)")
        macs = row.get("macs")
        probe = row.get("auto_selection") if isinstance(row.get("auto_selection"), dict) else {}
        samples = row.get("samples_ns")
        samples_us = None
        if isinstance(samples, list) and samples:
            try:
                samples_us = np.asarray(samples, dtype=np.float64) / 1e3
            except (TypeError, ValueError):
                raise ValueError(f"{where}.samples_ns is not a list of numbers") from None
        results.append(LatencyResult(
            agent, role, str(row.get("backend", "?")), str(row.get("precision", "") or "?"),
            _number(row.get("p50_us"), f"{where}.p50_us"), _number(row.get("p99_us"), f"{where}.p99_us"),
            int(macs) if isinstance(macs, int) and not isinstance(macs, bool) and macs > 0 else None,
            samples_us, str(row.get("source") or ""), probe_times(probe)))
    device = doc.get("device") if isinstance(doc.get("device"), dict) else {}
    bundle = doc.get("bundle") if isinstance(doc.get("bundle"), dict) else {}
    bundle_path = str(bundle.get("path") or "").rstrip("/")
    bundle_name = bundle_path.rsplit("/", 1)[-1] if bundle_path else str(bundle.get("target") or "?")
    return LatencySet(label, kind, source, device, bundle, results, label, bundle_name)


def probe_times(selection: Any) -> dict[str, float]:
    """The backends "auto" timed (backend -> p50 µs); skipped backends (a reason string) left out."""
    if not isinstance(selection, dict):
        return {}
    times = {str(k): _finite_float(v) for k, v in selection.items()}
    return {k: v for k, v in times.items() if v is not None and v > 0}


def machine_key(device: dict[str, Any]) -> tuple:
    """What identifies the machine a measurement was taken on (``MACHINE_KEYS`` of its device record)."""
    return tuple(str(device.get(k)) for k in MACHINE_KEYS)


def is_this_host(device: dict[str, Any], host_device: dict[str, Any]) -> bool:
    """Whether a device file's record describes this machine: every ``MACHINE_KEYS`` field present
    and equal (a record without platform or CPU model is never taken for this host)."""
    if not device.get("platform") or not device.get("cpu_model"):
        return False
    return machine_key(device) == machine_key(host_device)


def merge_this_host(host: list[LatencySet], devices: list[LatencySet], host_device: dict[str, Any],
                    notes: list[str]) -> tuple[list[LatencySet], list[LatencySet]]:
    """One machine, one name: a device file written on this host (``kdx-runtime bench --save`` or
    ``--json`` here, e.g. by ``kdx demo``) is this host's measurement, not another device's. When
    this host's bundle of the same target and precision was measured now, the file is dropped (a
    note says so); otherwise it stands as this host's measurement of that bundle. Files from one
    other machine share the first file's name. Returns (host sets, other machines' sets)."""
    host, others = list(host), []
    names: dict[tuple, str] = {}
    for latency in devices:
        if not is_this_host(latency.device, host_device):
            if latency.device.get("platform") and latency.device.get("cpu_model"):
                latency.machine = names.setdefault(machine_key(latency.device), latency.machine)
            others.append(latency)
            continue
        same = next((h for h in host if (h.bundle.get("target"), h.bundle.get("precision")) ==
                     (latency.bundle.get("target"), latency.bundle.get("precision"))), None)
        what = f"{latency.bundle.get('target', '?')} {latency.bundle.get('precision', '?')}"
        if same is not None:
            notes.append(f"{latency.source}: measured on this host ({what} bundle), which was measured again now; "
                         "shown once, as this host")
            continue
        latency.machine, latency.kind = THIS_HOST, "host"
        latency.label = f"{THIS_HOST}, {latency.bundle_name} bundle ({latency.bundle.get('precision', '?')}), " \
                        f"from {Path(latency.source).name}"
        notes.append(f"{latency.source}: measured on this host; shown as this host's {what} bundle")
        host.append(latency)
    return host, others


def device_label(path: Path, device: dict[str, Any]) -> str:
    """``<file stem> (<board or CPU model>)``."""
    what = device.get("board_model") or device.get("cpu_model") or device.get("machine")
    return f"{path.stem} ({what})" if what else path.stem


def read_devices(run_dir: Path, problems: list[str]) -> list[LatencySet]:
    """Every ``RUN/devices/*.json``; malformed files are reported in ``problems`` and skipped."""
    folder = RunLayout(run_dir).devices
    sets = []
    for path in sorted(folder.glob("*.json")) if folder.is_dir() else []:
        doc = _read_json(path, problems)
        if doc is None:
            continue
        try:
            parsed = parse_bench_json(doc, path.stem, str(path))
        except ValueError as exc:
            problems.append(f"{path}: not a `kdx-runtime bench --json` file ({exc}); skipped")
            continue
        parsed.label = parsed.machine = device_label(path, parsed.device)
        sets.append(parsed)
    return sets


# ---------------------------------------------------------------- bundles
def bundle_dirs(run_dir: Path) -> list[Path]:
    folder = RunLayout(run_dir).bundles
    if not folder.is_dir():
        return []
    return sorted(p for p in folder.iterdir() if p.is_dir() and (p / "manifest.json").is_file())


def onnx_files(bundle_dir: Path, problems: list[str]) -> list[OnnxFile]:
    """The static-batch ONNX models a bundle's manifest lists, with their sizes."""
    from kdx.runtime.manifest import load_manifest

    try:
        manifest = load_manifest(bundle_dir)
    except KdxError as exc:
        problems.append(f"{bundle_dir}: {exc}; skipped")
        return []
    out = []
    for entry in manifest.entries():
        model = entry.file_of_kind("onnx")
        if model is None:
            continue
        path = bundle_dir / model.path
        size = path.stat().st_size if path.is_file() else model.size_bytes
        if size is not None:
            out.append(OnnxFile(bundle_dir.name, entry.role, entry.name, entry.precision, int(size)))
    return out


def measure_host(bundle_dir: Path, iters: int, warmup: int, backend: str = "auto") -> LatencySet:
    """Decision latency of every student and teacher of a bundle on this host, through the
    runtime (``kdx.runtime.bench.bench_bundle``; backend auto = the fastest measured here;
    raw samples kept)."""
    from kdx.runtime.bench import bench_bundle
    from kdx.runtime.bundle import Bundle

    bundle = Bundle.load(bundle_dir)
    report = bench_bundle(bundle, backend=backend, roles=("student", "teacher"), iters=iters, warmup=warmup)
    m = bundle.manifest
    results = [LatencyResult(e.agent, e.role, e.backend, e.precision, e.stats.p50_us, e.stats.p99_us,
                             e.macs or None, e.samples_ns.astype(np.float64) / 1e3, e.source, probe_times(e.selection))
               for e in report["entries"]]
    _time_students_on_teacher_backends(bundle, results, iters, warmup)
    return LatencySet(f"{THIS_HOST}, {bundle_dir.name} bundle ({m.precision})", "host", str(bundle_dir),
                      report["device"], {"target": m.target, "precision": m.precision}, results,
                      THIS_HOST, bundle_dir.name)


def _time_students_on_teacher_backends(bundle, results: list[LatencyResult], iters: int, warmup: int) -> None:
    """Where "auto" ran an agent's student and teacher on different backends, time the student on
    the teacher's backend as well (``other_backends_us``): student vs teacher on one backend. A
    backend that cannot run the student here leaves it out (the report then uses auto's probe)."""
    from kdx.runtime.bench import bench_bundle

    by_key = {(r.agent, r.role): r for r in results}
    wanted: dict[str, list[str]] = {}
    for (agent, role), teacher in by_key.items():
        student = by_key.get((agent, "student"))
        if role == "teacher" and student is not None and student.backend != teacher.backend:
            wanted.setdefault(teacher.backend, []).append(agent)
    for backend, agents in wanted.items():
        try:
            extra = bench_bundle(bundle, agents=agents, backend=backend, roles=("student",), iters=iters, warmup=warmup)
        except KdxError:
            continue
        for entry in extra["entries"]:
            by_key[(entry.agent, "student")].other_backends_us[backend] = entry.stats.p50_us


# ---------------------------------------------------------------- networks
def network_costs(run_dir: Path, missing: list[str],
                  problems: list[str]) -> tuple[str | None, list[str], dict[str, AgentCost], str | None,
                                                dict[str, StudentInput], str | None]:
    """Env name, agent names, per-agent costs of the teacher actor and the students (those
    ``kdx distill`` stored, ``kdx.trainer.distill.costs``), the device profile the students
    were sized for, each student's view and input size, and the teacher's input (local/centralised)."""
    from kdx.trainer.distill.costs import run_costs, teacher_view_costs
    from kdx.trainer.distill.store import (
        load_students,
        read_students_config,
        student_inputs,
        students_profile,
    )
    from kdx.trainer.teacher.store import load_teacher

    env, agents, costs, sizing_profile, inputs, teacher_input = None, [], {}, None, {}, None
    teacher = None
    if not RunLayout(run_dir).teacher.config.is_file():
        missing.append(f"teacher: {RunLayout(run_dir).teacher.config} not found (train one with `kdx train --out {run_dir}`)")
    else:
        try:
            teacher = load_teacher(run_dir)
            env = teacher.config.env
            agents = list(teacher.spec.agent_names)
            teacher_input = str(getattr(teacher.config, "teacher_input", "local"))
        except KdxError as exc:
            problems.append(f"teacher: {exc}")
    if not RunLayout(run_dir).students.config.is_file():
        missing.append(f"students: {RunLayout(run_dir).students.config} not found (distil them with `kdx distill {run_dir}`)")
    else:
        try:
            students = load_students(run_dir)
            students_doc = read_students_config(run_dir)
            env = env or students_doc.get("env")
            sizing_profile = students_profile(students_doc)["name"]
            agents = agents or list(students)
            costs = run_costs(run_dir, teacher)
            inputs = student_inputs(run_dir)
        except KdxError as exc:
            problems.append(f"students: {exc}")
    if teacher is not None and not costs:  # no students (yet): count the teacher as kdx distill will
        costs = {name: AgentCost(name, teacher=cost) for name, cost in teacher_view_costs(teacher).items()}
    return env, agents, costs, sizing_profile, inputs, teacher_input


def collect(run_dir: str | Path, measure: bool = True, iters: int = 2000, warmup: int | None = None,
            backend: str = "auto") -> ReportData:
    """Read (and, with ``measure``, benchmark on this host on ``backend``) everything the report shows."""
    from kdx.runtime.backends import BACKENDS

    run_dir = Path(run_dir)
    if not run_dir.is_dir():
        raise KdxError(f"{run_dir}: no such run folder (the folder given to `kdx train --out`)")
    if backend != "auto" and backend not in BACKENDS:
        raise KdxError(f"unknown backend {backend!r}; choose auto or one of {', '.join(BACKENDS)}")
    if iters < 1:
        raise KdxError(f"--iters must be a positive integer (got {iters})")
    data = ReportData(run_dir)
    (data.env, data.agents, data.costs, data.sizing_profile, data.inputs,
     data.teacher_input) = network_costs(run_dir, data.missing, data.problems)

    eval_path = RunLayout(run_dir).eval_json
    if eval_path.is_file():
        doc = _read_json(eval_path, data.problems)
        if isinstance(doc, dict) and isinstance(doc.get("policies"), dict):
            data.eval = doc
            data.env = data.env or doc.get("env")
        elif doc is not None:
            data.problems.append(f"{eval_path}: not an eval.json (no 'policies'); skipped")
    else:
        data.missing.append(f"evaluation: {eval_path} not found (run `kdx evaluate {run_dir}`)")
    if data.eval is not None and not data.eval.get("students"):
        data.missing.append(f"performance retained: {eval_path} has no students section "
                            f"(run `kdx evaluate {run_dir}` after `kdx distill`)")

    bundles = bundle_dirs(run_dir)
    if not bundles:
        data.missing.append(f"bundles: nothing in {RunLayout(run_dir).bundles} (run `kdx export {run_dir} --target x86`); "
                            "no ONNX sizes and no host latency")
    for bundle_dir in bundles:
        data.onnx += onnx_files(bundle_dir, data.problems)
        if measure:
            try:
                data.host.append(measure_host(bundle_dir, iters, warmup if warmup is not None else max(20, iters // 10),
                                              backend))
            except KdxError as exc:
                data.problems.append(f"host latency of {bundle_dir}: {exc}; skipped")
    if bundles and not measure:
        data.missing.append("host latency: not measured (--no-measure)")

    from kdx.runtime.profiler import device_info

    data.host, data.devices = merge_this_host(data.host, read_devices(run_dir, data.problems), device_info(),
                                              data.notes)
    if not data.devices:
        data.missing.append(f"device latency: no `kdx-runtime bench --json` files from another machine in "
                            f"{RunLayout(run_dir).devices} (copy them there from the devices)")
    layout = RunLayout(run_dir)
    data.teacher_metrics = read_metrics_file(layout.teacher.metrics, data.problems)
    data.student_metrics = read_metrics_file(layout.students.metrics, data.problems)
    if not data.agents:
        data.agents = sorted({f.agent for f in data.onnx} | {r.agent for s in data.devices for r in s.results})
    return data
