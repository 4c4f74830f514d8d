"""Bundles built without the exporter (kdx.runtime.testing), shared by the runtime tests."""

from __future__ import annotations

from pathlib import Path

import pytest

from kdx.runtime.testing import make_test_bundle
from tests.runtime.c_bundles import add_c_sources


@pytest.fixture(scope="session")
def spread_bundle(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """3 students (obs 18, actions 5, hidden 32x32) and a shared 3 x 256 MAPPO-style teacher
    (LayerNorm trunk, one-hot agent id), ONNX + npz + C sources (tests.runtime.c_bundles)."""
    return add_c_sources(make_test_bundle(tmp_path_factory.mktemp("spread"), teacher_hidden=(256, 256, 256),
                                          teacher_mappo=True))


@pytest.fixture(scope="session")
def masked_bundle(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """Students with an ``action_mask`` input, LayerNorm and unfolded obs normalisation."""
    return add_c_sources(make_test_bundle(tmp_path_factory.mktemp("masked"), with_mask=True, layernorm=True,
                                          normalisation=True, teacher_hidden=None, seed=10))


@pytest.fixture(scope="session")
def recurrent_bundle(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """Students with a GRU (h_in/h_out) and a mask input."""
    return add_c_sources(make_test_bundle(tmp_path_factory.mktemp("recurrent"), recurrent=True, with_mask=True,
                                          teacher_hidden=None, seed=20))


@pytest.fixture()
def fresh_bundle(tmp_path: Path) -> Path:
    """A small bundle a test may modify (corrupt, delete, rewrite)."""
    return make_test_bundle(tmp_path / "bundle", n_agents=2, student_hidden=(16,), teacher_hidden=None)
