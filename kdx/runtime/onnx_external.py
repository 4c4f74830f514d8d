"""Refuse ONNX models whose tensors live in external files: a bundle must be self-contained.

An ONNX tensor may keep its data outside the model (``data_location: EXTERNAL``, with
``external_data`` naming a file). Loaded from bytes, onnxruntime and the ``onnx`` package
resolve such a file against the process's working directory: outside the bundle and its
checksums. kdx exports never use external data, so every backend that reads an ONNX file
refuses one that does (:func:`check_no_external_data`).

The check reads the protobuf wire format directly (no ``onnx`` package needed: the onnxruntime
backend runs without it), visiting only the messages that can hold tensors:
model -> graphs, functions, training info -> nodes -> attributes -> tensors (also in subgraphs).
"""

from __future__ import annotations

from kdx.errors import KdxError

# message -> {field number: message type of that field}, the paths to every TensorProto
# (field numbers from onnx.proto; tests/abuse checks them against the installed onnx package).
_CHILDREN: dict[str, dict[int, str]] = {
    "model": {7: "graph", 20: "training", 25: "function"},
    "training": {1: "graph", 2: "graph"},
    "graph": {1: "node", 5: "tensor", 15: "sparse"},
    "function": {7: "node", 11: "attribute"},
    "node": {5: "attribute"},
    "attribute": {5: "tensor", 6: "graph", 10: "tensor", 11: "graph", 22: "sparse", 23: "sparse"},
    "sparse": {1: "tensor", 2: "tensor"},
    "tensor": {},
}
_TENSOR_EXTERNAL_DATA, _TENSOR_DATA_LOCATION, _EXTERNAL = 13, 14, 1
#: manifest file kinds that are ONNX models
ONNX_FILE_KINDS = ("onnx", "onnx-dynamic")
_MAX_DEPTH = 64


class MalformedProto(Exception):
    """Bytes that are not a readable protobuf message (truncated, unknown wire type)."""


def _varint(data: memoryview, pos: int) -> tuple[int, int]:
    value = shift = 0
    while True:
        if pos >= len(data) or shift > 63:
            raise MalformedProto("truncated varint")
        byte = data[pos]
        pos += 1
        value |= (byte & 0x7F) << shift
        if byte < 0x80:
            return value, pos
        shift += 7


def proto_fields(data: memoryview):
    """``(field number, wire type, value)``: an int for varints, a memoryview for
    length-delimited fields, None for fixed-width ones."""
    pos = 0
    while pos < len(data):
        key, pos = _varint(data, pos)
        number, wire = key >> 3, key & 7
        if wire == 0:
            value, pos = _varint(data, pos)
            yield number, wire, value
        elif wire == 2:
            size, pos = _varint(data, pos)
            if pos + size > len(data):
                raise MalformedProto("truncated field")
            yield number, wire, data[pos: pos + size]
            pos += size
        elif wire in (1, 5):
            pos += 8 if wire == 1 else 4
            if pos > len(data):
                raise MalformedProto("truncated field")
            yield number, wire, None
        else:  # groups (3, 4) are not used by ONNX
            raise MalformedProto(f"wire type {wire}")


def _uses_external_data(data: memoryview, kind: str, depth: int) -> bool:
    if depth > _MAX_DEPTH:
        raise MalformedProto(f"messages nested deeper than {_MAX_DEPTH}")
    children = _CHILDREN[kind]
    for number, wire, value in proto_fields(data):
        if kind == "tensor":
            if number == _TENSOR_EXTERNAL_DATA and wire == 2:
                return True
            if number == _TENSOR_DATA_LOCATION and wire == 0 and value == _EXTERNAL:
                return True
        elif wire == 2 and number in children:
            if _uses_external_data(value, children[number], depth + 1):
                return True
    return False


def check_no_external_data(model_bytes: bytes, source: str) -> None:
    """KdxError if the ONNX model ``model_bytes`` (read from ``source``) keeps any tensor in an
    external file, or is not a readable protobuf."""
    try:
        external = _uses_external_data(memoryview(model_bytes), "model", 0)
    except MalformedProto as exc:
        raise KdxError(f"{source}: not a valid ONNX file ({exc}); copy the bundle again") from None
    if external:
        raise KdxError(
            f"{source}: the ONNX model keeps tensors in external data files, which would be read "
            "from outside the bundle and its checksums; re-export it with the weights inside the "
            "model (onnx.save_model(..., save_as_external_data=False))"
        )
