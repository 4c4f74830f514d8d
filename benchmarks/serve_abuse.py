"""``kdx-runtime serve`` under abuse (hardening issue): do well-behaved clients keep their round
trips, and the server its memory, while hostile or idle connections are open?

Builds the simple_spread student bundle of ``benchmarks/runtime.py`` (random weights, obs 18 ->
32 -> 32 -> 5, tanh), starts ``kdx-runtime serve`` on it (defaults: TCP loopback, spin 200 µs,
idle timeout 300 s, frame timeout 5 s, 32 connections) in a subprocess, then, each in its own
process:

* ``--clients`` well-behaved clients (:class:`kdx.runtime.protocol.Client`) connect first and
  send sequential ACT round trips (untimed while the load settles), then ``--requests`` timed ones
  in all; a reply that fails (connection closed, "server busy") is counted and the client
  reconnects;
* ``--hostile`` connections, as many of each kind (``--kinds``, default all four): ``idle`` (never sends), ``slow-loris`` (half
  a header, or a header and half a payload, then nothing), ``pipeline`` (sends up to
  ``--pipeline-bytes`` of ACT requests back to back and never reads a reply) and ``garbage`` (an
  HTTP request, or a header announcing a 4 GiB payload). Whenever the server closes one (eviction,
  refusal at the cap, timeout, protocol error) it reconnects ``--reconnect-delay-s`` later, so
  they are held open or churn for the whole run.

The server's resident memory (``VmRSS`` of /proc/PID/status) is read when the timed requests
start (after the settling) and when they end, and every ``--sample-s`` in between.

Usage: .venv/bin/python benchmarks/serve_abuse.py [--hostile 200] [--requests 1000000] [--quick]
Prints tables and writes benchmarks/results/serve_abuse.json.
"""

from __future__ import annotations

import argparse
import errno
import json
import multiprocessing as mp
import os
import queue
import socket
import sys
import tempfile
import time
from dataclasses import asdict, dataclass
from pathlib import Path

import numpy as np
from rich.console import Console
from rich.table import Table

from kdx.errors import KdxError
from kdx.fileio import atomic_write_text
from kdx.runtime.bench import random_observations
from kdx.runtime.profiler import LatencyStats, device_info
from kdx.runtime.protocol import ACT, HEADER, MAGIC, PROTOCOL_VERSION, Client, encode_act
from kdx.runtime.testing import (
    make_test_bundle,
    start_serve_process,
    stop_serve_process,
    targets_table,
)

REPO = Path(__file__).resolve().parents[1]
RESULTS = REPO / "benchmarks" / "results"
OBS_DIM = 18
HOSTILE_KINDS = ("idle", "slow-loris", "pipeline", "garbage")
#: Linux TCP states (include/net/tcp_states.h), read through TCP_INFO
_TCP_ESTABLISHED, _TCP_SYN_SENT = 1, 2
_TICK_S = 0.02  # the hostile process's loop period
_PROGRESS_EVERY = 4096  # timed requests between two updates of the shared progress counter
P99_TARGET_US, RSS_TARGET_MIB = 1000.0, 1.0


@dataclass(frozen=True)
class AbuseConfig:
    """One run's load; every field is a command-line option."""

    hostile: int = 200  # hostile or idle connections, as many of each kind
    kinds: tuple[str, ...] = HOSTILE_KINDS  # the kinds of hostile connections, taken in turn
    requests: int = 1_000_000  # timed well-behaved ACT round trips, all clients together
    clients: int = 2  # well-behaved clients, one process each, sequential round trips
    settle_s: float = 6.0  # load before the timed requests (covers one 5 s frame timeout)
    reconnect_delay_s: float = 1.0  # a hostile connection closed by the server comes back after this
    pipeline_bytes: int = 4 << 20  # ACT requests a pipelining connection sends, never reading
    backend: str = "auto"
    spin_us: float = 200.0  # the well-behaved clients' receive spin (the server's is its default)
    sample_s: float = 1.0  # period of the server RSS samples


# --- hostile connections: one process, non-blocking sockets -----------------------------------
def hostile_opening(kind: str, index: int) -> bytes:
    """What a hostile connection of ``kind`` sends once connected (pipelines are pumped apart)."""
    act = encode_act(np.zeros(OBS_DIM, np.float32))
    if kind == "slow-loris":  # a partial header, or a whole header and part of the payload
        return act[:5] if index % 2 == 0 else act[:HEADER.size + 10]
    if kind == "garbage":  # not the protocol at all, or a header announcing 4 GiB
        return (b"GET / HTTP/1.1\r\nHost: localhost\r\n\r\n" if index % 2 == 0
                else HEADER.pack(MAGIC, PROTOCOL_VERSION, ACT, 0xFFFFFFFF))
    return b""


def _tcp_state(sock: socket.socket) -> int:
    return sock.getsockopt(socket.IPPROTO_TCP, socket.TCP_INFO, 1)[0]


class _HostileSlot:
    """One hostile connection, reconnected whenever the server closes it."""

    def __init__(self, kind: str, index: int) -> None:
        self.kind, self.index = kind, index
        self.sock: socket.socket | None = None
        self.connected = False
        self.pending = memoryview(b"")
        self.reconnect_at = 0.0

    def connect(self, address: tuple[str, int]) -> None:
        self.sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
        self.sock.setblocking(False)
        code = self.sock.connect_ex(address)
        if code not in (0, errno.EINPROGRESS):
            self.close(time.monotonic())
        self.connected = False

    def close(self, now: float) -> None:
        if self.sock is not None:
            self.sock.close()
        self.sock, self.connected, self.pending = None, False, memoryview(b"")
        self.reconnect_at = now


def run_hostile(address: tuple[str, int], config: AbuseConfig, ready, stop, results) -> None:
    """Hold ``config.hostile`` hostile connections open until ``stop``; set ``ready`` once every
    one of them has connected; put the counts on ``results``."""
    pipeline = memoryview(encode_act(np.zeros(OBS_DIM, np.float32)) *
                          max(1, config.pipeline_bytes // (HEADER.size + 4 * OBS_DIM)))
    slots = [_HostileSlot(config.kinds[i % len(config.kinds)], i // len(config.kinds))
             for i in range(config.hostile)]
    connects = dict.fromkeys(HOSTILE_KINDS, 0)
    closed_by_server = dict.fromkeys(HOSTILE_KINDS, 0)
    pipelined_bytes = 0
    ever_connected: set[int] = set()
    while not stop.is_set():
        now = time.monotonic()
        for number, slot in enumerate(slots):
            if slot.sock is None:
                if now >= slot.reconnect_at:
                    slot.connect(address)
                continue
            state = _tcp_state(slot.sock)
            if not slot.connected:
                if state == _TCP_SYN_SENT:
                    continue
                if state != _TCP_ESTABLISHED:  # refused before it was accepted
                    slot.close(now + config.reconnect_delay_s)
                    continue
                slot.connected = True
                connects[slot.kind] += 1
                ever_connected.add(number)
                slot.pending = pipeline if slot.kind == "pipeline" else memoryview(
                    hostile_opening(slot.kind, slot.index))
            elif state != _TCP_ESTABLISHED:  # the server closed it (FIN or reset)
                closed_by_server[slot.kind] += 1
                slot.close(now + config.reconnect_delay_s)
                continue
            try:
                while slot.pending:
                    sent = slot.sock.send(slot.pending[:1 << 16])
                    slot.pending = slot.pending[sent:]
                    if slot.kind == "pipeline":
                        pipelined_bytes += sent
            except BlockingIOError:
                pass  # buffers full: the server is not reading (or we are not), as intended
            except OSError:
                closed_by_server[slot.kind] += 1
                slot.close(now + config.reconnect_delay_s)
        if len(ever_connected) == len(slots):
            ready.set()
        time.sleep(_TICK_S)
    for slot in slots:
        slot.close(0.0)
    results.put({"connects": connects, "closed_by_server": closed_by_server,
                 "pipelined_bytes": pipelined_bytes})


# --- well-behaved clients: one process each ------------------------------------------------------
def _connect(address: dict, spin_us: float) -> tuple[Client, int]:
    """A client, and how many connection attempts were refused ("server busy") first."""
    refused = 0
    while True:
        client = Client(**address, spin_us=spin_us)
        try:
            client.info()  # the server answers INFO, or refuses the connection with an error
            return client, refused
        except (KdxError, ConnectionError, OSError):
            client.close()
            refused += 1
            time.sleep(0.01)


def run_client(index: int, address: dict, config: AbuseConfig, requests: int, samples_path: str,
               go, progress, results) -> None:
    """Round trips until ``go`` (untimed), then ``requests`` timed ones; the samples (ns; -1 for a
    failed request) go to ``samples_path``, the counts to ``results``."""
    rows = list(random_observations(OBS_DIM, seed=index))
    n = len(rows)
    client, refused = _connect(address, config.spin_us)
    counts = {"warmup_requests": 0, "warmup_failures": 0, "failures": 0, "refused_reconnects": refused}
    errors: list[str] = []
    results.put(("connected", index))

    def one(i: int, failures: str) -> bool:
        nonlocal client
        try:
            client.act(rows[i % n])
            return True
        except (KdxError, ConnectionError, OSError) as exc:  # evicted or refused: count, reconnect
            counts[failures] += 1
            errors.append(f"{type(exc).__name__}: {exc}")
            client.close()
            client, refused = _connect(address, config.spin_us)
            counts["refused_reconnects"] += refused
            return False
    i = 0
    while not go.is_set():
        for _ in range(256):
            one(i, "warmup_failures")
            i += 1
    counts["warmup_requests"] = i
    clock = time.perf_counter_ns
    samples = np.empty(requests, dtype=np.int64)
    started = time.perf_counter()
    for k in range(requests):
        start = clock()
        ok = one(k, "failures")
        samples[k] = clock() - start if ok else -1
        if k % _PROGRESS_EVERY == _PROGRESS_EVERY - 1:
            with progress.get_lock():
                progress.value += _PROGRESS_EVERY
    seconds = time.perf_counter() - started
    client.close()
    np.save(samples_path, samples)
    results.put(("done", index, {**counts, "seconds": seconds, "errors": errors[:20]}))


# --- the server's memory ----------------------------------------------------------------------------
def server_status(pid: int) -> dict[str, float]:
    """The server's resident memory (MiB) and thread count (one per open connection, plus the
    main and accept threads), from /proc/PID/status."""
    fields = {}
    with open(f"/proc/{pid}/status", encoding="ascii") as handle:
        for line in handle:
            key, _, value = line.partition(":")
            fields[key] = value.split()
    return {"rss_mib": int(fields["VmRSS"][0]) / 1024.0, "threads": int(fields["Threads"][0])}


def measure(config: AbuseConfig, bundle_dir: Path, workdir: Path, console: Console) -> dict:
    """One run: the server, the hostile process, the clients; raw results."""
    process, address = start_serve_process(bundle_dir, "agent_0", "--port", "0", "--backend",
                                           config.backend, cwd=REPO)
    ctx = mp.get_context("spawn")
    results = ctx.Queue()
    go, stop, hostile_ready = ctx.Event(), ctx.Event(), ctx.Event()
    progress = ctx.Value("q", 0)
    shares = [config.requests // config.clients + (i < config.requests % config.clients)
              for i in range(config.clients)]
    paths = [str(workdir / f"client{i}.npy") for i in range(config.clients)]
    workers, hostile = [], None
    try:
        with Client(**address) as probe:
            server_info = probe.info()
        workers = [ctx.Process(target=run_client, args=(i, address, config, shares[i], paths[i], go,
                                                        progress, results)) for i in range(config.clients)]
        for worker in workers:
            worker.start()
        for _ in workers:  # the clients connect first: the connection cap is not full yet
            results.get(timeout=60)
        hostile = ctx.Process(target=run_hostile, args=((address["host"], address["port"]), config,
                                                          hostile_ready, stop, results))
        hostile.start()
        if not hostile_ready.wait(timeout=60):
            console.print("warning: not every hostile connection got through within 60 s")
        time.sleep(config.settle_s)
        before = server_status(process.pid)
        go.set()
        started = time.monotonic()
        timeline = [{"t_s": 0.0, "requests": 0, **before}]
        done: dict[int, dict] = {}
        while len(done) < len(workers):
            try:
                message = results.get(timeout=config.sample_s)
                if message[0] == "done":
                    done[message[1]] = message[2]
                continue
            except queue.Empty:
                pass
            timeline.append({"t_s": time.monotonic() - started, "requests": progress.value,
                             **server_status(process.pid)})
            if any(w.exitcode not in (None, 0) for w in workers):
                raise RuntimeError("a well-behaved client process failed")
        after = server_status(process.pid)
        timeline.append({"t_s": time.monotonic() - started, "requests": config.requests, **after})
        stop.set()
        hostile_counts = results.get(timeout=30)
    finally:
        stop.set()
        go.set()
        for child in [*workers, *([hostile] if hostile else [])]:
            child.join(timeout=30)
            if child.is_alive():
                child.kill()
        server_counters = stop_serve_process(process)
    samples = [np.load(path) for path in paths]
    return {"server_info": server_info, "rss_before": before, "rss_after": after, "timeline": timeline,
            "clients": [done[i] for i in range(config.clients)], "samples": samples,
            "hostile": hostile_counts, "server_counters": server_counters}


def latency_row(samples_ns: np.ndarray) -> dict[str, float]:
    ok = samples_ns[samples_ns >= 0]
    stats = LatencyStats.from_samples_ns(ok)
    return {**stats.to_dict(), "p999_us": float(np.percentile(ok, 99.9) / 1e3),
            "over_1ms": int((ok > 1_000_000).sum())}


def main(argv: list[str] | None = None) -> int:
    defaults = AbuseConfig()
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--hostile", type=int, default=defaults.hostile, help="hostile or idle connections")
    parser.add_argument("--requests", type=int, default=defaults.requests, help="timed well-behaved requests")
    parser.add_argument("--clients", type=int, default=defaults.clients, help="well-behaved clients")
    parser.add_argument("--settle-s", type=float, default=defaults.settle_s, help="hostile load before timing")
    parser.add_argument("--reconnect-delay-s", type=float, default=defaults.reconnect_delay_s,
                        help="a closed hostile connection comes back after this long")
    parser.add_argument("--pipeline-bytes", type=int, default=defaults.pipeline_bytes,
                        help="requests a pipelining connection sends without reading, in bytes")
    parser.add_argument("--kinds", default=",".join(defaults.kinds),
                        help=f"hostile kinds, comma-separated, from {','.join(HOSTILE_KINDS)}")
    parser.add_argument("--backend", default=defaults.backend, help="the server's --backend")
    parser.add_argument("--quick", action="store_true", help="smoke run: 40 hostile, 20,000 requests")
    parser.add_argument("--out", type=Path, default=RESULTS / "serve_abuse.json")
    args = parser.parse_args(argv)
    if args.quick:
        args.hostile, args.requests, args.settle_s = 40, 20_000, 1.5
    if args.hostile < 0 or args.requests < args.clients or args.clients < 1:
        parser.error("need --clients >= 1, --requests >= --clients and --hostile >= 0")
    kinds = tuple(args.kinds.split(","))
    if not kinds or set(kinds) - set(HOSTILE_KINDS):
        parser.error(f"--kinds: choose among {','.join(HOSTILE_KINDS)}")
    config = AbuseConfig(kinds=kinds, hostile=args.hostile, requests=args.requests, clients=args.clients,
                         settle_s=args.settle_s, reconnect_delay_s=args.reconnect_delay_s,
                         pipeline_bytes=args.pipeline_bytes, backend=args.backend)
    console = Console(width=max(Console().width, 140))
    load_before = os.getloadavg()
    with tempfile.TemporaryDirectory() as tmp:
        bundle_dir = make_test_bundle(Path(tmp) / "bundle", student_hidden=(32, 32), student_activation="tanh",
                                      teacher_hidden=None)
        run = measure(config, bundle_dir, Path(tmp), console)
    load_after = os.getloadavg()

    per_client = [latency_row(s) for s in run["samples"]]
    overall = latency_row(np.concatenate(run["samples"]))
    failures = sum(c["failures"] + c["warmup_failures"] for c in run["clients"])
    growth = run["rss_after"]["rss_mib"] - run["rss_before"]["rss_mib"]

    table = Table(title=f"well-behaved ACT round trips with {config.hostile} hostile connections "
                        f"({config.requests:,} timed requests, {config.clients} clients)")
    for column in ("client", "requests", "p50 µs", "p90 µs", "p99 µs", "p99.9 µs", "max µs", "> 1 ms",
                   "failed", "refused reconnects", "warm-up requests (failed)"):
        table.add_column(column, justify="left" if column == "client" else "right")

    def add(name: str, row: dict, counts: dict) -> None:
        table.add_row(name, f"{row['n']:,}", f"{row['p50_us']:.1f}", f"{row['p90_us']:.1f}", f"{row['p99_us']:.1f}",
                      f"{row['p999_us']:.1f}", f"{row['max_us']:.0f}", f"{row['over_1ms']:,}", str(counts["failures"]),
                      str(counts["refused_reconnects"]),
                      f"{counts['warmup_requests']:,} ({counts['warmup_failures']})")
    for i, (row, counts) in enumerate(zip(per_client, run["clients"])):
        add(str(i), row, counts)
    totals = {key: sum(c[key] for c in run["clients"])
              for key in ("failures", "refused_reconnects", "warmup_requests", "warmup_failures")}
    add("all", overall, totals)
    console.print(table)

    hostile = Table(title=f"hostile connections (reconnect {config.reconnect_delay_s:g} s after the server closes one)")
    for column in ("kind", "connections", "connects", "closed by the server"):
        hostile.add_column(column, justify="left" if column == "kind" else "right")
    for kind in HOSTILE_KINDS:
        hostile.add_row(kind, str(sum(1 for i in range(config.hostile) if config.kinds[i % len(config.kinds)] == kind)),
                        f"{run['hostile']['connects'][kind]:,}", f"{run['hostile']['closed_by_server'][kind]:,}")
    console.print(hostile)

    seconds = max(c["seconds"] for c in run["clients"])
    targets = [
        (f"well-behaved p99 < {P99_TARGET_US:g} µs", overall["p99_us"], overall["p99_us"] < P99_TARGET_US),
        ("well-behaved requests failed or evicted = 0", failures, failures == 0),
        (f"server RSS growth over {config.requests:,} requests < {RSS_TARGET_MIB:g} MiB", growth,
         growth < RSS_TARGET_MIB),
    ]
    console.print(targets_table(targets))
    info = device_info()
    rss = [point["rss_mib"] for point in run["timeline"]]
    counters = run["server_counters"]
    console.print(
        f"server RSS {run['rss_before']['rss_mib']:.2f} MiB -> {run['rss_after']['rss_mib']:.2f} MiB "
        f"(min {min(rss):.2f}, max {max(rss):.2f}; threads {run['rss_before']['threads']} -> "
        f"{run['rss_after']['threads']}); {config.requests:,} requests in {seconds:.1f} s; server counters: "
        f"connections {counters['connections']:,}, evictions {counters['evictions']:,}, timeouts "
        f"{counters['timeouts']:,}, protocol errors {counters['protocol_errors']:,}, requests "
        f"{counters['requests']:,}\n{info['cpu_model']} ({info['machine']}, {info['cpu_count']} CPUs), "
        f"Python {info['python']}, backend {run['server_info']['backend']}; load average "
        f"{load_before[0]:.2f} before, {load_after[0]:.2f} after\ncommand: {' '.join(sys.argv)}",
        highlight=False)

    slowest = np.concatenate(run["samples"])
    order = np.argsort(slowest)[-200:][::-1]
    result = {
        "device": info, "load_average_before": load_before, "load_average_after": load_after,
        "command": sys.argv, "config": asdict(config), "server_info": run["server_info"],
        "latency_all": overall, "latency_per_client": per_client, "clients": run["clients"],
        "slowest_samples_ns": [{"index": int(i), "ns": int(slowest[i])} for i in order],
        "rss_before": run["rss_before"], "rss_after": run["rss_after"], "rss_growth_mib": growth,
        "rss_timeline": run["timeline"], "hostile": run["hostile"], "server_counters": counters,
        "targets": [{"target": n, "measured": float(v), "met": bool(ok)} for n, v, ok in targets],
    }
    args.out.parent.mkdir(parents=True, exist_ok=True)
    atomic_write_text(args.out, json.dumps(result))
    console.print(f"wrote {args.out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
