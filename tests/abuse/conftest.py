"""Bundles and servers for the abuse tests (hostile clients, archives, manifests, inputs)."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest

from kdx.runtime.bundle import Bundle
from kdx.runtime.serve import PolicyServer
from kdx.runtime.testing import make_test_bundle


@pytest.fixture(scope="session")
def masked_abuse_bundle(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """Two students with an ``action_mask`` input (obs 18, actions 5), ONNX + npz, a teacher."""
    return make_test_bundle(tmp_path_factory.mktemp("abuse-masked"), n_agents=2, with_mask=True,
                            student_hidden=(16,), teacher_hidden=(32,), seed=3)


def start_server(bundle: Path, **options: object) -> tuple[PolicyServer, object]:
    """A :class:`PolicyServer` of agent_0 on the numpy backend, serving in a thread."""
    server = PolicyServer(Bundle.load(bundle).policy("agent_0", "numpy"), "127.0.0.1", 0, **options)
    return server, server.start_in_thread()


@pytest.fixture()
def abuse_server(masked_abuse_bundle: Path) -> Iterator[PolicyServer]:
    server, thread = start_server(masked_abuse_bundle, spin_us=0.0)
    yield server
    server.shutdown()
    thread.join(timeout=5)
