"""`kdx report` on a tiny real run: a teacher trained for two updates, students distilled for
three, evaluated, exported (x86 fp32 and rpi int8), benchmarked through the runtime's own
bench JSON for a device file. Checks the numbers against the artifacts they come from, the
self-contained HTML, missing parts and malformed device files."""

from __future__ import annotations

import base64
import io
import json
import re
import shutil
from html.parser import HTMLParser
from pathlib import Path

import pytest
import torch

from kdx.devices.cost import COST_RULE
from kdx.errors import KdxError
from kdx.layout import RunLayout
from kdx.report.claims import answer_rows, same_backend
from kdx.report.content import benchmark_rows, fmt_int, fmt_kib, fmt_pct
from kdx.report.estimates import host_speed
from kdx.report.latency_model import CORE_FACTORS, fit_latency_model
from kdx.report.report import benchmark_table, write_report

ITERS = 60  # timed decisions per model: enough for p50/p99, cheap in CI
PNG_SIGNATURE = b"\x89PNG\r\n\x1a\n"


@pytest.fixture(scope="module")
def tiny_run(tmp_path_factory) -> Path:
    """A complete run folder made with the project's own APIs (~5 s)."""
    from kdx.export.bundle import ExportConfig, export_bundle
    from kdx.trainer.distill.config import DistillConfig
    from kdx.trainer.distill.loop import distill
    from kdx.trainer.evaluation import evaluate_run
    from kdx.trainer.teacher.config import TeacherConfig
    from kdx.trainer.teacher.mappo import train

    torch.set_num_threads(1)
    run = tmp_path_factory.mktemp("report") / "run"
    train(run, TeacherConfig(env="mpe/simple_spread", hidden="64,64", num_envs=8, rollout_length=25,
                             total_steps=8 * 25 * 2, epochs=1, threads=1), show_progress=False)
    distill(run, DistillConfig(total_steps=16 * 4 * 3, num_envs=16, rollout_length=4, threads=1, obs_norm_steps=4),
            show_progress=False)
    evaluate_run(run, episodes=8)
    export_bundle(ExportConfig(run, "x86"))
    export_bundle(ExportConfig(run, "rpi"))
    return run


class _Refs(HTMLParser):
    """Every src/href attribute and the tags that could pull in outside resources."""

    def __init__(self) -> None:
        super().__init__()
        self.refs: list[tuple[str, str, str]] = []
        self.images: list[str] = []

    def handle_starttag(self, tag, attrs):
        for name, value in attrs:
            if name in ("src", "href", "srcset", "data", "action", "poster"):
                self.refs.append((tag, name, value or ""))
                if tag == "img" and name == "src":
                    self.images.append(value or "")


def _assert_self_contained(html_text: str) -> list[bytes]:
    """No external reference anywhere; every image a base64 PNG that decodes. Returns the PNGs."""
    import matplotlib.image

    parser = _Refs()
    parser.feed(html_text)
    pngs = []
    for tag, name, value in parser.refs:
        assert tag == "img" and name == "src", f"external reference: <{tag} {name}={value[:60]}>"
        assert value.startswith("data:image/png;base64,"), value[:60]
        png = base64.b64decode(value.split(",", 1)[1], validate=True)
        assert png.startswith(PNG_SIGNATURE)
        pixels = matplotlib.image.imread(io.BytesIO(png), format="png")
        assert pixels.ndim == 3 and pixels.shape[0] > 100 and pixels.shape[1] > 100
        pngs.append(png)
    assert "url(" not in html_text and "@import" not in html_text
    return pngs


def _agent_table(markdown: str, agent: str) -> dict[str, list[str]]:
    """The rows of ``agent``'s teacher-vs-student table: first cell -> the other cells."""
    block = markdown.split(f"*{agent}: teacher vs student*", 1)[1].split("\n\n", 2)[1]
    rows = {}
    for line in block.splitlines()[2:]:
        cells = [c.strip() for c in line.strip("|").split(" | ")]
        rows[cells[0]] = cells[1:]
    return rows


def test_report_on_a_complete_run(tiny_run, tmp_path):
    from kdx.runtime.bench import bench_bundle, bench_json
    from kdx.runtime.bundle import Bundle
    from kdx.runtime.manifest import load_manifest
    from kdx.trainer.common.layers import module_cost
    from kdx.trainer.distill.store import load_students
    from kdx.trainer.teacher.store import load_teacher

    run = tmp_path / "run"
    shutil.copytree(tiny_run, run)
    devices = RunLayout(run).devices
    devices.mkdir()
    bundle = Bundle.load(RunLayout(run).bundle("rpi"))
    # this host's own bench file (what `kdx demo` leaves in RUN/devices/): the same machine as the
    # live measurement, shown once
    (devices / "this-host.json").write_text(json.dumps(bench_json(bench_bundle(bundle, iters=40, warmup=5), bundle)))
    # a file from a Raspberry Pi 5 (its device record says so; the numbers are measured here)
    device_doc = bench_json(bench_bundle(bundle, iters=40, warmup=5), bundle)
    device_doc["device"].update(platform="Linux-6.6.31+rpt-rpi-2712-aarch64-with-glibc2.36", machine="aarch64",
                                cpu_model="Cortex-A76", board_model="Raspberry Pi 5 Model B Rev 1.0", cpu_count=4)
    (devices / "rpi5.json").write_text(json.dumps(device_doc))
    (devices / "broken.json").write_text("{not json")
    (devices / "wrong.json").write_text(json.dumps({"results": [{"agent": "agent_0", "role": "student"}]}))

    paths = write_report(run, iters=ITERS, warmup=10)
    md = paths.markdown.read_text()
    html_text = paths.html.read_text()

    # costs: the one rule applied to the very networks of the run
    teacher, students = load_teacher(run), load_students(run)
    eval_doc = json.loads(RunLayout(run).eval_json.read_text())
    for i, agent in enumerate(teacher.spec.agents):
        rows = _agent_table(md, agent.name)
        t_cost = module_cost(teacher.actor.agent_view(i, agent.n_actions, agent.obs_dim))
        s_params = sum(p.numel() for p in students[agent.name].parameters())
        assert rows["parameters"][:2] == [fmt_int(t_cost.params), fmt_int(s_params)]
        assert rows["MACs"][0] == fmt_int(t_cost.macs)
        assert rows["FLOPs (2 x MACs)"][0] == fmt_int(2 * t_cost.macs)
        # ONNX sizes of both precisions, read from the files themselves
        for target in ("x86", "rpi"):
            # int8 falls back to fp32 per agent when it misses the parity bar: the manifest says which
            entry = load_manifest(RunLayout(run).bundle(target)).agent(agent.name)
            size = (RunLayout(run).bundle(target) / entry.file_of_kind("onnx").path).stat().st_size
            assert rows[f"ONNX size KiB ({target} bundle)"][1] == f"{fmt_kib(size)} ({entry.precision})"
        # host latency of both bundles and the device file, teacher and student
        latency_rows = [v for k, v in rows.items() if k.startswith("p50 / p99")]
        assert len(latency_rows) == 3
        for values in latency_rows:
            for cell in values[:2]:
                p50, p99 = (float(x) for x in cell.split(" (")[0].split(" / "))
                assert 0 < p50 <= p99
        team = next(v for k, v in rows.items() if k.startswith("team score"))
        assert team[2] == f"retained {fmt_pct(eval_doc['students']['retention'])}"
    assert paths.data.retention == pytest.approx(eval_doc["students"]["retention"])
    # each student's view and input size: in eval.json and on the report's first screen
    for agent in teacher.spec.agents:
        assert eval_doc["students"]["inputs"][agent.name] == {"view": "full", "input_size": agent.obs_dim,
                                                               "full_input_size": agent.obs_dim}
    first_screen = md.split("## ", 1)[0]
    assert "paper: > 90% retention" in first_screen and "paper: ~40% less inference time" in first_screen
    assert f"| agent_0 | full ({teacher.spec.agents[0].obs_dim}/{teacher.spec.agents[0].obs_dim} inputs) |" \
        in first_screen
    oracle = eval_doc["policies"]["oracle"]
    assert f"| oracle | 8 | {oracle['mean_return']:.3f} ± {oracle['return_ci95']:.3f} |" in md
    assert "Students sized for device profile x86-cpu." in md

    # the host measurement came through the runtime with the requested sample count
    assert {s.bundle["target"] for s in paths.data.host} == {"x86", "rpi"}
    for latency in paths.data.host:
        assert len(latency.results) == 2 * len(teacher.spec.agents)
        assert all(r.samples_us is not None and len(r.samples_us) == ITERS for r in latency.results)
        # a student that auto ran on another backend than its teacher was timed on the teacher's too
        for agent in teacher.spec.agent_names:
            t, st = latency.result(agent, "teacher"), latency.result(agent, "student")
            assert t.backend in st.timed_us and st.timed_us[t.backend] > 0
            assert same_backend(latency, agent).basis == "timed"
    # the first screen takes the other device's file first (bench files hold auto's probe only)
    assert {row.latency.machine for row in answer_rows(paths.data)} == {paths.data.devices[0].machine}

    # device files: the good one is shown and fits rpi5's estimate; the bad ones are named and skipped;
    # this host's own file is this host (one name per machine), noted once
    assert [d.label.split(" ")[0] for d in paths.data.devices] == ["rpi5"]
    assert "Measured on other devices" in md
    machines = {row[0] for row in benchmark_rows(paths.data)}
    assert machines == {"this host", paths.data.devices[0].label}
    assert any("this-host.json: measured on this host" in note for note in paths.data.notes)
    assert "this-host (" not in md
    problems = "\n".join(paths.problems)
    assert "broken.json" in problems and "wrong.json" in problems and "p50_us" in problems
    by_profile = {e.profile: e for e in paths.estimates}
    assert by_profile["rpi5"].basis == "device" and by_profile["rpi4"].basis == "scaled host"
    # microcontrollers run no Python: no host-scaled estimate for them
    assert not {"stm32f4", "stm32h7", "esp32-s3"} & set(by_profile)
    # rpi5: least squares on the device file's own (MACs, p50) points, applied to the run's networks
    points = [(r["macs"], r["p50_us"]) for r in device_doc["results"]]
    device_fit = fit_latency_model(*zip(*points))
    student_macs = module_cost(students["agent_0"]).macs
    rpi5_student = next(r for r in by_profile["rpi5"].rows if r.agent == "agent_0" and r.role == "student")
    assert rpi5_student.p50_us == pytest.approx(device_fit.p50_us(student_macs))
    # rpi4: the host's fit on the rpi bundle, times speed(host) / (1.5 GHz x Cortex-A72 factor)
    host_rpi = next(s for s in paths.data.host if s.bundle["target"] == "rpi")
    assert by_profile["rpi4"].factor == pytest.approx(host_speed(host_rpi) / (1.5 * CORE_FACTORS["Cortex-A72"]))
    host_fit = fit_latency_model([r.macs for r in host_rpi.results], [r.p50_us for r in host_rpi.results])
    rpi4_student = next(r for r in by_profile["rpi4"].rows if r.agent == "agent_0" and r.role == "student")
    assert rpi4_student.p50_us == pytest.approx(by_profile["rpi4"].factor * host_fit.p50_us(student_macs))
    assert "ESTIMATE, not a measurement" in md and "ESTIMATED latency per device profile" in html_text

    # conventions, plots, and a self-contained HTML whose images decode as PNG
    assert COST_RULE in md
    assert len(paths.images) == 4 and all(p.parent == RunLayout(run).report_images for p in paths.images)
    for image in paths.images:
        assert f"](report_files/{image.name})" in md
    pngs = _assert_self_contained(html_text)
    assert sorted(pngs) == sorted(p.read_bytes() for p in paths.images)
    assert paths.seconds < 60


def test_views_are_named_in_eval_json_and_the_report(tiny_run, tmp_path):
    """Students distilled with views: eval.json and the report name each view and its input size;
    the budget plot has one point per student at its share of the observation."""
    from rich.console import Console

    from kdx.report.plots import BUDGET_CAPTION
    from kdx.report.points import budget_points
    from kdx.trainer.distill.config import DistillConfig
    from kdx.trainer.distill.evaluate import print_students_table
    from kdx.trainer.distill.loop import distill
    from kdx.trainer.evaluation import evaluate_run

    run = tmp_path / "viewed"
    shutil.copytree(RunLayout(tiny_run).teacher.root, RunLayout(run).teacher.root)
    views = ("agent_0=sight:0.5", "agent_1=-comm.* -agent.1")
    distill(run, DistillConfig(total_steps=16 * 4 * 2, num_envs=16, rollout_length=4, threads=1, obs_norm_steps=4,
                               views=views), show_progress=False)
    result = evaluate_run(run, episodes=4)
    inputs = result["students"]["inputs"]
    # simple_spread: 18 features; -comm.* drops 4 and -agent.1 2; sight zeroes, keeping the width
    assert inputs == {"agent_0": {"view": "sight:0.5", "input_size": 18, "full_input_size": 18},
                      "agent_1": {"view": "-comm.*, -agent.1", "input_size": 12, "full_input_size": 18},
                      "agent_2": {"view": "full", "input_size": 18, "full_input_size": 18}}
    assert json.loads(RunLayout(run).eval_json.read_text())["students"]["inputs"] == inputs
    console = Console(file=io.StringIO(), width=250)
    print_students_table(result, console)  # what `kdx evaluate` prints
    assert "-comm.*, -agent.1 (12/18)" in console.file.getvalue()
    paths = write_report(run, measure=False)
    md = paths.markdown.read_text()
    first_screen = md.split("## ", 1)[0]
    for row in ("| agent_0 | sight:0.5 (18/18 inputs) |", "| agent_1 | -comm.*, -agent.1 (12/18 inputs) |",
                "| agent_2 | full (18/18 inputs) |"):
        assert row in first_screen
    assert "| view (inputs) | full (18) | -comm.*, -agent.1 (12/18 inputs) | 1.5x |" in md
    assert {p.input.agent: p.input.fraction for p in budget_points(paths.data)} == {"agent_0": 1.0, "agent_1": 12 / 18,
                                                                       "agent_2": 1.0}
    assert "](report_files/retention_vs_budget.png)" in md and BUDGET_CAPTION in md
    assert "not measured" in first_screen  # no bundle (export refuses views for now): latency not measured


def test_report_of_a_run_without_students_or_bundles(tiny_run, tmp_path):
    run = tmp_path / "teacher_only"
    shutil.copytree(RunLayout(tiny_run).teacher.root, RunLayout(run).teacher.root)
    paths = write_report(run, iters=ITERS)
    md = paths.markdown.read_text()
    missing = "\n".join(paths.missing)
    for part in ("students:", "evaluation:", "bundles:", "device latency:"):
        assert part in missing and part in md
    assert "kdx distill" in missing and "kdx export" in missing
    # what exists is still there: the teacher's cost and its learning curve
    rows = _agent_table(md, "agent_0")
    assert re.fullmatch(r"[\d,]+", rows["MACs"][0]) and rows["MACs"][1] == "-"
    assert [p.name for p in paths.images] == ["learning_curves.png"]
    assert "not drawn" in md
    assert len(_assert_self_contained(paths.html.read_text())) == 1


def test_costs_are_counted_once_and_read_everywhere(tiny_run, tmp_path):
    """sizing.json holds each agent's costs (written by kdx distill); eval.json, the manifest and
    the report show those very numbers, which the fp32 ONNX weights confirm; a run from before
    costs were stored gets the same numbers counted on the spot."""
    from kdx.export.quantize import model_macs
    from kdx.export.sources import load_run_policies
    from kdx.report.collect import collect
    from kdx.runtime.manifest import load_manifest

    sizing = RunLayout(tiny_run).students.sizing
    stored = {row["agent"]: row for row in json.loads(sizing.read_text())["agents"]}
    evaluated = json.loads(RunLayout(tiny_run).eval_json.read_text())["students"]["cost"]
    bundle = RunLayout(tiny_run).bundle("x86")
    manifest = load_manifest(bundle)
    assert manifest.precision == "fp32"
    for role, entries, prefix in (("student", manifest.agents, ""), ("teacher", manifest.teacher, "teacher_")):
        for entry in entries:
            row, ev = stored[entry.name], evaluated[entry.name]
            expected = (row[f"{prefix}params"], row[f"{prefix}macs"])
            assert (entry.params, entry.macs) == expected == (ev[f"{role}_params"], ev[f"{role}_macs"])
            # quantize.model_macs (the int8 share's count) reads the fp32 ONNX weights: the same MACs
            matmuls, recurrent = model_macs(bundle / entry.file_of_kind("onnx").path)
            assert sum(matmuls.values()) + recurrent == entry.macs
    report_costs = collect(tiny_run, measure=False).costs
    assert {a: (c.student.macs, c.teacher.macs) for a, c in report_costs.items()} == \
        {a: (r["macs"], r["teacher_macs"]) for a, r in stored.items()}

    # readers read: a stored value changed by hand is what the report and export show
    run = tmp_path / "run"
    shutil.copytree(tiny_run, run)
    doc = json.loads(sizing.read_text())
    doc["agents"][0]["teacher_macs"] = 123_456_789
    RunLayout(run).students.sizing.write_text(json.dumps(doc))
    agent = doc["agents"][0]["agent"]
    assert collect(run, measure=False).costs[agent].teacher.macs == 123_456_789
    assert load_run_policies(run).teacher[0].cost.macs == 123_456_789
    # a run distilled before costs were stored: counted now with the same function, same numbers
    RunLayout(run).students.sizing.unlink()
    assert collect(run, measure=False).costs == report_costs
    policies = load_run_policies(run)
    assert [(p.cost.params, p.cost.macs) for p in policies.students] == \
        [(stored[p.name]["params"], stored[p.name]["macs"]) for p in policies.students]


def test_report_of_an_empty_folder_and_of_no_folder(tmp_path):
    paths = write_report(tmp_path, iters=ITERS)
    assert paths.markdown.is_file() and paths.html.is_file() and paths.images == []
    assert len(paths.missing) >= 4
    with pytest.raises(KdxError, match="no such run folder"):
        write_report(tmp_path / "nope")
    with pytest.raises(KdxError, match="unknown backend 'gpu'; choose auto or one of"):
        write_report(tmp_path, backend="gpu")


def test_cli_report_without_measuring_prints_the_table(tiny_run, tmp_path):
    from typer.testing import CliRunner

    from kdx.cli import app

    run = tmp_path / "run"
    shutil.copytree(tiny_run, run)
    RunLayout(run).report_md.unlink(missing_ok=True)
    result = CliRunner().invoke(app, ["report", str(run), "--no-measure"])
    assert result.exit_code == 0, result.output
    assert "student fp32 (x86)" in result.output and "not measured" in result.output
    assert "host latency: not measured (--no-measure)" in result.output
    assert RunLayout(run).report_md.is_file() and RunLayout(run).report_html.is_file()
    # the console table is available on its own, from the same data
    from rich.console import Console

    console = Console(file=io.StringIO(), width=250)
    paths = write_report(run, measure=False)
    console.print(benchmark_table(paths.data))
    text = console.file.getvalue()
    assert text.count("agent_1") == 4  # teacher + student, two bundles


def test_a_corrupt_bundle_is_reported_and_the_others_measured(tiny_run, tmp_path):
    run = tmp_path / "run"
    shutil.copytree(tiny_run, run)
    with open(RunLayout(run).bundle("rpi") / "agent_0.npz", "ab") as handle:
        handle.write(b"tampered")
    paths = write_report(run, iters=ITERS, warmup=10)
    assert [s.bundle["target"] for s in paths.data.host] == ["x86"]
    problem = next(p for p in paths.problems if "host latency" in p)
    assert "rpi" in problem and "agent_0.npz" in problem
    assert "host latency of" in paths.markdown.read_text()
