"""Slow, idle and stuck clients cannot deny ``serve`` to a well-behaved one (issue 17)."""

from __future__ import annotations

import select
import socket
import time
from collections.abc import Callable

import numpy as np
import pytest

from kdx.errors import KdxError
from kdx.runtime.protocol import ERROR, HEADER, HEADER_SIZE, Client, encode_act
from kdx.runtime.serve import EVICT_AFTER_S, PolicyServer

Start = Callable[..., PolicyServer]
OBS = np.random.default_rng(1).standard_normal(18).astype(np.float32)


def _read_until_closed(sock: socket.socket) -> bytes:
    """Everything the server sends until it closes the connection (10 s at most)."""
    sock.settimeout(10)
    data = b""
    while chunk := sock.recv(4096):
        data += chunk
    return data


def _served_client(server: PolicyServer) -> Client:
    """A client that has just received the policy's action for a few requests."""
    client = Client(server.host, server.port, timeout_s=10)
    for _ in range(5):
        assert client.act(OBS) == server.policy.act(OBS)
    return client


def test_idle_and_trickling_connections_at_the_cap_do_not_lock_out_clients(start_server: Start) -> None:
    """Before: 32 idle connections made every further client get "server busy" for as long as
    they stayed. Now a newcomer closes the connection that has gone longest without a request."""
    server = start_server(max_connections=6, idle_timeout_s=None, frame_timeout_s=None)  # eviction only
    hogs = [socket.create_connection(("127.0.0.1", server.port)) for _ in range(server.max_connections)]
    clients = []
    try:
        for hog in hogs[::2]:
            hog.sendall(encode_act(OBS)[:5])  # a request that never completes
        time.sleep(EVICT_AFTER_S + 0.2)
        clients = [_served_client(server) for _ in range(3)]  # each closes one hog
        assert _read_until_closed(hogs[0]) == b""  # the oldest went first
        assert server.stats()["evictions"] == 3
    finally:
        for sock in hogs + [c.sock for c in clients]:
            sock.close()


def test_a_trickling_request_is_closed_at_the_frame_deadline(start_server: Start) -> None:
    server = start_server(frame_timeout_s=0.3)
    with socket.create_connection(("127.0.0.1", server.port)) as loris:
        message = encode_act(OBS)
        loris.sendall(message[:3])
        for byte in message[3:]:  # keeps sending, too slowly to finish within 0.3 s
            time.sleep(0.05)
            if select.select([loris], [], [], 0)[0]:
                break  # the server has answered (and closed): stop, or our bytes would reset it
            loris.sendall(bytes([byte]))
        reply = _read_until_closed(loris)
    _, _, status, length = HEADER.unpack(reply[:HEADER_SIZE])
    assert status == ERROR and b"incomplete" in reply[HEADER_SIZE:HEADER_SIZE + length]
    _served_client(server).close()
    assert server.stats()["timeouts"] == 1


def test_an_idle_connection_is_closed_with_an_error_reply(start_server: Start) -> None:
    server = start_server(idle_timeout_s=0.2)
    with Client(server.host, server.port, timeout_s=10) as client:
        client.info()
        status, message = client.request(b"")  # sends nothing; the reply is the goodbye
    assert status == ERROR and b"nothing received" in message


def test_pipelined_requests_share_a_budget_request_reply_ones_never_wait(start_server: Start) -> None:
    """Before: connections that pipelined requests without reading the replies took the CPU and
    a control loop's round trips grew to milliseconds (benchmarks/serve_abuse.py). Now pipelined
    requests share a decisions-per-second budget; every one is still answered, in order."""
    server = start_server(pipelined_per_s=200.0)
    expected = server.policy.act(OBS)
    with _served_client(server) as client:  # request/reply: never pipelined
        for _ in range(100):
            assert client.act(OBS) == expected
    assert server.stats()["pipelined_waits"] == 0
    n = 150  # beyond the bucket's burst of 64: the rest wait for tokens at 200/s
    with socket.create_connection(("127.0.0.1", server.port)) as flood:
        flood.sendall(encode_act(OBS) * n)
        flood.settimeout(10)
        data, started = b"", time.monotonic()
        while _replies(data) < n:
            data += flood.recv(65536)
        elapsed = time.monotonic() - started
    assert _replies(data) == n
    assert server.stats()["pipelined_waits"] > 0 and elapsed >= (n - 64 - 1) / 200.0 * 0.9


def _replies(data: bytes) -> int:
    """How many whole replies ``data`` holds."""
    count = offset = 0
    while offset + HEADER_SIZE <= len(data):
        _, _, _, length = HEADER.unpack(data[offset:offset + HEADER_SIZE])
        if offset + HEADER_SIZE + length > len(data):
            break
        offset += HEADER_SIZE + length
        count += 1
    return count


@pytest.mark.parametrize("options", [{"idle_timeout_s": 0.0}, {"frame_timeout_s": float("nan")},
                                     {"max_connections": 0}, {"pipelined_per_s": -1.0}])
def test_bad_limits_are_refused(start_server: Start, options: dict) -> None:
    with pytest.raises(KdxError, match="must be"):
        start_server(**options)
