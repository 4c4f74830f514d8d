"""``kdx-runtime serve``: one agent's policy as a TCP service speaking :mod:`kdx.runtime.protocol`.

Robust by construction: every request is parsed by the protocol functions, every user-caused
problem (bad length, NaN, wrong mask) becomes an error reply and a counter, and the server keeps
serving. A connection whose framing is lost (bad magic/version, oversize length) gets an error
reply and is closed; other connections are unaffected. One thread per connection; decisions
are serialised by a lock because a policy (and its recurrent state) is not thread-safe.

A slow or stuck client cannot deny service to the others. Defaults (``PolicyServer`` arguments
and ``serve`` options):

* ``idle_timeout_s`` (300 s): a connection with no request for this long gets an error reply and
  is closed;
* ``frame_timeout_s`` (5 s): once a request's first byte has arrived, the whole request must
  arrive within this long (a client trickling bytes, "slow loris", is closed);
* ``max_connections`` (32; one thread and one receive buffer each, 4 KiB until a larger request
  arrives, at most 1 MiB): when they are all open, a new connection closes the one that has gone
  longest without a complete request, if that was over ``EVICT_AFTER_S`` (1 s) ago; otherwise
  (every connection busy) the new one is refused with an error reply. An active control loop is never the longest idle, so idle or trickling clients
  cannot lock it out.

A student with a view takes its raw observation (passed through the device part of its view,
as ``kdx-runtime run`` does) or its viewed one: :mod:`kdx.runtime.act_input`, and the protocol's
module docstring for how a request says which.

After each reply a connection spins (polls without blocking) for up to ``spin_us`` for the next
request before it blocks: a control loop sending requests back to back never pays a thread
wake-up on the server, and an idle connection costs no CPU once the window has passed.
"""

from __future__ import annotations

import math
import os
import socket
import stat
import threading
import time
from dataclasses import asdict, dataclass
from pathlib import Path

from kdx.errors import KdxError
from kdx.runtime.act_input import ActInput
from kdx.runtime.policy import Deadline, Policy
from kdx.runtime.protocol import (
    ACT,
    ACT_RAW,
    ACT_VIEWED,
    DEFAULT_SPIN_US,
    INFO,
    PROTOCOL_VERSION,
    REQUEST_TYPES,
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

_AF_UNIX = getattr(socket, "AF_UNIX", None)
_ACT_CODES = frozenset((ACT, ACT_RAW, ACT_VIEWED))

# One thread and one receive buffer (up to 1 MiB) per connection: bounded so a runaway client
# cannot exhaust the device's memory.
MAX_CONNECTIONS = 32
DEFAULT_IDLE_TIMEOUT_S = 300.0
DEFAULT_FRAME_TIMEOUT_S = 5.0
#: at the connection cap, only a connection without a complete request for this long is closed
EVICT_AFTER_S = 1.0
# Requests a client sends before reading the replies to earlier ones (pipelining) share this many
# decisions per second over all connections; request/reply clients (a control loop waiting for its
# action) are never throttled. Without the budget, a few pipelining connections saturate the CPU
# and the request/reply clients' round trips grow to milliseconds (benchmarks/serve_abuse.py).
DEFAULT_PIPELINED_PER_S = 1_000.0


class PipelinedBudget:
    """A token bucket shared by every connection's pipelined requests (thread-safe).

    ``wait_s()`` takes one token and returns how long the caller must sleep first (0 when a
    token was there). ``rate_per_s`` 0 or None: no limit.
    """

    def __init__(self, rate_per_s: float | None, burst: int = 64) -> None:
        self.rate = float(rate_per_s or 0.0)
        self.burst = float(burst)
        self._tokens = self.burst
        self._last = time.monotonic()
        self._lock = threading.Lock()

    def wait_s(self) -> float:
        if self.rate <= 0:
            return 0.0
        with self._lock:
            now = time.monotonic()
            self._tokens = min(self.burst, self._tokens + (now - self._last) * self.rate)
            self._last = now
            self._tokens -= 1.0
            return 0.0 if self._tokens >= 0 else -self._tokens / self.rate
_clock = time.monotonic_ns


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
    #: connections closed for idling or trickling (timeouts), or to make room for a new one
    timeouts: int = 0
    evictions: int = 0
    #: pipelined requests that waited for the pipelining budget
    pipelined_waits: int = 0
    #: requests that failed with an exception other than KdxError (a backend bug)
    internal_errors: int = 0
    #: receives of closed connections: during the spin, blocking, spin windows passed in vain
    spin_receives: int = 0
    blocking_receives: int = 0
    spins_missed: int = 0


@dataclass(eq=False)  # hashed by identity: a set member
class _Connection:
    """One open connection, as the accept loop sees it."""

    sock: socket.socket
    last_request_ns: int
    evicted: bool = False


def check_timeout_s(value: float | None, what: str) -> float | None:
    """A positive finite number of seconds, or None (no limit); KdxError otherwise."""
    if value is None:
        return None
    seconds = float(value)
    if not (math.isfinite(seconds) and seconds > 0):
        raise KdxError(f"{what} must be a positive number of seconds, got {value}")
    return seconds


class PolicyServer:
    """Serve ``policy`` on ``host:port`` (port 0: an ephemeral port, see :attr:`port`), or on
    the Unix domain socket ``unix_path`` instead (same protocol, a few µs less per round trip
    than TCP loopback; the socket file is removed at shutdown).

    ``spin_us``: how long each connection polls for its next request before blocking (0: block
    at once; see :mod:`kdx.runtime.protocol`). ``idle_timeout_s``, ``frame_timeout_s`` (None: no
    limit) and ``max_connections``: see the module docstring.
    """

    def __init__(self, policy: Policy, host: str = "127.0.0.1", port: int = 0,
                 deadline: Deadline | None = None, spin_us: float = DEFAULT_SPIN_US,
                 unix_path: str | os.PathLike[str] | None = None,
                 idle_timeout_s: float | None = DEFAULT_IDLE_TIMEOUT_S,
                 frame_timeout_s: float | None = DEFAULT_FRAME_TIMEOUT_S,
                 max_connections: int = MAX_CONNECTIONS,
                 pipelined_per_s: float | None = DEFAULT_PIPELINED_PER_S) -> None:
        self.policy = policy
        self.act_input = ActInput(policy)  # raw or viewed observations (students with a view)
        if pipelined_per_s is not None and not pipelined_per_s >= 0:
            raise KdxError(f"pipelined requests per second must be >= 0 (0: no limit), got {pipelined_per_s!r}")
        self.pipelined = PipelinedBudget(pipelined_per_s)
        self.spin_us = check_spin_us(spin_us)
        self.idle_timeout_s = check_timeout_s(idle_timeout_s, "idle timeout")
        self.frame_timeout_s = check_timeout_s(frame_timeout_s, "frame timeout")
        if not (isinstance(max_connections, int) and max_connections >= 1):
            raise KdxError(f"max connections must be an integer >= 1, got {max_connections!r}")
        self.max_connections = max_connections
        self.deadline = deadline
        if deadline is not None:
            deadline.check_fallback(policy.n_actions)
        self.counters = ServerCounters()
        self._lock = threading.Lock()
        self._stopping = threading.Event()
        self.unix_path = Path(unix_path) if unix_path is not None else None
        if self.unix_path is not None:
            self._listener = _unix_listener(self.unix_path)
            self.host, self.port = str(self.unix_path), None
        else:
            try:
                self._listener = socket.create_server((host, port), reuse_port=False)
            except OSError as exc:
                raise KdxError(f"cannot listen on {host}:{port} ({exc.strerror})") from None
            self.host, self.port = self._listener.getsockname()[:2]
        self._listener.settimeout(0.2)  # wake up regularly to notice shutdown()
        self._connections: set[_Connection] = set()
        self._connections_lock = threading.Lock()

    @property
    def address(self) -> str:
        """``host:port``, or ``unix:<path>`` for a Unix domain socket."""
        return f"unix:{self.unix_path}" if self.unix_path is not None else f"{self.host}:{self.port}"

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
                if not self._make_room():
                    self._refuse(conn)
                    continue
                self.counters.connections += 1
                state = _Connection(conn, _clock())
                with self._connections_lock:
                    self._connections.add(state)
                threading.Thread(target=self._serve_connection, args=(state,), daemon=True).start()
        finally:
            self._listener.close()
            if self.unix_path is not None:
                self.unix_path.unlink(missing_ok=True)

    def _make_room(self) -> bool:
        """True if a new connection may be served: under the cap, or after closing the
        connection that has gone longest without a complete request (if over EVICT_AFTER_S)."""
        with self._connections_lock:
            open_ = [c for c in self._connections if not c.evicted]
            if len(open_) < self.max_connections:
                return True
            oldest = min(open_, key=lambda c: c.last_request_ns)
            if _clock() - oldest.last_request_ns < EVICT_AFTER_S * 1e9:
                return False
            oldest.evicted = True
        with self._lock:
            self.counters.evictions += 1
        try:  # wakes its thread from recv (or a blocked send), which then closes it
            oldest.sock.shutdown(socket.SHUT_RDWR)
        except OSError:
            pass  # already closed by its own thread
        return True

    def _refuse(self, conn: socket.socket) -> None:
        with conn:
            self._count_error(protocol=True)
            try:
                conn.sendall(encode_error(f"server busy: {self.max_connections} connections "
                                          "already open, all of them active"))
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
                "deadline_us": self.deadline.budget_us if self.deadline else None,
                "idle_timeout_s": self.idle_timeout_s, "frame_timeout_s": self.frame_timeout_s,
                "max_connections": self.max_connections, **self.act_input.info()}

    def stats(self) -> dict[str, object]:
        return {**asdict(self.counters), **({"deadline": self.deadline.summary()} if self.deadline else {})}

    # --- one connection ----------------------------------------------------------------------
    def _serve_connection(self, state: _Connection) -> None:
        conn = state.sock
        if conn.family != _AF_UNIX:
            conn.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        conn.settimeout(None)  # blocking mode: the reader's spin polls with MSG_DONTWAIT
        reader = MessageReader(conn, self.spin_us, self.idle_timeout_s,
                               frame_timeout_s=self.frame_timeout_s)
        try:
            with conn:
                while not self._stopping.is_set():
                    try:
                        message = reader.read()
                    except ProtocolError as exc:
                        self._count_error(protocol=True)
                        conn.sendall(encode_error(str(exc)))
                        return  # framing lost: this connection cannot continue
                    except TimeoutError as exc:
                        with self._lock:
                            self.counters.timeouts += 1
                        conn.sendall(encode_error(f"{exc}; closing the connection"))
                        return
                    if message is None:
                        return
                    if reader.backlog_bytes:  # pipelined: wait for this request's share of the budget
                        pause = self.pipelined.wait_s()
                        if pause:
                            with self._lock:
                                self.counters.pipelined_waits += 1
                            time.sleep(pause)
                    conn.sendall(self.handle(*message))
                    state.last_request_ns = _clock()
        except (ConnectionError, OSError):
            return  # the client went away (or was closed to make room); the server carries on
        finally:
            with self._connections_lock:
                self._connections.discard(state)
            with self._lock:
                self.counters.spin_receives += reader.spin_receives
                self.counters.blocking_receives += reader.blocking_receives
                self.counters.spins_missed += reader.spins_missed

    def handle(self, code: int, payload: memoryview) -> bytes:
        """The reply to one framed request. Never raises for any request content."""
        # One lock acquisition per request: decisions are serialised anyway, and the counters
        # and the policy's state are updated together.
        with self._lock:
            self.counters.requests += 1
            try:
                if code in _ACT_CODES:
                    return self._act(code, payload)
                if payload.nbytes:
                    raise ProtocolError(f"request type {code} takes no payload, got {payload.nbytes} bytes")
                if code == RESET:
                    self.policy.reset()
                    return encode(0)
                if code == INFO:
                    return encode_json(self.info())
                if code == STATS:
                    return encode_json(self.stats())
                known = ", ".join(f"{c} {name}" for c, name in REQUEST_TYPES.items())
                raise ProtocolError(f"unknown request type {code} (known: {known})")
            except ProtocolError as exc:
                self._count_error_locked(protocol=True)
                return encode_error(str(exc))
            except KdxError as exc:
                self._count_error_locked(protocol=False)
                return encode_error(str(exc))
            except Exception as exc:  # noqa: BLE001 - a backend bug: reply, count, keep serving
                # Backends turn their failures into KdxError; anything else is a bug, but one
                # request must not take the connection (and the client's control loop) with it.
                self._count_error_locked(protocol=False)
                self.counters.internal_errors += 1
                return encode_error(f"internal error in the {self.policy.backend_name} backend "
                                    f"({type(exc).__name__}: {exc}); please report it")

    def _act(self, code: int, payload: memoryview) -> bytes:
        """An ACT (ACT_RAW, ACT_VIEWED) reply; called with the lock held. A raw observation goes
        through the device view within the timed decision."""
        if self.act_input.identity:  # no view: one width, decoded as before views (no extra frame)
            obs, mask = decode_act(payload, self.policy.obs_dim, self.policy.n_actions)
            raw = False
        else:
            obs, mask, raw = self.act_input.decode(code, payload)
        start = time.perf_counter_ns()
        action = self.policy.act(self.policy.model_input(obs) if raw else obs, mask)
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
            self._count_error_locked(protocol)

    def _count_error_locked(self, protocol: bool) -> None:
        self.counters.errors += 1
        if protocol:
            self.counters.protocol_errors += 1


def _unix_listener(path: Path) -> socket.socket:
    """A listening Unix domain socket at ``path``; a stale socket file there (left by a server
    that was killed: nothing accepts on it) is replaced; a live server's socket or any other file
    at ``path`` is refused."""
    if _AF_UNIX is None:
        raise KdxError("Unix domain sockets are not available on this platform; serve on TCP")
    try:
        mode = path.lstat().st_mode
    except FileNotFoundError:
        mode = None
    except OSError as exc:
        raise KdxError(f"cannot listen on unix:{path} ({exc.strerror})") from None
    if mode is not None:
        if not stat.S_ISSOCK(mode):
            raise KdxError(f"cannot listen on unix:{path}: it exists and is not a socket; "
                           "choose another path")
        with socket.socket(_AF_UNIX, socket.SOCK_STREAM) as probe:
            try:
                probe.connect(str(path))
            except OSError:
                path.unlink()  # nothing listens: stale
            else:
                raise KdxError(f"cannot listen on unix:{path}: a server is running there; stop it "
                               "or choose another path")
    listener = socket.socket(_AF_UNIX, socket.SOCK_STREAM)
    try:
        listener.bind(str(path))
        listener.listen()
    except OSError as exc:
        listener.close()
        raise KdxError(f"cannot listen on unix:{path} ({exc.strerror})") from None
    return listener
