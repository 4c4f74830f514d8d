"""Bundles and servers for the abuse tests (hostile clients, archives, manifests, inputs)."""

from __future__ import annotations

import threading
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest

from kdx.runtime.bundle import Bundle
from kdx.runtime.serve import PolicyServer
from kdx.runtime.testing import make_test_bundle
from tests.runtime.c_bundles import add_c_sources


@pytest.fixture(scope="session")
def masked_abuse_bundle(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """Two students with an ``action_mask`` input (obs 18, actions 5), ONNX + npz + C, a teacher."""
    return add_c_sources(make_test_bundle(tmp_path_factory.mktemp("abuse-masked"), n_agents=2, with_mask=True,
                                          student_hidden=(16,), teacher_hidden=(32,), seed=3))


@pytest.fixture()
def start_server(masked_abuse_bundle: Path) -> Iterator[Callable[..., PolicyServer]]:
    """Starts a :class:`PolicyServer` of agent_0 (numpy backend) with the given options, in a
    thread; every server started is shut down after the test."""
    started: list[tuple[PolicyServer, threading.Thread]] = []

    def start(**options: object) -> PolicyServer:
        policy = Bundle.load(masked_abuse_bundle).policy("agent_0", "numpy")
        server = PolicyServer(policy, "127.0.0.1", 0, **{"spin_us": 0.0, **options})
        started.append((server, server.start_in_thread()))
        return server

    yield start
    for server, thread in started:
        server.shutdown()
        thread.join(timeout=5)
