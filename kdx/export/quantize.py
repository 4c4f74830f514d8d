"""int8 quantisation of exported ONNX policies, the recipes of ``INT8_RECIPES``.

``static-qdq`` (TensorRT's and onnxruntime's classic path): QDQ with per-channel weights and
activation ranges calibrated on observations recorded from real rollouts (``calib.npz``); with
``symmetric_activations`` the zero points are 0, as TensorRT requires.

``rowwise-dynamic``: every matrix multiply runs as
``MatMulInteger`` on int8 weights (symmetric, one scale per output channel) and uint8
activations quantised at run time, one scale and zero point per row (= per decision), like
onnxruntime's ``DynamicQuantizeLinear`` but per row, so a batch gives each row the numbers it
would get alone. The layer reading the raw observation first standardises it in float with
the calibration data's mean and std (the std folded back into the int8 weights): without that
the per-row range is set by the widest feature and narrow ones lose their resolution.
Why: distilled students have many near ties (a few % of states within 0.05 logits), and static
activation ranges, fixed on the calibration set, cost 4-6% greedy-action agreement on them.

``blockwise-dynamic`` (the ``rpi`` target's default): ``rowwise-dynamic`` with the input axis
of each matmul cut into blocks (8 values; 4 for the observation layer), each with its own run-time
activation scale per row and its own weight scale per output channel (like the blocks of GGML's
Q8_0 or the OCP MX formats, smaller). One batched ``MatMulInteger`` ``[B, G, 1, block] x [G,
block, N]`` does every block; the float partial sums are scaled and summed. Every multiply-add
is still int8 x uint8 -> int32; a block's range no longer depends on the largest value of the
whole row, which cuts the mean logit error of the 18-32-5 students by a third or more (measured
0.016-0.037 -> 0.010-0.020) and so the greedy actions that flip at near ties.

Only the matrix multiplies (Gemm/MatMul with a constant weight) are quantised: the masking and
ArgMax at the end of the graph stay in float/bool/int64, so inputs and outputs keep the types of
the fp32 model.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from kdx.errors import KdxError


@dataclass(frozen=True)
class Int8Recipe:
    """How a model is quantised to int8 (its name is recorded in the model's metadata and in the
    parity results).

    Attributes:
        name: the key in ``INT8_RECIPES``.
        activations: ``"static"`` (QDQ, ranges calibrated on recorded observations) or
            ``"rowwise"`` (MatMulInteger, ranges measured per row at run time).
        weight_rounding: ``"nearest"`` or ``"gptq"`` (rowwise only: rounding compensated on the
            recorded layer inputs; it fits the calibration rows, so judge it on held-out rows).
        description: one line for tables.
        block: rowwise only: 0 = one activation scale per row and one weight scale per output
            channel; else the input axis is cut into blocks of this many values, each with its
            own activation scale (per row) and weight scale (per output channel).
        input_block: like ``block`` for the layer that reads the (standardised) observation.
    """

    name: str
    activations: str
    weight_rounding: str
    description: str
    block: int = 0
    input_block: int = 0


INT8_RECIPES: dict[str, Int8Recipe] = {
    "static-qdq": Int8Recipe(
        "static-qdq", "static", "nearest",
        "static QDQ: int8 per-channel symmetric weights, int8 activations with MinMax ranges calibrated on "
        "recorded observations"),
    "rowwise-dynamic": Int8Recipe(
        "rowwise-dynamic", "rowwise", "nearest",
        "MatMulInteger: int8 per-channel symmetric weights, uint8 activations quantised per row at run "
        "time; observation standardised in float first"),
    "rowwise-dynamic-gptq": Int8Recipe(
        "rowwise-dynamic-gptq", "rowwise", "gptq",
        "rowwise-dynamic with GPTQ weight rounding on the recorded layer inputs"),
    "blockwise-dynamic": Int8Recipe(
        "blockwise-dynamic", "rowwise", "nearest",
        "rowwise-dynamic with block-wise scales: the input axis in blocks of 8 values (4 for the "
        "observation layer), one uint8 activation scale per row and block, one int8 weight scale per "
        "block and output channel",
        block=8, input_block=4),
}
DEFAULT_INT8_RECIPE = "static-qdq"


class RecordedObservations:
    """A calibration data reader (onnxruntime's ``get_next`` protocol) over recorded rows.

    ``batch`` rows per feed: 1 for a static batch-1 model, more for a dynamic-batch one.
    """

    def __init__(self, inputs: dict[str, np.ndarray], input_names: list[str], max_rows: int = 512,
                 batch: int = 1) -> None:
        missing = [n for n in input_names if n not in inputs]
        if missing:
            raise KdxError(f"calibration data lacks model inputs {missing}")
        self.inputs = {n: inputs[n] for n in input_names}
        self.rows = min(max_rows, next(iter(self.inputs.values())).shape[0])
        self.batch = batch
        self.position = 0

    def get_next(self) -> dict[str, np.ndarray] | None:
        if self.position >= self.rows:
            return None
        start, stop = self.position, min(self.position + self.batch, self.rows)
        self.position = stop
        return {k: v[start:stop] for k, v in self.inputs.items()}

    def rewind(self) -> None:
        self.position = 0


def matmul_nodes(path: str | Path) -> list[str]:
    """Names of the Gemm/MatMul nodes of an ONNX model, in graph order."""
    import onnx

    model = onnx.load(str(path))
    return [n.name for n in model.graph.node if n.op_type in ("Gemm", "MatMul")]


def constant_tensors(graph: Any) -> dict[str, Any]:
    """The graph's initializers by name, plus the names Identity nodes give them (the torch
    exporter shares equal tensors, e.g. zero biases, between layers that way)."""
    inits = {i.name: i for i in graph.initializer}
    for node in graph.node:
        if node.op_type == "Identity" and node.input[0] in inits:
            inits[node.output[0]] = inits[node.input[0]]
    return inits


def model_macs(path: str | Path) -> tuple[dict[str, int], int]:
    """Weight multiply-adds per decision (batch 1) of an ONNX model: ``(by node name, in graph
    order, for each Gemm/MatMul with constant 2-D weights -- the ones an int8 recipe can
    quantise --, the sum of those of its GRU cells, which stay in float)``.

    Read from the ONNX graph because the int8 share needs them per node; on an fp32 model they sum
    to the MACs ``kdx distill`` stored for the policy (``kdx.devices.cost.COST_RULE``: weight
    multiply-adds, no bias adds; the tests check it)."""
    import onnx
    from onnx import numpy_helper

    model = onnx.load(str(path))
    inits = constant_tensors(model.graph)
    quantisable, recurrent = {}, 0
    for node in model.graph.node:
        if (found := _weight_and_bias(node, inits)) is not None:
            quantisable[node.name] = int(np.prod(found[0].shape))
        elif node.op_type == "GRU":  # W [1, 3H, I] and R [1, 3H, H]
            recurrent += sum(int(np.prod(numpy_helper.to_array(inits[name]).shape)) for name in node.input[1:3])
    return quantisable, recurrent


def recipe_for_model(model: Any) -> str:
    """The int8 recipe of the export target named in the model's metadata (``target``);
    ``static-qdq`` for a model without one or with an unknown target."""
    from kdx.devices.targets import TARGETS

    target = {p.key: p.value for p in model.metadata_props}.get("target", "")
    return TARGETS[target].int8_recipe if target in TARGETS else DEFAULT_INT8_RECIPE


def quantize_int8(fp32_path: str | Path, int8_path: str | Path, inputs: dict[str, np.ndarray],
                  per_channel: bool = True, max_rows: int = 1024,
                  exclude_nodes: list[str] | None = None, symmetric_activations: bool = False,
                  recipe: str | None = None) -> Path:
    """Write the int8 version of the fp32 ONNX model at ``fp32_path`` to ``int8_path``.

    ``recipe``: a key of ``INT8_RECIPES``; None = the recipe of the model's export target
    (``ExportTarget.int8_recipe``, read from the model's ``target`` metadata).
    ``exclude_nodes`` stay in float (the exporter keeps the first layer, which reads the raw
    observation, in fp32 when fully quantised models miss the parity bar).
    ``symmetric_activations`` (static-qdq only): activation zero points 0, as TensorRT requires.
    ``inputs`` (the recorded observations, first ``max_rows`` rows used) calibrate the
    activation ranges (static-qdq) or the observation standardisation (rowwise-dynamic).
    """
    import onnx

    model = onnx.load(str(fp32_path))
    recipe = recipe or recipe_for_model(model)
    if recipe not in INT8_RECIPES:
        raise KdxError(f"unknown int8 recipe {recipe!r}; valid recipes: {', '.join(INT8_RECIPES)}")
    metadata = {p.key: p.value for p in model.metadata_props}
    if INT8_RECIPES[recipe].activations == "rowwise":
        rows = {k: np.asarray(v)[:max_rows] for k, v in inputs.items()}
        chosen = INT8_RECIPES[recipe]
        quantized = rowwise_dynamic_int8(model, rows, exclude_nodes or [], gptq=chosen.weight_rounding == "gptq",
                                         block_size=chosen.block, input_block=chosen.input_block)
    else:
        _static_qdq(fp32_path, int8_path, model, inputs, per_channel, max_rows, exclude_nodes,
                    symmetric_activations)
        quantized = onnx.load(str(int8_path))
    from kdx.export.onnx_export import set_metadata

    set_metadata(quantized, {**metadata, "precision": "int8", "int8_recipe": recipe,
                             "float_nodes": ",".join(exclude_nodes or [])})
    Path(int8_path).write_bytes(quantized.SerializeToString())
    return Path(int8_path)


def _static_qdq(fp32_path: str | Path, int8_path: str | Path, model: Any, inputs: dict[str, np.ndarray],
                per_channel: bool, max_rows: int, exclude_nodes: list[str] | None,
                symmetric_activations: bool) -> None:
    from onnxruntime.quantization import QuantFormat, QuantType, quantize_static
    from onnxruntime.quantization.calibrate import CalibrationMethod

    names = [i.name for i in model.graph.input]
    batch_dim = model.graph.input[0].type.tensor_type.shape.dim[0]
    static = batch_dim.HasField("dim_value") and batch_dim.dim_value == 1
    reader = RecordedObservations(inputs, names, max_rows, batch=1 if static else max_rows)
    root, level = logging.getLogger(), logging.getLogger().level
    root.setLevel(logging.ERROR)  # its "consider pre-processing" notes go to the root logger
    try:
        quantize_static(
            str(fp32_path), str(int8_path), reader,
            quant_format=QuantFormat.QDQ, per_channel=per_channel,
            activation_type=QuantType.QInt8, weight_type=QuantType.QInt8,
            op_types_to_quantize=["Gemm", "MatMul"], nodes_to_exclude=list(exclude_nodes or []),
            calibrate_method=CalibrationMethod.MinMax,
            extra_options={"ActivationSymmetric": symmetric_activations, "WeightSymmetric": True},
        )
    finally:
        root.setLevel(level)


# --- rowwise-dynamic ---------------------------------------------------------------------------

STD_FLOOR = 1e-4  # features with a smaller std in the calibration data are left unscaled


def _symmetric_int8(values: np.ndarray, axis: int) -> tuple[np.ndarray, np.ndarray]:
    """``values`` -> ``(int8 q, float32 scale)`` with one scale per slice along ``axis`` (kept as a
    size-1 axis): ``values ~= q * scale``, ``|q| <= 127``; an all-zero slice gets scale 1."""
    absmax = np.abs(values).max(axis=axis, keepdims=True)
    scale = np.where(absmax > 0, absmax / 127.0, 1.0).astype(np.float32)
    return np.clip(np.round(values / scale), -127, 127).astype(np.int8), scale


def quantize_weights_per_channel(weight: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """``weight [K, N]`` (in x out) -> ``(int8 [K, N], float32 scale [N])``, symmetric, one scale
    per output column: ``weight ~= q * scale``, ``|q| <= 127``."""
    q, scale = _symmetric_int8(weight, axis=0)
    return q, scale[0]


def gptq_weights_per_channel(weight: np.ndarray, rows: np.ndarray, damp: float = 0.01) -> tuple[np.ndarray, np.ndarray]:
    """Like ``quantize_weights_per_channel`` (same scales), but the rounding of each input row
    of ``weight`` is compensated on the rows not yet rounded so that ``rows @ weight`` (``rows
    [M, K]``: the layer's inputs on recorded observations) moves as little as possible (GPTQ,
    Frantar et al. 2023, one block). ``damp`` times the mean diagonal is added to ``rows.T @ rows``."""
    _, scale = quantize_weights_per_channel(weight)
    k = weight.shape[0]
    hessian = rows.T.astype(np.float64) @ rows.astype(np.float64) / max(len(rows), 1)
    hessian += (damp * max(float(np.mean(np.diag(hessian))), 1e-12)) * np.eye(k)
    # upper Cholesky factor of the inverse: row j holds how the later inputs absorb input j's error
    upper = np.linalg.cholesky(np.linalg.inv(hessian)).T
    remaining = weight.astype(np.float64).copy()
    q = np.zeros(weight.shape, dtype=np.int8)
    for j in range(k):
        q[j] = np.clip(np.round(remaining[j] / scale), -127, 127)
        error = (remaining[j] - q[j] * scale.astype(np.float64)) / upper[j, j]
        remaining[j + 1:] -= np.outer(upper[j, j + 1:], error)
    return q, scale


def quantize_rows(x: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Reference of the run-time activation quantisation: each row of ``x [..., K]`` to uint8
    with its own ``scale = (max - min) / 255`` over a range stretched to include 0 and zero
    point ``round(-min / scale)``; returns ``(q uint8, scale [..., 1], zero_point [..., 1])``."""
    lo = np.minimum(x.min(axis=-1, keepdims=True), 0.0)
    hi = np.maximum(x.max(axis=-1, keepdims=True), 0.0)
    scale = np.maximum((hi - lo) / 255.0, np.finfo(np.float32).tiny)
    zero = np.round(-lo / scale)
    q = np.clip(np.round(x / scale) + zero, 0, 255).astype(np.uint8)
    return q, scale, zero


def _weight_and_bias(node: Any, inits: dict[str, Any]) -> tuple[np.ndarray, np.ndarray | None] | None:
    """``(weight [K, N], bias [N] or None)`` of a Gemm/MatMul with constant weights, else None."""
    from onnx import helper, numpy_helper

    if node.op_type not in ("Gemm", "MatMul") or len(node.input) < 2 or node.input[1] not in inits:
        return None
    weight = numpy_helper.to_array(inits[node.input[1]]).astype(np.float64)
    if weight.ndim != 2:
        return None
    if node.op_type == "MatMul":
        return weight, None
    attrs = {a.name: helper.get_attribute_value(a) for a in node.attribute}
    if attrs.get("transA", 0):
        return None
    if attrs.get("transB", 0):
        weight = weight.T
    weight = weight * attrs.get("alpha", 1.0)
    bias = None
    if len(node.input) > 2 and node.input[2]:
        if node.input[2] not in inits:
            return None
        bias = np.broadcast_to(numpy_helper.to_array(inits[node.input[2]]).astype(np.float64) * attrs.get("beta", 1.0),
                               (weight.shape[1],)).copy()
    return weight, bias


class _GraphBuilder:
    """Appends nodes and initializers with unique names derived from one prefix."""

    def __init__(self, graph: Any, prefix: str) -> None:
        self.graph, self.prefix, self.nodes = graph, prefix, []

    def const(self, name: str, value: np.ndarray) -> str:
        from onnx import numpy_helper

        full = f"{self.prefix}/{name}"
        self.graph.initializer.append(numpy_helper.from_array(np.asarray(value), full))
        return full

    def op(self, op_type: str, inputs: list[str], name: str, output: str | None = None, **attrs: Any) -> str:
        from onnx import helper

        out = output or f"{self.prefix}/{name}_output"
        self.nodes.append(helper.make_node(op_type, inputs, [out], name=f"{self.prefix}/{name}", **attrs))
        return out


def quantize_weights_blockwise(weight: np.ndarray, block: int) -> tuple[np.ndarray, np.ndarray]:
    """``weight [K, N]`` -> ``(int8 [G, block, N], float32 scale [G, 1, N])`` with ``G =
    ceil(K / block)``: the input axis zero-padded to ``G * block`` and cut into blocks, each
    block of each output column quantised symmetrically with its own scale."""
    k, n = weight.shape
    groups = -(-k // block)
    padded = np.zeros((groups * block, n), dtype=np.float64)
    padded[:k] = weight
    return _symmetric_int8(padded.reshape(groups, block, n), axis=1)


def _rowwise_matmul(node: Any, weight: np.ndarray, bias: np.ndarray | None,
                    standardise: tuple[np.ndarray, np.ndarray] | None, graph: Any, opset: int,
                    nonnegative: bool, rows: np.ndarray | None, block: int = 0) -> list[Any]:
    """The nodes replacing one float matmul ``y = x @ weight + bias`` (``x [..., K]``);
    ``nonnegative``: ``x`` comes out of a ReLU; ``rows [M, K]``: recorded values of ``x`` for
    GPTQ rounding (None: round to nearest); ``block`` > 0: block-wise scales (``x`` must be
    2-D), see ``Int8Recipe.block``."""
    from onnx import TensorProto

    b = _GraphBuilder(graph, node.name or node.output[0])
    x = node.input[0]
    if standardise is not None:  # x' = (x - mean) / std; y = x' @ (std * W) + (b + mean @ W)
        mean, std = standardise
        bias = (np.zeros(weight.shape[1]) if bias is None else bias) + mean @ weight
        weight = weight * std[:, None]
        x = b.op("Sub", [x, b.const("obs_mean", mean.astype(np.float32))], "center")
        x = b.op("Mul", [x, b.const("obs_inv_std", (1.0 / std).astype(np.float32))], "standardise")
        rows = None if rows is None else (rows - mean) / std
    k, n = weight.shape
    blocked = 0 < block < k
    if blocked:  # x [B, K] -> [B, G, 1, block] (zero-padded): one row scale per block
        q_weight, w_scale = quantize_weights_blockwise(weight, block)
        groups = q_weight.shape[0]
        if groups * block > k:
            x = b.op("Pad", [x, b.const("pads", np.array([0, 0, 0, groups * block - k], dtype=np.int64))], "pad")
        x = b.op("Reshape", [x, b.const("blocks_shape", np.array([-1, groups, 1, block], dtype=np.int64))], "blocks")
    elif rows is None:
        q_weight, w_scale = quantize_weights_per_channel(weight)
    else:
        q_weight, w_scale = gptq_weights_per_channel(weight, rows)
    tiny = b.const("tiny", np.float32(np.finfo(np.float32).tiny))
    levels = b.const("levels", np.float32(255.0))
    if opset >= 18:  # Reduce* take their axes as an input from opset 18 on (ReduceSum from 13)
        last = b.const("last_axis", np.array([-1], dtype=np.int64))
        reduce = {"inputs": [last], "attrs": {}}
    else:
        reduce = {"inputs": [], "attrs": {"axes": [-1]}}

    def row_reduce(op_type: str) -> str:
        return b.op(op_type, [x, *reduce["inputs"]], f"row_{op_type[6:].lower()}", keepdims=1, **reduce["attrs"])

    # Relu(v) = max(v, 0) (the range always holds 0); Clip(., tiny) keeps all-zero rows finite.
    # Only ops the runtime's numpy interpreter also runs (no broadcasting Max/Min).
    hi = b.op("Relu", [row_reduce("ReduceMax")], "range_hi")
    if nonnegative:  # after a ReLU: min is 0, zero point 0, no correction term
        scale = b.op("Clip", [b.op("Div", [hi, levels], "step"), tiny], "row_scale")
        q = b.op("Cast", [b.op("Round", [b.op("Div", [x, scale], "scaled")], "rounded")], "to_uint8",
                 to=TensorProto.UINT8)
    else:
        neg_lo = b.op("Relu", [b.op("Neg", [row_reduce("ReduceMin")], "neg_min")], "minus_range_lo")
        span = b.op("Add", [hi, neg_lo], "span")
        scale = b.op("Clip", [b.op("Div", [span, levels], "step"), tiny], "row_scale")
        zero = b.op("Round", [b.op("Div", [neg_lo, scale], "zp_float")], "row_zero_point")
        shifted = b.op("Add", [b.op("Round", [b.op("Div", [x, scale], "scaled")], "rounded"), zero], "shifted")
        clipped = b.op("Clip", [shifted, b.const("qmin", np.float32(0.0)), levels], "clipped")
        q = b.op("Cast", [clipped], "to_uint8", to=TensorProto.UINT8)
    acc = b.op("MatMulInteger", [q, b.const("weight_int8", q_weight)], "matmul_integer")
    acc_f = b.op("Cast", [acc], "to_float", to=TensorProto.FLOAT)
    if not nonnegative:  # (q - z) @ Wq = q @ Wq - z * colsum(Wq): MatMulInteger takes one zero point
        col_sum = q_weight.astype(np.int64).sum(axis=-2, keepdims=blocked).astype(np.float32)
        acc_f = b.op("Sub", [acc_f, b.op("Mul", [zero, b.const("weight_col_sum", col_sum)], "zp_term")], "centred")
    last_output = None if bias is not None else node.output[0]
    scaled = b.op("Mul", [b.op("Mul", [acc_f, scale], "times_row_scale"), b.const("weight_scale", w_scale)],
                  "dequantised", output=None if blocked else last_output)
    if blocked:  # [B, G, 1, N] -> sum over the blocks -> [B, N]
        scaled = b.op("ReduceSum", [scaled, b.const("block_axes", np.array([1, 2], dtype=np.int64))],
                      "sum_blocks", output=last_output, keepdims=0)
    if bias is not None:
        b.op("Add", [scaled, b.const("bias", bias.astype(np.float32))], "bias", output=node.output[0])
    return b.nodes


def _recorded_tensors(model: Any, inputs: dict[str, np.ndarray], names: list[str]) -> dict[str, np.ndarray]:
    """The values of the tensors ``names`` of the float ``model`` run by onnxruntime on ``inputs``."""
    import onnx
    import onnxruntime as ort

    probe = onnx.ModelProto.FromString(model.SerializeToString())
    for value in [*probe.graph.input, *probe.graph.output]:  # a static batch-1 model: run all rows at once
        if value.type.tensor_type.shape.dim:
            value.type.tensor_type.shape.dim[0].Clear()
            value.type.tensor_type.shape.dim[0].dim_param = "batch"
    del probe.graph.value_info[:]
    outputs = {o.name for o in probe.graph.output}
    probe.graph.output.extend(onnx.helper.make_empty_tensor_value_info(n) for n in names if n not in outputs)
    options = ort.SessionOptions()
    options.log_severity_level = 3
    session = ort.InferenceSession(probe.SerializeToString(), options, providers=["CPUExecutionProvider"])
    feeds = {}
    for i in session.get_inputs():
        if i.name not in inputs:
            raise KdxError(f"the recorded observations lack the model input {i.name!r}")
        feeds[i.name] = inputs[i.name]
    return dict(zip(names, session.run(names, feeds)))


def rowwise_dynamic_int8(model: Any, inputs: dict[str, np.ndarray], exclude_nodes: list[str],
                         gptq: bool = False, block_size: int = 0, input_block: int = 0) -> Any:
    """A copy of ``model`` with every Gemm/MatMul with constant 2-D weights (except
    ``exclude_nodes``) replaced by its ``rowwise-dynamic`` int8 version (see the module
    docstring). The float model is run on ``inputs`` to record each matmul's input rows: a
    matmul that reads a graph input (the observation) standardises it with their mean and std,
    and with ``gptq`` the int8 weights are rounded by ``gptq_weights_per_channel`` on them.
    ``block_size`` / ``input_block`` > 0: block-wise scales on 2-D inputs (``Int8Recipe.block``);
    GPTQ rounding applies to unblocked layers only."""
    import onnx

    model = onnx.ModelProto.FromString(model.SerializeToString())
    graph = model.graph
    unknown = sorted(set(exclude_nodes) - {n.name for n in graph.node})
    if unknown:
        raise KdxError(f"nodes to keep in float {unknown} are not in the model")
    opset = max((o.version for o in model.opset_import if o.domain in ("", "ai.onnx")), default=0)
    if opset < 13:
        raise KdxError(f"rowwise-dynamic int8 needs an ONNX opset >= 13 model, got opset {opset}")
    inits = constant_tensors(graph)
    graph_inputs = {i.name for i in graph.input}
    relu_outputs = {o for n in graph.node if n.op_type == "Relu" for o in n.output}
    targets = {n.name: found for n in graph.node
               if n.name not in exclude_nodes and (found := _weight_and_bias(n, inits)) is not None}
    recorded = _recorded_tensors(model, inputs, sorted({n.input[0] for n in graph.node if n.name in targets}))
    nodes = []
    for node in graph.node:
        if node.name not in targets:
            nodes.append(node)
            continue
        weight, bias = targets[node.name]
        rows = recorded[node.input[0]].astype(np.float64).reshape(-1, weight.shape[0])
        standardise = None
        if node.input[0] in graph_inputs:
            std = rows.std(axis=0)
            standardise = (rows.mean(axis=0), np.where(std > STD_FLOOR, std, 1.0))
        block = (input_block if standardise is not None else block_size) if recorded[node.input[0]].ndim == 2 else 0
        nodes += _rowwise_matmul(node, weight, bias, standardise, graph, opset,
                                 nonnegative=node.input[0] in relu_outputs, rows=rows if gptq else None,
                                 block=block)
    replaced = len(targets)
    if replaced == 0:
        raise KdxError("the model has no matrix multiply with constant weights left to quantise")
    del graph.node[:]
    graph.node.extend(nodes)
    outputs = {o.name for o in graph.output}
    while dead := [n for n in graph.node if n.op_type == "Identity"  # aliases the new nodes no longer read
                   and not {*n.output} & ({i for m in graph.node for i in m.input} | outputs)]:
        for node in dead:
            graph.node.remove(node)
    used = {i for n in graph.node for i in n.input}
    kept = [i for i in graph.initializer if i.name in used]
    del graph.initializer[:]
    graph.initializer.extend(kept)
    onnx.checker.check_model(model)
    return model


def with_static_batch(path: str | Path, out: str | Path, batch: int = 1) -> Path:
    """Copy the model at ``path`` with the batch dimension of every graph input and output fixed
    to ``batch`` (the graph itself is batch-agnostic: only its interface changes)."""
    import onnx

    from kdx.export.onnx_export import set_metadata

    model = onnx.load(str(path))
    for value in [*model.graph.input, *model.graph.output]:
        dim = value.type.tensor_type.shape.dim[0]
        dim.Clear()
        dim.dim_value = batch
    del model.graph.value_info[:]  # inferred shapes with a symbolic batch would now disagree
    set_metadata(model, {"batch": str(batch)})
    onnx.checker.check_model(model)
    Path(out).write_bytes(model.SerializeToString())
    return Path(out)
