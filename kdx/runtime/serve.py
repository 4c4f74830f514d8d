"""``kdx-runtime serve``: one agent's policy as a TCP service speaking :mod:`kdx.runtime.protocol`.

Robust by construction: every request is parsed by the protocol functions, every user-caused
problem (bad length, NaN, wrong mask) becomes an error reply and a counter, and the server keeps
serving. A connection whose framing is lost (bad magic/version, oversize length) gets an error
reply and is closed; other connections are unaffected. One thread per connection; decisions
are serialised by a lock because a policy (and its recurrent state) is not thread-safe.

After each reply a connection spins (polls without blocking) for up to ``spin_us`` for the next
request before it blocks: a control loop sending requests back to back never pays a thread
wake-up on the server, and an idle connection costs no CPU once the window has passed.
"""

from __future__ import annotations

import socket
import threading
import time
from dataclasses import asdict, dataclass

from kdx.errors import KdxError
from kdx.runtime.policy import Deadline, Policy
from kdx.runtime.protocol import (
    ACT,
    DEFAULT_SPIN_US,
    INFO,
    PROTOCOL_VERSION,
    RESET,
    STATS,
    MessageReader,
    ProtocolError,
    check_spin_us,
    decode_act,
    encode,
    encode_act_reply,
    encode_error,
    encode_json,
)

# One thread and one 1 MiB receive buffer per connection: bounded so a runaway client cannot
# exhaust the device's memory.
MAX_CONNECTIONS = 32


@dataclass
class ServerCounters:
    """What the server has seen; returned by STATS and printed at shutdown."""

    connections: int = 0
    requests: int = 0
    decisions: int = 0
    errors: int = 0
    protocol_errors: int = 0
    late: int = 0
    fallbacks_used: int = 0
    #: receives of closed connections: during the spin, blocking, spin windows passed in vain
    spin_receives: int = 0
    blocking_receives: int = 0
    spins_missed: int = 0


class PolicyServer:
    """Serve ``policy`` on ``host:port`` (port 0: an ephemeral port, see :attr:`port`).

    ``spin_us``: how long each connection polls for its next request before blocking (0: block
    at once; see :mod:`kdx.runtime.protocol`).
    """

    def __init__(self, policy: Policy, host: str = "127.0.0.1", port: int = 0,
                 deadline: Deadline | None = None, spin_us: float = DEFAULT_SPIN_US) -> None:
        self.policy = policy
        self.spin_us = check_spin_us(spin_us)
        self.deadline = deadline
        if deadline is not None:
            deadline.check_fallback(policy.n_actions)
        self.counters = ServerCounters()
        self._lock = threading.Lock()
        self._stopping = threading.Event()
        try:
            self._listener = socket.create_server((host, port), reuse_port=False)
        except OSError as exc:
            raise KdxError(f"cannot listen on {host}:{port} ({exc.strerror})") from None
        self._listener.settimeout(0.2)  # wake up regularly to notice shutdown()
        self.host, self.port = self._listener.getsockname()[:2]
        self._threads: list[threading.Thread] = []

    # --- lifecycle -------------------------------------------------------------------------
    def serve_forever(self) -> None:
        """Accept connections until :meth:`shutdown` (or KeyboardInterrupt in the caller)."""
        try:
            while not self._stopping.is_set():
                try:
                    conn, _ = self._listener.accept()
                except TimeoutError:
                    continue
                except OSError:
                    if self._stopping.is_set():
                        break
                    raise
                self._threads = [t for t in self._threads if t.is_alive()]
                if len(self._threads) >= MAX_CONNECTIONS:
                    self._refuse(conn)
                    continue
                self.counters.connections += 1
                thread = threading.Thread(target=self._serve_connection, args=(conn,), daemon=True)
                thread.start()
                self._threads.append(thread)
        finally:
            self._listener.close()

    def _refuse(self, conn: socket.socket) -> None:
        with conn:
            self._count_error(protocol=True)
            try:
                conn.sendall(encode_error(f"server busy: {MAX_CONNECTIONS} connections already open"))
            except OSError:
                pass

    def start_in_thread(self) -> threading.Thread:
        """Run :meth:`serve_forever` in a daemon thread (tests, benchmarks)."""
        thread = threading.Thread(target=self.serve_forever, daemon=True)
        thread.start()
        return thread

    def shutdown(self) -> None:
        self._stopping.set()

    def info(self) -> dict[str, object]:
        return {"agent": self.policy.name, "obs_dim": self.policy.obs_dim,
                "n_actions": self.policy.n_actions, "backend": self.policy.backend_name,
                "protocol": PROTOCOL_VERSION, "spin_us": self.spin_us,
                "deadline_us": self.deadline.budget_us if self.deadline else None}

    def stats(self) -> dict[str, object]:
        return {**asdict(self.counters), **({"deadline": self.deadline.summary()} if self.deadline else {})}

    # --- one connection ----------------------------------------------------------------------
    def _serve_connection(self, conn: socket.socket) -> None:
        conn.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        conn.settimeout(None)  # blocking mode: the reader's spin polls with MSG_DONTWAIT
        reader = MessageReader(conn, self.spin_us)
        try:
            with conn:
                while not self._stopping.is_set():
                    try:
                        message = reader.read()
                    except ProtocolError as exc:
                        self._count_error(protocol=True)
                        conn.sendall(encode_error(str(exc)))
                        return  # framing lost: this connection cannot continue
                    if message is None:
                        return
                    conn.sendall(self.handle(*message))
        except (ConnectionError, OSError):
            return  # the client went away; the server carries on
        finally:
            with self._lock:
                self.counters.spin_receives += reader.spin_receives
                self.counters.blocking_receives += reader.blocking_receives
                self.counters.spins_missed += reader.spins_missed

    def handle(self, code: int, payload: memoryview) -> bytes:
        """The reply to one framed request. Never raises for any request content."""
        with self._lock:
            self.counters.requests += 1
        try:
            if code == ACT:
                return self._act(payload)
            if payload.nbytes:
                raise ProtocolError(f"request type {code} takes no payload, got {payload.nbytes} bytes")
            if code == RESET:
                with self._lock:
                    self.policy.reset()
                return encode(0)
            if code == INFO:
                return encode_json(self.info())
            if code == STATS:
                return encode_json(self.stats())
            raise ProtocolError(f"unknown request type {code} (known: 1 ACT, 2 RESET, 3 INFO, 4 STATS)")
        except ProtocolError as exc:
            self._count_error(protocol=True)
            return encode_error(str(exc))
        except KdxError as exc:
            self._count_error(protocol=False)
            return encode_error(str(exc))

    def _act(self, payload: memoryview) -> bytes:
        obs, mask = decode_act(payload, self.policy.obs_dim, self.policy.n_actions)
        with self._lock:
            start = time.perf_counter_ns()
            action = self.policy.act(obs, mask)
            elapsed = time.perf_counter_ns() - start
            late = fallback = False
            if self.deadline is not None:
                used, _, late = self.deadline.record(action, elapsed)
                fallback = used != action or (late and self.deadline.fallback_action is not None)
                action = used
                self.counters.late = self.deadline.late
                self.counters.fallbacks_used = self.deadline.fallbacks_used
            self.counters.decisions += 1
        return encode_act_reply(action, elapsed, late, fallback)

    def _count_error(self, protocol: bool) -> None:
        with self._lock:
            self.counters.errors += 1
            if protocol:
                self.counters.protocol_errors += 1
