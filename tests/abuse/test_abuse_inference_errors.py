"""A model that fails on some observations gives an error, never a dead connection (issue 17):
before, the numpy ONNX interpreter raised raw ValueError / MemoryError, which killed the
``serve`` connection thread with a traceback."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from kdx.errors import KdxError
from kdx.runtime.bundle import Bundle
from kdx.runtime.manifest import AgentEntry, FileEntry, Manifest, write_manifest
from kdx.runtime.protocol import ERROR, Client, encode_act
from kdx.runtime.serve import PolicyServer

onnx = pytest.importorskip("onnx")
from onnx import TensorProto, helper, numpy_helper  # noqa: E402

OBS_DIM, N_ACTIONS = 18, 5
#: obs[0] = 1 asks for 1e15 floats (no machine has them); obs[1] = 3 reshapes 3 values to [2, -1]
HUGE, MISSHAPEN = np.eye(OBS_DIM, dtype=np.float32)[0], 3 * np.eye(OBS_DIM, dtype=np.float32)[1]
HARMLESS = np.zeros(OBS_DIM, np.float32)


def _fragile_model() -> bytes:
    """A policy whose graph evaluates for obs[0] = obs[1] = 0 and fails for the values above."""
    rng = np.random.default_rng(0)

    def const(name: str, value: object) -> object:
        return numpy_helper.from_array(np.asarray(value), name)

    def count(column: int, scale: float, out: str) -> list:
        return [
            helper.make_node("Slice", ["obs", f"s{column}", f"e{column}", "ax1"], [f"col{column}"]),
            helper.make_node("Abs", [f"col{column}"], [f"abs{column}"]),
            helper.make_node("Mul", [f"abs{column}", f"k{column}"], [f"scaled{column}"]),
            helper.make_node("Cast", [f"scaled{column}"], [f"int{column}"], to=TensorProto.INT64),
            helper.make_node("Reshape", [f"int{column}", "one"], [out]),
        ]
    nodes = [
        *count(0, 1e15, "n_huge"), *count(1, 1.0, "n_odd"),
        helper.make_node("ConstantOfShape", ["n_huge"], ["huge"]),
        helper.make_node("ReduceSum", ["huge"], ["sum_huge"], keepdims=0),
        helper.make_node("ConstantOfShape", ["n_odd"], ["odd"]),
        helper.make_node("Reshape", ["odd", "two_rows"], ["rows"]),
        helper.make_node("ReduceSum", ["rows"], ["sum_rows"], keepdims=0),
        helper.make_node("Gemm", ["obs", "W", "b"], ["dense"]),
        helper.make_node("Add", ["dense", "sum_huge"], ["partial"]),
        helper.make_node("Add", ["partial", "sum_rows"], ["logits"]),
        helper.make_node("ArgMax", ["logits"], ["action"], axis=1, keepdims=0),
    ]
    inits = [const("W", rng.standard_normal((OBS_DIM, N_ACTIONS)).astype(np.float32)),
             const("b", np.zeros(N_ACTIONS, np.float32)), const("ax1", np.array([1])),
             const("s0", np.array([0])), const("e0", np.array([1])), const("k0", np.float32(1e15)),
             const("s1", np.array([1])), const("e1", np.array([2])), const("k1", np.float32(1.0)),
             const("one", np.array([1])), const("two_rows", np.array([2, -1]))]
    graph = helper.make_graph(
        nodes, "fragile", [helper.make_tensor_value_info("obs", TensorProto.FLOAT, [1, OBS_DIM])],
        [helper.make_tensor_value_info("logits", TensorProto.FLOAT, [1, N_ACTIONS]),
         helper.make_tensor_value_info("action", TensorProto.INT64, [1])], inits)
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])
    model.ir_version = 8
    onnx.checker.check_model(model)
    return model.SerializeToString()


@pytest.fixture(scope="module")
def fragile_bundle(tmp_path_factory: pytest.TempPathFactory) -> Path:
    bundle = tmp_path_factory.mktemp("fragile")
    (bundle / "agent_0.onnx").write_bytes(_fragile_model())
    agent = AgentEntry(name="agent_0", obs_dim=OBS_DIM, n_actions=N_ACTIONS,
                       files=[FileEntry.of_file(bundle, "agent_0.onnx", "onnx")])
    write_manifest(bundle, Manifest(agents=[agent]))
    return bundle


def _backends() -> list[str]:
    from kdx.runtime.backends import BACKENDS

    return [name for name in ("numpy", "onnxruntime") if BACKENDS[name].unavailable_reason() is None]


@pytest.mark.parametrize("backend", _backends())
def test_evaluation_failures_are_kdx_errors(fragile_bundle: Path, backend: str) -> None:
    policy = Bundle.load(fragile_bundle).policy("agent_0", backend)
    expected = policy.act(HARMLESS)
    for obs in (HUGE, MISSHAPEN):
        with pytest.raises(KdxError, match="agent_0.onnx"):
            policy.act(obs)
    assert policy.act(HARMLESS) == expected  # the policy is still usable


@pytest.mark.parametrize("backend", _backends())
def test_serve_replies_with_the_error_and_keeps_the_connection(fragile_bundle: Path, backend: str) -> None:
    server = PolicyServer(Bundle.load(fragile_bundle).policy("agent_0", backend), "127.0.0.1", 0, spin_us=0.0)
    thread = server.start_in_thread()
    try:
        with Client(server.host, server.port, timeout_s=10) as client:
            expected = client.act(HARMLESS)
            for obs in (HUGE, MISSHAPEN):
                status, message = client.request(encode_act(obs))
                assert status == ERROR and b"agent_0.onnx" in message
            assert client.act(HARMLESS) == expected  # same connection
        stats = server.stats()
        assert stats["errors"] == 2 and stats["internal_errors"] == 0
    finally:
        server.shutdown()
        thread.join(timeout=5)


def test_serve_survives_an_exception_that_is_not_a_kdx_error(masked_abuse_bundle: Path) -> None:
    """Backends turn their failures into KdxError; should one not (a bug), the request still gets
    an error reply and the connection stays. The policy's act is wrapped to raise as such a bug
    would: the server, not the backend, is under test."""
    policy = Bundle.load(masked_abuse_bundle).policy("agent_0", "numpy")
    act = policy.act

    def buggy_act(obs: np.ndarray, mask: np.ndarray | None = None) -> int:
        if obs[0] == 7:
            raise IndexError("a backend bug")
        return act(obs, mask)
    policy.act = buggy_act
    server = PolicyServer(policy, "127.0.0.1", 0, spin_us=0.0)
    thread = server.start_in_thread()
    try:
        with Client(server.host, server.port, timeout_s=10) as client:
            status, message = client.request(encode_act(np.full(OBS_DIM, 7, np.float32)))
            assert status == ERROR and b"internal error" in message and b"IndexError" in message
            assert client.act(HARMLESS) == act(HARMLESS)
        assert server.stats()["internal_errors"] == 1
    finally:
        server.shutdown()
        thread.join(timeout=5)
