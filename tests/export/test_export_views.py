"""Export -> runtime with student views (issue 15 item 5) on mpe/simple_spread: students distilled
on views (tiny budget) are exported; the manifest records each view; calibration and parity rows
are the device views; the runtime's logits on its own (numpy) view of raw observations equal
torch's on the torch view; ``kdx-runtime run`` plays the closed loop through the views and
``serve`` takes raw or viewed observations;
``kdx-runtime info`` prints them; a view that disagrees with the model's input is refused."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import numpy as np
import pytest
import torch

from kdx.envs.registry import make
from kdx.envs.view_apply import apply_view
from kdx.envs.view_spec import View
from kdx.errors import KdxError
from kdx.export.bundle import ExportConfig, export_bundle
from kdx.export.calib import CalibData
from kdx.runtime.bundle import Bundle
from kdx.runtime.cli import main as runtime_main
from kdx.runtime.manifest import MANIFEST_NAME
from kdx.runtime.manifest_view import AgentView
from kdx.trainer.distill.config import DistillConfig
from kdx.trainer.distill.loop import distill
from kdx.trainer.distill.store import load_student_views, load_students
from tests.trainer.test_distill import TOY, make_teacher_run

ENV = "mpe/simple_spread"
VIEWS = ("agent_0=-comm.* noise:0.05", "agent_1=-comm.* quant:6:2",
         "agent_2=-comm.* dropout:landmark.*:0.2 sight:1.5")


@pytest.fixture(scope="module")
def viewed_export(tmp_path_factory):
    torch.set_num_threads(1)
    run = tmp_path_factory.mktemp("views") / "run"
    make_teacher_run(run, env=ENV)
    distill(run, DistillConfig(total_steps=16 * 4, views=VIEWS, **TOY), show_progress=False)
    return run, export_bundle(ExportConfig(run, "x86", precision="fp32"))


def _cli(argv: list[str]) -> None:
    try:
        runtime_main(argv)
    except SystemExit as exc:
        assert exc.code in (0, None), exc.code


def test_the_manifest_records_each_students_view(viewed_export):
    run, result = viewed_export
    m = result.manifest
    assert m.schema_version == 2 and all(e.view is None for e in m.teacher)
    recorded = load_student_views(run)
    raw = make(ENV, num_envs=1).spec.agents[0].obs_dim
    for e in m.agents:
        assert e.view is not None and e.view.raw_obs_dim == raw == e.view.layout().size
        assert e.obs_dim == e.view.width == len(recorded[e.name]["features"]) < raw
        assert e.view.features == recorded[e.name]["features"] and e.view.ops == recorded[e.name]["ops"]
    a0, a1, a2 = m.agents
    assert a0.view.training_only == ["noise:0.05"] and View.from_json(a0.view.device_ops).text == ["-comm.*"]
    assert a1.view.training_only == [] and View.from_json(a1.view.device_ops).text == ["-comm.*", "quant:6:2"]
    assert a2.view.training_only == ["dropout:landmark.*:0.2"] and len(a2.view.available_flags) == 3
    on_disk = json.loads((result.bundle_dir / MANIFEST_NAME).read_text())
    assert on_disk["schema_version"] == 2 and on_disk["agents"][2]["view"]["device_ops"][1] == \
        {"kind": "dropout", "pattern": "landmark.*", "p": 0.0}


def test_calibration_and_parity_rows_are_the_device_views(viewed_export):
    _, result = viewed_export
    calib = CalibData.load(result.bundle_dir / "calib.npz")
    for e in result.manifest.agents:
        raw, viewed = calib.obs[e.name], calib.viewed_obs[e.name]
        assert raw.shape[1] == e.view.raw_obs_dim and viewed.shape == (raw.shape[0], e.obs_dim)
        np.testing.assert_array_equal(viewed, e.view.device()(raw))
    parity = {(r.role, r.agent): r for r in result.parity}
    assert all(r.passed and r.samples >= 1000 for r in parity.values())
    assert all(e.parity["action_agreement"] == 1.0 for e in result.manifest.agents)
    doc = json.loads((result.bundle_dir / "parity.json").read_text())
    assert doc["student_views"] == {e.name: e.view.text for e in result.manifest.agents}


@pytest.mark.parametrize("backend", ["numpy", "onnxruntime"])
def test_runtime_logits_on_viewed_observations_equal_torch(viewed_export, backend):
    run, result = viewed_export
    students = load_students(run)
    bundle = Bundle.load(result.bundle_dir)
    raw_rows = CalibData.load(result.bundle_dir / "calib.npz").obs
    for e in result.manifest.agents:
        policy = bundle.policy(e.name, backend)
        raw = raw_rows[e.name][:200]
        viewed_torch = apply_view(e.view.view().device_view(), e.view.layout(), torch.from_numpy(raw))
        with torch.no_grad():
            expected = students[e.name](viewed_torch)
            expected = (expected[0] if isinstance(expected, tuple) else expected).numpy()
        got = np.empty_like(expected)
        for i, row in enumerate(raw):
            policy.act(policy.model_input(row))
            got[i] = policy.last_logits()
        np.testing.assert_allclose(got, expected, atol=1e-4, rtol=1e-4)
        with pytest.raises(KdxError, match=str(e.obs_dim)):
            policy.act(raw[0])  # the raw observation is not the model's input


def test_kdx_runtime_run_plays_through_the_views_and_info_prints_them(viewed_export, tmp_path, capsys):
    pytest.importorskip("mpe2", reason="mpe2 provides the PettingZoo twin of mpe/simple_spread")
    _, result = viewed_export
    out = tmp_path / "run.json"
    _cli(["run", str(result.bundle_dir), "--episodes", "2", "--max-cycles", "10", "--json", str(out)])
    summary = json.loads(out.read_text())
    assert summary["episodes"] == 2 and summary["steps"] == 20 and len(summary["latency_samples_ns"]) == 60
    capsys.readouterr()
    _cli(["info", str(result.bundle_dir)])
    printed = " ".join(capsys.readouterr().out.split())  # rich wraps long lines
    assert "view of student agent_0: -comm.* noise:0.05: the device applies -comm.*; training only, not applied: " \
           "noise:0.05" in printed
    assert "feed 1 to 3 available flag(s)" in printed and "raw obs 18 -> model input 17" in printed
    assert "14 (view of 18)" in printed


@pytest.mark.parametrize("backend", ["numpy", "onnxruntime"])
def test_serve_takes_raw_or_viewed_observations(viewed_export, backend):
    """``kdx-runtime serve`` of each viewed student: the recorded raw observations (the server
    applies the device view) and their device views give the action and logits of the policy
    fed the viewed observation."""
    from kdx.runtime.protocol import Client
    from kdx.runtime.serve import PolicyServer

    _, result = viewed_export
    bundle = Bundle.load(result.bundle_dir)
    raw_rows = CalibData.load(result.bundle_dir / "calib.npz").obs
    for e in result.manifest.agents:
        local, served = bundle.policy(e.name, backend), bundle.policy(e.name, backend)
        server = PolicyServer(served, "127.0.0.1", 0)
        thread = server.start_in_thread()
        try:
            with Client(server.host, server.port) as client:
                assert client.info()["raw_obs_dim"] == e.view.raw_obs_dim != e.obs_dim
                for raw in raw_rows[e.name][:40]:
                    viewed = local.model_input(raw)
                    expected = local.act(viewed)
                    for sent, kind in ((raw, None), (viewed, None), (raw, "raw"), (viewed, "viewed")):
                        assert client.act(sent, kind=kind) == expected
                        np.testing.assert_array_equal(served.last_logits(), local.last_logits())
        finally:
            server.shutdown()
            thread.join(timeout=5)


def _copy(result, tmp_path: Path) -> tuple[Path, dict]:
    bundle = tmp_path / "bundle"
    shutil.copytree(result.bundle_dir, bundle)
    return bundle, json.loads((bundle / MANIFEST_NAME).read_text())


def test_a_manifest_view_that_disagrees_with_the_model_is_refused(viewed_export, tmp_path):
    _, result = viewed_export
    bundle, data = _copy(result, tmp_path)
    entry = data["agents"][0]
    layout = AgentView.from_json(entry["view"], "x").layout()
    # a self-consistent view of another width (comm kept): the model reads 14 values, the view gives 18
    entry["view"] = AgentView.of(View.parse("noise:0.05"), layout).__dict__
    (bundle / MANIFEST_NAME).write_text(json.dumps(data))
    with pytest.raises(KdxError, match=r"agent_0.*gives 18 features but the model's input is 14"):
        Bundle.load(bundle)
    # obs_dim edited to match that view: the model files still read 14, and the backends say so
    entry["obs_dim"] = 18
    (bundle / MANIFEST_NAME).write_text(json.dumps(data))
    loaded = Bundle.load(bundle)
    for backend in ("numpy", "onnxruntime"):
        with pytest.raises(KdxError, match=r"student agent_0: its view \(noise:0.05\) gives 18 features but the "
                                           r"model's input .* reads 14"):
            loaded.policy("agent_0", backend)


def test_skirmish_students_with_sight_export_and_play_in_kdx_run(tmp_path, capsys):
    """The distance-based sight of skirmish end to end: distil 3m with a view for every agent,
    export, compare the runtime's logits (numpy view + numpy backend) with torch's, and play the
    bundle in closed loop in kdx's own env (``kdx run``)."""
    from kdx.cli import main as kdx_main

    torch.set_num_threads(1)
    run = tmp_path / "run"
    make_teacher_run(run, env="skirmish/3m")
    distill(run, DistillConfig(total_steps=16 * 4, views=("*=sight:4 -ally.*.health quant:8",), **TOY),
            show_progress=False)
    result = export_bundle(ExportConfig(run, "x86", precision="fp32"))
    students, bundle = load_students(run), Bundle.load(result.bundle_dir)
    raw_rows = CalibData.load(result.bundle_dir / "calib.npz").obs
    for e in result.manifest.agents:
        assert [op["kind"] for op in e.view.device_ops] == ["sight", "drop", "quant"] and e.view.training_only == []
        raw = raw_rows[e.name][:100]
        viewed = e.view.device()(raw)
        without_sight = AgentView.of(View.parse("-ally.*.health quant:8"), e.view.layout()).device()(raw)
        assert viewed.shape == without_sight.shape and not np.array_equal(viewed, without_sight)  # sight hid someone
        with torch.no_grad():
            out = students[e.name](apply_view(e.view.view().device_view(), e.view.layout(), torch.from_numpy(raw)))
        expected = (out[0] if isinstance(out, tuple) else out).numpy()
        policy = bundle.policy(e.name, "numpy")
        got = np.stack([(policy.act(policy.model_input(row)), policy.last_logits())[1] for row in raw])
        np.testing.assert_allclose(got, expected, atol=1e-4, rtol=1e-4)
    with pytest.raises(SystemExit) as exit_info:
        kdx_main(["run", str(result.bundle_dir), "--episodes", "1", "--max-cycles", "5", "--backend", "numpy"])
    assert exit_info.value.code in (0, None)
    assert "skirmish/3m: 1 episodes" in capsys.readouterr().out
