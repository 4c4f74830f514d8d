"""ONNX models with external data are refused by every backend that reads ONNX (issue 17):
before, onnxruntime read the weights from the process's working directory, outside the bundle
and its checksums."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest

from kdx.errors import KdxError
from kdx.runtime.bundle import Bundle
from kdx.runtime.manifest import MANIFEST_NAME, FileEntry
from kdx.runtime.onnx_external import _CHILDREN, check_no_external_data
from kdx.runtime.tensorrt_build import build_engine_bytes, plan_build
from kdx.runtime.testing import make_test_bundle

onnx = pytest.importorskip("onnx")
from onnx import external_data_helper, helper, numpy_helper  # noqa: E402


def _externalise(model: object, location: str = "weights.bin") -> bytes:
    """The model's bytes with every tensor's data moved to ``location`` (not written)."""
    external_data_helper.convert_model_to_external_data(model, all_tensors_to_one_file=True,
                                                        location=location, size_threshold=0,
                                                        convert_attribute=True)
    return model.SerializeToString()


@pytest.fixture()
def external_bundle(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """A bundle whose agent_0 ONNX keeps its weights in ``weights.bin``, and a valid
    ``weights.bin`` in the working directory, where onnxruntime used to find it."""
    bundle = make_test_bundle(tmp_path / "bundle", n_agents=1, student_hidden=(8,), teacher_hidden=None,
                              with_npz=False)
    onnx_path = bundle / "agent_0.fp32.onnx"
    model = onnx.load_model_from_string(onnx_path.read_bytes())
    cwd = tmp_path / "cwd"
    cwd.mkdir()
    onnx.save_model(model, cwd / "full.onnx", save_as_external_data=True, all_tensors_to_one_file=True,
                    location="weights.bin", size_threshold=0)
    onnx_path.write_bytes((cwd / "full.onnx").read_bytes())
    manifest = json.loads((bundle / MANIFEST_NAME).read_text())
    entry = FileEntry.of_file(bundle, "agent_0.fp32.onnx", "onnx")
    manifest["agents"][0]["files"] = [entry.__dict__]
    (bundle / MANIFEST_NAME).write_text(json.dumps(manifest))
    monkeypatch.chdir(cwd)
    return bundle


@pytest.mark.parametrize("backend", ["onnxruntime", "numpy"])
def test_backends_refuse_external_data(external_bundle: Path, backend: str) -> None:
    if backend == "onnxruntime":
        pytest.importorskip("onnxruntime")
    bundle = Bundle.load(external_bundle)  # the checksums cover the model file only
    with pytest.raises(KdxError, match="keeps tensors in external data files"):
        bundle.policy("agent_0", backend)
    with pytest.raises(KdxError, match="no backend can run"):
        bundle.policy("agent_0", "auto")


def test_the_tensorrt_build_refuses_external_data_before_parsing(external_bundle: Path) -> None:
    data = (external_bundle / "agent_0.fp32.onnx").read_bytes()
    with pytest.raises(KdxError, match="keeps tensors in external data files"):
        build_engine_bytes(None, data, plan_build("10.3.0", "fp32"), "agent_0.fp32.onnx")


def _graph_with(node: object, initializers: list) -> object:
    graph = helper.make_graph([node], "g", [helper.make_tensor_value_info("c", onnx.TensorProto.BOOL, [])],
                              [helper.make_tensor_value_info("y", onnx.TensorProto.FLOAT, [2])], initializers)
    return helper.make_model(graph)


def _tensor(name: str) -> object:
    return numpy_helper.from_array(np.ones(2, np.float32), name)


def _branch(name: str) -> object:
    return helper.make_graph([helper.make_node("Identity", [name], ["y"])], name, [],
                             [helper.make_tensor_value_info("y", onnx.TensorProto.FLOAT, [2])], [_tensor(name)])


@pytest.mark.parametrize("where", ["initializer", "constant attribute", "subgraph"])
def test_external_tensors_are_found_wherever_they_sit(where: str) -> None:
    if where == "initializer":
        model = _graph_with(helper.make_node("Identity", ["w"], ["y"]), [_tensor("w")])
    elif where == "constant attribute":
        model = _graph_with(helper.make_node("Constant", [], ["y"], value=_tensor("k")), [])
    else:
        model = _graph_with(helper.make_node("If", ["c"], ["y"], then_branch=_branch("a"),
                                             else_branch=_branch("b")), [])
    check_no_external_data(model.SerializeToString(), "inline.onnx")  # inline data passes
    with pytest.raises(KdxError, match="external data"):
        check_no_external_data(_externalise(model), "external.onnx")


@pytest.mark.parametrize("data", [b"\x0a\xff\xff\xff\xff\x0f", b"\x3a\x05\x2a\x03", b"\x0b", b"\x80" * 12])
def test_malformed_protobuf_is_a_kdx_error(data: bytes) -> None:
    with pytest.raises(KdxError, match="not a valid ONNX file"):
        check_no_external_data(data, "bad.onnx")


def test_the_field_numbers_are_onnx_s() -> None:
    messages = {"model": onnx.ModelProto, "training": onnx.TrainingInfoProto, "graph": onnx.GraphProto,
                "function": onnx.FunctionProto, "node": onnx.NodeProto, "attribute": onnx.AttributeProto,
                "sparse": onnx.SparseTensorProto, "tensor": onnx.TensorProto}
    names = {value: key for key, value in messages.items()}
    for kind, children in _CHILDREN.items():
        fields = {f.number: f for f in messages[kind].DESCRIPTOR.fields}
        for number, child in children.items():
            assert names[fields[number].message_type._concrete_class] == child, (kind, number)
        # every field of this message that can hold a tensor (directly or not) is visited
        holders = {n for n, f in fields.items() if f.message_type is not None
                   and f.message_type._concrete_class in names}
        assert holders <= set(children), (kind, holders - set(children))
    tensor = {f.name: f.number for f in onnx.TensorProto.DESCRIPTOR.fields}
    assert (tensor["external_data"], tensor["data_location"]) == (13, 14)
    assert onnx.TensorProto.EXTERNAL == 1
