"""Spin-then-block receiving over a real loopback socket: the spinning path and the blocking path
both deliver the policy's actions, and the receive counters say which path was taken."""

from __future__ import annotations

import math
import socket
import threading
import time
from collections.abc import Iterator
from pathlib import Path

import numpy as np
import pytest

from kdx.errors import KdxError
from kdx.runtime.bundle import Bundle
from kdx.runtime.protocol import HEADER, MAGIC, OK, Client, MessageReader, encode_act
from kdx.runtime.serve import PolicyServer
from kdx.runtime.testing import assert_served_like_local

LONG_SPIN_US = 1e6  # a window no reply of a tight loop misses, even on a busy CI machine
N_REQUESTS = 40


@pytest.fixture(params=[0.0, LONG_SPIN_US], ids=["server-blocks", "server-spins"])
def server(request: pytest.FixtureRequest, masked_bundle: Path) -> Iterator[PolicyServer]:
    policy = Bundle.load(masked_bundle).policy("agent_0", "numpy")
    server = PolicyServer(policy, "127.0.0.1", 0, spin_us=request.param)
    thread = server.start_in_thread()
    yield server
    server.shutdown()
    thread.join(timeout=5)


def _closed_connection_stats(server: PolicyServer, receives: int) -> dict:
    """STATS once the server has folded a closed connection's receive counters in."""
    deadline = time.monotonic() + 5
    with Client(server.host, server.port, spin_us=0) as client:
        while True:
            stats = client.stats()
            if stats["spin_receives"] + stats["blocking_receives"] >= receives or time.monotonic() > deadline:
                return stats
            time.sleep(0.01)


@pytest.mark.parametrize("client_spin_us", [0.0, LONG_SPIN_US], ids=["client-blocks", "client-spins"])
def test_both_receive_paths_deliver_the_policys_actions(server: PolicyServer, masked_bundle: Path,
                                                       client_spin_us: float) -> None:
    local = Bundle.load(masked_bundle).policy("agent_0", "numpy")
    rng = np.random.default_rng(1)
    with Client(server.host, server.port, spin_us=client_spin_us) as client:
        assert_served_like_local(client, local, rng, N_REQUESTS // 2)
        reader = client._reader
        if client_spin_us:
            assert reader.spin_receives == N_REQUESTS and reader.blocking_receives == 0
        else:
            assert reader.spin_receives == reader.spins_missed == 0
            assert reader.blocking_receives == N_REQUESTS
    stats = _closed_connection_stats(server, N_REQUESTS + 1)  # + the final EOF
    if server.spin_us:
        # The first request may come before the server spins; the tight loop after it may not.
        assert stats["spin_receives"] >= N_REQUESTS // 2
    else:
        assert stats["spin_receives"] == stats["spins_missed"] == 0
        assert stats["blocking_receives"] >= N_REQUESTS + 1


def test_a_message_split_across_sends_is_reassembled(server: PolicyServer) -> None:
    """The header arrives, the payload later: the reader keeps receiving (spinning or blocking)."""
    obs = np.linspace(-1, 1, 18, dtype="<f4")
    message = encode_act(obs)
    with socket.create_connection((server.host, server.port), timeout=5) as sock:
        sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        sock.sendall(message[:5])
        time.sleep(0.02)
        sock.sendall(message[5:])
        reply = b""
        while len(reply) < 17:
            reply += sock.recv(64)
    magic, _version, status, length = HEADER.unpack(reply[:8])
    assert (magic, status, length) == (MAGIC, OK, 9)


def test_a_spin_that_receives_nothing_backs_off_to_blocking() -> None:
    """A peer that answers late: the spin window passes, the reader blocks and still receives,
    and the next receives block at once instead of spinning in vain."""
    left, right = socket.socketpair()
    with left, right:
        reader = MessageReader(left, spin_us=200.0, timeout_s=5.0)
        for i in range(3):
            start = time.monotonic()
            threading.Timer(0.01, right.sendall, args=(encode_act(np.full(18, i, np.float32)),)).start()
            code, payload = reader.read()
            assert code == 1 and np.frombuffer(payload, "<f4")[0] == i
            assert time.monotonic() - start >= 0.009
        assert reader.spins_missed == 1 and reader.spin_receives == 0
        assert reader.blocking_receives == 3


def test_client_times_out_when_no_reply_comes() -> None:
    with socket.create_server(("127.0.0.1", 0)) as silent:
        host, port = silent.getsockname()[:2]
        with Client(host, port, timeout_s=0.2, spin_us=100.0) as client:
            start = time.monotonic()
            with pytest.raises(TimeoutError):
                client.act(np.zeros(18, np.float32))
            assert 0.15 < time.monotonic() - start < 3


@pytest.mark.parametrize("spin_us", [-1.0, math.nan, math.inf])
def test_bad_spin_values_are_refused(masked_bundle: Path, spin_us: float) -> None:
    policy = Bundle.load(masked_bundle).policy("agent_0", "numpy")
    with pytest.raises(KdxError, match="spin must be"):
        PolicyServer(policy, "127.0.0.1", 0, spin_us=spin_us)
    with pytest.raises(KdxError, match="spin must be"):
        Client("127.0.0.1", 1, spin_us=spin_us)
