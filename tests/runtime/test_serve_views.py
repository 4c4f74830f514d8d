"""``serve`` of students with a view: a client sends the agent's raw observation (the server
applies the device view, as ``kdx-runtime run`` does) or the viewed one; both give the action and
logits of the policy fed the viewed observation. Widths that fit neither kind, or both kinds of a
view that changes values, get error replies; bundles without views serve as before."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import numpy as np
import pytest

from kdx.errors import KdxError
from kdx.runtime.bundle import Bundle
from kdx.runtime.protocol import ACT, ACT_RAW, ACT_VIEWED, ERROR, Client, encode, encode_act
from kdx.runtime.serve import PolicyServer
from kdx.runtime.testing import start_serve_process, stop_serve_process
from tests.runtime.view_bundles import NARROWING, SAME_WIDTH, make_viewed_bundle


def _serving(bundle: Path, backend: str = "numpy") -> Iterator[PolicyServer]:
    server = PolicyServer(Bundle.load(bundle).policy("agent_0", backend), "127.0.0.1", 0)
    thread = server.start_in_thread()
    yield server
    server.shutdown()
    thread.join(timeout=5)


@pytest.fixture(scope="module")
def narrowing(tmp_path_factory) -> Iterator[PolicyServer]:
    yield from _serving(make_viewed_bundle(tmp_path_factory.mktemp("narrow") / "b", NARROWING))


@pytest.fixture(scope="module")
def same_width(tmp_path_factory) -> Iterator[PolicyServer]:
    yield from _serving(make_viewed_bundle(tmp_path_factory.mktemp("same") / "b", SAME_WIDTH, with_mask=True))


def _raw_rows(n: int) -> np.ndarray:
    """Raw observations whose landmarks are near and far of sight 2 (the view zeroes the far ones)."""
    return (np.random.default_rng(1).standard_normal((n, 8)) * 2.0).astype(np.float32)


def _served_equals_local(client: Client, server: PolicyServer, local, raw: np.ndarray, kind: str | None,
                         mask: np.ndarray | None, send_raw: bool) -> None:
    """Sent raw or viewed (as ``kind``), the served action and logits are the local policy's on the view."""
    viewed = local.model_input(raw)
    expected = local.act(viewed, mask)
    assert client.act(raw if send_raw else viewed, mask, kind=kind) == expected
    np.testing.assert_array_equal(server.policy.last_logits(), local.last_logits())


def test_raw_and_viewed_requests_act_as_the_policy_on_the_view(narrowing: PolicyServer) -> None:
    local = Bundle.load(narrowing.policy.backend.bundle_dir).policy("agent_0", "numpy")
    rows = _raw_rows(40)
    assert not np.array_equal(local.model_input(rows), rows[:, :6])  # sight and quant change values
    with Client(narrowing.host, narrowing.port) as client:
        info = client.info()
        assert (info["obs_dim"], info["raw_obs_dim"], info["act_needs_kind"]) == (6, 8, False)
        assert info["view"] == NARROWING.split() and info["device_ops"] == ["-comm.*", "sight:2", "quant:8"]
        for i, raw in enumerate(rows):
            mask = None if i % 2 else np.arange(5) != i % 5
            # ACT told by the length (raw 32 bytes, viewed 24), ACT_RAW, ACT_VIEWED
            for kind, send_raw in ((None, True), (None, False), ("raw", True), ("viewed", False)):
                _served_equals_local(client, narrowing, local, raw, kind, mask, send_raw)
            viewed = local.model_input(raw)
            assert client.act(viewed, mask) == client.act(raw, mask) == client.act(raw, mask, kind="raw")


def test_wrong_widths_get_error_replies_naming_both_widths(narrowing: PolicyServer) -> None:
    with Client(narrowing.host, narrowing.port) as client:
        before = client.stats()["errors"]
        status, message = client.request(encode(ACT, b"\x00" * 4 * 7))
        assert status == ERROR
        assert "ACT payload is 28 bytes; agent_0 takes its raw observation (8 float32 = 32 bytes, or 37 with " \
               "the mask) or its view (6 float32 = 24 bytes, or 29 with the mask)" in message.decode()
        status, message = client.request(encode_act(np.zeros(6, np.float32), kind="raw"))
        assert status == ERROR and b"ACT_RAW payload is 24 bytes; expected the raw observation" in message
        status, message = client.request(encode_act(np.zeros(8, np.float32), kind="viewed"))
        assert status == ERROR and b"ACT_VIEWED payload is 32 bytes" in message and b"(8 float32" in message
        assert 0 <= client.act(np.zeros(8, np.float32)) < 5  # the connection keeps serving
        assert client.stats()["errors"] - before == 3


def test_equal_widths_need_an_explicit_kind(same_width: PolicyServer) -> None:
    local = Bundle.load(same_width.policy.backend.bundle_dir).policy("agent_0", "numpy")
    rows = _raw_rows(30)
    assert not np.array_equal(local.model_input(rows), rows)
    with Client(same_width.host, same_width.port) as client:
        info = client.info()
        assert (info["obs_dim"], info["raw_obs_dim"], info["act_needs_kind"]) == (8, 8, True)
        assert info["ambiguous_act_bytes"] == [32, 37]
        with pytest.raises(KdxError, match=r"fits both the raw observation .* send ACT_RAW \(5\) or ACT_VIEWED"):
            client.act(rows[0])
        for raw in rows:
            mask = np.ones(5, bool)
            mask[int(abs(raw[0]) * 10) % 5] = False
            _served_equals_local(client, same_width, local, raw, "raw", mask, send_raw=True)
            _served_equals_local(client, same_width, local, raw, "viewed", None, send_raw=False)
        far = np.array([0, 0, 5, 5, 0.1, 0.1, 1, 1], np.float32)  # landmark.0 beyond sight 2
        assert client.act(far, kind="raw") == local.act(local.model_input(far))
        assert client.act(far, kind="viewed") == local.act(far)


def test_a_length_that_fits_both_kinds_is_refused_only_for_that_length(tmp_path: Path) -> None:
    """raw 8 without a mask is 32 bytes, view 6 with a 8-action mask is 24 + 8: that length is ambiguous,
    the others are not."""
    bundle = make_viewed_bundle(tmp_path / "b", NARROWING, n_actions=8)
    for server in _serving(bundle):
        with Client(server.host, server.port) as client:
            assert client.info()["ambiguous_act_bytes"] == [32]
            status, message = client.request(encode_act(np.zeros(8, np.float32)))
            assert status == ERROR and b"fits both" in message
            raw = _raw_rows(1)[0]
            local = server.policy
            assert client.act(raw, np.ones(8, bool)) == local.act(local.model_input(raw))  # 40 bytes: raw
            assert client.act(raw, kind="raw") == local.act(local.model_input(raw))


def test_bundles_without_views_take_the_same_observation_in_every_act_type(masked_bundle: Path) -> None:
    for server in _serving(masked_bundle):
        local = Bundle.load(masked_bundle).policy("agent_0", "numpy")
        with Client(server.host, server.port) as client:
            info = client.info()
            assert (info["obs_dim"], info["raw_obs_dim"], info["view"], info["act_needs_kind"]) == (18, 18, None, False)
            obs = np.random.default_rng(3).standard_normal(18).astype(np.float32)
            expected = local.act(obs)
            for code in (ACT, ACT_RAW, ACT_VIEWED):
                status, payload = client.request(encode(code, obs.astype("<f4").tobytes()))
                assert status == 0 and int.from_bytes(payload[:4], "little", signed=True) == expected
            status, message = client.request(encode(ACT, b"\x00" * 10))
            assert status == ERROR and b"ACT payload is 10 bytes; expected 72 (obs_dim 18 float32)" in message


def test_kdx_runtime_serve_takes_raw_observations(tmp_path: Path) -> None:
    bundle = make_viewed_bundle(tmp_path / "b", NARROWING)
    process, address = start_serve_process(bundle, "agent_0", "--port", "0", "--backend", "numpy")
    try:
        local = Bundle.load(bundle).policy("agent_0", "numpy")
        with Client(**address) as client:
            for raw in _raw_rows(10):
                assert client.act(raw) == local.act(local.model_input(raw))
    finally:
        stats = stop_serve_process(process)
    assert stats["decisions"] == 10 and stats["errors"] == 0
