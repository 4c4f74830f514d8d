"""The report's tables and text from :class:`ReportData`: the only place numbers are formatted
(besides the rich console table, built from the same rows)."""

from __future__ import annotations

import math
from datetime import datetime, timezone
from typing import Any

from kdx import __version__
from kdx.devices.cost import COST_RULE
from kdx.report.claims import CLAIMS, PAPER, AnswerRow, answer_rows
from kdx.report.collect import THIS_HOST, LatencyResult, LatencySet, OnnxFile, ReportData
from kdx.report.document import Block, Bullets, Figure, Heading, Paragraph, TableBlock
from kdx.report.estimates import ProfileEstimate
from kdx.report.latency_model import ESTIMATE_NOTE

LATENCY_NOTE = (
    "Latency: per-decision time of one agent's policy at batch 1 (observation in, action out), "
    "measured with time.perf_counter_ns around each call after warm-up, through the kdx runtime "
    "(kdx.runtime.bench.bench_bundle, backend auto = the fastest measured here); p50/p99 of the "
    "raw samples."
)


# ---------------------------------------------------------------- number formatting
def fmt_int(value: int | None) -> str:
    return "-" if value is None else f"{value:,}"


def fmt_us(value: float | None) -> str:
    if value is None or not math.isfinite(value):
        return "-"
    return f"{value:.1f}" if value >= 100 else f"{value:.2f}"


def fmt_ratio(num: float | None, den: float | None) -> str:
    if num is None or den is None or den == 0:
        return "-"
    return f"{num / den:.1f}x"


def fmt_pct(value: float | None) -> str:
    return "-" if value is None else f"{value:.1%}"


def fmt_kib(size: int | None) -> str:
    return "-" if size is None else f"{size / 1024:.1f}"


# ---------------------------------------------------------------- scores
def team_scores(data: ReportData) -> dict[str, Any] | None:
    """Teacher and student team score in the headline action mode, as formatted text."""
    students = (data.eval or {}).get("students")
    if not students:
        return None
    mode = students.get("mode", "greedy")
    policies = data.eval["policies"]

    def score(name: str) -> str:
        r = policies.get(name) or {}
        if r.get("win_rate") is not None:
            return f"win {r['win_rate']:.1%} ± {r.get('win_rate_ci95') or 0:.1%}"
        if r.get("normalized_score") is not None:
            return f"norm. score {r['normalized_score']:.3f} ± {r.get('normalized_score_ci95') or 0:.3f}"
        if r.get("mean_return") is not None:
            return f"return {r['mean_return']:.2f} ± {r.get('return_ci95') or 0:.2f}"
        return "-"

    return {"mode": mode, "measure": students.get("measure", ""), "teacher": score(f"teacher_{mode}"),
            "student": score(f"students_{mode}"), "retention": data.retention}


def _onnx_file(data: ReportData, bundle: str, role: str, agent: str) -> OnnxFile | None:
    return next((f for f in data.onnx if f.bundle == bundle and f.role == role and f.agent == agent), None)


def _onnx_size(data: ReportData, bundle: str, role: str, agent: str) -> int | None:
    found = _onnx_file(data, bundle, role, agent)
    return found.size_bytes if found else None


def backend_text(result: LatencyResult | None) -> str:
    """The backend, and when it ran the numpy sidecar rather than the ONNX model, say so: the
    sidecar holds float32 weights whatever the bundle's precision."""
    if result is None:
        return "-"
    return f"{result.backend} (fp32 sidecar)" if result.runs.split(" ")[0].endswith(".npz") else result.backend


def _latency_cell(result: LatencyResult | None) -> str:
    if result is None:
        return "-"
    return f"{fmt_us(result.p50_us)} / {fmt_us(result.p99_us)} ({backend_text(result)})"


def _size_cell(found: OnnxFile | None) -> str:
    # the precision per model: an agent whose int8 model missed the parity bar ships in fp32
    return "-" if found is None else f"{fmt_kib(found.size_bytes)} ({found.precision})"


def _bundles(data: ReportData) -> list[tuple[str, str]]:
    """(bundle name, precision of its students) for each bundle seen."""
    seen: dict[str, str] = {}
    for f in data.onnx:
        if f.role == "student" or f.bundle not in seen:
            seen[f.bundle] = f.precision
    return list(seen.items())


def view_text(data: ReportData, agent: str) -> str:
    """``sight:0.5 (18/18 inputs)``: the student's view and its input width of the full width."""
    given = data.inputs.get(agent)
    if given is None:
        return "-"
    return f"{given.view} ({given.input_size}/{given.full_input_size} inputs)"


# ---------------------------------------------------------------- the first screen
NOT_MEASURED = "not measured"
_VERDICT = {True: "✅ pass", False: "❌ miss", None: NOT_MEASURED}


def _latency_answer(row: AnswerRow) -> str:
    c = row.latency
    if c is None:
        return NOT_MEASURED
    probe = ", auto's probe" if c.basis == "probe" else ""
    return (f"{c.ratio:.2f} ({fmt_us(c.student_us)} / {fmt_us(c.teacher_us)} µs; {c.machine}, {c.bundle} "
            f"{c.precision}, {c.backend}{probe})")


def answer_table(data: ReportData) -> TableBlock | None:
    """The user's question in one table: per student and view, retention, FLOPs ratio and latency
    ratio beside the paper's claims, each with pass/miss (``kdx.report.claims``)."""
    rows = answer_rows(data)
    if not rows:
        return None
    body = [[r.agent, view_text(data, r.agent),
             fmt_pct(r.retention) if r.retention is not None else NOT_MEASURED, _VERDICT[r.verdicts["retention"]],
             f"{r.flops_ratio:.1f}x" if r.flops_ratio is not None else NOT_MEASURED, _VERDICT[r.verdicts["flops"]],
             _latency_answer(r), _VERDICT[r.verdicts["latency"]]] for r in rows]
    c = CLAIMS
    scores = team_scores(data)
    measure = f"team {scores['mode']}, {scores['measure']}" if scores else "kdx evaluate"
    return TableBlock(
        ["student", "view (inputs / full)", "retention", f"paper: {c['retention'].paper}",
         "FLOPs teacher ÷ student", f"paper: {c['flops'].paper}", "latency student ÷ teacher",
         f"paper: {c['latency'].paper}"], body,
        caption=(f"Does this run keep {PAPER}'s claims? Retention: {measure} (one number for the team). "
                 "FLOPs: 2 x MACs by the cost rule. Latency: p50 of student over teacher on one machine, bundle "
                 "and backend: full timed runs of both (a student that backend auto put elsewhere is timed on its "
                 "teacher's backend too), else auto's short probe of both (device files); other devices' files "
                 "first, else this host. Pass bars: "
                 + "; ".join(claim.bar for claim in c.values()) + "."))


# ---------------------------------------------------------------- tables
def _teacher_view(data: ReportData, given) -> str:
    text = f"full ({given.full_input_size})" if given else "full"
    return text + " + global state" if data.teacher_input == "centralised" else text


def agent_table(data: ReportData, agent: str) -> TableBlock:
    """Teacher vs student for one agent: cost, ONNX sizes, latencies, performance retained."""
    cost = data.costs.get(agent)
    t, s = (cost.teacher, cost.student) if cost else (None, None)
    given = data.inputs.get(agent)
    rows = [
        ["view (inputs)", _teacher_view(data, given), view_text(data, agent),
         fmt_ratio(given and given.full_input_size, given and given.input_size)],
        ["parameters", fmt_int(t and t.params), fmt_int(s and s.params), fmt_ratio(t and t.params, s and s.params)],
        ["MACs", fmt_int(t and t.macs), fmt_int(s and s.macs), fmt_ratio(t and t.macs, s and s.macs)],
        ["FLOPs (2 x MACs)", fmt_int(t and t.flops), fmt_int(s and s.flops), fmt_ratio(t and t.flops, s and s.flops)],
    ]
    for bundle, _ in _bundles(data):
        ts, ss = _onnx_file(data, bundle, "teacher", agent), _onnx_file(data, bundle, "student", agent)
        rows.append([f"ONNX size KiB ({bundle} bundle)", _size_cell(ts), _size_cell(ss),
                     fmt_ratio(ts and ts.size_bytes, ss and ss.size_bytes)])
    for latency in [*data.host, *data.devices]:
        tr, sr = latency.result(agent, "teacher"), latency.result(agent, "student")
        if tr is None and sr is None:
            continue
        kind = "measured here" if latency.machine == THIS_HOST else "measured on device"
        rows.append([f"p50 / p99 µs, {latency.label} ({kind})", _latency_cell(tr), _latency_cell(sr),
                     fmt_ratio(tr and tr.p50_us, sr and sr.p50_us)])
    scores = team_scores(data)
    if scores:
        rows.append([f"team score, {scores['mode']} ({scores['measure']})", scores["teacher"], scores["student"],
                     f"retained {fmt_pct(scores['retention'])}"])
    else:
        rows.append(["performance retained", "-", "-", "not evaluated"])
    hidden = "x".join(map(str, cost.student_hidden)) if cost and cost.student_hidden else "?"
    return TableBlock(["", "teacher actor", f"student ({hidden})", "teacher ÷ student"], rows,
                      caption=f"{agent}: teacher vs student")


def summary_table(data: ReportData) -> TableBlock:
    """One row per agent: the headline numbers."""
    # the fp32 bundle when there is one: the teacher-vs-student comparison without quantisation
    host = next((s for s in data.host if s.bundle.get("precision") == "fp32"), data.host[0] if data.host else None)
    rows = []
    for agent in data.agents:
        cost = data.costs.get(agent)
        t, s = (cost.teacher, cost.student) if cost else (None, None)
        tr = host.result(agent, "teacher") if host else None
        sr = host.result(agent, "student") if host else None
        rows.append([agent, view_text(data, agent),
                     "x".join(map(str, cost.student_hidden)) if cost and cost.student_hidden else "-",
                     fmt_int(t and t.params), fmt_int(s and s.params), fmt_int(t and t.macs), fmt_int(s and s.macs),
                     fmt_ratio(t and t.macs, s and s.macs), fmt_us(tr and tr.p50_us), fmt_us(sr and sr.p50_us),
                     fmt_ratio(tr and tr.p50_us, sr and sr.p50_us), fmt_pct(data.retention)])
    where = host.label if host else "not measured"
    return TableBlock(["agent", "view (inputs)", "student", "teacher params", "student params", "teacher MACs", "student MACs",
                       "MACs ÷", "teacher p50 µs", "student p50 µs", "latency ÷", "retained (team)"], rows,
                      caption=f"summary (latency: {where}; params and MACs by the cost rule under Conventions)")


BENCH_HEADERS = ["machine", "model", "agent", "status", "backend", "ONNX KiB", "params", "MACs", "FLOPs", "retained",
                 "p50 µs", "p99 µs", "decisions/s (1/p50)"]


def benchmark_rows(data: ReportData) -> list[list[str]]:
    """Ultralytics-benchmark-style rows: one per (machine, bundle, role, agent)."""
    rows = []
    sets: list[tuple[str, str, LatencySet | None]] = []
    bundles = [bundle for bundle, _ in _bundles(data)]
    bundles += [s.bundle_name for s in data.host if s.bundle_name not in bundles]
    for bundle in bundles:  # this host: one machine, each bundle once (measured now or from its file)
        sets.append((THIS_HOST, bundle, next((s for s in data.host if s.bundle_name == bundle), None)))
    for device in data.devices:
        sets.append((device.machine, device.bundle_name, device))
    for machine, bundle, latency in sets:
        for role in ("teacher", "student"):
            for agent in data.agents:
                cost = data.costs.get(agent)
                net = getattr(cost, role, None) if cost else None
                result = latency.result(agent, role) if latency else None
                size = _onnx_size(data, bundle, role, agent) if machine == THIS_HOST else None
                if result is None and size is None:
                    continue
                precision = result.precision if result else next(
                    (f.precision for f in data.onnx if f.bundle == bundle and f.agent == agent and f.role == role), "?")
                if result is not None:
                    status = "measured"
                else:
                    status = "not measured" if not data.host else "failed"
                retained = "100% (ref)" if role == "teacher" else fmt_pct(data.retention)
                rows.append([machine, f"{role} {precision} ({bundle})", agent, status, backend_text(result), fmt_kib(size),
                             fmt_int(net and net.params), fmt_int(net.macs if net else (result.macs if result else None)),
                             fmt_int(net and net.flops), retained,
                             fmt_us(result and result.p50_us), fmt_us(result and result.p99_us),
                             f"{1e6 / result.p50_us:,.0f}" if result and result.p50_us > 0 else "-"])
    return rows


def estimate_table(estimates: list[ProfileEstimate]) -> TableBlock:
    """One row per profile and group of agents with the same networks' MACs."""
    rows = []
    for e in estimates:
        basis = (f"fitted on {e.model.source} (measured on the device)" if e.basis == "device"
                 else f"{e.model.source} (host fit x CPU factor)")
        by_agent: dict[str, dict[str, float]] = {}
        for row in e.rows:
            by_agent.setdefault(row.agent, {})[row.role] = row.p50_us
        groups: dict[tuple, list[str]] = {}
        for agent, values in by_agent.items():
            groups.setdefault((values.get("teacher"), values.get("student")), []).append(agent)
        for (teacher, student), agents in groups.items():
            within = "-" if student is None else ("yes" if student <= e.budget_us else "NO")
            rows.append([e.profile, ", ".join(agents), fmt_us(teacher), fmt_us(student), f"{e.budget_us:g}", within,
                         f"{e.model.overhead_us:.2f} µs + {e.model.us_per_mac * 1e3:.3f} ns/MAC", basis])
    return TableBlock(["profile", "agents", "teacher p50 µs (est.)", "student p50 µs (est.)", "budget µs",
                       "student within budget", "model", "basis"], rows,
                      caption="ESTIMATED latency per device profile (not measured)")


def evaluation_table(data: ReportData) -> TableBlock:
    """Every policy of eval.json (teacher, students, references) with its 95% intervals."""

    def pm(value: Any, ci: Any, pct: bool = False) -> str:
        if not isinstance(value, (int, float)):
            return "-"
        text = f"{value:.1%}" if pct else f"{value:.3f}"
        if isinstance(ci, (int, float)) and math.isfinite(ci):
            text += f" ± {ci:.1%}" if pct else f" ± {ci:.3f}"
        return text

    rows = [[name, str(r.get("episodes", "-")), pm(r.get("mean_return"), r.get("return_ci95")),
             pm(r.get("win_rate"), r.get("win_rate_ci95"), pct=True),
             pm(r.get("normalized_score"), r.get("normalized_score_ci95"))]
            for name, r in (data.eval or {}).get("policies", {}).items() if isinstance(r, dict)]
    return TableBlock(["policy", "episodes", "mean return", "win rate", "normalised score"], rows,
                      caption=f"{(data.eval or {}).get('env', '?')}: same evaluation seeds for every policy (95% CI)")


def device_table(latency: LatencySet) -> TableBlock:
    rows = [[r.agent, r.role, r.backend, r.runs or "-", r.precision, fmt_int(r.macs), fmt_us(r.p50_us),
             fmt_us(r.p99_us)] for r in latency.results]
    d = latency.device
    caption = (f"{latency.label}: {d.get('cpu_model', '?')} ({d.get('machine', '?')}), onnxruntime "
               f"{d.get('onnxruntime') or '-'}, tensorrt {d.get('tensorrt') or '-'}; bundle "
               f"{latency.bundle.get('target', '?')} {latency.bundle.get('precision', '?')}; file {latency.source}")
    return TableBlock(["agent", "role", "backend", "runs", "precision", "MACs", "p50 µs", "p99 µs"], rows,
                      caption=caption)


# ---------------------------------------------------------------- the document
def build_blocks(data: ReportData, estimates: list[ProfileEstimate], figures: list[Figure]) -> list[Block]:
    now = datetime.now(timezone.utc).strftime("%Y-%m-%d %H:%M UTC")
    blocks: list[Block] = [
        Heading(f"kdx report: {data.run_dir.name}", 1),
        Paragraph(f"Run {data.run_dir} - env {data.env or '?'} - agents {', '.join(data.agents) or '?'} - "
                  f"generated {now} by kdx {__version__}."),
    ]
    answer = answer_table(data)
    if answer is not None:
        blocks.append(answer)
    if data.missing:
        blocks += [Paragraph("Missing parts (the report shows what exists):", emphasis=True), Bullets(data.missing)]
    if data.problems:
        blocks += [Paragraph("Problems (these inputs were skipped):", emphasis=True), Bullets(data.problems)]
    if data.notes:
        blocks += [Paragraph("Notes on the inputs:"), Bullets(data.notes)]
    if data.sizing_profile:
        blocks.append(Paragraph(f"Students sized for device profile {data.sizing_profile}."))
    blocks += [Heading("Summary"), summary_table(data)]
    rows = benchmark_rows(data)
    if rows:
        blocks += [Heading("Benchmark"), TableBlock(BENCH_HEADERS, rows, caption="every model on every machine")]
    blocks.append(Heading("Teacher vs student, per agent"))
    blocks += [agent_table(data, agent) for agent in data.agents]
    if data.eval:
        blocks += [Heading("Evaluation"), evaluation_table(data)]
    if data.devices:
        blocks.append(Heading("Measured on other devices (RUN/devices/)"))
        blocks += [device_table(latency) for latency in data.devices]
    blocks.append(Heading("Estimated latency per device profile"))
    if estimates:
        blocks += [Paragraph(ESTIMATE_NOTE, emphasis=True), estimate_table(estimates)]
    else:
        blocks.append(Paragraph("No estimate: nothing measured to fit (no host measurement, no device file).",
                                emphasis=True))
    blocks.append(Heading("Plots"))
    blocks += figures
    blocks += [Heading("Conventions"), Bullets([f"Cost (counted once by kdx distill, stored in students/sizing.json): {COST_RULE}",
               LATENCY_NOTE,
               "Performance retained: team student score / teacher score on the same evaluation seeds "
               "(RUN/eval.json, kdx evaluate); the same value for every agent, since agents are scored as a team."])]
    return blocks
