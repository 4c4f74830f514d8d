"""The ``kdx-runtime serve`` wire protocol (version 1): a tiny binary request/reply protocol over
TCP, for robots whose control loop lives in another process or language.

Every message, in both directions, is an 8-byte header followed by a payload. All integers
and floats are little-endian.

Header ``<2sBBI``::

    magic    2 bytes  b"KX"
    version  u8       1
    code     u8       request: message type; reply: status (0 = OK, 1 = ERROR)
    length   u32      payload length in bytes (at most MAX_PAYLOAD)

Requests (code = type):

    1 ACT    payload = obs as float32 x obs_dim                       (4*obs_dim bytes)
             or obs followed by the action mask, one byte per action, (4*obs_dim + n_actions)
             nonzero = legal
    2 RESET  empty: start of an episode (zeroes the recurrent state)
    3 INFO   empty: reply is UTF-8 JSON (agent, obs_dim, n_actions, backend, protocol, and the
             view's widths: raw_obs_dim, view, device_ops, act_needs_kind, ambiguous_act_bytes)
    4 STATS  empty: reply is UTF-8 JSON counters (requests, errors, late decisions, ...)
    5 ACT_RAW     as ACT, the obs being the agent's raw observation (raw_obs_dim values)
    6 ACT_VIEWED  as ACT, the obs being the model input (obs_dim values: the viewed observation)

Students with a view (``kdx distill --view``; the manifest's ``view``): the model reads the view,
``obs_dim`` values, and the server also takes the agent's raw observation (``raw_obs_dim``
values), which it passes through the device part of the view (keep/drop, sight, quant, dropout
flags 1; exactly what ``kdx-runtime run`` does) before deciding; that takes part in the server's
decision time. ACT tells the two apart by the payload's length. Where a length fits both (the
widths are equal, e.g. ``sight:4`` or ``quant:8`` alone, or a raw observation without a mask is
as long as a viewed one with it) and the view changes values, ACT gets an error reply saying so:
such clients send ACT_RAW or ACT_VIEWED, which never guess (INFO's ``act_needs_kind`` is true when
every length is ambiguous). A length that fits neither gets an error reply naming both widths.
Without a view, raw and viewed are the same observation: ACT, ACT_RAW and ACT_VIEWED all take
``obs_dim`` values, as clients written before views expect. A server older than request types
5 and 6 answers them with an "unknown request type" error reply.

Replies: status 0 with, for ACT, payload ``<iIB``: action (int32), server-side decision time in
ns (uint32, saturating), flags (bit 0: over the deadline, bit 1: fallback action used); empty for
RESET; JSON for INFO/STATS. Status 1 carries a UTF-8 error message; the server keeps serving.
After a header it cannot trust (bad magic or version, payload over MAX_PAYLOAD) the server sends
an error reply and closes that connection, since the stream can no longer be framed.

A C client needs only ``send``/``recv`` and a 8-byte struct; see :class:`Client` for Python.

Latency: both ends receive spin-then-block (``spin_us``): after a reply (server) or a request
(client) the socket is polled without blocking for up to ``spin_us`` before a blocking wait. On
an idle CPU a blocking ``recv`` costs the thread's wake-up (tens of µs, more than the decision);
the spin keeps the receiving thread running while a reply or the next request of a tight loop is
on its way, and the fallback keeps an idle server from burning a core. A spin that receives
nothing makes the next receives block at once (16, doubling after each further miss), so a
loaded CPU or an occasional caller does not pay for spinning. ``spin_us=0`` disables it.
"""

from __future__ import annotations

import json
import math
import os
import select
import socket
import struct
import time
from dataclasses import dataclass

import numpy as np

from kdx.errors import KdxError

PROTOCOL_VERSION = 1
MAGIC = b"KX"
HEADER = struct.Struct("<2sBBI")
HEADER_SIZE = HEADER.size
ACT_REPLY = struct.Struct("<iIB")
_ACT_REPLY_MESSAGE = struct.Struct("<2sBBIiIB")  # header and ACT reply payload in one pack
_LE_F32 = np.dtype("<f4")
MAX_PAYLOAD = 1 << 20

ACT, RESET, INFO, STATS, ACT_RAW, ACT_VIEWED = 1, 2, 3, 4, 5, 6
REQUEST_TYPES = {ACT: "ACT", RESET: "RESET", INFO: "INFO", STATS: "STATS", ACT_RAW: "ACT_RAW",
                 ACT_VIEWED: "ACT_VIEWED"}
#: the request type of each kind of ACT observation (None: the server tells them by their length)
ACT_KINDS = {None: ACT, "raw": ACT_RAW, "viewed": ACT_VIEWED}
OK, ERROR = 0, 1
FLAG_LATE, FLAG_FALLBACK = 1, 2
_U32_MAX = 0xFFFFFFFF
#: default receive spin window of the server and the Client, in µs (see the module docstring)
DEFAULT_SPIN_US = 200.0
# Where MSG_DONTWAIT is missing (Windows) the receive never spins.
_DONTWAIT = getattr(socket, "MSG_DONTWAIT", 0)
_clock = time.perf_counter_ns
# After a spin that received nothing, this many receives block before the next spin; doubled
# after every further miss in a row, up to the max; reset by a spin that receives.
_FIRST_BACKOFF, _MAX_BACKOFF = 16, 1024
#: a reader's buffer until a larger message arrives (one page: an ACT is under 100 bytes for
#: most policies, and an idle connection should not cost a MiB of resident memory)
INITIAL_BUFFER_BYTES = 4096


class ProtocolError(KdxError):
    """A malformed message. ``fatal``: the connection cannot be re-framed and must close."""

    def __init__(self, message: str, fatal: bool = False) -> None:
        super().__init__(message)
        self.fatal = fatal


def encode(code: int, payload: bytes = b"") -> bytes:
    """One message: header with ``code`` then ``payload``."""
    return HEADER.pack(MAGIC, PROTOCOL_VERSION, code, len(payload)) + payload


def decode_header(data: bytes | bytearray | memoryview, max_payload: int = MAX_PAYLOAD) -> tuple[int, int]:
    """``(code, payload length)`` of an 8-byte header; ProtocolError (fatal) if it cannot be
    trusted (bad magic or version, a payload over ``max_payload``)."""
    if len(data) != HEADER_SIZE:
        raise ProtocolError(f"header must be {HEADER_SIZE} bytes, got {len(data)}", fatal=True)
    magic, version, code, length = HEADER.unpack(data)
    if magic != MAGIC:
        raise ProtocolError(f"bad magic {bytes(magic)!r}, expected {MAGIC!r}", fatal=True)
    if version != PROTOCOL_VERSION:
        raise ProtocolError(f"protocol version {version} unsupported (server speaks "
                            f"{PROTOCOL_VERSION})", fatal=True)
    if length > max_payload:
        raise ProtocolError(f"payload of {length} bytes exceeds {max_payload}", fatal=True)
    return code, length


def encode_act(obs: np.ndarray, mask: np.ndarray | None = None, kind: str | None = None) -> bytes:
    """An ACT request for ``obs`` (cast to float32) and an optional mask; ``kind`` "raw" or
    "viewed" sends ACT_RAW / ACT_VIEWED (see the module docstring), None a plain ACT."""
    if kind not in ACT_KINDS:
        raise KdxError(f"ACT kind must be 'raw', 'viewed' or None, got {kind!r}")
    payload = np.ascontiguousarray(obs, dtype=_LE_F32).tobytes()
    if mask is not None:
        payload += np.ascontiguousarray(mask, dtype=np.uint8).tobytes()
    return encode(ACT_KINDS[kind], payload)


def decode_act(payload: bytes | bytearray | memoryview, obs_dim: int,
               n_actions: int) -> tuple[np.ndarray, np.ndarray | None]:
    """The observation (float32 [obs_dim]) and mask (uint8 [n_actions] or None) of an ACT
    payload; ProtocolError (not fatal) if its length fits neither form."""
    size = len(payload)
    if size == 4 * obs_dim:
        return np.frombuffer(payload, dtype=_LE_F32), None
    if size == 4 * obs_dim + n_actions:
        view = memoryview(payload)
        return (np.frombuffer(view[: 4 * obs_dim], dtype=_LE_F32),
                np.frombuffer(view[4 * obs_dim:], dtype=np.uint8))
    raise ProtocolError(f"ACT payload is {size} bytes; expected {4 * obs_dim} (obs_dim "
                        f"{obs_dim} float32) or {4 * obs_dim + n_actions} (with a mask)")


def encode_act_reply(action: int, elapsed_ns: int, late: bool, fallback: bool) -> bytes:
    flags = (FLAG_LATE if late else 0) | (FLAG_FALLBACK if fallback else 0)
    return _ACT_REPLY_MESSAGE.pack(MAGIC, PROTOCOL_VERSION, OK, ACT_REPLY.size, action,
                                   min(elapsed_ns, _U32_MAX), flags)


def encode_error(message: str) -> bytes:
    return encode(ERROR, message.encode("utf-8", errors="replace")[:4096])


def encode_json(obj: object) -> bytes:
    return encode(OK, json.dumps(obj).encode("utf-8"))


def check_spin_us(spin_us: float) -> float:
    """``spin_us`` as a float; KdxError unless it is finite and >= 0."""
    value = float(spin_us)
    if not (math.isfinite(value) and value >= 0):
        raise KdxError(f"spin must be a finite number of µs >= 0 (0 disables it), got {spin_us}")
    return value


class MessageReader:
    """Frames messages from a stream socket into one preallocated buffer: in the common case a
    message costs one ``recv`` (header and payload arrive together), not one per part.

    ``spin_us``: each receive first polls without blocking for up to this long, then blocks
    (the socket must be in blocking mode, ``gettimeout() is None``, for the spin to poll).
    ``timeout_s``: waiting for a message gives up with TimeoutError after this long (None:
    never). ``frame_timeout_s``: once a message's first byte has arrived, the whole message must
    arrive within this long, else TimeoutError (None: only ``timeout_s`` per wait applies); a
    peer trickling bytes cannot hold the reader for longer.
    ``max_payload``: the largest payload accepted; a larger one is a fatal ProtocolError. The
    buffer starts at INITIAL_BUFFER_BYTES and grows (doubling, at most one header and one payload
    of ``max_payload``) when a message does not fit: see :attr:`buffer_bytes`.
    Counters: ``spin_receives`` (data came while spinning), ``spins_missed`` (the window passed
    in vain), ``blocking_receives`` (blocking waits).
    """

    def __init__(self, sock: socket.socket, spin_us: float = 0.0, timeout_s: float | None = None,
                 max_payload: int = MAX_PAYLOAD, frame_timeout_s: float | None = None) -> None:
        self._sock = sock
        self._max_payload = max_payload
        self._buf = bytearray(min(INITIAL_BUFFER_BYTES, HEADER_SIZE + max_payload))
        self._view = memoryview(self._buf)
        self._start = self._end = 0
        spin_us = check_spin_us(spin_us)
        self._spin_ns = int(spin_us * 1e3) if _DONTWAIT and sock.gettimeout() is None else 0
        self._timeout_s = timeout_s
        self._frame_timeout_s = frame_timeout_s
        self._frame_ns = int(frame_timeout_s * 1e9) if frame_timeout_s is not None else 0
        self._frame_deadline_ns = 0
        self._skip_spins = self._backoff = 0
        self.spin_receives = self.spins_missed = self.blocking_receives = 0
        self._poller = None
        if (timeout_s is not None or frame_timeout_s is not None) and hasattr(select, "poll"):
            self._poller = select.poll()
            self._poller.register(sock, select.POLLIN)

    @property
    def backlog_bytes(self) -> int:
        """Bytes received beyond the last message read: the peer sent its next request(s)
        before reading the reply (pipelining)."""
        return self._end - self._start

    @property
    def buffer_bytes(self) -> int:
        """The receive buffer's current size in bytes."""
        return len(self._buf)

    def read(self) -> tuple[int, memoryview] | None:
        """The next ``(code, payload)`` (the payload view is valid until the next read), or None
        when the peer closed between messages. ProtocolError (fatal) for a header that cannot be
        trusted; ConnectionError if the peer closed mid-message; TimeoutError past ``timeout_s`` or
        ``frame_timeout_s``."""
        if self._start == self._end:
            self._start = self._end = 0
        self._frame_deadline_ns = 0  # set when the message's first byte is seen waiting
        if not self._fill(HEADER_SIZE):
            return None
        code, length = decode_header(self._view[self._start: self._start + HEADER_SIZE],
                                     self._max_payload)
        total = HEADER_SIZE + length
        self._fill(total)
        # Read the offset only now: filling may have moved the message to the buffer's front.
        start = self._start
        self._start = start + total
        return code, self._view[start + HEADER_SIZE: start + total]

    def _fill(self, need: int) -> bool:
        while self._end - self._start < need:
            if self._start + need > len(self._buf):  # move the partial message to the front
                n = self._end - self._start
                if need > len(self._buf):  # into a larger buffer: a new one, since views of the
                    # old one (the last payload returned) may still be held
                    self._buf = bytearray(max(need, min(2 * len(self._buf), HEADER_SIZE + self._max_payload)))
                    self._buf[:n] = self._view[self._start: self._end]
                    self._view = memoryview(self._buf)
                else:
                    self._buf[:n] = self._buf[self._start: self._end]
                self._start, self._end = 0, n
            wait_s = self._timeout_s
            if self._frame_ns and self._end > self._start:  # a message has begun
                wait_s = self._frame_wait_s()
            got = self._recv(self._view[self._end:], wait_s)
            if got == 0:
                if self._end == self._start:
                    return False
                raise ConnectionError("peer closed in the middle of a message")
            self._end += got
        return True

    def _frame_wait_s(self) -> float:
        """Seconds left for the message under way (its clock starts at its first wait)."""
        now = _clock()
        if not self._frame_deadline_ns:
            self._frame_deadline_ns = now + self._frame_ns
        left = self._frame_deadline_ns - now
        if left <= 0:
            raise self._frame_timeout_error()
        return left / 1e9

    def _frame_timeout_error(self) -> TimeoutError:
        return TimeoutError(f"message incomplete {self._frame_timeout_s} s after it began")

    def _recv(self, into: memoryview, wait_s: float | None) -> int:
        """One ``recv_into``: spinning (non-blocking polls) first, then a blocking wait."""
        if self._spin_ns:
            if self._skip_spins:
                self._skip_spins -= 1
            else:
                recv_into = self._sock.recv_into
                deadline = _clock() + self._spin_ns
                while True:
                    try:
                        got = recv_into(into, 0, _DONTWAIT)
                        self._backoff = 0
                        self.spin_receives += 1
                        return got
                    except BlockingIOError:
                        if _clock() >= deadline:
                            break
                # The window passed in vain: the peer is idle, or the CPUs are busy and the
                # spinner only delays the peer (a blocked thread that wakes preempts a CPU hog, a
                # spinning one does not: measured 460 µs against 42 µs p50 at load 5 on 2 cores).
                # Block for the next receives, more of them after each miss in a row.
                self._backoff = min(2 * self._backoff or _FIRST_BACKOFF, _MAX_BACKOFF)
                self._skip_spins = self._backoff
                self.spins_missed += 1
        self.blocking_receives += 1
        if wait_s is not None and not self._wait_readable(wait_s):
            if self._end > self._start and self._frame_ns:
                raise self._frame_timeout_error()
            raise TimeoutError(f"nothing received within {wait_s} s")
        return self._sock.recv_into(into)

    def _wait_readable(self, wait_s: float) -> bool:
        if self._poller is not None:
            return bool(self._poller.poll(wait_s * 1e3))
        return bool(select.select([self._sock], [], [], wait_s)[0])


@dataclass(frozen=True)
class ActReply:
    action: int
    server_ns: int
    late: bool
    fallback: bool


class Client:
    """A Python client (TCP_NODELAY) for one served agent on ``host:port``, or on the Unix
    domain socket ``unix_path``. Receives spin for up to ``spin_us`` before blocking (0: block at
    once); a reply not received within ``timeout_s`` raises TimeoutError."""

    def __init__(self, host: str = "127.0.0.1", port: int = 0, timeout_s: float = 5.0,
                 spin_us: float = DEFAULT_SPIN_US, unix_path: str | os.PathLike[str] | None = None) -> None:
        spin_us = check_spin_us(spin_us)
        if unix_path is not None:  # a server started with unix_path / --unix
            self.sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
            self.sock.settimeout(timeout_s)
            try:
                self.sock.connect(str(unix_path))
            except OSError:
                self.sock.close()
                raise
        else:
            self.sock = socket.create_connection((host, port), timeout=timeout_s)
            self.sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        # Blocking mode: a socket timeout would put a poll() before every recv and defeat the
        # spin; the reader enforces timeout_s itself.
        self.sock.settimeout(None)
        self._reader = MessageReader(self.sock, spin_us, timeout_s)

    def close(self) -> None:
        self.sock.close()

    def __enter__(self) -> Client:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def request(self, message: bytes) -> tuple[int, bytes]:
        """Send one raw message; ``(status, payload)`` of the reply."""
        self.sock.sendall(message)
        reply = self._reader.read()
        if reply is None:
            raise ConnectionError("server closed the connection")
        return reply[0], bytes(reply[1])

    def _ok(self, message: bytes) -> bytes:
        status, payload = self.request(message)
        if status != OK:
            raise KdxError(f"server error: {payload.decode('utf-8', errors='replace')}")
        return payload

    def act_reply(self, obs: np.ndarray, mask: np.ndarray | None = None, kind: str | None = None) -> ActReply:
        action, server_ns, flags = ACT_REPLY.unpack(self._ok(encode_act(obs, mask, kind)))
        return ActReply(action, server_ns, bool(flags & FLAG_LATE), bool(flags & FLAG_FALLBACK))

    def act(self, obs: np.ndarray, mask: np.ndarray | None = None, kind: str | None = None) -> int:
        """The served agent's action for ``obs``; KdxError carrying the server's message.
        ``kind``: "raw" (the agent's raw observation, viewed by the server), "viewed" (the
        model input) or None (the server tells them by their length)."""
        return ACT_REPLY.unpack(self._ok(encode_act(obs, mask, kind)))[0]  # no ActReply: hot path

    def reset(self) -> None:
        self._ok(encode(RESET))

    def info(self) -> dict:
        return json.loads(self._ok(encode(INFO)))

    def stats(self) -> dict:
        return json.loads(self._ok(encode(STATS)))
