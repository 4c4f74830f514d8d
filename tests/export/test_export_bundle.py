"""Bundles: manifest round trip and validation, tar.gz contents, atomicity, --force, bad input,
and the runtime loading what the exporter wrote."""

from __future__ import annotations

import json
import tarfile
from pathlib import Path

import numpy as np
import pytest
import torch
from typer.testing import CliRunner

from kdx.errors import KdxError
from kdx.export import bundle as bundle_module
from kdx.export.bundle import ExportConfig, export_bundle
from kdx.export.calib import CalibData
from kdx.export.onnx_export import read_metadata
from kdx.fileio import sha256_file
from kdx.layout import RunLayout
from kdx.runtime.bundle import Bundle, verify_files
from kdx.runtime.manifest import Manifest, load_manifest


def test_manifest_round_trip_and_files(rpi_export) -> None:
    result = rpi_export
    manifest = load_manifest(result.bundle_dir)
    assert manifest == result.manifest
    assert Manifest.from_json(manifest.to_json()) == manifest
    assert manifest.target == "rpi" and manifest.precision == "int8"
    assert manifest.env == "mpe/simple_spread"
    assert [a.name for a in manifest.agents] == ["agent_0", "agent_1", "agent_2"]
    assert [a.name for a in manifest.teacher] == ["agent_0", "agent_1", "agent_2"]
    verify_files(result.bundle_dir, manifest)  # every listed file exists with its sha256
    listed = {f.path for f in manifest.files()} | {"manifest.json"}
    on_disk = {str(p.relative_to(result.bundle_dir)) for p in result.bundle_dir.rglob("*") if p.is_file()}
    assert on_disk == listed  # and nothing unlisted was shipped
    # trained students keep the int8 bar (any that did not would be fp32, with a warning)
    assert [a.precision for a in manifest.agents].count("int8") >= 2
    for entry in manifest.agents:
        assert entry.parity["action_agreement"] >= (0.99 if entry.precision == "int8" else 1.0)
        assert entry.parity["passed"] is True
        kinds = {f.kind for f in entry.files}
        assert {"onnx", "onnx-dynamic", "npz", "calib", "json"} <= kinds
        assert entry.params > 0 and entry.macs > 0
        assert entry.inputs.action_mask == "action_mask" and entry.recurrent_state_shape is None
    import onnx

    for entry in manifest.entries():  # static models have batch 1, dynamic ones a symbolic batch
        static = onnx.load(str(result.bundle_dir / entry.file_of_kind("onnx").path))
        dynamic = onnx.load(str(result.bundle_dir / entry.file_of_kind("onnx-dynamic").path))
        assert [d.dim_value for d in static.graph.input[0].type.tensor_type.shape.dim] == [1, 18]
        assert dynamic.graph.input[0].type.tensor_type.shape.dim[0].dim_param
        assert [d.dim_value for d in static.graph.output[1].type.tensor_type.shape.dim] == [1]
    for entry in manifest.teacher:
        assert entry.recurrent_state_shape == [1, 32]
        assert entry.inputs.h_in == "h_in" and entry.outputs.h_out == "h_out"
        assert entry.precision in ("int8", "fp32")  # an untrained teacher may fall back


def test_fallback_to_fp32_is_warned_and_recorded(rpi_export) -> None:
    fallen = [e for e in rpi_export.manifest.teacher if e.precision == "fp32"]
    assert len(rpi_export.warnings) == len(fallen)
    for entry in fallen:
        assert any(entry.name in w and "fp32" in w for w in rpi_export.warnings)
        assert entry.file_of_kind("onnx").path == f"teacher/{entry.name}.fp32.onnx"
        assert entry.parity["fallback_from"] == "int8"
        assert entry.parity["fallback_from_action_agreement"] < 0.99
        assert entry.parity["precision"] == "fp32" and entry.parity["passed"] is True


def test_parity_json_and_checkpoint_metadata(rpi_export, spread_students) -> None:
    doc = json.loads((rpi_export.bundle_dir / "parity.json").read_text())
    assert doc["samples"] >= 1000 and doc["target"] == "rpi"
    static = [r for r in doc["results"] if r["role"] == "student" and "dynamic" not in r["model"]]
    assert len(static) == 3 and all(r["passed"] for r in static)
    models = {r["model"] for r in doc["results"]}
    listed = {f.path for e in rpi_export.manifest.entries() for f in e.files}
    shipped = {m for m in models if m in listed}
    assert {f"teacher/{e.name}.{e.precision}.onnx" for e in rpi_export.manifest.teacher} <= shipped
    run = rpi_export.bundle_dir.parent.parent
    meta = read_metadata(rpi_export.bundle_dir / "agent_0.int8.onnx")
    assert meta["checkpoint_sha256"] == sha256_file(RunLayout(run).students.weights("agent_0"))
    assert meta["precision"] == "int8" and meta["agent"] == "agent_0"


def test_parity_is_measured_on_held_out_rollouts(rpi_export) -> None:
    """parity.json's numbers come from rows recorded with parity_seed, not from calib.npz."""
    from kdx.export.calib import record_rollouts
    from kdx.export.parity import measure_parity
    from kdx.export.sources import load_run_policies

    config = ExportConfig(Path("."), "rpi")
    doc = json.loads((rpi_export.bundle_dir / "parity.json").read_text())
    assert str(config.parity_seed) in doc["rows"] and doc["calibration_samples"] >= 1000
    policies = load_run_policies(rpi_export.bundle_dir.parent.parent, include_teacher=False)
    heldout = record_rollouts(policies.env, policies.students, (), doc["samples"], config.calib_envs,
                              config.parity_seed)
    calib = CalibData.load(rpi_export.bundle_dir / "calib.npz")
    source = policies.students[0]
    assert not np.array_equal(heldout.obs[source.name][:100], calib.obs[source.name][:100])
    recorded = next(r for r in doc["results"] if r["model"] == f"{source.name}.int8.onnx")
    again = measure_parity(source, rpi_export.bundle_dir / recorded["model"], "int8", heldout.inputs(source))
    assert again.action_agreement == recorded["action_agreement"]
    assert again.max_abs_logit_diff == pytest.approx(recorded["max_abs_logit_diff"], rel=1e-6)
    with pytest.raises(KdxError, match="parity_seed must differ"):
        export_bundle(ExportConfig(Path("."), "rpi", seed=5, parity_seed=5))


def test_tarball_holds_the_bundle(rpi_export) -> None:
    folder = rpi_export.bundle_dir
    with tarfile.open(rpi_export.tarball) as tar:
        members = {m.name: m for m in tar.getmembers() if m.isfile()}
        expected = {f"rpi/{p.relative_to(folder)}" for p in folder.rglob("*") if p.is_file()}
        assert set(members) == expected
        data = tar.extractfile(members["rpi/manifest.json"]).read()
    assert data == (folder / "manifest.json").read_bytes()
    leftovers = [p.name for p in folder.parent.iterdir() if p.name.startswith(".")]
    assert leftovers == []


def test_runtime_runs_the_bundle_like_torch(rpi_export, spread_students) -> None:
    bundle = Bundle.load(rpi_export.bundle_dir)
    calib = CalibData.load(rpi_export.bundle_dir / "calib.npz")
    obs, mask = calib.obs["agent_1"][:300], calib.action_mask["agent_1"][:300]
    with torch.no_grad():
        expected = spread_students["agent_1"](torch.from_numpy(obs))[0].argmax(-1).numpy()
    for backend in ("numpy", "onnxruntime"):
        policy = bundle.policy("agent_1", backend)
        actions = np.array([policy.act(o, m) for o, m in zip(obs, mask)])
        assert np.mean(actions == expected) >= 0.99, backend


def test_existing_bundle_needs_force(spread_run: Path) -> None:
    config = ExportConfig(spread_run, "x86", include_teacher=False)
    first = export_bundle(config)
    before = sha256_file(first.tarball)
    with pytest.raises(KdxError, match="--force"):
        export_bundle(config)
    assert sha256_file(first.tarball) == before
    (first.bundle_dir / "stray.txt").write_text("from the old bundle")
    again = export_bundle(ExportConfig(spread_run, "x86", include_teacher=False, force=True, precision="fp16"))
    assert not (again.bundle_dir / "stray.txt").exists()
    assert load_manifest(again.bundle_dir).precision == "fp16"
    assert sorted(p.name for p in again.bundle_dir.parent.iterdir()) == ["x86", "x86.tar.gz"]


def test_failure_mid_export_leaves_nothing(spread_run: Path, monkeypatch) -> None:
    calls = []
    real = bundle_module.measure_parity

    def fail_on_third(*args, **kwargs):
        calls.append(1)
        if len(calls) == 3:
            raise RuntimeError("injected failure")
        return real(*args, **kwargs)

    monkeypatch.setattr(bundle_module, "measure_parity", fail_on_third)
    with pytest.raises(RuntimeError, match="injected"):
        export_bundle(ExportConfig(spread_run, "jetson", include_teacher=False))
    assert len(calls) == 3
    bundles = RunLayout(spread_run).bundles
    assert list(bundles.iterdir()) == []


def test_failure_keeps_the_previous_bundle(spread_run: Path, monkeypatch) -> None:
    first = export_bundle(ExportConfig(spread_run, "x86", include_teacher=False))
    manifest_before = (first.bundle_dir / "manifest.json").read_bytes()

    def broken(*args, **kwargs):
        raise RuntimeError("injected failure")

    monkeypatch.setattr(bundle_module, "_write_tarball", broken)
    with pytest.raises(RuntimeError):
        export_bundle(ExportConfig(spread_run, "x86", include_teacher=False, force=True))
    assert (first.bundle_dir / "manifest.json").read_bytes() == manifest_before
    assert sorted(p.name for p in RunLayout(spread_run).bundles.iterdir()) == ["x86", "x86.tar.gz"]


def test_jetson_bundle_has_the_trtexec_script(spread_run: Path) -> None:
    result = export_bundle(ExportConfig(spread_run, "jetson", include_teacher=False))
    script = (result.bundle_dir / "build_engines.sh").read_text()
    for entry in result.manifest.agents:
        assert entry.precision == "fp16"
        assert f"--onnx={entry.name}.fp16.onnx --saveEngine=engines/{entry.name}.fp16.engine" in script
        assert any(f.kind == "script" for f in entry.files)


def test_bad_input(tmp_path: Path, spread_run: Path) -> None:
    with pytest.raises(KdxError, match="valid targets: jetson, rpi, x86"):
        export_bundle(ExportConfig(spread_run, "esp32"))
    with pytest.raises(KdxError, match="valid precisions"):
        export_bundle(ExportConfig(spread_run, "rpi", precision="int4"))
    with pytest.raises(KdxError, match="does not exist"):
        export_bundle(ExportConfig(tmp_path / "nope", "x86"))
    (tmp_path / "empty").mkdir()
    with pytest.raises(KdxError, match="kdx distill"):
        export_bundle(ExportConfig(tmp_path / "empty", "x86"))
    teacher_weights = RunLayout(spread_run).teacher.weights
    good = teacher_weights.read_bytes()
    teacher_weights.write_bytes(good[:64])
    with pytest.raises(KdxError, match="weights.safetensors is corrupt"):
        export_bundle(ExportConfig(spread_run, "x86"))
    teacher_weights.write_bytes(good)
    weights = RunLayout(spread_run).students.weights("agent_1")
    weights.write_bytes(weights.read_bytes()[:100])
    with pytest.raises(KdxError, match="agent_1.safetensors is corrupt"):
        export_bundle(ExportConfig(spread_run, "x86"))
    weights.unlink()
    with pytest.raises(KdxError, match="agent_1.safetensors is missing"):
        export_bundle(ExportConfig(spread_run, "x86"))
    assert not RunLayout(spread_run).bundles.exists() or list(RunLayout(spread_run).bundles.iterdir()) == []


def test_cli_export_and_list_targets(spread_run: Path) -> None:
    from kdx.cli import app

    runner = CliRunner(env={"COLUMNS": "250"})  # rich wraps the table to the terminal width
    listed = runner.invoke(app, ["export", "--list-targets"])
    assert listed.exit_code == 0, listed.output
    for name in ("jetson", "rpi", "x86", "rpi5", "jetson-orin-nano"):
        assert name in listed.output
    out = runner.invoke(app, ["export", str(spread_run), "--target", "x86", "--no-teacher"])
    assert out.exit_code == 0, out.output
    assert "agent_2" in out.output and "100.00%" in out.output
    assert (RunLayout(spread_run).bundle("x86") / "manifest.json").is_file()
    again = runner.invoke(app, ["export", str(spread_run), "--target", "x86"])
    assert again.exit_code != 0 and "--force" in str(again.exception)


def test_jetson_int8_uses_symmetric_activations(spread_run: Path) -> None:
    """TensorRT accepts only zero-point-0 Q/DQ: the jetson int8 models must have them."""
    import onnx
    from onnx import numpy_helper

    result = export_bundle(ExportConfig(spread_run, "jetson", precision="int8", include_teacher=False))
    shipped_int8 = [e for e in result.manifest.agents if e.precision == "int8"]
    assert shipped_int8, result.warnings
    for entry in shipped_int8:
        model = onnx.load(str(result.bundle_dir / entry.file_of_kind("onnx").path))
        inits = {i.name: numpy_helper.to_array(i) for i in model.graph.initializer}
        zero_points = [inits[n.input[2]] for n in model.graph.node
                       if n.op_type == "QuantizeLinear" and len(n.input) > 2]
        assert zero_points and all(np.all(z == 0) for z in zero_points)
        assert f"--onnx={entry.name}.int8.onnx" in (result.bundle_dir / "build_engines.sh").read_text()


def test_heterogeneous_agents(make_bc_run) -> None:
    """speaker (obs 3, 3 actions) and listener (obs 11, 5 actions): sizes per agent, and the
    shared teacher actor's zero padding and agent id baked into each agent's graph."""
    run = make_bc_run("mpe/simple_speaker_listener", steps=60)
    result = export_bundle(ExportConfig(run, "x86"))
    sizes = {(e.role, e.name): (e.obs_dim, e.n_actions) for e in result.manifest.entries()}
    assert sizes == {("student", "speaker_0"): (3, 3), ("student", "listener_0"): (11, 5),
                     ("teacher", "speaker_0"): (3, 3), ("teacher", "listener_0"): (11, 5)}
    assert all(r.passed and r.max_abs_logit_diff <= 1e-4 for r in result.parity)
    bundle = Bundle.load(result.bundle_dir)
    calib = CalibData.load(result.bundle_dir / "calib.npz")
    assert calib.obs["speaker_0"].shape == (1024, 3) and calib.obs["listener_0"].shape == (1024, 11)
    policy = bundle.policy("speaker_0", "onnxruntime", role="teacher")
    assert 0 <= policy.act(calib.obs["speaker_0"][0]) < 3


def _int8_hopeless(student, obs: torch.Tensor) -> None:
    """Rewire ``student`` (18 -> 32 tanh -> 5) so that no int8 rung can keep its greedy action:
    hidden units 0-6, 8-14, 16-18 are steep steps on one observation feature each, at its median
    (int8 observations move states across them); actions 0 and 1 tie but for a small signed sum
    of those steps, the other actions are far below; and each block of 8 hidden units holds one
    unit that is always 0 in float but carries a 1000x larger weight into action 1's logit, so
    in an int8 head the small weights round to 0 and the tie is lost."""
    signal = [*range(0, 7), *range(8, 15), *range(16, 19)]  # 17 units: the sum is odd, never 0
    dead = [7, 15, 23, 31]
    layer, head = student.body[0], student.head
    with torch.no_grad():
        normalised = (obs - student.obs_mean) / student.obs_std
        layer.weight.zero_()
        layer.bias.zero_()
        for unit, feature in zip(signal, [f for f in range(18) if normalised[:, f].std() > 1e-3]):
            layer.weight[unit, feature] = 1e3
            layer.bias[unit] = -1e3 * normalised[:, feature].median()
        head.weight.zero_()
        head.bias.copy_(torch.tensor([0.0, 0.0, -10.0, -10.0, -10.0]))
        signs = torch.tensor([1.0, -1.0] * 9)[: len(signal)]
        head.weight[1, signal] = 1e-3 * signs
        head.weight[1, dead] = 1.0


def test_int8_falls_back_to_fp32_per_agent(tmp_path: Path, spread_students) -> None:
    """An agent that no int8 rung (every matmul, last layer in float, first layer in float)
    keeps at 99% agreement is shipped in fp32 with a warning, each failed rung in parity.json,
    while the other agents stay int8."""
    import copy

    from kdx.export.calib import record_rollouts
    from kdx.export.sources import RunPolicies, student_sources

    students = {name: copy.deepcopy(s) for name, s in spread_students.items()}
    calib = record_rollouts("mpe/simple_spread", student_sources(students, None), n_samples=1024)
    _int8_hopeless(students["agent_1"], torch.from_numpy(calib.obs["agent_1"]))
    policies = RunPolicies(tmp_path, "mpe/simple_spread", student_sources(students, None), [])
    result = export_bundle(ExportConfig(tmp_path, "rpi"), policies=policies)
    precisions = {e.name: e.precision for e in result.manifest.agents}
    assert precisions["agent_1"] == "fp32" and list(precisions.values()).count("int8") == 2
    assert any("agent_1" in w and "fp32" in w for w in result.warnings)
    entry = result.manifest.agent("agent_1")
    assert entry.file_of_kind("onnx").path == "agent_1.fp32.onnx"
    assert entry.parity["fallback_from"] == "int8" and entry.parity["fallback_from_action_agreement"] < 0.99
    assert not (result.bundle_dir / "agent_1.int8.onnx").exists()
    tried = [r for r in result.parity if r.agent == "agent_1" and r.precision == "int8"]
    assert [r.note for r in tried] == ["every matmul int8", "last layer kept in float", "first layer kept in float"]
    assert all(not r.passed and r.action_agreement < 0.99 for r in tried)
    for other in ("agent_0", "agent_2"):  # int8, with the share of int8 multiply-adds recorded
        parity = result.manifest.agent(other).parity
        assert 0.2 < parity["int8_mac_fraction"] <= 1.0
        assert parity["int8_mac_fraction"] == 1.0 or parity["float_nodes"]


def test_leftovers_of_a_killed_export_are_cleaned(tmp_path: Path) -> None:
    import os
    import subprocess
    import sys

    from kdx.export.bundle import remove_stale_temporaries

    child = subprocess.Popen([sys.executable, "-c", "pass"])
    child.wait()
    dead, alive = child.pid, os.getpid()
    bundles = RunLayout(tmp_path).bundles
    for name in (f".tmp-rpi-{dead}-ab12", f".scratch-{dead}-cd34", f".tmp-rpi-{alive}-ef56",
                 f".old-x86-{dead}", f".old-jetson-{dead}", "jetson"):
        (bundles / name).mkdir(parents=True)
    (bundles / f".tmp-rpi-{dead}-ab12.tar.gz").write_bytes(b"partial")
    removed = {p.name for p in remove_stale_temporaries(bundles)}
    assert removed == {f".tmp-rpi-{dead}-ab12", f".scratch-{dead}-cd34", f".tmp-rpi-{dead}-ab12.tar.gz",
                       f".old-jetson-{dead}"}
    # a live export's folder is left alone; an old bundle whose replacement never came is restored
    assert sorted(p.name for p in bundles.iterdir()) == sorted([f".tmp-rpi-{alive}-ef56", "jetson", "x86"])
