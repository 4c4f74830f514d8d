"""ONNX export and parity on trained tiny students (and a recurrent teacher actor)."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import onnx
import pytest
import torch

from kdx.devices.targets import PRECISIONS
from kdx.errors import KdxError
from kdx.export.calib import CalibData, record_rollouts
from kdx.export.onnx_export import (
    CONSTANT_FEATURE_STD,
    export_onnx,
    fold_student_normalisation,
    read_metadata,
    student_npz_weights,
)
from kdx.export.parity import (
    greedy_actions,
    measure_parity,
    onnx_outputs,
    torch_reference,
)
from kdx.export.quantize import quantize_int8
from kdx.export.sources import student_sources, teacher_sources
from kdx.runtime.mlp_npz import MlpProgram
from kdx.trainer.distill.students import StudentPolicy


@pytest.fixture(scope="module")
def spread_calib(spread_students) -> tuple[list, CalibData]:
    sources = student_sources(spread_students, None)
    return sources, record_rollouts("mpe/simple_spread", sources, n_samples=1024)


def test_folding_matches_the_unfolded_student_and_drops_constant_features() -> None:
    torch.manual_seed(0)
    student = StudentPolicy(6, 4, (8, 8), activation="relu")
    mean = torch.randn(6)
    std = torch.tensor([0.5, 2.0, 1e-6, 1.0, 3.0, 0.1])  # feature 2 was constant (std floored)
    student.set_obs_normalisation(mean, std)
    folded = fold_student_normalisation(student)
    obs = torch.randn(64, 6) * 2 + mean
    obs[:, 2] = mean[2]  # the constant feature keeps its training value
    with torch.no_grad():
        assert torch.allclose(folded(obs), student(obs)[0], atol=1e-5)
        assert torch.all(folded[0].weight[:, 2] == 0)
        assert float(folded[0].weight.abs().max()) < 1 / CONSTANT_FEATURE_STD
    # the original normalisation buffers are untouched
    assert torch.equal(student.obs_std, std.clamp_min(1e-6))


def test_recorded_observations_come_from_rollouts(spread_calib) -> None:
    sources, calib = spread_calib
    assert calib.n_samples == 1024
    for s in sources:
        obs, mask = calib.obs[s.name], calib.action_mask[s.name]
        assert obs.shape == (1024, 18) and obs.dtype == np.float32
        assert mask.shape == (1024, 5) and mask.dtype == bool
        assert len(np.unique(obs.round(4), axis=0)) > 500  # many distinct states, not one repeated
    # the agents moved: positions change along the recorded trajectories
    assert np.abs(np.diff(calib.obs["agent_0"][:, 2:4], axis=0)).max() > 0


def test_calib_round_trip(tmp_path: Path, spread_calib) -> None:
    _, calib = spread_calib
    calib.h_in[("teacher", "agent_0")] = np.ones((1024, 4), np.float32)
    path = calib.save(tmp_path / "calib.npz")
    back = CalibData.load(path)
    del calib.h_in[("teacher", "agent_0")]
    assert set(back.obs) == set(calib.obs)
    assert np.array_equal(back.obs["agent_1"], calib.obs["agent_1"])
    assert np.array_equal(back.action_mask["agent_2"], calib.action_mask["agent_2"])
    assert np.array_equal(back.h_in[("teacher", "agent_0")], np.ones((1024, 4), np.float32))


@pytest.mark.parametrize("precision", ["fp32", "fp16", "int8"])
def test_parity_bars_on_trained_students(tmp_path: Path, spread_calib, precision: str) -> None:
    sources, calib = spread_calib
    for source in sources:
        inputs = calib.inputs(source)
        path = tmp_path / f"{source.name}.{precision}.onnx"
        if precision == "int8":
            fp32 = export_onnx(source, tmp_path / f"{source.name}.fp32.onnx")
            quantize_int8(fp32, path, inputs)
            ops = {n.op_type for n in onnx.load(str(path)).graph.node}
            assert {"QuantizeLinear", "DequantizeLinear"} <= ops
        else:
            export_onnx(source, path, precision)
        result = measure_parity(source, path, precision, inputs)
        bar = PRECISIONS[precision]
        assert result.samples == 1024
        assert result.action_agreement >= bar.min_action_agreement, result
        ref_logits, ref_actions = torch_reference(source, inputs)
        _, actions = onnx_outputs(path, inputs)
        differ = actions != ref_actions
        assert result.action_agreement == pytest.approx(1 - differ.mean())
        if differ.any():  # the reported gap is the reference's top-2 gap on a disagreeing row
            top2 = np.sort(ref_logits[differ], axis=-1)[:, -2:]
            assert result.max_ref_gap_where_disagreeing == pytest.approx(float((top2[:, 1] - top2[:, 0]).max()))
        else:
            assert result.max_ref_gap_where_disagreeing == 0.0
        if precision == "fp32":
            assert result.max_abs_logit_diff <= 1e-4
        else:  # reduced precision really changed the numbers: the check can see a difference
            assert result.max_abs_logit_diff > 1e-6
        assert result.passed


def test_model_interface_and_metadata(tmp_path: Path, spread_calib) -> None:
    sources, calib = spread_calib
    source = sources[0]
    source.checkpoint_sha256 = "ab" * 32
    path = export_onnx(source, tmp_path / "m.onnx", "fp16", target="jetson")
    model = onnx.load(str(path))
    assert model.opset_import[0].version >= 17
    types = {i.name: i.type.tensor_type for i in [*model.graph.input, *model.graph.output]}
    assert [i.name for i in model.graph.input] == ["obs", "action_mask"]
    assert [o.name for o in model.graph.output] == ["logits", "action"]
    assert types["obs"].elem_type == onnx.TensorProto.FLOAT  # fp16 model keeps fp32 I/O
    assert types["action_mask"].elem_type == onnx.TensorProto.BOOL
    assert types["action"].elem_type == onnx.TensorProto.INT64
    assert [d.dim_value for d in types["obs"].shape.dim] == [1, 18]
    meta = read_metadata(path)
    assert meta["agent"] == "agent_0" and meta["precision"] == "fp16" and meta["obs_dim"] == "18"
    assert meta["checkpoint_sha256"] == "ab" * 32 and meta["kdx_version"]
    # simple_spread's silent communication channels (last 4 features) were constant
    assert json.loads(meta["constant_features"])[-4:] == [14, 15, 16, 17]


def test_mask_is_applied_inside_the_graph(tmp_path: Path, spread_calib) -> None:
    sources, calib = spread_calib
    source = sources[1]
    path = export_onnx(source, tmp_path / "dyn.onnx", dynamic_batch=True)
    inputs = dict(calib.inputs(source))
    rng = np.random.default_rng(0)
    mask = rng.random(inputs["action_mask"].shape) < 0.5
    mask[np.arange(len(mask)), rng.integers(0, 5, len(mask))] = True
    inputs["action_mask"] = mask
    logits, actions = onnx_outputs(path, inputs)
    assert logits.shape == (1024, 5) and actions.shape == (1024,)
    assert np.all(mask[np.arange(1024), actions])
    assert np.array_equal(actions, greedy_actions(logits, mask))


def test_npz_sidecar_matches_torch(spread_students, spread_calib) -> None:
    _, calib = spread_calib
    student = spread_students["agent_2"]
    program = MlpProgram(student_npz_weights(student))
    obs = calib.obs["agent_2"][:200]
    with torch.no_grad():
        expected = student(torch.from_numpy(obs))[0].numpy()
    for row in range(len(obs)):
        program.input[:] = obs[row]
        np.testing.assert_allclose(program.run(), expected[row], atol=1e-4)


def test_recurrent_teacher_carries_its_state(tmp_path: Path, spread_calib) -> None:
    from kdx.envs.registry import make
    from kdx.trainer.teacher.config import TeacherConfig
    from kdx.trainer.teacher.model import Teacher

    students, _ = spread_calib
    torch.manual_seed(3)
    spec = make("mpe/simple_spread", num_envs=1).spec
    teacher = Teacher.build(TeacherConfig(hidden="16", recurrent=True), spec).eval()
    views = teacher_sources(teacher, "0" * 64)
    calib = record_rollouts("mpe/simple_spread", students, views, n_samples=1024)
    view = views[1]
    h = calib.h_in[("teacher", "agent_1")]
    assert h.shape == (1024, 16) and np.abs(h).max() > 0 and np.all(h[0] == 0)
    path = export_onnx(view, tmp_path / "t.onnx")
    model = onnx.load(str(path))
    assert [i.name for i in model.graph.input] == ["obs", "action_mask", "h_in"]
    assert [o.name for o in model.graph.output] == ["logits", "action", "h_out"]
    result = measure_parity(view, path, "fp32", calib.inputs(view))
    assert result.passed and result.max_abs_logit_diff <= 1e-4


def test_parity_refuses_too_few_observations(tmp_path: Path, spread_calib) -> None:
    sources, calib = spread_calib
    path = export_onnx(sources[0], tmp_path / "m.onnx")
    few = {k: v[:100] for k, v in calib.inputs(sources[0]).items()}
    with pytest.raises(KdxError, match="at least 1000"):
        measure_parity(sources[0], path, "fp32", few)
