"""The report's first screen (claims table), one name per machine, and the plots' data, on
hand-built ``ReportData``: every number is chosen so that the expected value is computed by hand."""

from __future__ import annotations

from pathlib import Path

import pytest

from kdx.devices.cost import AgentCost, NetworkCost
from kdx.report.claims import CLAIMS, answer_rows, same_backend
from kdx.report.collect import THIS_HOST, LatencyResult, LatencySet, ReportData, merge_this_host
from kdx.report.content import NOT_MEASURED, answer_table, benchmark_rows, build_blocks
from kdx.report.points import budget_points, cost_points, latency_points
from kdx.trainer.distill.store import StudentInput

HOST = {"platform": "Linux-6.1-x86_64", "machine": "x86_64", "cpu_model": "AMD EPYC", "board_model": None,
        "cpu_count": 2, "affinity_cpus": 2, "onnxruntime": "1.2"}
PI = {"platform": "Linux-6.6-rpi-aarch64", "machine": "aarch64", "cpu_model": "Cortex-A76",
      "board_model": "Raspberry Pi 5 Model B", "cpu_count": 4}


def _result(agent: str, role: str, backend: str, p50: float, probe: dict[str, float] | None = None,
            precision: str = "fp32") -> LatencyResult:
    return LatencyResult(agent, role, backend, precision, p50, 2 * p50, 100, probe_us=probe or {})


def _set(machine: str, bundle: str, device: dict, results: list[LatencyResult], kind: str = "host",
         precision: str = "fp32", source: str = "") -> LatencySet:
    return LatencySet(f"{machine}, {bundle}", kind, source or f"/run/bundles/{bundle}", dict(device),
                      {"target": bundle, "precision": precision}, results, machine, bundle)


def _data(tmp_path: Path) -> ReportData:
    """Two agents: a (teacher 10,000 MACs, student 100; view sight:0.5 reading 12 of 18 inputs) and
    b (teacher 10,000, student 500; full view); team retention 0.95 greedy, 0.85 sampled."""
    data = ReportData(tmp_path, env="mpe/simple_spread", agents=["a", "b"])
    data.costs = {"a": AgentCost("a", NetworkCost(150, 100), NetworkCost(12_000, 10_000), (8,)),
                  "b": AgentCost("b", NetworkCost(600, 500), NetworkCost(12_000, 10_000), (16,))}
    data.inputs = {"a": StudentInput("a", "sight:0.5, -comm.*", 12, 18), "b": StudentInput("b", "full", 18, 18)}
    data.eval = {"env": "mpe/simple_spread", "policies": {},
                 "students": {"mode": "greedy", "retention": 0.95, "per_mode": {"greedy": 0.95, "sampled": 0.85},
                              "measure": "return ratio"}}
    return data


def test_claims_table_against_hand_computed_values(tmp_path):
    data = _data(tmp_path)
    # a: both on onnxruntime -> the timed runs, 30 / 60 = 0.5; b: auto chose different backends ->
    # the probe of the teacher's backend, 45 / 50 = 0.9 (the timed 5 / 50 would mix backends)
    data.host = [_set(THIS_HOST, "x86", HOST, [
        _result("a", "teacher", "onnxruntime", 60.0), _result("a", "student", "onnxruntime", 30.0),
        _result("b", "teacher", "onnxruntime", 50.0, {"onnxruntime": 50.0, "numpy": 200.0}),
        _result("b", "student", "numpy", 5.0, {"onnxruntime": 45.0, "numpy": 5.0})])]
    rows = {r.agent: r for r in answer_rows(data)}
    assert rows["a"].flops_ratio == pytest.approx(100.0) and rows["b"].flops_ratio == pytest.approx(20.0)
    assert rows["a"].latency.ratio == pytest.approx(0.5) and rows["a"].latency.basis == "timed"
    assert rows["b"].latency.ratio == pytest.approx(0.9) and rows["b"].latency.basis == "probe"
    assert rows["b"].latency.backend == "onnxruntime"
    # the student timed on its teacher's backend too (what the report measures): full runs win over the probe
    data.host[0].result("b", "student").other_backends_us["onnxruntime"] = 10.0
    timed = same_backend(data.host[0], "b")
    assert (timed.basis, timed.backend, timed.student_us, timed.teacher_us) == ("timed", "onnxruntime", 10.0, 50.0)
    data.host[0].result("b", "student").other_backends_us.clear()
    assert rows["a"].verdicts == {"retention": True, "flops": True, "latency": True}
    assert rows["b"].verdicts == {"retention": True, "flops": False, "latency": False}

    table = answer_table(data)
    assert table.headers[:4] == ["student", "view (inputs / full)", "retention", f"paper: {CLAIMS['retention'].paper}"]
    assert [h for h in table.headers if h.startswith("paper:")] == [
        "paper: > 90% retention", "paper: up to 28.6x fewer FLOPs", "paper: ~40% less inference time"]
    a, b = table.rows
    assert a[:6] == ["a", "sight:0.5, -comm.* (12/18 inputs)", "95.0%", "✅ pass", "100.0x", "✅ pass"]
    assert a[6].startswith("0.50 (30.00 / 60.00 µs; this host, x86 fp32, onnxruntime)") and a[7] == "✅ pass"
    assert b[1] == "full (18/18 inputs)" and b[4:6] == ["20.0x", "❌ miss"]
    assert "auto's probe" in b[6] and b[7] == "❌ miss"
    # the table is the report's first block after the title and the run line
    blocks = build_blocks(data, [], [])
    assert blocks[2] is not None and getattr(blocks[2], "headers", None) == table.headers


def test_missing_measurements_are_shown_as_not_measured(tmp_path):
    data = _data(tmp_path)
    data.eval = None  # not evaluated
    data.costs["b"] = AgentCost("b", NetworkCost(600, 500), None, (16,))  # teacher cost unknown
    # a measured, but on backends with no common probe: no same-backend comparison exists
    data.host = [_set(THIS_HOST, "x86", HOST, [_result("a", "teacher", "onnxruntime", 60.0, {"onnxruntime": 60.0}),
                                              _result("a", "student", "numpy", 5.0, {"numpy": 5.0})])]
    rows = {r.agent: r for r in answer_rows(data)}
    assert rows["a"].latency is None and rows["b"].flops_ratio is None and rows["a"].retention is None
    assert rows["a"].verdicts["retention"] is None and rows["b"].verdicts["flops"] is None
    table = answer_table(data)
    a, b = table.rows
    assert a[2] == a[3] == a[6] == a[7] == NOT_MEASURED
    assert a[4:6] == ["100.0x", "✅ pass"]
    assert b[4] == b[5] == NOT_MEASURED


def test_another_device_is_preferred_for_the_latency_claim(tmp_path):
    data = _data(tmp_path)
    data.host = [_set(THIS_HOST, "x86", HOST, [_result("a", "teacher", "onnxruntime", 60.0),
                                              _result("a", "student", "onnxruntime", 30.0)])]
    data.devices = [_set("rpi5 (Raspberry Pi 5)", "rpi", PI, [_result("a", "teacher", "onnxruntime", 400.0),
                                                              _result("a", "student", "onnxruntime", 100.0)],
                         kind="device")]
    row = next(r for r in answer_rows(data) if r.agent == "a")
    assert row.latency.machine == "rpi5 (Raspberry Pi 5)" and row.latency.ratio == pytest.approx(0.25)
    assert same_backend(data.host[0], "a").ratio == pytest.approx(0.5)
    assert same_backend(data.host[0], "b") is None  # b was not measured


def test_a_device_file_written_on_this_host_is_this_host(tmp_path):
    """The demo's RUN/devices/this-host.json: same machine as the live measurement, so one row per
    machine; a file from another machine keeps its own name; a record without platform or CPU is
    never taken for this host."""
    results = [_result("a", "teacher", "onnxruntime", 60.0), _result("a", "student", "numpy", 5.0)]
    live = [_set(THIS_HOST, "rpi", HOST, results, precision="int8")]
    same_bundle = _set("this-host (AMD EPYC)", "rpi", {**HOST, "onnxruntime": "1.3", "affinity_cpus": 1}, results,
                       kind="device", precision="int8", source="/run/devices/this-host.json")
    other_bundle = _set("host-x86 (AMD EPYC)", "x86", HOST, results, kind="device", source="/run/devices/host-x86.json")
    pi = _set("rpi5 (Cortex-A76)", "rpi", PI, results, kind="device", precision="int8", source="/run/devices/rpi5.json")
    pi_fp32 = _set("rpi5-fp32 (Cortex-A76)", "x86", PI, results, kind="device", source="/run/devices/rpi5-fp32.json")
    bare = _set("old", "rpi", {"machine": "x86_64"}, results, kind="device", precision="int8",
                source="/run/devices/old.json")
    notes: list[str] = []
    host, others = merge_this_host(live, [same_bundle, other_bundle, pi, pi_fp32, bare], HOST, notes)
    assert [s.machine for s in host] == [THIS_HOST, THIS_HOST]
    assert host[1] is other_bundle and other_bundle.kind == "host" and "from host-x86.json" in other_bundle.label
    assert others == [pi, pi_fp32, bare]
    assert pi_fp32.machine == "rpi5 (Cortex-A76)"  # one other machine, two files: one name
    assert len(notes) == 2 and "this-host.json" in notes[0] and "shown once" in notes[0]

    data = _data(tmp_path)
    data.host, data.devices = host, others
    machines = [row[0] for row in benchmark_rows(data)]
    assert set(machines) == {THIS_HOST, "rpi5 (Cortex-A76)", "old"}
    assert machines.count("rpi5 (Cortex-A76)") == 4  # its rpi and x86 bundles
    keys = [(row[0], row[1], row[2]) for row in benchmark_rows(data)]
    assert len(keys) == len(set(keys))  # each model once per machine
    assert machines.count(THIS_HOST) == 4  # rpi and x86 bundles, teacher and student of a


def test_plot_data_holds_the_teacher_and_every_student(tmp_path):
    data = _data(tmp_path)
    data.host = [_set(THIS_HOST, "x86", HOST, [_result(agent, role, "onnxruntime", p50)
                                              for agent in "ab" for role, p50 in (("teacher", 60.0), ("student", 6.0))])]
    data.devices = [_set("rpi5", "rpi", PI, [_result("a", "student", "numpy", 20.0, precision="int8")], kind="device")]

    cost = cost_points(data)
    assert {(p.role, p.agent, p.mode) for p in cost} == {
        ("teacher", "a", "reference"), ("teacher", "b", "reference"), ("student", "a", "greedy"),
        ("student", "a", "sampled"), ("student", "b", "greedy"), ("student", "b", "sampled")}
    by_key = {(p.role, p.agent, p.mode): p for p in cost}
    assert by_key[("teacher", "a", "reference")].macs == 10_000 and by_key[("teacher", "a", "reference")].retention == 1.0
    assert by_key[("student", "a", "sampled")].macs == 100 and by_key[("student", "a", "sampled")].retention == 0.85
    assert by_key[("student", "a", "greedy")].view == "sight:0.5, -comm.*"

    latency = latency_points(data)
    assert len(latency) == 5
    assert {(p.machine, p.role, p.agent) for p in latency} >= {(THIS_HOST, "teacher", "a"), (THIS_HOST, "student", "b"),
                                                               ("rpi5", "student", "a")}
    assert all(p.retention == (1.0 if p.role == "teacher" else 0.95) for p in latency)

    budget = {p.input.agent: p for p in budget_points(data)}
    assert budget["a"].input.fraction == pytest.approx(12 / 18) and budget["a"].input.view == "sight:0.5, -comm.*"
    assert budget["b"].input.fraction == 1.0 and budget["b"].retention == 0.95

    data.eval = None  # nothing evaluated: nothing to draw
    assert cost_points(data) == latency_points(data) == budget_points(data) == []
