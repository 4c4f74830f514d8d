"""``kdx-runtime`` subcommands: info, bench, run, serve, build-engines. Formatting lives here and
only here."""

from __future__ import annotations

import json
import signal
import tempfile
from collections.abc import Callable
from pathlib import Path
from typing import Any

import typer
from rich.console import Console
from rich.table import Table

from kdx.errors import KdxError
from kdx.fileio import atomic_write_text

ALL_ROLES = "all"


def _json_path_error(path: Path, exc: OSError) -> KdxError:
    return KdxError(f"--json {path}: cannot write there ({exc.strerror or exc}); choose a writable path")


def _check_writable(path: Path | None) -> None:
    """Refuse an unwritable ``--json`` path before the work, not after it."""
    if path is None:
        return
    if path.is_dir():
        raise KdxError(f"--json {path}: is a folder; name a file in it, e.g. {path / 'result.json'}")
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        with tempfile.TemporaryFile(dir=path.parent):
            pass
    except OSError as exc:
        raise _json_path_error(path, exc) from None


def _write_json(path: Path, data: object) -> None:
    try:
        atomic_write_text(path, json.dumps(data, indent=1))
    except OSError as exc:  # the folder changed since _check_writable
        raise _json_path_error(path, exc) from None


def _roles(role: str) -> tuple[str, ...]:
    """The roles ``--role`` names: one of kdx.runtime.manifest.ROLES, or all of them."""
    from kdx.runtime.manifest import ROLES

    if role == ALL_ROLES:
        return ROLES
    if role not in ROLES:
        raise KdxError(f"--role {role!r} is not a role; choose one of {', '.join(ROLES)} or {ALL_ROLES}")
    return (role,)


def _role(role: str) -> str:
    from kdx.runtime.manifest import check_role

    return check_role(role, "--role")


def _deadline(deadline_us: float | None, fallback_action: int | None):
    from kdx.runtime.policy import Deadline

    if deadline_us is None:
        if fallback_action is not None:
            raise KdxError("--fallback-action needs --deadline-us")
        return None
    return Deadline(deadline_us, fallback_action)


def _console() -> Console:
    """Terminal width on a terminal; wide enough for the tables when piped or captured."""
    console = Console()
    return console if console.is_terminal else Console(width=200)


def _backend_lines(console: Console) -> None:
    from kdx.runtime.backends import available_backends

    usable = [name for name, why in available_backends().items() if why is None]
    console.print(f"backends available here: {', '.join(usable)}")
    for name, why in available_backends().items():
        if why is not None:
            console.print(f"  {name}: not available ({why})", highlight=False, markup=False)
    if usable == ["numpy"]:
        console.print("  running on the numpy backend (neither onnxruntime nor TensorRT is present)")


def _footprint_table(console: Console, bundle_dir: Path) -> None:
    """A C bundle's flash and RAM per agent on each microcontroller profile (c/footprint.json)."""
    from kdx.runtime.c_footprint import read_footprint_json

    rows = read_footprint_json(bundle_dir)
    if not rows:
        return
    table = Table(title="flash and RAM per agent on microcontrollers (c/footprint.json, bytes)")
    for column in ("profile", "agent", "role", "precision", "flash", "flash budget", "RAM", "RAM budget",
                   "fits", "how"):
        table.add_column(column, justify="right" if "flash" in column or "RAM" in column else "left")
    for r in rows:
        how = r.basis + (f": {r.note}" if r.note else "")
        table.add_row(r.profile, r.agent, r.role, r.precision, f"{r.flash_bytes:,}",
                      "-" if r.max_flash_bytes is None else f"{r.max_flash_bytes:,}", f"{r.ram_bytes:,}",
                      "-" if r.max_ram_bytes is None else f"{r.max_ram_bytes:,}", "yes" if r.fits else "NO", how)
    console.print(table)


def info(bundle_path: Path = typer.Argument(..., help="Bundle folder (holds manifest.json) or its .tar.gz.")) -> None:
    """Agents, sizes, precision, files of a bundle, and the backends available here."""
    from kdx.runtime.bundle import Bundle

    bundle = Bundle.load(bundle_path)
    m = bundle.manifest
    console = _console()
    console.print(f"bundle {bundle.path}: schema {m.schema_version}, target {m.target}, precision "
                  f"{m.precision}, env {m.env or '?'}, kdx {m.kdx_version or '?'}, created "
                  f"{m.created_at or '?'}; checksums verified in {bundle.load_seconds * 1e3:.1f} ms",
                  highlight=False)
    table = Table(title="policies")
    for column in ("agent", "role", "obs", "actions", "hidden", "params", "MACs", "precision",
                   "recurrent", "mask input", "files"):
        table.add_column(column)
    for e in m.entries():
        files = ", ".join(f"{f.path} ({f.kind}, {(bundle.path / f.path).stat().st_size / 1024:.1f} KiB)"
                          for f in e.files)
        obs = str(e.obs_dim) if e.view is None else f"{e.obs_dim} (view of {e.view.raw_obs_dim})"
        table.add_row(e.name, e.role, obs, str(e.n_actions),
                      "x".join(map(str, e.hidden_sizes)) or "-", f"{e.params:,}", f"{e.macs:,}",
                      e.precision, str(e.recurrent_state_shape or "-"),
                      "yes" if e.inputs.action_mask else "no", files)
    console.print(table)
    for e in m.entries():
        if e.view is not None:
            console.print(f"view of {e.role} {e.name}: {e.view.summary()}", highlight=False, markup=False)
    total = sum((bundle.path / f.path).stat().st_size for f in m.files())
    console.print(f"{len(m.files())} files, {total / 1024:.1f} KiB in total")
    _footprint_table(console, bundle.path)
    _backend_lines(console)
    from kdx.runtime.bundle import install_note

    for e in m.entries():
        note = install_note(e)
        if note:
            console.print(f"{e.role} {e.name}: cannot run here, {note}", highlight=False, markup=False)


def bench(
    bundle_path: Path = typer.Argument(..., help="Bundle folder or its .tar.gz."),
    agent: str | None = typer.Option(None, "--agent", help="Only this agent (default: all)."),
    backend: str = typer.Option("auto", "--backend", help="auto (fastest measured), onnxruntime, tensorrt, numpy or c (a bundle of kdx export --target c)."),
    role: str = typer.Option("all", "--role", help="student, teacher or all (teacher only if the bundle has it)."),
    iters: int = typer.Option(10_000, "--iters", min=10, help="Timed decisions per agent."),
    warmup: int = typer.Option(1_000, "--warmup", min=0, help="Untimed decisions first."),
    json_out: Path | None = typer.Option(None, "--json", help="Write results, raw samples, device info here."),
) -> None:
    """Per-agent decision latency (p50/p90/p99/max/mean/std µs, decisions/s), load time, peak RSS."""
    from kdx.runtime.bench import bench_bundle, bench_json
    from kdx.runtime.bundle import Bundle

    _check_writable(json_out)
    bundle = Bundle.load(bundle_path)
    report = bench_bundle(bundle, [agent] if agent else None, backend, _roles(role), iters, warmup)
    console = _console()
    table = Table(title=f"kdx-runtime bench: {bundle.path} ({iters} decisions each, batch 1)")
    for column in ("agent", "role", "backend", "runs", "params", "p50 µs", "p90 µs", "p99 µs", "max µs",
                   "mean µs", "std µs", "decisions/s", "load ms"):
        table.add_column(column, justify="left" if column in ("agent", "role", "backend", "runs") else "right")
    for e in report["entries"]:
        s = e.stats
        table.add_row(e.agent, e.role, e.backend, e.source, f"{e.params:,}", f"{s.p50_us:.2f}", f"{s.p90_us:.2f}",
                      f"{s.p99_us:.2f}", f"{s.max_us:.1f}", f"{s.mean_us:.2f}", f"{s.std_us:.2f}",
                      f"{s.decisions_per_s:,.0f}", f"{e.load_ms:.1f}")
    console.print(table)
    for note in report["skipped"]:
        console.print(note, highlight=False, markup=False)  # "kdx[runtime]" is no markup
    for name, ratio in report["teacher_over_student_p50"].items():
        console.print(f"{name}: teacher p50 / student p50 = {ratio:.2f}x")
    d = report["device"]
    console.print(f"peak RSS {report['peak_rss_mib']:.1f} MiB; bundle load {report['bundle_load_ms']:.1f} ms; "
                  f"{d['cpu_model']} ({d['machine']}), numpy {d['numpy']}, onnxruntime {d['onnxruntime']}, "
                  f"tensorrt {d['tensorrt']}", highlight=False)
    if json_out is not None:
        _write_json(json_out, bench_json(report, bundle))
        console.print(f"wrote {json_out}")


# How a closed-loop command opens its env: (env name, --max-cycles, bundle path) -> (the name of
# the env it plays, a PettingZoo-style ParallelEnv).
EnvOpener = Callable[[str, int | None, Path], tuple[str, Any]]


def closed_loop_command(open_env: EnvOpener, env_help: str, doc: str) -> Callable[..., None]:
    """A ``run`` command that plays a bundle in closed loop in the env ``open_env`` opens: the
    one its manifest records unless ``--env`` says otherwise. ``kdx-runtime run`` opens
    PettingZoo envs (torch-free); ``kdx run`` opens kdx's own envs (``kdx.export.run_commands``)."""

    def run(
        bundle_path: Path = typer.Argument(..., help="Bundle folder or its .tar.gz."),
        env: str | None = typer.Option(None, "--env", help=env_help),
        episodes: int = typer.Option(10, "--episodes", min=1, help="Episodes to play."),
        backend: str = typer.Option("auto", "--backend", help="auto, onnxruntime, tensorrt, numpy or c."),
        role: str = typer.Option("student", "--role", help="student or teacher policies."),
        seed: int = typer.Option(0, "--seed", help="Env seed of the first episode (then +1 per episode)."),
        max_cycles: int | None = typer.Option(None, "--max-cycles", help="Episode length, where the env takes it."),
        deadline_us: float | None = typer.Option(None, "--deadline-us", help="Per-decision budget; decisions over it are counted."),
        fallback_action: int | None = typer.Option(None, "--fallback-action", help="Action used instead of a late decision."),
        json_out: Path | None = typer.Option(None, "--json", help="Write the summary here."),
    ) -> None:
        from kdx.runtime.bundle import Bundle
        from kdx.runtime.closed_loop import run_episodes

        _role(role)
        _check_writable(json_out)
        bundle = Bundle.load(bundle_path)
        wanted = env or bundle.manifest.env
        if not wanted:
            raise KdxError(f"{bundle_path}: the manifest records no env; name one with --env ({env_help})")
        played, environment = open_env(wanted, max_cycles, bundle_path)
        try:
            # Missing agents raise KdxError listing the bundle's names.
            policies = {name: bundle.policy(name, backend, role) for name in environment.possible_agents}
            result = run_episodes(environment, policies, episodes, seed, _deadline(deadline_us, fallback_action))
        finally:
            environment.close()
        _print_run(result, played, episodes, policies, role, json_out)

    run.__doc__ = doc
    return run


def _print_run(result, env: str, episodes: int, policies: dict, role: str, json_out: Path | None) -> None:
    summary = result.summary()
    s = result.latency
    console = _console()
    console.print(f"{env}: {episodes} episodes, {result.steps} steps, backends "
                  f"{sorted({p.backend_name for p in policies.values()})}", highlight=False)
    console.print(f"team return {summary['team_return_mean']:.3f} ± {summary['team_return_std']:.3f}; "
                  + ", ".join(f"{k} {v:.3f}" for k, v in summary["agent_return_mean"].items()), highlight=False)
    console.print(f"per-decision latency: p50 {s.p50_us:.2f} µs, p90 {s.p90_us:.2f}, p99 {s.p99_us:.2f}, "
                  f"max {s.max_us:.1f}, mean {s.mean_us:.2f} ± {s.std_us:.2f} ({s.n} decisions)", highlight=False)
    st = result.step_latency
    console.print(f"per-step latency (all {len(policies)} agents): p50 {st.p50_us:.2f} µs, p99 {st.p99_us:.2f}, "
                  f"max {st.max_us:.1f}", highlight=False)
    if result.deadline is not None:
        d = result.deadline
        console.print(f"deadline {d['deadline_us']:.1f} µs: {d['late']} of {d['decisions']} decisions late, "
                      f"fallback used {d['fallbacks_used']} times", highlight=False)
    if json_out is not None:
        _write_json(json_out, {**summary, "env": env, "role": role,
                               "latency_samples_ns": result.latency_samples_ns.tolist()})
        console.print(f"wrote {json_out}")


def _open_pettingzoo(env: str, max_cycles: int | None, bundle_path: Path) -> tuple[str, Any]:
    """The PettingZoo env that plays ``env`` (itself, or a kdx env's twin), torch-free."""
    from kdx.runtime.closed_loop import make_parallel_env, pettingzoo_env

    name = pettingzoo_env(env, bundle_path)
    return name, make_parallel_env(name, max_cycles)


run = closed_loop_command(
    _open_pettingzoo,
    "default: the bundle's env (a kdx env plays in its PettingZoo twin); or "
    "pettingzoo:<module>.<env>, e.g. pettingzoo:mpe2.simple_spread_v3.",
    "Closed loop on the bundle's env as a PettingZoo env: each agent acts from its own observation only.",
)


def _raw_input_note(server) -> str:
    """`` or raw N through the view (...)`` for a student with a view (see kdx.runtime.act_input)."""
    act_input = server.act_input
    if server.policy.view is None:
        return ""
    kind = "; send ACT_RAW or ACT_VIEWED, the widths are equal" if act_input.needs_kind else ""
    return f" or raw {act_input.widths['raw']} through the view {' '.join(server.policy.view.text)}{kind}"


def serve(
    bundle_path: Path = typer.Argument(..., help="Bundle folder or its .tar.gz."),
    agent: str = typer.Option(..., "--agent", help="The agent to serve."),
    host: str = typer.Option("127.0.0.1", "--host", help="Address to listen on (keep it loopback)."),
    port: int = typer.Option(7301, "--port", min=0, max=65535, help="TCP port (0: any free port)."),
    backend: str = typer.Option("auto", "--backend", help="auto, onnxruntime, tensorrt, numpy or c."),
    role: str = typer.Option("student", "--role", help="student or teacher policy."),
    deadline_us: float | None = typer.Option(None, "--deadline-us", help="Per-decision budget; late decisions are counted (flag in the reply)."),
    fallback_action: int | None = typer.Option(None, "--fallback-action", help="Action returned instead of a late decision."),
    spin_us: float = typer.Option(200.0, "--spin-us", min=0.0, help="After each reply, poll this long (µs) for the next request before blocking: saves the thread wake-up on a quiet CPU (0: block at once)."),
    unix: Path | None = typer.Option(None, "--unix", help="Listen on this Unix domain socket instead of TCP (same protocol, a few µs less per round trip)."),
    idle_timeout_s: float = typer.Option(300.0, "--idle-timeout-s", min=0.0, help="Close a connection that sends no request for this long (0: never)."),
    frame_timeout_s: float = typer.Option(5.0, "--frame-timeout-s", min=0.0, help="A request must arrive whole within this long of its first byte, else its connection is closed (0: no limit)."),
    max_connections: int = typer.Option(32, "--max-connections", min=1, help="Connections served at once; at the cap a new one closes the longest idle (idle over 1 s), else is refused."),
    pipelined_per_s: float = typer.Option(1000.0, "--pipelined-per-s", min=0.0, help="Decisions per second shared by requests sent before the previous reply was read (pipelining); request/reply clients are never throttled (0: no limit)."),
) -> None:
    """Serve one agent over TCP (protocol: kdx.runtime.protocol; float32 obs in, action out). A
    student with a view takes its viewed observation or its raw one (the server applies the view)."""
    from kdx.runtime.bundle import Bundle
    from kdx.runtime.protocol import PROTOCOL_VERSION
    from kdx.runtime.serve import PolicyServer

    _role(role)
    bundle = Bundle.load(bundle_path)
    policy = bundle.policy(agent, backend, role)
    server = PolicyServer(policy, host, port, _deadline(deadline_us, fallback_action), spin_us=spin_us,
                          unix_path=unix, idle_timeout_s=idle_timeout_s or None,
                          frame_timeout_s=frame_timeout_s or None, max_connections=max_connections,
                          pipelined_per_s=pipelined_per_s)
    console = _console()
    if unix is None and host not in ("127.0.0.1", "localhost", "::1"):
        console.print(f"warning: listening on {host}: the protocol has no authentication", style="yellow")
    signal.signal(signal.SIGTERM, lambda *_: server.shutdown())
    # This line is parsed by tools and tests: keep its form.
    print(f"serving {policy.name} ({role}, backend {policy.backend_name}, obs_dim {policy.obs_dim}"
          f"{_raw_input_note(server)}, n_actions {policy.n_actions}) on {server.address} protocol {PROTOCOL_VERSION}",
          flush=True)
    try:
        server.serve_forever()
    except KeyboardInterrupt:
        server.shutdown()
    print("stopped; " + json.dumps(server.stats()), flush=True)


def engine_line(record) -> str:
    """One line per built engine: who uses it, where it is, its size, precision and build time."""
    users = ", ".join(f"{role} {agent}" for role, agent in record.users)
    return (f"{users}: {record.engine} ({record.size_bytes} bytes, {record.precision}, "
            f"TensorRT {record.tensorrt_version}, {record.build_seconds:.1f} s)")


def build_engines(
    bundle: Path = typer.Argument(..., help="Bundle folder (holds manifest.json)."),
    workspace_mib: int = typer.Option(256, "--workspace-mib", help="TensorRT builder workspace limit in MiB."),
    agent: list[str] = typer.Option([], "--agent", help="Only this agent (repeat); default: every agent."),
) -> None:
    """Build one TensorRT engine per agent (students and teacher) and list them in the manifest."""
    from kdx.runtime.tensorrt_build import build_engines as build

    console = Console()
    records = build(bundle, workspace_mib, agents=list(agent) or None,
                    log=lambda message: console.print(message, highlight=False))
    for record in records:
        console.print(engine_line(record), highlight=False)


def register(app: typer.Typer) -> None:
    """Add info, bench, run, serve and build-engines to the ``kdx-runtime`` app."""
    app.command("info")(info)
    app.command("bench")(bench)
    app.command("run")(run)
    app.command("serve")(serve)
    app.command("build-engines")(build_engines)
