"""The ``rowwise-dynamic`` int8 recipes: per-row activation quantisation, per-channel int8
weights, float observation standardisation, float nodes kept; ``blockwise-dynamic`` (the rpi
target's default) with block-wise scales along the input axis."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import onnx
import pytest
import torch
from onnx import numpy_helper

from kdx.devices.targets import TARGETS
from kdx.errors import KdxError
from kdx.export.calib import record_rollouts
from kdx.export.onnx_export import export_onnx, fold_student_normalisation, read_metadata
from kdx.export.parity import NEAR_TIE_GAP, measure_parity, onnx_outputs
from kdx.export.quantize import (
    INT8_RECIPES,
    gptq_weights_per_channel,
    matmul_nodes,
    quantize_int8,
    quantize_rows,
    quantize_weights_blockwise,
    quantize_weights_per_channel,
    with_static_batch,
)
from kdx.export.sources import student_sources
from kdx.trainer.distill.students import StudentPolicy


@pytest.fixture(scope="module")
def student_and_data(spread_students, tmp_path_factory):
    """agent_0's source, its fp32 dynamic-batch ONNX (target rpi) and 1024 recorded rows."""
    sources = student_sources(spread_students, None)
    calib = record_rollouts("mpe/simple_spread", sources, n_samples=1024)
    source = sources[0]
    fp32 = export_onnx(source, tmp_path_factory.mktemp("rowwise") / "agent_0.fp32.onnx", "fp32", True, "rpi")
    return source, fp32, calib.inputs(source)


def test_quantize_rows_matches_a_plain_loop() -> None:
    rng = np.random.default_rng(0)
    x = np.concatenate([rng.normal(size=(5, 7)) * 3, np.abs(rng.normal(size=(2, 7))),
                        np.zeros((1, 7)), -np.abs(rng.normal(size=(1, 7)))])
    q, scale, zero = quantize_rows(x)
    for r, row in enumerate(x):
        lo, hi = min(row.min(), 0.0), max(row.max(), 0.0)
        s = max((hi - lo) / 255, np.finfo(np.float32).tiny)
        z = round(-lo / s)
        assert scale[r, 0] == pytest.approx(s) and zero[r, 0] == z
        for k, v in enumerate(row):
            assert q[r, k] == min(max(round(v / s) + z, 0), 255)
        # every value within half a step of its dequantised value, 0 exact
        assert np.all(np.abs((q[r].astype(float) - z) * s - row) <= s / 2 + 1e-12)
    assert q.dtype == np.uint8 and np.all(q[7] == zero[7, 0])  # the all-zero row


def test_weights_per_channel_are_symmetric_int8_with_one_scale_per_output() -> None:
    weight = np.array([[1.0, -0.5, 0.0], [-2.0, 0.25, 0.0]])  # [K=2, N=3]; column 2 all zero
    q, scale = quantize_weights_per_channel(weight)
    assert q.dtype == np.int8 and np.allclose(scale, [2 / 127, 0.5 / 127, 1.0])
    assert q.tolist() == [[64, -127, 0], [-127, 64, 0]]  # round(1 * 127 / 2) = round(63.5) = 64


def test_gptq_keeps_the_scales_lowers_the_output_error_and_is_nearest_for_white_inputs() -> None:
    rng = np.random.default_rng(1)
    weight = rng.normal(size=(12, 6))
    mixing = rng.normal(size=(12, 12))
    rows = rng.normal(size=(4000, 12)) @ mixing  # correlated inputs: compensation has room to work
    nearest, scale = quantize_weights_per_channel(weight)
    q, gptq_scale = gptq_weights_per_channel(weight, rows)
    assert q.dtype == np.int8 and np.array_equal(scale, gptq_scale) and np.abs(q.astype(int)).max() <= 127

    def output_error(ints: np.ndarray) -> float:
        return float(np.sum((rows @ (weight - ints * scale)) ** 2))

    assert output_error(q) < 0.8 * output_error(nearest)
    # uncorrelated inputs of equal variance (H = I): nothing to compensate, nearest rounding
    white = np.linalg.qr(rng.normal(size=(4000, 12)))[0] * np.sqrt(4000)
    q_white, _ = gptq_weights_per_channel(weight, white, damp=0.0)
    assert np.array_equal(q_white, nearest)


def test_blockwise_weights_match_a_plain_loop() -> None:
    rng = np.random.default_rng(2)
    weight = rng.normal(size=(10, 3))
    weight[4:8, 1] = 0.0  # an all-zero block of one output column keeps scale 1
    q, scale = quantize_weights_blockwise(weight, 4)
    assert q.shape == (3, 4, 3) and scale.shape == (3, 1, 3) and q.dtype == np.int8
    for g in range(3):
        for n in range(3):
            values = [weight[k, n] if k < 10 else 0.0 for k in range(4 * g, 4 * g + 4)]
            absmax = max(abs(v) for v in values)
            s = absmax / 127 if absmax > 0 else 1.0
            assert scale[g, 0, n] == pytest.approx(s)
            assert q[g, :, n].tolist() == [int(np.round(v / s)) for v in values]
    assert np.all(q[2, 2:] == 0)  # the zero padding past K = 10
    assert np.abs(q.astype(float) * scale - np.pad(weight, ((0, 2), (0, 0))).reshape(3, 4, 3)).max() <= scale.max() / 2


def numpy_rowwise(source, obs: np.ndarray, mean: np.ndarray, std: np.ndarray, block: int = 0,
                  input_block: int = 0) -> np.ndarray:
    """The recipe by hand on the folded student: the reference of the ONNX graph (``block`` /
    ``input_block`` > 0: each block of the input axis quantised on its own, as ``blockwise-dynamic``)."""
    h, first = obs.astype(np.float64), True
    for module in fold_student_normalisation(source.module):
        if not isinstance(module, torch.nn.Linear):  # the activation, in float
            h = module(torch.from_numpy(h)).numpy()
            continue
        weight = module.weight.detach().double().numpy().T
        bias = module.bias.detach().double().numpy()
        size = block
        if first:
            bias, weight, h, first = bias + mean @ weight, weight * std[:, None], (h - mean) / std, False
            size = input_block
        size = size if 0 < size < weight.shape[0] else weight.shape[0]
        out = np.zeros((len(h), weight.shape[1]))
        for start in range(0, weight.shape[0], size):  # one block at a time
            part = weight[start:start + size]
            qw, ws = quantize_weights_per_channel(part)
            qx, xs, xz = quantize_rows(h[:, start:start + size])
            out += ((qx.astype(np.float64) - xz) @ qw.astype(np.float64)) * xs * ws
        h = out + bias
    return h


@pytest.mark.parametrize("recipe", ["rowwise-dynamic", "blockwise-dynamic"])
@pytest.mark.parametrize("activation", ["tanh", "relu"])  # relu: the nonnegative (zero point 0) path
def test_rowwise_graph_matches_the_numpy_recipe_and_is_batch_invariant(student_and_data, activation: str,
                                                                        recipe: str, tmp_path: Path) -> None:
    source, fp32, inputs = student_and_data
    if activation == "relu":  # an untrained ReLU student with the same normalisation
        torch.manual_seed(0)
        student = StudentPolicy(18, 5, (16, 16), activation="relu")
        obs_t = torch.from_numpy(inputs["obs"])
        student.set_obs_normalisation(obs_t.mean(0), obs_t.std(0))
        source = student_sources({"agent_0": student.eval()}, None)[0]
        fp32 = export_onnx(source, tmp_path / "relu.fp32.onnx", "fp32", True, "rpi")
    out = quantize_int8(fp32, tmp_path / "int8.onnx", inputs, recipe=recipe)
    ops = [n.op_type for n in onnx.load(str(out)).graph.node]
    assert ops.count("ReduceMin") == (1 if activation == "relu" else ops.count("MatMulInteger"))
    chosen = INT8_RECIPES[recipe]
    # 18 inputs in blocks of 4 need padding to 20; 16 or 32 hidden units in blocks of 8 do not
    assert ops.count("Pad") == (1 if chosen.input_block else 0)
    assert ops.count("ReduceSum") == (ops.count("MatMulInteger") if chosen.block else 0)
    obs, mask = inputs["obs"][:300], inputs["action_mask"][:300]
    batched, _ = onnx_outputs(out, {"obs": obs, "action_mask": mask})
    single, _ = onnx_outputs(with_static_batch(out, tmp_path / "int8.b1.onnx"), {"obs": obs, "action_mask": mask})
    # one row's numbers do not depend on the other rows of its batch (unlike DynamicQuantizeLinear)
    np.testing.assert_allclose(batched, single, atol=1e-5)
    std = inputs["obs"].astype(np.float64).std(0)
    reference = numpy_rowwise(source, obs, inputs["obs"].astype(np.float64).mean(0), np.where(std > 1e-4, std, 1.0),
                              chosen.block, chosen.input_block)
    # float32 graph vs float64 reference: a rounding may land on the other side of a half step
    # in a few rows; the bulk must agree to float precision
    close = np.all(np.abs(batched - reference) < 1e-4, axis=1)
    assert close.mean() > 0.95, close.mean()


def test_recipe_settings_are_applied_and_excluded_node_stays_float(student_and_data, tmp_path: Path) -> None:
    _, fp32, inputs = student_and_data
    gemms = matmul_nodes(fp32)
    assert len(gemms) == 2
    full = onnx.load(str(quantize_int8(fp32, tmp_path / "all.onnx", inputs, recipe="rowwise-dynamic")))
    ops = [n.op_type for n in full.graph.node]
    assert "Gemm" not in ops and "MatMul" not in ops and ops.count("MatMulInteger") == 2
    int8_weights = [i for i in full.graph.initializer if i.data_type == onnx.TensorProto.INT8]
    assert sorted(numpy_helper.to_array(w).shape for w in int8_weights) == [(18, 32), (32, 5)]
    assert not any(i.name.endswith(".weight") for i in full.graph.initializer)  # no float weights left
    assert {"Sub", "Mul"} <= set(ops)  # the observation is standardised before its quantisation
    assert read_metadata(tmp_path / "all.onnx")["int8_recipe"] == "rowwise-dynamic"

    first_float = quantize_int8(fp32, tmp_path / "first.onnx", inputs, exclude_nodes=gemms[:1],
                                recipe="rowwise-dynamic")
    model = onnx.load(str(first_float))
    kept = [n for n in model.graph.node if n.op_type == "Gemm"]
    assert [n.name for n in kept] == gemms[:1]
    floats = {i.name for i in model.graph.initializer if i.data_type == onnx.TensorProto.FLOAT}
    assert kept[0].input[1] in floats
    assert [n.op_type for n in model.graph.node].count("MatMulInteger") == 1
    assert read_metadata(first_float)["float_nodes"] == gemms[0]
    with pytest.raises(KdxError, match="not in the model"):
        quantize_int8(fp32, tmp_path / "x.onnx", inputs, exclude_nodes=["nope"], recipe="rowwise-dynamic")
    with pytest.raises(KdxError, match="valid recipes"):
        quantize_int8(fp32, tmp_path / "x.onnx", inputs, recipe="int4")


def test_target_picks_the_recipe(student_and_data, tmp_path: Path) -> None:
    """No recipe given: the one of the target named in the model's metadata."""
    source, fp32, inputs = student_and_data
    assert TARGETS["rpi"].int8_recipe == "blockwise-dynamic" and TARGETS["jetson"].int8_recipe == "static-qdq"
    assert all(t.int8_recipe in INT8_RECIPES for t in TARGETS.values())
    rpi = quantize_int8(fp32, tmp_path / "rpi.onnx", inputs)
    assert "MatMulInteger" in {n.op_type for n in onnx.load(str(rpi)).graph.node}
    jetson_fp32 = export_onnx(source, tmp_path / "jetson.fp32.onnx", "fp32", True, "jetson")
    jetson = quantize_int8(jetson_fp32, tmp_path / "jetson.onnx", inputs, symmetric_activations=True)
    ops = {n.op_type for n in onnx.load(str(jetson)).graph.node}
    assert {"QuantizeLinear", "DequantizeLinear"} <= ops and "MatMulInteger" not in ops
    assert read_metadata(jetson)["int8_recipe"] == "static-qdq"


@pytest.mark.parametrize("recipe", list(INT8_RECIPES))
def test_every_recipe_keeps_the_parity_bar_and_reports_near_ties(student_and_data, recipe: str,
                                                                 tmp_path: Path) -> None:
    source, fp32, inputs = student_and_data
    quantized = quantize_int8(fp32, tmp_path / "q.onnx", inputs, recipe=recipe)
    result = measure_parity(source, with_static_batch(quantized, tmp_path / "q.b1.onnx"), "int8", inputs)
    assert result.passed and result.action_agreement >= 0.99, result
    assert result.int8_recipe == recipe and result.manifest_parity()["int8_recipe"] == recipe
    assert 0.0 <= result.near_tie_fraction < 1.0
    assert result.action_agreement_beyond_near_ties >= result.action_agreement - result.near_tie_fraction
    if INT8_RECIPES[recipe].activations == "rowwise":
        assert result.max_abs_logit_diff < 1.0  # per-row ranges never clip an activation
    assert NEAR_TIE_GAP > 0


def test_a_static_batch_model_quantises_like_its_dynamic_batch_twin(student_and_data, tmp_path: Path) -> None:
    """The recorded layer inputs are taken in one batch even when the model's batch is fixed to 1."""
    _, fp32, inputs = student_and_data
    static_fp32 = with_static_batch(fp32, tmp_path / "static.fp32.onnx")
    for name, source in (("dyn", fp32), ("static", static_fp32)):
        quantize_int8(source, tmp_path / f"{name}.onnx", inputs, recipe="rowwise-dynamic-gptq")
    dyn, static = (onnx.load(str(tmp_path / f"{n}.onnx")) for n in ("dyn", "static"))
    assert static.graph.input[0].type.tensor_type.shape.dim[0].dim_value == 1  # the interface is kept
    weights = {i.name: numpy_helper.to_array(i) for i in dyn.graph.initializer}
    assert {i.name for i in static.graph.initializer} == set(weights)
    for init in static.graph.initializer:
        assert np.array_equal(numpy_helper.to_array(init), weights[init.name])


def test_int8_mac_fraction_counts_the_quantised_matmuls(student_and_data):
    from kdx.export.bundle import int8_mac_fraction
    from kdx.export.quantize import model_macs

    _, fp32, _ = student_and_data
    macs, recurrent = model_macs(fp32)  # 18 -> 32 -> 5, no GRU
    assert list(macs.values()) == [18 * 32, 32 * 5] and list(macs) == matmul_nodes(fp32) and recurrent == 0
    first, last = list(macs)
    assert int8_mac_fraction(macs, []) == 1.0
    assert int8_mac_fraction(macs, [first]) == round(160 / 736, 4)
    assert int8_mac_fraction(macs, [last]) == round(576 / 736, 4)
    assert int8_mac_fraction(macs, [], 736) == 0.5  # e.g. a recurrent cell left in float
    assert int8_mac_fraction({}, [], 0) == 0.0


def test_matmuls_whose_bias_is_an_identity_alias_are_quantised_and_counted(rpi_export, tmp_path: Path):
    """The torch exporter shares equal biases through Identity nodes (the recurrent teacher has
    two such Gemms): they are quantised like the others, the dead aliases dropped."""
    from kdx.export.quantize import model_macs
    from kdx.export.sources import load_run_policies

    source = load_run_policies(rpi_export.bundle_dir.parent.parent, include_teacher=True).teacher[0]
    fp32 = export_onnx(source, tmp_path / "teacher.fp32.onnx", "fp32", True, "rpi")
    model = onnx.load(str(fp32))
    inits = {i.name for i in model.graph.initializer}
    gemms = [n for n in model.graph.node if n.op_type == "Gemm"]
    assert any(n.input[2] not in inits for n in gemms)  # the case under test is present
    macs, recurrent = model_macs(fp32)
    assert list(macs) == [n.name for n in gemms] and recurrent == 0  # the GRU cell is exported as Gemms
    int8 = onnx.load(str(quantize_int8(fp32, tmp_path / "teacher.int8.onnx", rpi_export_inputs(rpi_export, source),
                                       recipe="blockwise-dynamic")))
    ops = [n.op_type for n in int8.graph.node]
    assert "Gemm" not in ops and ops.count("MatMulInteger") == len(gemms)
    read = {i for n in int8.graph.node for i in n.input} | {o.name for o in int8.graph.output}
    assert not [n for n in int8.graph.node if n.op_type == "Identity" and not set(n.output) & read]
    entry = rpi_export.manifest.teacher[0]
    if entry.precision == "int8" and "float_nodes" not in entry.parity:
        assert entry.parity["int8_mac_fraction"] == 1.0


def rpi_export_inputs(rpi_export, source) -> dict[str, np.ndarray]:
    from kdx.export.calib import CalibData

    return CalibData.load(rpi_export.bundle_dir / "calib.npz").inputs(source)
