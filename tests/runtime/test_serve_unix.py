"""``serve`` on a Unix domain socket: the same protocol and actions as TCP, spinning or not; the
socket file is managed (stale ones replaced, live servers and other files refused, removed at
shutdown)."""

from __future__ import annotations

import socket
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from kdx.errors import KdxError
from kdx.runtime.bundle import Bundle
from kdx.runtime.protocol import Client
from kdx.runtime.serve import PolicyServer
from kdx.runtime.testing import stop_serve_process

pytestmark = pytest.mark.skipif(not hasattr(socket, "AF_UNIX"), reason="no Unix domain sockets here")


@pytest.fixture()
def sock_path(tmp_path: Path) -> Path:
    return tmp_path / "agent.sock"  # short: sun_path is limited to ~100 bytes


def _start(bundle: Path, path: Path, spin_us: float = 200.0) -> tuple[PolicyServer, object]:
    policy = Bundle.load(bundle).policy("agent_0", "numpy")
    server = PolicyServer(policy, spin_us=spin_us, unix_path=path)
    return server, server.start_in_thread()


@pytest.mark.parametrize("spin_us", [0.0, 1e6])
def test_actions_over_a_unix_socket_equal_the_policy(masked_bundle: Path, sock_path: Path, spin_us: float) -> None:
    server, thread = _start(masked_bundle, sock_path, spin_us)
    local = Bundle.load(masked_bundle).policy("agent_0", "numpy")
    rng = np.random.default_rng(2)
    try:
        assert server.address == f"unix:{sock_path}" and sock_path.is_socket()
        with Client(unix_path=str(sock_path), spin_us=spin_us) as client:
            assert client.info()["agent"] == "agent_0"
            for _ in range(20):
                obs = rng.standard_normal(18).astype(np.float32)
                mask = rng.random(5) < 0.5
                mask[0] = True
                assert client.act(obs, mask) == local.act(obs, mask)
            with pytest.raises(KdxError, match="NaN or inf"):
                client.act(np.full(18, np.nan, np.float32))
            assert client.stats()["decisions"] == 20
            assert (client._reader.spin_receives > 0) == (spin_us > 0)
    finally:
        server.shutdown()
        thread.join(timeout=5)
    assert not sock_path.exists()  # removed at shutdown


def test_a_stale_socket_file_is_replaced(masked_bundle: Path, sock_path: Path) -> None:
    stale = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    stale.bind(str(sock_path))
    stale.close()  # the file stays, nothing listens: what a killed server leaves
    server, thread = _start(masked_bundle, sock_path)
    try:
        with Client(unix_path=str(sock_path)) as client:
            assert 0 <= client.act(np.zeros(18, np.float32)) < 5
    finally:
        server.shutdown()
        thread.join(timeout=5)


def test_a_live_server_and_other_files_are_not_replaced(masked_bundle: Path, sock_path: Path, tmp_path: Path) -> None:
    server, thread = _start(masked_bundle, sock_path)
    try:
        with pytest.raises(KdxError, match="a server is running there"):
            _start(masked_bundle, sock_path)
        with Client(unix_path=str(sock_path)) as client:  # the first server is untouched
            assert 0 <= client.act(np.zeros(18, np.float32)) < 5
    finally:
        server.shutdown()
        thread.join(timeout=5)
    regular = tmp_path / "notes.txt"
    regular.write_text("keep me")
    with pytest.raises(KdxError, match="not a socket"):
        _start(masked_bundle, regular)
    assert regular.read_text() == "keep me"


def test_the_serve_command_on_a_unix_socket_without_spinning(masked_bundle: Path, sock_path: Path) -> None:
    process = subprocess.Popen(
        [sys.executable, "-m", "kdx.runtime.cli", "serve", str(masked_bundle), "--agent", "agent_1",
         "--unix", str(sock_path), "--spin-us", "0", "--backend", "numpy"],
        cwd=Path(__file__).resolve().parents[2], stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    try:
        line = process.stdout.readline()
        assert f"on unix:{sock_path} protocol 1" in line, line + process.stderr.read()
        local = Bundle.load(masked_bundle).policy("agent_1", "numpy")
        with Client(unix_path=str(sock_path), spin_us=0) as client:
            assert client.info()["spin_us"] == 0
            for i in range(10):
                obs = np.full(18, i / 10, np.float32)
                assert client.act(obs) == local.act(obs)
    finally:
        stats = stop_serve_process(process)
    assert stats["decisions"] == 10 and stats["spin_receives"] == 0 and stats["blocking_receives"] >= 11  # info + 10 acts
    assert not sock_path.exists()
