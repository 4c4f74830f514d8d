"""int8 static quantisation (QDQ, per-channel weights) with onnxruntime.quantization.

Activation ranges are calibrated on observations recorded from real rollouts (``calib.npz``).
Only the matrix multiplies (Gemm/MatMul) are quantised: the masking and ArgMax at the end of
the graph, and the casts, stay in float/bool/int64, so the model's inputs and outputs keep the
types of the fp32 model.
"""

from __future__ import annotations

import logging
from pathlib import Path

import numpy as np

from kdx.errors import KdxError


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


def quantize_int8(fp32_path: str | Path, int8_path: str | Path, inputs: dict[str, np.ndarray],
                  per_channel: bool = True, max_rows: int = 1024,
                  exclude_nodes: list[str] | None = None, symmetric_activations: bool = False) -> Path:
    """Write the int8 QDQ version of the fp32 ONNX model at ``fp32_path`` to ``int8_path``.

    ``exclude_nodes`` stay in float (the exporter keeps the first layer, which reads the raw
    observation, in fp32 when fully quantised models miss the parity bar).
    ``symmetric_activations``: activation zero points 0, as TensorRT requires.
    """
    import onnx
    from onnxruntime.quantization import QuantFormat, QuantType, quantize_static
    from onnxruntime.quantization.calibrate import CalibrationMethod

    model = onnx.load(str(fp32_path))
    names = [i.name for i in model.graph.input]
    batch_dim = model.graph.input[0].type.tensor_type.shape.dim[0]
    static = batch_dim.HasField("dim_value") and batch_dim.dim_value == 1

    reader = RecordedObservations(inputs, names, max_rows, batch=1 if static else max_rows)
    metadata = {p.key: p.value for p in model.metadata_props}
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
    quantized = onnx.load(str(int8_path))
    from kdx.export.onnx_export import set_metadata

    set_metadata(quantized, {**metadata, "precision": "int8",
                             "float_nodes": ",".join(exclude_nodes or [])})
    Path(int8_path).write_bytes(quantized.SerializeToString())
    return Path(int8_path)


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
