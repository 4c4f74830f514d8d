"""The runtime's numpy ONNX interpreter against onnxruntime, op by op (the int8 recipes' ops)."""

from __future__ import annotations

import numpy as np
import pytest

onnx = pytest.importorskip("onnx")
ort = pytest.importorskip("onnxruntime")
from onnx import TensorProto, helper  # noqa: E402

from kdx.runtime.onnx_numpy import OnnxNumpyGraph  # noqa: E402


def _both(node, inputs: dict[str, np.ndarray], out_type, initializers=()) -> tuple[np.ndarray, np.ndarray]:
    types = {np.dtype(np.float32): TensorProto.FLOAT, np.dtype(np.uint8): TensorProto.UINT8,
             np.dtype(np.int8): TensorProto.INT8}
    graph = helper.make_graph(
        [node], "g",
        [helper.make_tensor_value_info(k, types[v.dtype], list(v.shape)) for k, v in inputs.items()],
        [helper.make_tensor_value_info("y", out_type, None)], initializer=list(initializers))
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 18)])
    model.ir_version = 8
    data = model.SerializeToString()
    ours = OnnxNumpyGraph(data, "test").run(inputs)["y"]
    theirs = ort.InferenceSession(data, providers=["CPUExecutionProvider"]).run(["y"], inputs)[0]
    return ours, theirs


@pytest.mark.parametrize("op", ["ReduceMax", "ReduceMin"])
@pytest.mark.parametrize("keepdims", [0, 1])
def test_reduce_extremes_match_onnxruntime(op, keepdims):
    x = np.random.default_rng(0).normal(size=(3, 5)).astype(np.float32)
    axes = helper.make_tensor("axes", TensorProto.INT64, [1], [1])
    node = helper.make_node(op, ["x", "axes"], ["y"], keepdims=keepdims)
    ours, theirs = _both(node, {"x": x}, TensorProto.FLOAT, [axes])
    assert ours.shape == theirs.shape and np.array_equal(ours, theirs)


def test_round_is_half_to_even_like_onnxruntime():
    x = np.array([[-2.5, -1.5, -0.5, 0.5, 1.5, 2.5, 0.49, 2.51]], np.float32)
    ours, theirs = _both(helper.make_node("Round", ["x"], ["y"]), {"x": x}, TensorProto.FLOAT)
    assert np.array_equal(ours, theirs) and np.array_equal(ours[0, :6], [-2, -2, -0, 0, 2, 2])


def test_matmul_integer_with_zero_points_matches_onnxruntime():
    rng = np.random.default_rng(1)
    a = rng.integers(0, 256, size=(2, 7)).astype(np.uint8)
    b = rng.integers(-128, 128, size=(7, 4)).astype(np.int8)
    a_zero = helper.make_tensor("a_zero", TensorProto.UINT8, [], [131])
    b_zero = helper.make_tensor("b_zero", TensorProto.INT8, [4], [0, 3, -5, 0])
    b_init = helper.make_tensor("b", TensorProto.INT8, list(b.shape), b.reshape(-1).tolist())
    node = helper.make_node("MatMulInteger", ["a", "b", "a_zero", "b_zero"], ["y"])
    ours, theirs = _both(node, {"a": a}, TensorProto.INT32, [b_init, a_zero, b_zero])
    expected = (a.astype(np.int32) - 131) @ (b.astype(np.int32) - np.array([0, 3, -5, 0]))
    assert ours.dtype == np.int32 and np.array_equal(ours, theirs) and np.array_equal(ours, expected)


def test_batched_matmul_integer_broadcasts_the_weight_blocks_like_onnxruntime():
    """The block-wise int8 layers: [B, G, 1, block] uint8 times [G, block, N] int8."""
    rng = np.random.default_rng(2)
    a = rng.integers(0, 256, size=(3, 4, 1, 5)).astype(np.uint8)
    b = rng.integers(-127, 128, size=(4, 5, 6)).astype(np.int8)
    b_init = helper.make_tensor("b", TensorProto.INT8, list(b.shape), b.reshape(-1).tolist())
    ours, theirs = _both(helper.make_node("MatMulInteger", ["a", "b"], ["y"]), {"a": a}, TensorProto.INT32, [b_init])
    assert ours.shape == (3, 4, 1, 6) and np.array_equal(ours, theirs)
    assert np.array_equal(ours[1, 2, 0], a[1, 2, 0].astype(np.int32) @ b[2].astype(np.int32))


@pytest.mark.parametrize("axes", [[1, 2], [-1], []])
@pytest.mark.parametrize("keepdims", [0, 1])
def test_reduce_sum_matches_onnxruntime(axes, keepdims):
    x = np.random.default_rng(3).normal(size=(2, 3, 1, 4)).astype(np.float32)
    axes_init = helper.make_tensor("axes", TensorProto.INT64, [len(axes)], axes)
    node = helper.make_node("ReduceSum", ["x", "axes"], ["y"], keepdims=keepdims)
    ours, theirs = _both(node, {"x": x}, TensorProto.FLOAT, [axes_init])
    assert ours.shape == theirs.shape and np.allclose(ours, theirs, atol=1e-6)
    if not axes:  # empty axes, noop_with_empty_axes=0: everything is summed
        assert ours.size == 1 and np.isclose(ours.reshape(()), x.sum(), atol=1e-5)


def test_constant_pad_matches_onnxruntime_and_other_modes_are_refused():
    x = np.arange(6, dtype=np.float32).reshape(2, 3)
    pads = helper.make_tensor("pads", TensorProto.INT64, [4], [0, 1, 1, 2])
    ours, theirs = _both(helper.make_node("Pad", ["x", "pads"], ["y"]), {"x": x}, TensorProto.FLOAT, [pads])
    assert ours.shape == (3, 6) and np.array_equal(ours, theirs) and ours[0].tolist() == [0, 0, 1, 2, 0, 0]
    graph = helper.make_graph([helper.make_node("Pad", ["x", "pads"], ["y"], mode="reflect")], "g",
                              [helper.make_tensor_value_info("x", TensorProto.FLOAT, [2, 3])],
                              [helper.make_tensor_value_info("y", TensorProto.FLOAT, None)], initializer=[pads])
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 18)])
    from kdx.errors import KdxError

    with pytest.raises(KdxError, match="constant only"):
        OnnxNumpyGraph(model.SerializeToString(), "test").run({"x": x})
