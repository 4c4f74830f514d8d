"""``serve`` over a real loopback socket: same actions as the policy, error replies and counters
for bad requests, and a server that survives any byte stream (fuzzed)."""

from __future__ import annotations

import socket
import struct
import time
from collections.abc import Iterator
from pathlib import Path

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from kdx.errors import KdxError
from kdx.runtime.bundle import Bundle
from kdx.runtime.policy import Deadline
from kdx.runtime.protocol import (
    ACT,
    ERROR,
    HEADER,
    MAGIC,
    MAX_PAYLOAD,
    OK,
    RESET,
    Client,
    ProtocolError,
    decode_act,
    decode_header,
    encode,
    encode_act,
)
from kdx.runtime.serve import PolicyServer
from kdx.runtime.testing import assert_served_like_local


@pytest.fixture(scope="module")
def server(masked_bundle: Path) -> Iterator[PolicyServer]:
    policy = Bundle.load(masked_bundle).policy("agent_0", "numpy")
    server = PolicyServer(policy, "127.0.0.1", 0)
    thread = server.start_in_thread()
    yield server
    server.shutdown()
    thread.join(timeout=5)


def _client(server: PolicyServer) -> Client:
    return Client(server.host, server.port)


def test_actions_over_the_wire_equal_the_policy(server: PolicyServer, masked_bundle: Path) -> None:
    local = Bundle.load(masked_bundle).policy("agent_0", "numpy")
    rng = np.random.default_rng(0)
    with _client(server) as client:
        info = client.info()
        assert (info["agent"], info["obs_dim"], info["n_actions"]) == ("agent_0", 18, 5)
        assert_served_like_local(client, local, rng, 50)
        client.reset()


def test_bad_requests_get_error_replies_and_are_counted(server: PolicyServer) -> None:
    with _client(server) as client:
        before = client.stats()
        nan_obs = np.zeros(18, np.float32)
        nan_obs[4] = np.nan
        with pytest.raises(KdxError, match="NaN or inf"):
            client.act(nan_obs)
        status, message = client.request(encode(ACT, b"\x00" * 10))
        assert status == ERROR and b"ACT payload is 10 bytes" in message
        status, message = client.request(encode(RESET, b"xyz"))
        assert status == ERROR and b"no payload" in message
        status, message = client.request(encode(77))
        assert status == ERROR and b"unknown request type 77" in message
        with pytest.raises(KdxError, match="no legal action"):
            client.act(np.zeros(18, np.float32), np.zeros(5, bool))
        assert 0 <= client.act(np.zeros(18, np.float32)) < 5  # same connection keeps working
        after = client.stats()
    assert after["errors"] - before["errors"] == 5
    assert after["protocol_errors"] - before["protocol_errors"] == 3
    assert after["decisions"] - before["decisions"] == 1


@pytest.mark.parametrize("header", [
    b"XX" + bytes(6),                                     # bad magic
    HEADER.pack(MAGIC, 9, ACT, 0),                        # unknown version
    HEADER.pack(MAGIC, 1, ACT, 0xFFFFFFFF),               # absurd length
])
def test_unframeable_header_closes_only_that_connection(server: PolicyServer, header: bytes) -> None:
    with _client(server) as client:
        status, message = client.request(header)
        assert status == ERROR
        with pytest.raises((ConnectionError, OSError)):
            client.request(encode_act(np.zeros(18)))
    with _client(server) as client:
        assert 0 <= client.act(np.zeros(18, np.float32)) < 5


def test_deadline_counts_late_decisions_and_uses_the_fallback(masked_bundle: Path) -> None:
    policy = Bundle.load(masked_bundle).policy("agent_1", "numpy")
    server = PolicyServer(policy, "127.0.0.1", 0, Deadline(budget_us=0.001, fallback_action=4))
    thread = server.start_in_thread()
    try:
        with _client(server) as client:
            replies = [client.act_reply(np.full(18, i, np.float32)) for i in range(5)]
            stats = client.stats()
    finally:
        server.shutdown()
        thread.join(timeout=5)
    assert all(r.late and r.fallback and r.action == 4 and r.server_ns > 1 for r in replies)
    assert stats["late"] == 5 and stats["fallbacks_used"] == 5
    assert stats["deadline"]["late"] == 5


def test_deadline_refuses_a_fallback_outside_the_action_space(masked_bundle: Path) -> None:
    policy = Bundle.load(masked_bundle).policy("agent_1", "numpy")
    with pytest.raises(KdxError, match="fallback action 5"):
        PolicyServer(policy, "127.0.0.1", 0, Deadline(budget_us=10, fallback_action=5))


# --- fuzzing --------------------------------------------------------------------------------

@settings(max_examples=300, deadline=None)
@given(st.binary(max_size=16))
def test_fuzz_header_decoding_only_raises_protocol_errors(data: bytes) -> None:
    try:
        _code, length = decode_header(data)
    except ProtocolError:
        return
    assert len(data) == 8 and data[:2] == MAGIC and length <= MAX_PAYLOAD


@settings(max_examples=300, deadline=None)
@given(st.binary(max_size=120))
def test_fuzz_act_payload_decoding(data: bytes) -> None:
    try:
        obs, mask = decode_act(data, 18, 5)
    except ProtocolError:
        assert len(data) not in (72, 77)
        return
    assert obs.shape == (18,) and (mask is None or mask.shape == (5,))


@settings(max_examples=60, deadline=None)
@given(st.lists(st.binary(max_size=64) | st.builds(
    lambda code, payload: encode(code, payload), st.integers(0, 255), st.binary(max_size=80)), max_size=4))
def test_fuzz_the_server_with_arbitrary_streams(server: PolicyServer, chunks: list[bytes]) -> None:
    """Whatever a client sends, the server answers or hangs up on it, and keeps serving others."""
    with socket.create_connection((server.host, server.port), timeout=2) as sock:
        try:
            for chunk in chunks:
                sock.sendall(chunk)
        except OSError:
            pass  # the server may already have closed this connection
    with _client(server) as client:
        assert 0 <= client.act(np.zeros(18, np.float32)) < 5


def test_reply_layout_is_the_documented_one(server: PolicyServer) -> None:
    """A hand-built request and a hand-parsed reply, as a C client would do it."""
    obs = np.arange(18, dtype="<f4") / 18
    with socket.create_connection((server.host, server.port), timeout=2) as sock:
        sock.sendall(b"KX" + bytes([1, 1]) + struct.pack("<I", 72) + obs.tobytes())
        reply = b""
        while len(reply) < 17:
            reply += sock.recv(64)
    magic, version, status, length = HEADER.unpack(reply[:8])
    action, server_ns, flags = struct.unpack("<iIB", reply[8:17])
    assert (magic, version, status, length, flags) == (MAGIC, 1, OK, 9, 0)
    assert 0 <= action < 5 and server_ns > 0


def test_connections_beyond_the_limit_are_refused_politely(masked_bundle: Path) -> None:
    """At the cap with every connection active (a request within EVICT_AFTER_S), a new one is
    refused; tests/abuse covers the cap reached by idle connections."""
    policy = Bundle.load(masked_bundle).policy("agent_0", "numpy")
    server = PolicyServer(policy, "127.0.0.1", 0, max_connections=4)
    thread = server.start_in_thread()
    clients = []
    try:
        for _ in range(server.max_connections):
            clients.append(_client(server))
        for client in clients:
            client.info()  # every connection is being served, and active just now
        with _client(server) as extra:
            status, message = extra.request(encode(RESET))
        assert status == ERROR and b"server busy" in message
        clients.pop().close()
        deadline = time.monotonic() + 5
        while True:  # the freed slot is noticed at the next accept
            with _client(server) as again:
                status, _ = again.request(encode(RESET))
            if status == OK or time.monotonic() > deadline:
                break
        assert status == OK
    finally:
        for client in clients:
            client.close()
        server.shutdown()
        thread.join(timeout=5)
