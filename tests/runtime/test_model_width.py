"""A bundle whose manifest view disagrees with its model's input is refused on every backend
(kdx/runtime/model_width.py, checked in ``Backend.__init__`` before any model is loaded): the
manifest is edited into a self-consistent view of another width (the manifest is not hashed, and
the model files are untouched, so only the width check can refuse it). TensorRT, not installed
here, goes through the same check: its backend is constructed on the tampered bundle, and the
check is run directly on the manifest and the ONNX model. ``kdx-runtime info`` prints each view."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import numpy as np
import pytest

from kdx.envs.view_spec import View
from kdx.errors import KdxError
from kdx.runtime.backends import BACKENDS
from kdx.runtime.bundle import Bundle
from kdx.runtime.cli import main as runtime_main
from kdx.runtime.manifest import MANIFEST_NAME, load_manifest
from kdx.runtime.manifest_view import AgentView
from kdx.runtime.model_width import (
    c_header_obs_dim,
    check_model_widths,
    model_widths,
    onnx_input_width,
)
from kdx.runtime.testing import mlp_onnx_bytes, random_mlp_weights
from tests.runtime.c_bundles import add_c_sources
from tests.runtime.view_bundles import LAYOUT, NARROWING, SAME_WIDTH, make_viewed_bundle

REFUSAL = (r"student agent_0: its view \(sight:2\) gives 8 features but the model's input "
           r"agent_0\.fp32\.(onnx|npz|h) reads 6; the view and the model disagree, re-export the bundle")


@pytest.fixture(scope="module")
def viewed_c_bundle(tmp_path_factory) -> Path:
    """Students reading NARROWING (raw 8 -> 6), with ONNX, npz and C sources."""
    return add_c_sources(make_viewed_bundle(tmp_path_factory.mktemp("viewed") / "b", NARROWING))


@pytest.fixture()
def tampered(viewed_c_bundle: Path, tmp_path: Path) -> Path:
    """agent_0's manifest entry rewritten to the self-consistent view SAME_WIDTH (8 features, obs_dim 8);
    its model files (which read 6) untouched."""
    bundle = tmp_path / "tampered"
    shutil.copytree(viewed_c_bundle, bundle)
    data = json.loads((bundle / MANIFEST_NAME).read_text())
    entry = data["agents"][0]
    entry["view"] = AgentView.of(View.parse(SAME_WIDTH), LAYOUT).__dict__
    entry["obs_dim"] = 8
    (bundle / MANIFEST_NAME).write_text(json.dumps(data))
    return bundle


def test_every_model_file_of_a_viewed_bundle_reads_the_view(viewed_c_bundle: Path) -> None:
    manifest = load_manifest(viewed_c_bundle)
    for entry in manifest.agents:
        rows = model_widths(entry, viewed_c_bundle)
        assert sorted(Path(p).suffix for p, _, _ in rows) == [".h", ".npz", ".onnx"]
        assert all(width == expected == entry.view.width == 6 for _, width, expected in rows)
        check_model_widths(entry, viewed_c_bundle)


@pytest.mark.parametrize("backend", sorted(BACKENDS))
def test_each_backend_refuses_a_view_that_disagrees_with_the_model(tampered: Path, backend: str) -> None:
    bundle = Bundle.load(tampered)  # the manifest alone is consistent: only the model files disagree
    cls = BACKENDS[backend]
    entry = bundle.manifest.agent("agent_0")
    assert entry.view.width == entry.obs_dim == 8
    with pytest.raises(KdxError, match=REFUSAL):
        cls(entry, tampered)  # also TensorRT: the check runs before its _load imports tensorrt
    if cls.unavailable_reason() is None:
        with pytest.raises(KdxError, match=REFUSAL):
            bundle.policy("agent_0", backend)
    bundle.policy("agent_1", "numpy")  # the untouched agent still loads


def test_auto_refuses_it_too(tampered: Path) -> None:
    with pytest.raises(KdxError, match=f"^{REFUSAL}$"):  # once, not once per backend
        Bundle.load(tampered).policy("agent_0")


def test_the_shared_check_on_the_manifest_and_the_onnx_alone(tampered: Path) -> None:
    """What the TensorRT backend has: the manifest entry and its ONNX (and an engine, opaque here)."""
    entry = load_manifest(tampered).agent("agent_0")
    entry.files = [f for f in entry.files if f.kind == "onnx"]
    assert [(p, w, e) for p, w, e in model_widths(entry, tampered)] == [("agent_0.fp32.onnx", 6, 8)]
    with pytest.raises(KdxError, match=REFUSAL.replace(r"(onnx|npz|h)", "onnx")):
        check_model_widths(entry, tampered)


def test_a_manifest_obs_dim_that_disagrees_without_a_view(fresh_bundle: Path) -> None:
    data = json.loads((fresh_bundle / MANIFEST_NAME).read_text())
    data["agents"][1]["obs_dim"] = 17
    (fresh_bundle / MANIFEST_NAME).write_text(json.dumps(data))
    with pytest.raises(KdxError, match=r"student agent_1: the model agent_1\.fp32\.onnx reads 18 observation "
                                       r"values but the manifest says 17"):
        Bundle.load(fresh_bundle).policy("agent_1", "numpy")


def test_onnx_input_width_reads_static_and_symbolic_dimensions() -> None:
    onnx = pytest.importorskip("onnx", reason="the onnx package edits the test model's input shape")
    data = mlp_onnx_bytes(random_mlp_weights(11, 3, (8,), seed=0))
    model = onnx.load_from_string(data)
    name = model.graph.input[0].name
    assert onnx_input_width(data, name, "m") == model.graph.input[0].type.tensor_type.shape.dim[-1].dim_value == 11
    with pytest.raises(KdxError, match="no input named 'nope'"):
        onnx_input_width(data, "nope", "m")
    model.graph.input[0].type.tensor_type.shape.dim[-1].dim_param = "width"  # symbolic: not checkable
    assert onnx_input_width(model.SerializeToString(), name, "m") is None
    with pytest.raises(KdxError, match="not a valid ONNX file"):
        onnx_input_width(data[: len(data) // 2], name, "m")  # truncated


def test_c_header_obs_dim() -> None:
    text = "#ifndef KDX_AGENT_0_H\n#define KDX_AGENT_0_OBS_DIM 14\n#define KDX_AGENT_0_N_ACTIONS 5\n"
    assert c_header_obs_dim(text, "agent_0", "h") == 14
    with pytest.raises(KdxError, match="no '#define KDX_AGENT_1_OBS_DIM <n>'"):
        c_header_obs_dim(text, "agent_1", "h")


def test_info_prints_each_view_of_a_c_bundle(viewed_c_bundle: Path, capsys) -> None:
    try:
        runtime_main(["info", str(viewed_c_bundle)])
    except SystemExit as exc:
        assert exc.code in (0, None)
    printed = " ".join(capsys.readouterr().out.split())  # rich wraps long lines
    for name in ("agent_0", "agent_1"):
        assert f"view of student {name}: -comm.* sight:2 quant:8 noise:0.1: the device applies -comm.* sight:2 " \
               "quant:8; training only, not applied: noise:0.1; raw obs 8 -> model input 6" in printed
    assert "c_source" in printed  # the table lists the C files (cells wrap on narrow consoles)


def test_the_c_backend_runs_the_view(viewed_c_bundle: Path) -> None:
    """The untampered bundle: C and numpy agree on the viewed observation (where a compiler exists)."""
    if BACKENDS["c"].unavailable_reason() is not None:
        pytest.skip(f"c backend unavailable: {BACKENDS['c'].unavailable_reason()}")
    bundle = Bundle.load(viewed_c_bundle)
    c, reference = bundle.policy("agent_0", "c"), bundle.policy("agent_0", "numpy")
    raw = np.random.default_rng(0).standard_normal(8).astype(np.float32)
    assert c.act(c.model_input(raw)) == reference.act(reference.model_input(raw))
    np.testing.assert_allclose(c.last_logits(), reference.last_logits(), atol=1e-5)
