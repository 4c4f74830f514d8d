"""The wire reader under pipelining and arbitrary chunking, over real sockets (issue 17)."""

from __future__ import annotations

import socket
import threading
from collections.abc import Callable

import numpy as np
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from kdx.runtime.protocol import (
    ACT_REPLY,
    HEADER_SIZE,
    INITIAL_BUFFER_BYTES,
    MAX_PAYLOAD,
    OK,
    MessageReader,
    ProtocolError,
    encode,
    encode_act,
)
from kdx.runtime.serve import PolicyServer

messages = st.lists(st.tuples(st.integers(0, 255), st.binary(max_size=96)), min_size=1, max_size=40)


def _send_in_chunks(sock: socket.socket, data: bytes, cuts: list[int]) -> None:
    """Send ``data`` cut at the positions ``cuts`` (one sendall per piece), then close writing."""
    bounds = [0, *sorted({c % (len(data) + 1) for c in cuts}), len(data)]
    for lo, hi in zip(bounds, bounds[1:]):
        if hi > lo:
            sock.sendall(data[lo:hi])
    sock.shutdown(socket.SHUT_WR)


@settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(messages=messages, cuts=st.lists(st.integers(0, 1 << 16), max_size=30),
       slack=st.integers(0, 64), spin_us=st.sampled_from([0.0, 50.0]))
def test_every_pipelined_message_comes_back_byte_identical(messages: list[tuple[int, bytes]],
                                                           cuts: list[int], slack: int, spin_us: float) -> None:
    """A buffer barely larger than the largest message forces the reader to move partial
    messages to the front at every possible offset; both receive paths (spinning, blocking)."""
    max_payload = max(len(p) for _, p in messages) + slack
    data = b"".join(encode(code, payload) for code, payload in messages)
    left, right = socket.socketpair()
    with left, right:
        writer = threading.Thread(target=_send_in_chunks, args=(right, data, cuts))
        writer.start()
        reader = MessageReader(left, spin_us, timeout_s=5.0, max_payload=max_payload)
        received = []
        while (message := reader.read()) is not None:
            received.append((message[0], bytes(message[1])))
        writer.join()
    assert received == messages


def test_a_full_buffer_of_pipelined_acts_is_answered_in_order(start_server: Callable[..., PolicyServer]) -> None:
    """Regression: pipelining more than the server's 1 MiB buffer without reading replies, then
    an ACT whose mask allows only action 0. Before the fix the reader returned bytes from the
    wrong offset (a wrong action, or an error and a dropped connection)."""
    abuse_server = start_server(pipelined_per_s=0)  # no budget: the point is the reader, not the pacing
    obs = np.random.default_rng(0).standard_normal(18).astype(np.float32)
    only_zero = np.array([True, False, False, False, False])
    plain, masked = encode_act(obs), encode_act(obs, only_zero)
    n_plain = (HEADER_SIZE + MAX_PAYLOAD) // len(plain) + 3
    expected = abuse_server.policy.act(obs)
    with socket.create_connection(("127.0.0.1", abuse_server.port)) as sock:
        sock.sendall(plain * n_plain + masked * 3)  # replies queue up unread meanwhile
        reader = MessageReader(sock, timeout_s=10.0)
        actions = []
        for _ in range(n_plain + 3):
            code, payload = reader.read()
            assert code == OK, bytes(payload)
            actions.append(ACT_REPLY.unpack(payload)[0])
    assert actions == [expected] * n_plain + [0, 0, 0]


def test_a_payload_over_the_readers_limit_is_fatal() -> None:
    left, right = socket.socketpair()
    with left, right:
        right.sendall(encode(1, b"x" * 33))
        with pytest.raises(ProtocolError, match="exceeds 32") as caught:
            MessageReader(left, timeout_s=5.0, max_payload=32).read()
    assert caught.value.fatal


def test_the_buffer_stays_small_until_a_larger_message_arrives() -> None:
    """An idle or ACT-only connection holds a page, not a MiB (before: HEADER_SIZE + MAX_PAYLOAD
    per connection, resident); larger messages, up to MAX_PAYLOAD, grow it and arrive whole,
    and a payload returned before the growth stays readable."""
    sizes = [72, 5_000, 10, 70_000, MAX_PAYLOAD, 3]
    messages = [(i, bytes([i]) * size) for i, size in enumerate(sizes)]
    left, right = socket.socketpair()
    with left, right:
        writer = threading.Thread(target=_send_in_chunks, args=(
            right, b"".join(encode(code, payload) for code, payload in messages), [3, 4_000, 90_000]))
        writer.start()
        reader = MessageReader(left, timeout_s=5.0)
        assert reader.buffer_bytes == INITIAL_BUFFER_BYTES
        first = reader.read()
        assert reader.buffer_bytes == INITIAL_BUFFER_BYTES
        received, held = [(first[0], bytes(first[1]))], first[1]
        while (message := reader.read()) is not None:
            received.append((message[0], bytes(message[1])))
        writer.join()
    assert received == messages and bytes(held) == messages[0][1]
    assert reader.buffer_bytes == HEADER_SIZE + MAX_PAYLOAD
