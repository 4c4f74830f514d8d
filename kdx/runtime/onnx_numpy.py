"""A small numpy interpreter for the ONNX graphs kdx exports (needs the ``onnx`` package).

The numpy backend uses it when an agent has no ``.npz`` sidecar but the ``onnx`` package is
importable. It covers the operators of exported MLP/GRU policies (Gemm, MatMul, Add, activations,
LayerNormalization, Where, ArgMax, Cast, Q/DQ for int8, ...) and raises KdxError naming any other
operator. It is general rather than fast: the sidecar path (:mod:`kdx.runtime.mlp_npz`) is the
fast one.

A graph that numpy cannot evaluate (shapes that do not fit, an allocation too large, a missing
value) raises KdxError naming the node, never numpy's own exception: the model comes from a
file, so its failures are the bundle's problem, reported like any other.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import numpy as np

from kdx.errors import KdxError
from kdx.runtime.onnx_external import check_no_external_data

Op = Callable[[list[Any], dict[str, Any]], list[np.ndarray]]


def _sigmoid(x: np.ndarray) -> np.ndarray:
    return 1.0 / (1.0 + np.exp(-x))


def _gemm(xs: list, a: dict) -> list:
    x, w = xs[0], xs[1]
    x = x.T if a.get("transA", 0) else x
    w = w.T if a.get("transB", 0) else w
    y = a.get("alpha", 1.0) * (x @ w)
    if len(xs) > 2 and xs[2] is not None:
        y = y + a.get("beta", 1.0) * xs[2]
    return [y.astype(xs[0].dtype, copy=False)]


def _layernorm(xs: list, a: dict) -> list:
    x, scale = xs[0], xs[1]
    axis = a.get("axis", -1)
    axes = tuple(range(axis % x.ndim, x.ndim))
    mean = x.mean(axis=axes, keepdims=True)
    var = ((x - mean) ** 2).mean(axis=axes, keepdims=True)
    y = (x - mean) / np.sqrt(var + a.get("epsilon", 1e-5)) * scale
    if len(xs) > 2 and xs[2] is not None:
        y = y + xs[2]
    return [y.astype(x.dtype, copy=False)]


def _argmax(xs: list, a: dict) -> list:
    axis, keep = a.get("axis", 0), a.get("keepdims", 1)
    x = xs[0]
    if a.get("select_last_index", 0):
        y = x.shape[axis] - 1 - np.argmax(np.flip(x, axis=axis), axis=axis)
    else:
        y = np.argmax(x, axis=axis)
    return [np.expand_dims(y, axis).astype(np.int64) if keep else y.astype(np.int64)]


def _axes(xs: list, a: dict) -> tuple[int, ...] | None:
    if len(xs) > 1 and xs[1] is not None:
        return tuple(int(v) for v in np.asarray(xs[1]).reshape(-1))
    return tuple(a["axes"]) if "axes" in a else None


def _reduce_mean(xs: list, a: dict) -> list:
    axes = _axes(xs, a)
    return [np.mean(xs[0], axis=axes, keepdims=bool(a.get("keepdims", 1))).astype(xs[0].dtype)]


def _reduce_sum(xs: list, a: dict) -> list:
    axes = _axes(xs, a)
    if axes == () and a.get("noop_with_empty_axes", 0):
        return [xs[0]]
    return [np.sum(xs[0], axis=axes or None, keepdims=bool(a.get("keepdims", 1))).astype(xs[0].dtype)]


def _pad(xs: list, a: dict) -> list:
    """ONNX Pad, constant mode only (the int8 block-wise layers pad the input axis with zeros)."""
    mode = a.get("mode", b"constant")
    if (mode.decode() if isinstance(mode, bytes) else mode) != "constant":
        raise KdxError(f"Pad mode {mode!r} is not supported by the numpy backend (constant only)")
    pads = [int(v) for v in np.asarray(xs[1]).reshape(-1)]
    rank = xs[0].ndim
    value = np.asarray(xs[2]).reshape(()) if len(xs) > 2 and xs[2] is not None else 0
    return [np.pad(xs[0], list(zip(pads[:rank], pads[rank:])), constant_values=value)]


def _reduce_extreme(fn: Callable[..., np.ndarray]) -> Op:
    def op(xs: list, a: dict) -> list:
        return [fn(xs[0], axis=_axes(xs, a), keepdims=bool(a.get("keepdims", 1)))]
    return op


def _matmul_integer(xs: list, a: dict) -> list:
    """ONNX MatMulInteger: ``(A - a_zero) @ (B - b_zero)`` in int32 (zero points scalar or per column)."""
    x, w = xs[0].astype(np.int32), xs[1].astype(np.int32)
    if len(xs) > 2 and xs[2] is not None:
        x = x - np.asarray(xs[2]).astype(np.int32)
    if len(xs) > 3 and xs[3] is not None:
        w = w - np.asarray(xs[3]).astype(np.int32)
    return [np.matmul(x, w).astype(np.int32)]


def _softmax(xs: list, a: dict) -> list:
    x = xs[0] - xs[0].max(axis=a.get("axis", -1), keepdims=True)
    e = np.exp(x)
    return [e / e.sum(axis=a.get("axis", -1), keepdims=True)]


def _reshape(xs: list, a: dict) -> list:
    shape = [int(s) for s in xs[1]]
    shape = [xs[0].shape[i] if s == 0 and not a.get("allowzero", 0) else s for i, s in enumerate(shape)]
    return [xs[0].reshape(shape)]


def _slice(xs: list, a: dict) -> list:
    x = xs[0]
    starts, ends = list(xs[1]), list(xs[2])
    axes = list(xs[3]) if len(xs) > 3 and xs[3] is not None else list(range(len(starts)))
    steps = list(xs[4]) if len(xs) > 4 and xs[4] is not None else [1] * len(starts)
    index = [slice(None)] * x.ndim
    for s, e, ax, st in zip(starts, ends, axes, steps):
        index[int(ax)] = slice(int(s), int(e), int(st))
    return [x[tuple(index)]]


def _split(xs: list, a: dict) -> list:
    axis = a.get("axis", 0)
    sizes = xs[1] if len(xs) > 1 and xs[1] is not None else a.get("split")
    if sizes is None:
        return list(np.split(xs[0], a["_n_outputs"], axis=axis))
    return list(np.split(xs[0], np.cumsum([int(s) for s in sizes])[:-1], axis=axis))


def _quantize(xs: list, a: dict) -> list:
    scale, zero = xs[1], xs[2] if len(xs) > 2 and xs[2] is not None else np.uint8(0)
    info = np.iinfo(zero.dtype)
    q = np.clip(np.rint(xs[0] / scale) + zero.astype(np.int32), info.min, info.max)
    return [q.astype(zero.dtype)]


def _dequantize(xs: list, a: dict) -> list:
    scale = xs[1]
    zero = xs[2] if len(xs) > 2 and xs[2] is not None else 0
    axis = a.get("axis", 1)
    if np.ndim(scale) == 1 and xs[0].ndim > 1:
        shape = [1] * xs[0].ndim
        shape[axis] = -1
        scale = scale.reshape(shape)
        zero = np.reshape(zero, shape) if np.ndim(zero) == 1 else zero
    return [((xs[0].astype(np.int32) - np.asarray(zero).astype(np.int32)) * scale).astype(np.float32)]


def _gru(xs: list, a: dict) -> list:
    """ONNX GRU (forward, one layer, gates z r h) for a sequence; torch needs linear_before_reset."""
    x, w, r = xs[0], xs[1][0], xs[2][0]
    hidden = r.shape[1]
    b = xs[3][0] if len(xs) > 3 and xs[3] is not None else np.zeros(6 * hidden, np.float32)
    h = xs[5][0] if len(xs) > 5 and xs[5] is not None else np.zeros((x.shape[1], hidden), np.float32)
    wb, rb = b[: 3 * hidden], b[3 * hidden:]
    lbr = a.get("linear_before_reset", 0)
    outs = []
    for t in range(x.shape[0]):
        gx = x[t] @ w.T + wb
        gz, gr, gh = np.split(gx, 3, axis=-1)
        rz, rr, rh = np.split(r, 3, axis=0)
        bz, br, bh = np.split(rb, 3)
        z = _sigmoid(gz + h @ rz.T + bz)
        rg = _sigmoid(gr + h @ rr.T + br)
        if lbr:
            cand = np.tanh(gh + rg * (h @ rh.T + bh))
        else:
            cand = np.tanh(gh + (rg * h) @ rh.T + bh)
        h = ((1 - z) * cand + z * h).astype(np.float32)
        outs.append(h)
    y = np.stack(outs)[:, None]  # [seq, num_directions, batch, hidden]
    return [y, h[None]]


def _constant_of_shape(xs: list, a: dict) -> list:
    from onnx import numpy_helper

    value = numpy_helper.to_array(a["value"]).reshape(-1)[:1] if "value" in a else np.zeros(1, np.float32)
    return [np.full([int(d) for d in np.asarray(xs[0]).reshape(-1)], value[0], dtype=value.dtype)]


def _expand(xs: list, a: dict) -> list:
    shape = np.broadcast_shapes(xs[0].shape, tuple(int(d) for d in np.asarray(xs[1]).reshape(-1)))
    return [np.broadcast_to(xs[0], shape).copy()]


# What numpy (and the ops above) raise on a graph they cannot evaluate.
_EVALUATION_ERRORS = (ValueError, TypeError, IndexError, KeyError, MemoryError, ArithmeticError,
                      AttributeError)

_ONNX_TO_NUMPY = {1: np.float32, 2: np.uint8, 3: np.int8, 6: np.int32, 7: np.int64, 9: np.bool_,
                  10: np.float16, 11: np.float64}


def _cast(xs: list, a: dict) -> list:
    to = a["to"]
    if to not in _ONNX_TO_NUMPY:
        raise KdxError(f"Cast to ONNX type {to} is not supported by the numpy backend")
    return [xs[0].astype(_ONNX_TO_NUMPY[to])]


def _unary(fn: Callable[[np.ndarray], np.ndarray]) -> Op:
    return lambda xs, a: [fn(xs[0]).astype(xs[0].dtype, copy=False)]


def _binary(fn: Callable[[np.ndarray, np.ndarray], np.ndarray]) -> Op:
    return lambda xs, a: [np.asarray(fn(xs[0], xs[1]))]


# The operator registry: ONNX op type -> numpy implementation. Filled here, in one place.
OPS: dict[str, Op] = {
    "Gemm": _gemm,
    "MatMul": _binary(np.matmul),
    "Add": _binary(np.add),
    "Sub": _binary(np.subtract),
    "Mul": _binary(np.multiply),
    "Div": _binary(np.divide),
    "Pow": _binary(np.power),
    "Max": lambda xs, a: [np.maximum.reduce([np.asarray(x) for x in xs])],
    "Min": lambda xs, a: [np.minimum.reduce([np.asarray(x) for x in xs])],
    "Equal": _binary(np.equal),
    "Less": _binary(np.less),
    "Greater": _binary(np.greater),
    "And": _binary(np.logical_and),
    "Not": lambda xs, a: [np.logical_not(xs[0])],
    "Neg": _unary(np.negative),
    "Exp": _unary(np.exp),
    "Log": _unary(np.log),
    "Sqrt": _unary(np.sqrt),
    "Abs": _unary(np.abs),
    "Reciprocal": _unary(np.reciprocal),
    "Relu": _unary(lambda x: np.maximum(x, 0)),
    "Tanh": _unary(np.tanh),
    "Sigmoid": _unary(_sigmoid),
    "Elu": lambda xs, a: [np.where(xs[0] > 0, xs[0], a.get("alpha", 1.0) * np.expm1(np.minimum(xs[0], 0))).astype(xs[0].dtype)],
    "LeakyRelu": lambda xs, a: [np.where(xs[0] > 0, xs[0], a.get("alpha", 0.01) * xs[0]).astype(xs[0].dtype)],
    "Clip": lambda xs, a: [np.clip(xs[0], xs[1] if len(xs) > 1 and xs[1] is not None else a.get("min", -np.inf),
                                   xs[2] if len(xs) > 2 and xs[2] is not None else a.get("max", np.inf)).astype(xs[0].dtype)],
    "Softmax": _softmax,
    "LogSoftmax": lambda xs, a: [np.log(_softmax(xs, a)[0])],
    "LayerNormalization": _layernorm,
    "ReduceMean": _reduce_mean,
    "ReduceMax": _reduce_extreme(np.max),
    "ReduceMin": _reduce_extreme(np.min),
    "ReduceSum": _reduce_sum,
    "Pad": _pad,
    "Round": lambda xs, a: [np.rint(xs[0]).astype(xs[0].dtype)],  # half to even, as ONNX Round
    "MatMulInteger": _matmul_integer,
    "Where": lambda xs, a: [np.where(xs[0], xs[1], xs[2]).astype(np.result_type(xs[1], xs[2]))],
    "ArgMax": _argmax,
    "Cast": _cast,
    "Identity": lambda xs, a: [xs[0]],
    "Reshape": _reshape,
    "Flatten": lambda xs, a: [xs[0].reshape(int(np.prod(xs[0].shape[: a.get("axis", 1)])), -1)],
    "Squeeze": lambda xs, a: [np.squeeze(xs[0], axis=_axes(xs, a))],
    "Unsqueeze": lambda xs, a: [np.expand_dims(xs[0], axis=_axes(xs, a))],
    "Concat": lambda xs, a: [np.concatenate(xs, axis=a["axis"])],
    "Transpose": lambda xs, a: [np.transpose(xs[0], a.get("perm"))],
    "Gather": lambda xs, a: [np.take(xs[0], xs[1], axis=a.get("axis", 0))],
    "Slice": _slice,
    "Split": _split,
    "Shape": lambda xs, a: [np.array(xs[0].shape, dtype=np.int64)],
    "ConstantOfShape": _constant_of_shape,
    "Expand": _expand,
    "QuantizeLinear": _quantize,
    "DequantizeLinear": _dequantize,
    "GRU": _gru,
}


class OnnxNumpyGraph:
    """An ONNX model evaluated node by node with numpy; ``run(feeds) -> {output: array}``."""

    def __init__(self, model_bytes: bytes, source: str) -> None:
        import onnx
        from onnx import numpy_helper

        check_no_external_data(model_bytes, source)  # numpy_helper would read it from the cwd
        try:
            model = onnx.load_model_from_string(model_bytes)
        except Exception as exc:  # protobuf raises its own DecodeError types
            raise KdxError(f"{source}: not a valid ONNX model ({exc})") from None
        graph = model.graph
        self.source = source
        try:
            self.constants: dict[str, np.ndarray] = {
                init.name: numpy_helper.to_array(init) for init in graph.initializer
            }
        except (*_EVALUATION_ERRORS, OSError) as exc:
            raise KdxError(f"{source}: an initializer cannot be read ({type(exc).__name__}: {exc})") from None
        self.input_names = [i.name for i in graph.input if i.name not in self.constants]
        self.output_names = [o.name for o in graph.output]
        self.nodes: list[tuple[Op, list[str], list[str], dict[str, Any]]] = []
        for node in graph.node:
            attrs = {attr.name: onnx.helper.get_attribute_value(attr) for attr in node.attribute}
            label = f"{node.op_type} node {node.name or next(iter(node.output), '?')!r}"
            if len(node.output) == 0:
                raise KdxError(f"{source}: {label} has no output; the model is malformed")
            if node.op_type == "Constant":
                try:
                    self.constants[node.output[0]] = self._constant(attrs, numpy_helper)
                except (*_EVALUATION_ERRORS, OSError) as exc:
                    raise KdxError(f"{source}: {label} cannot be read ({type(exc).__name__}: {exc})") from None
                continue
            if node.domain not in ("", "ai.onnx") or node.op_type not in OPS:
                raise KdxError(
                    f"{source}: operator {node.domain or 'ai.onnx'}.{node.op_type} is not supported "
                    "by the numpy backend; use the onnxruntime backend or add the npz sidecar"
                )
            attrs["_n_outputs"] = len(node.output)
            attrs["_describe"] = label
            self.nodes.append((OPS[node.op_type], list(node.input), list(node.output), attrs))

    @staticmethod
    def _constant(attrs: dict[str, Any], numpy_helper: Any) -> np.ndarray:
        if "value" in attrs:
            return numpy_helper.to_array(attrs["value"])
        for key in ("value_float", "value_int"):
            if key in attrs:
                return np.array(attrs[key])
        for key in ("value_floats", "value_ints"):
            if key in attrs:
                return np.array(list(attrs[key]))
        raise KdxError("Constant node with an unsupported value attribute")

    def run(self, feeds: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
        """The graph's outputs for ``feeds``; KdxError naming the node that numpy cannot
        evaluate (or the output never computed)."""
        values: dict[str, Any] = dict(self.constants)
        values.update(feeds)
        values[""] = None  # ONNX marks an omitted optional input with the empty name
        where = "the graph's outputs"
        try:
            for op, inputs, outputs, attrs in self.nodes:
                where = attrs["_describe"]
                results = op([values[name] for name in inputs], attrs)
                for name, value in zip(outputs, results):
                    values[name] = value
            where = "the graph's outputs"
            return {name: values[name] for name in self.output_names}
        except _EVALUATION_ERRORS as exc:
            raise KdxError(f"{self.source}: the numpy backend cannot evaluate {where} "
                           f"({type(exc).__name__}: {exc}); the model does not follow the bundle "
                           "conventions, or use the onnxruntime backend") from None
