"""The ``.npz`` MLP weights sidecar and its pure-numpy forward pass (torch-free, onnx-free).

The exporter writes one sidecar beside each agent's ONNX (manifest file kind ``"npz"``) so that
the numpy backend can run a policy on a base install, where the ``onnx`` package is absent.
Loaded with ``allow_pickle=False``: every entry is a plain numeric or unicode array.

Format (``kdx_mlp_format`` = 1)
-------------------------------
==========================  ==============================================================
key                         value
==========================  ==============================================================
``kdx_mlp_format``          int scalar, 1
``layer_kinds``             unicode [L]: ``"dense"`` | ``"layernorm"`` | ``"gru"``
``layer_activations``       unicode [L]: activation applied after layer i, one of
                            :data:`ACTIVATIONS` (``"identity"`` for none)
``layer{i}.weight``         dense: float32 [in, out] (``y = x @ weight + bias``)
``layer{i}.bias``           dense: float32 [out]; layernorm: float32 [n] (beta)
``layer{i}.scale``          layernorm: float32 [n] (gamma)
``layer{i}.epsilon``        layernorm: float scalar
``layer{i}.alpha``          optional float scalar: ELU alpha (default 1) / LeakyReLU slope
                            (default 0.01)
``layer{i}.weight_ih``      gru: float32 [in, 3h], gate blocks in order r, z, n (torch)
``layer{i}.weight_hh``      gru: float32 [h, 3h]
``layer{i}.bias_ih``        gru: float32 [3h]
``layer{i}.bias_hh``        gru: float32 [3h]
``input.mean``              optional float32 [obs]: observation normalisation not folded
``input.std``               optional float32 [obs]: applied as ``(obs - mean) / std``
==========================  ==============================================================

The last layer is ``dense`` with ``identity`` activation and ``n_actions`` outputs: the logits.
A ``gru`` layer (at most one) reads ``h_in`` and writes ``h_out`` (torch GRUCell semantics:
``n = tanh(x W_in + b_in + r * (h W_hn + b_hn))``, ``h' = (1 - z) * n + z * h``).
"""

from __future__ import annotations

import math
import os
import tempfile
import zipfile
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from kdx.devices.mlp import ACTIVATIONS as NETWORK_ACTIVATIONS
from kdx.errors import KdxError

FORMAT_VERSION = 1
LAYER_KINDS = ("dense", "layernorm", "gru")
#: What a layer's activation may be: none (``identity``), every activation kdx networks use
#: (``kdx.devices.mlp.ACTIVATIONS``), and the format's others, which the kdx exporter never writes.
ACTIVATIONS = ("identity", *NETWORK_ACTIVATIONS,
               *(a for a in ("sigmoid", "elu", "leaky_relu") if a not in NETWORK_ACTIVATIONS))


@dataclass
class MlpLayer:
    """One layer of the sidecar; ``params`` holds the arrays named in the format table."""

    kind: str
    activation: str = "identity"
    params: dict[str, np.ndarray] = field(default_factory=dict)


@dataclass
class MlpWeights:
    """A whole sidecar: the layers and the optional unfolded observation normalisation."""

    layers: list[MlpLayer]
    input_mean: np.ndarray | None = None
    input_std: np.ndarray | None = None

    @property
    def in_dim(self) -> int:
        first = self.layers[0]
        if first.kind == "dense":
            return int(first.params["weight"].shape[0])
        if first.kind == "gru":
            return int(first.params["weight_ih"].shape[0])
        return int(first.params["scale"].shape[0])

    @property
    def n_outputs(self) -> int:
        return int(self.layers[-1].params["weight"].shape[1])

    @property
    def state_size(self) -> int | None:
        for layer in self.layers:
            if layer.kind == "gru":
                return int(layer.params["weight_hh"].shape[0])
        return None


_REQUIRED = {
    "dense": ("weight", "bias"),
    "layernorm": ("scale", "bias", "epsilon"),
    "gru": ("weight_ih", "weight_hh", "bias_ih", "bias_hh"),
}


def save_mlp_npz(path: str | os.PathLike[str], weights: MlpWeights) -> Path:
    """Write ``weights`` atomically in the sidecar format (validated by reading it back)."""
    arrays: dict[str, np.ndarray] = {
        "kdx_mlp_format": np.array(FORMAT_VERSION, dtype=np.int64),
        "layer_kinds": np.array([layer.kind for layer in weights.layers], dtype=np.str_),
        "layer_activations": np.array([layer.activation for layer in weights.layers], dtype=np.str_),
    }
    for i, layer in enumerate(weights.layers):
        for key, value in layer.params.items():
            arrays[f"layer{i}.{key}"] = np.asarray(value, dtype=np.float32)
    if weights.input_mean is not None:
        arrays["input.mean"] = np.asarray(weights.input_mean, dtype=np.float32)
        arrays["input.std"] = np.asarray(weights.input_std, dtype=np.float32)
    target = Path(path)
    fd, tmp = tempfile.mkstemp(prefix=".npz.", suffix=".tmp", dir=target.parent)
    try:
        with os.fdopen(fd, "wb") as handle:
            np.savez(handle, **arrays)
        _parse(arrays, str(target))  # refuse to write what the runtime would refuse to read
        os.replace(tmp, target)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise
    return target


def load_mlp_npz(path: str | os.PathLike[str]) -> MlpWeights:
    """Read and check a sidecar; any problem raises KdxError naming the file and the key."""
    try:
        with np.load(path, allow_pickle=False) as data:
            arrays = {key: data[key] for key in data.files}
    except (OSError, ValueError, EOFError, zipfile.BadZipFile, KeyError) as exc:
        raise KdxError(f"{path}: not a readable npz weights file ({exc})") from None
    return _parse(arrays, str(path))


def _parse(arrays: dict[str, np.ndarray], source: str) -> MlpWeights:
    def get(key: str) -> np.ndarray:
        if key not in arrays:
            raise KdxError(f"{source}: npz sidecar lacks {key!r}")
        return arrays[key]

    version = get("kdx_mlp_format")
    if version.shape != () or not np.issubdtype(version.dtype, np.integer) or int(version) != 1:
        raise KdxError(f"{source}: kdx_mlp_format {version!r} unsupported (supported: 1)")
    kinds, activations = get("layer_kinds"), get("layer_activations")
    if kinds.dtype.kind != "U" or activations.dtype.kind != "U" or kinds.ndim != 1 \
            or kinds.shape != activations.shape or kinds.size == 0:
        raise KdxError(f"{source}: layer_kinds/layer_activations must be equal-length strings")
    layers = []
    for i, (kind, activation) in enumerate(zip(kinds.tolist(), activations.tolist())):
        if kind not in LAYER_KINDS:
            raise KdxError(f"{source}: layer {i} kind {kind!r} not one of {LAYER_KINDS}")
        if activation not in ACTIVATIONS:
            raise KdxError(f"{source}: layer {i} activation {activation!r} not one of {ACTIVATIONS}")
        params = {}
        for key in (*_REQUIRED[kind], "alpha"):
            full = f"layer{i}.{key}"
            if key == "alpha" and full not in arrays:
                continue
            value = get(full)
            if value.dtype.kind != "f" or not np.all(np.isfinite(value)):
                raise KdxError(f"{source}: {full} must be finite floats")
            params[key] = value.astype(np.float32)
        layers.append(MlpLayer(kind, activation, params))
    weights = MlpWeights(layers)
    if "input.mean" in arrays:
        weights.input_mean = get("input.mean").astype(np.float32)
        weights.input_std = get("input.std").astype(np.float32)
    _check_shapes(weights, source)
    return weights


def _check_shapes(weights: MlpWeights, source: str) -> None:
    width = None
    grus = 0
    for i, layer in enumerate(weights.layers):
        p = layer.params
        if layer.kind == "dense":
            w, b = p["weight"], p["bias"]
            if w.ndim != 2 or b.shape != (w.shape[1],) or (width is not None and w.shape[0] != width):
                raise KdxError(f"{source}: layer {i} dense shapes {w.shape}/{b.shape} do not chain")
            width = w.shape[1]
        elif layer.kind == "layernorm":
            n = p["scale"].shape
            if len(n) != 1 or p["bias"].shape != n or (width is not None and n[0] != width) \
                    or p["epsilon"].shape != ():
                raise KdxError(f"{source}: layer {i} layernorm shapes do not chain")
            width = n[0]
        else:
            grus += 1
            wih, whh = p["weight_ih"], p["weight_hh"]
            h = whh.shape[0] if whh.ndim == 2 else -1
            if wih.ndim != 2 or whh.shape != (h, 3 * h) or wih.shape[1] != 3 * h \
                    or p["bias_ih"].shape != (3 * h,) or p["bias_hh"].shape != (3 * h,) \
                    or (width is not None and wih.shape[0] != width):
                raise KdxError(f"{source}: layer {i} gru shapes do not chain")
            width = h
    last = weights.layers[-1]
    if last.kind != "dense" or last.activation != "identity":
        raise KdxError(f"{source}: the last layer must be dense with identity activation (logits)")
    if grus > 1:
        raise KdxError(f"{source}: at most one gru layer is supported")
    if weights.input_mean is not None:
        if weights.input_mean.shape != (weights.in_dim,) or weights.input_std.shape != (weights.in_dim,) \
                or not np.all(weights.input_std > 0):
            raise KdxError(f"{source}: input.mean/input.std must be [{weights.in_dim}], std > 0")


#: one step of a compiled program: ``function(*args)``, all buffers bound at compile time
Op = tuple[Callable[..., object], tuple[object, ...]]


def _activation_ops(name: str, alpha: float | None, v: np.ndarray) -> list[Op]:
    """In-place activation of the float32 view ``v`` as ops (none for identity). Positional
    ``out`` arguments: a ufunc call parses them faster than ``out=``."""
    if name == "relu":
        return [(lambda x: np.maximum(x, 0.0, out=x), (v,))]  # positional out deprecated here
    if name == "tanh":
        return [(np.tanh, (v, v))]
    if name == "sigmoid":  # 1 / (1 + exp(-v))
        return [(np.negative, (v, v)), (np.exp, (v, v)), (np.add, (v, 1.0, v)), (np.reciprocal, (v, v))]
    if name == "elu":
        a = 1.0 if alpha is None else float(alpha)
        return [(lambda x: np.copyto(x, np.where(x > 0, x, a * np.expm1(np.minimum(x, 0.0)))), (v,))]
    if name == "leaky_relu":
        s = 0.01 if alpha is None else float(alpha)
        return [(lambda x: np.copyto(x, np.where(x > 0, x, s * x)), (v,))]
    return []


class MlpProgram:
    """A sidecar compiled into a flat tuple of :data:`Op` over preallocated buffers: no
    allocation per dense layer, one Python loop over the steps.

    Dense layers use an augmented input (a trailing constant 1) so that ``x @ W + b`` is a single
    ``x_aug.dot(W_aug, out)`` (the array method: cheaper per call than ``np.dot``). ``input`` is
    the float32 [in_dim] view the caller fills; ``state_in``/``state_out`` are float32 [h] views
    (recurrent only); after :meth:`run`, ``logits`` holds float32 [n_actions].

    ``first_dense_output``: when the first step is the first layer's dense product straight from
    ``input`` (first layer dense, normalisation folded), the float32 view it writes (before the
    activation), else None. Every entry of it is non-finite when any input is, so one entry
    checks the whole observation (see :class:`kdx.runtime.backends.numpy_backend.NumpyBackend`).
    """

    def __init__(self, weights: MlpWeights) -> None:
        layers = list(weights.layers)
        first = layers[0].params
        mean, std = weights.input_mean, weights.input_std
        ops: list[Op] = []
        if mean is not None and layers[0].kind == "dense":
            # Fold (x - mean) / std into the first dense layer: W' = W / std, b' = b - (mean/std) W.
            w = first["weight"] / std[:, None]
            b = first["bias"] - (mean / std) @ first["weight"]
            layers[0] = MlpLayer("dense", layers[0].activation,
                                 {**first, "weight": w.astype(np.float32), "bias": b.astype(np.float32)})
            mean = std = None
        self.in_dim = weights.in_dim
        self.state_size = weights.state_size
        self._input_aug = np.ones(self.in_dim + 1, dtype=np.float32)
        self.input = self._input_aug[: self.in_dim]
        self.state_in = np.zeros(self.state_size or 0, dtype=np.float32)
        self.state_out = np.zeros(self.state_size or 0, dtype=np.float32)
        if mean is not None:  # the caller's buffer stays raw; the normalised copy feeds layer 0
            self.input = np.zeros(self.in_dim, dtype=np.float32)
            inv_std, shift = (1.0 / std).astype(np.float32), mean.astype(np.float32)
            normalised = self._input_aug[: self.in_dim]
            ops += [(np.subtract, (self.input, shift, normalised)),
                    (np.multiply, (normalised, inv_std, normalised))]
        src_aug = self._input_aug
        self.first_dense_output: np.ndarray | None = None
        for i, layer in enumerate(layers):
            layer_ops, src_aug = self._compile(layer, src_aug)
            if i == 0 and layer.kind == "dense" and not ops:
                self.first_dense_output = src_aug[:-1]
            ops += layer_ops
        self.logits = src_aug[:-1]
        self.ops: tuple[Op, ...] = tuple(ops)

    def _compile(self, layer: MlpLayer, src_aug: np.ndarray) -> tuple[list[Op], np.ndarray]:
        p = layer.params
        src = src_aug[:-1]
        if layer.kind == "dense":
            w_aug = np.ascontiguousarray(np.vstack([p["weight"], p["bias"][None, :]]), dtype=np.float32)
            dst_aug = np.ones(w_aug.shape[1] + 1, dtype=np.float32)
            ops: list[Op] = [(src_aug.dot, (w_aug, dst_aug[:-1]))]
        elif layer.kind == "layernorm":
            dst_aug = np.ones(src.shape[0] + 1, dtype=np.float32)
            ops = [(self._layernorm(p, src, dst_aug[:-1]), ())]
        else:
            dst_aug = np.ones(self.state_size + 1, dtype=np.float32)
            ops = [(self._gru(p, src, dst_aug[:-1]), ())]
        alpha = float(p["alpha"]) if "alpha" in p else None
        return ops + _activation_ops(layer.activation, alpha, dst_aug[:-1]), dst_aug

    @staticmethod
    def _layernorm(p: dict[str, np.ndarray], src: np.ndarray, dst: np.ndarray) -> Callable[[], None]:
        scale, bias, eps = p["scale"], p["bias"], float(p["epsilon"])
        n = src.shape[0]
        inv_n = np.float32(1.0 / n)
        ones = np.ones(n, dtype=np.float32)
        gain = np.empty(n, dtype=np.float32)
        multiply, add, subtract = np.multiply, np.add, np.subtract

        def layernorm() -> None:
            # Dot products for the sums and preallocated outputs: ~4x faster than mean()/var()
            # on the short vectors of a policy.
            subtract(src, src.dot(ones) * inv_n, out=dst)
            inv_std = 1.0 / math.sqrt(float(dst.dot(dst) * inv_n) + eps)
            multiply(scale, inv_std, out=gain)
            multiply(dst, gain, out=dst)
            add(dst, bias, out=dst)
        return layernorm

    def _gru(self, p: dict[str, np.ndarray], src: np.ndarray, dst: np.ndarray) -> Callable[[], None]:
        w_ih, w_hh, b_ih, b_hh = p["weight_ih"], p["weight_hh"], p["bias_ih"], p["bias_hh"]
        h_in, h_out, n = self.state_in, self.state_out, self.state_size

        def gru() -> None:
            gi = src @ w_ih + b_ih
            gh = h_in @ w_hh + b_hh
            r = 1.0 / (1.0 + np.exp(-(gi[:n] + gh[:n])))
            z = 1.0 / (1.0 + np.exp(-(gi[n:2 * n] + gh[n:2 * n])))
            cand = np.tanh(gi[2 * n:] + r * gh[2 * n:])
            np.copyto(h_out, (1.0 - z) * cand + z * h_in)
            np.copyto(dst, h_out)
        return gru

    def run(self) -> np.ndarray:
        """Forward pass from ``input`` (and ``state_in``); returns the ``logits`` view."""
        for function, args in self.ops:
            function(*args)
        return self.logits
