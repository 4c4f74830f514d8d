"""How many observation values each model file of an agent reads, checked against the manifest
before any backend loads the model (``Backend.__init__`` calls :func:`check_model_widths`).

A student distilled on a view reads the view: the manifest's ``obs_dim`` is the view's width and
the manifest itself refuses a view whose width is not ``obs_dim``
(``kdx.runtime.manifest_view.AgentView.validate``). What the manifest cannot see is the model
files: a manifest edited into a self-consistent view of another width would feed the model the
wrong number of values (the generated C code would read past its input). So every file whose
input width can be read without running it is read here, for every backend:

    onnx, onnx-dynamic  the last dimension of the graph input named ``inputs.obs`` (the protobuf
                        is read directly, no ``onnx`` package; a symbolic dimension is skipped)
    npz                 the first layer's input width (``MlpWeights.in_dim``)
    c_header            ``#define KDX_<SYM>_OBS_DIM n`` in the agent's own header; the C code
                        appends the one-hot agent id itself, so ``n`` is ``obs_dim``

An ``engine`` (TensorRT) is opaque without TensorRT: it is built from the agent's ONNX, checked
here, and the TensorRT backend checks the deserialised engine's input shape as well.
"""

from __future__ import annotations

import re
from pathlib import Path

from kdx.errors import KdxError
from kdx.runtime.manifest import AgentEntry, FileEntry
from kdx.runtime.mlp_npz import load_mlp_npz
from kdx.runtime.onnx_external import ONNX_FILE_KINDS, MalformedProto, proto_fields

# onnx.proto field numbers: ModelProto.graph, GraphProto.input, ValueInfoProto.name/.type,
# TypeProto.tensor_type, TypeProto.Tensor.shape, TensorShapeProto.dim, Dimension.dim_value
_GRAPH, _INPUT, _NAME, _TYPE, _TENSOR_TYPE, _SHAPE, _DIM, _DIM_VALUE = 7, 11, 1, 2, 1, 2, 1, 1
_LENGTH_DELIMITED = 2


def _field(data: memoryview, number: int) -> memoryview | None:
    """The last length-delimited field ``number`` of a message (protobuf: the last one wins)."""
    found = None
    for n, wire, value in proto_fields(data):
        if n == number and wire == _LENGTH_DELIMITED:
            found = value
    return found


def onnx_input_width(model_bytes: bytes, input_name: str, source: str) -> int | None:
    """The last dimension of the ONNX graph input ``input_name``; None where it is symbolic or
    unstated. KdxError if the model is not readable or has no such input."""
    try:
        graph = _field(memoryview(model_bytes), _GRAPH)
        if graph is None:
            raise KdxError(f"{source}: the ONNX model has no graph; re-export the bundle")
        for n, wire, value in proto_fields(graph):
            if n != _INPUT or wire != _LENGTH_DELIMITED:
                continue
            name = _field(value, _NAME)
            if name is None or bytes(name).decode("utf-8", errors="replace") != input_name:
                continue
            dims = []
            for part in (_TYPE, _TENSOR_TYPE, _SHAPE):
                value = _field(value, part)
                if value is None:
                    return None
            for dn, dwire, dim in proto_fields(value):
                if dn == _DIM and dwire == _LENGTH_DELIMITED:
                    dims.append(next((v for f, w, v in proto_fields(dim) if f == _DIM_VALUE and w == 0), None))
            return dims[-1] if dims else None
    except MalformedProto as exc:
        raise KdxError(f"{source}: not a valid ONNX file ({exc}); copy the bundle again") from None
    raise KdxError(f"{source}: the ONNX model has no input named {input_name!r} (the manifest's inputs.obs); "
                   "re-export the bundle")


def c_header_obs_dim(text: str, symbol: str, source: str) -> int:
    """``KDX_<SYMBOL>_OBS_DIM`` as the generated header defines it; KdxError if it does not."""
    macro = f"KDX_{symbol.upper()}_OBS_DIM"
    match = re.search(rf"^#define {re.escape(macro)} (\d+)\s*$", text, re.MULTILINE)
    if match is None:
        raise KdxError(f"{source}: no '#define {macro} <n>' in the agent's C header; re-export the bundle")
    return int(match.group(1))


def width_error(agent: AgentEntry, model: str, width: int, expected: int) -> KdxError:
    """The refusal of a model (file name ``model``) that reads ``width`` values where the manifest
    says ``expected``: names the agent, and with a view the view and its width."""
    where = f"{agent.role} {agent.name}"
    if agent.view is not None:
        return KdxError(f"{where}: its view ({' '.join(agent.view.text) or 'full observation'}) gives "
                        f"{agent.view.width} features but the model's input {model} reads {width}; the view "
                        "and the model disagree, re-export the bundle")
    return KdxError(f"{where}: the model {model} reads {width} observation values but the manifest says "
                    f"{expected}; re-export the bundle")


def _header_entry(agent: AgentEntry) -> FileEntry | None:
    source = agent.file_of_kind("c_source")
    if source is None or agent.c_symbol is None:
        return None
    return next((f for f in agent.files if f.kind == "c_header" and f.path == source.path[:-2] + ".h"), None)


def _read(path: Path, binary: bool = True) -> bytes | str:
    try:
        return path.read_bytes() if binary else path.read_text(encoding="utf-8", errors="replace")
    except OSError as exc:
        raise KdxError(f"{path}: cannot be read ({exc.strerror}); copy the whole bundle") from None


def model_widths(agent: AgentEntry, bundle_dir: Path) -> list[tuple[str, int, int]]:
    """``(file path, input width it reads, width the manifest expects)`` for every model file of
    ``agent`` whose width can be read (see the module docstring; symbolic ONNX widths left out)."""
    rows: list[tuple[str, int, int]] = []
    for entry in agent.files:
        path = Path(bundle_dir) / entry.path
        if entry.kind in ONNX_FILE_KINDS:
            width = onnx_input_width(_read(path), agent.inputs.obs, str(path))
            if width is not None:
                rows.append((entry.path, width, agent.model_input_dim))
        elif entry.kind == "npz":
            rows.append((entry.path, load_mlp_npz(path).in_dim, agent.model_input_dim))
    header = _header_entry(agent)
    if header is not None:
        path = Path(bundle_dir) / header.path
        rows.append((header.path, c_header_obs_dim(_read(path, binary=False), agent.c_symbol, str(path)),
                     agent.obs_dim))
    return rows


def check_model_widths(agent: AgentEntry, bundle_dir: Path) -> None:
    """KdxError (:func:`width_error`) if any model file of ``agent`` reads another number of
    observation values than the manifest (with a view: the view's width) says."""
    for path, width, expected in model_widths(agent, bundle_dir):
        if width != expected:
            raise width_error(agent, Path(path).name, width, expected)
