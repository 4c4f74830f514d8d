"""Huge finite observations never yield an action the mask forbids (issue 17): before, an
observation of 3e38 made the logits NaN and onnxruntime returned action 0 under a mask that
forbade it; logits of legal actions below the graph's -1e9 mask fill did the same."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from hypothesis.extra import numpy as hnp

from kdx.errors import KdxError
from kdx.runtime.backends import BACKENDS
from kdx.runtime.bundle import Bundle
from kdx.runtime.testing import make_test_bundle
from tests.runtime.c_bundles import add_c_sources

pytestmark = pytest.mark.filterwarnings("ignore::RuntimeWarning")  # overflow inside the net


@pytest.fixture(scope="module")
def no_sidecar_bundle(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """Masked students with ONNX only: the numpy backend interprets the graph."""
    pytest.importorskip("onnx")
    return make_test_bundle(tmp_path_factory.mktemp("abuse-onnx-only"), n_agents=1, with_mask=True,
                            student_hidden=(16,), teacher_hidden=None, with_npz=False, seed=3)


def _policies(masked_abuse_bundle: Path, no_sidecar_bundle: Path) -> dict[str, object]:
    """agent_0 on every backend usable here, and on the ONNX interpreter."""
    policies = {}
    bundle = Bundle.load(masked_abuse_bundle)
    for name, cls in BACKENDS.items():
        if cls.unavailable_reason() is None:
            policies[name] = bundle.policy("agent_0", name)
    policies["numpy (ONNX interpreted)"] = Bundle.load(no_sidecar_bundle).policy("agent_0", "numpy")
    return policies


@pytest.fixture(scope="module")
def policies(masked_abuse_bundle: Path, no_sidecar_bundle: Path) -> dict[str, object]:
    found = _policies(masked_abuse_bundle, no_sidecar_bundle)
    assert {"numpy", "numpy (ONNX interpreted)"} <= set(found)
    return found


def test_an_overflowing_observation_is_an_error_not_an_illegal_action(policies: dict) -> None:
    only_three = np.array([False, False, False, True, False])
    for name, policy in policies.items():
        for mask in (None, only_three):
            with pytest.raises(KdxError, match="logits are NaN or inf"):
                policy.act(np.full(18, 3e38, np.float32), mask)
        assert policy.act(np.zeros(18, np.float32), only_three) == 3, name  # still usable


observations = hnp.arrays(np.float32, 18, elements=st.floats(-1e6, 1e6, width=32))
masks = hnp.arrays(np.bool_, 5).filter(lambda m: m.any())


@settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(obs=observations, mask=masks, scale=st.sampled_from([1.0, 1e6, 1e12, 1e20, 1e30, 1e40]))
def test_every_backend_returns_a_legal_action_or_refuses(policies: dict, obs: np.ndarray, mask: np.ndarray,
                                                         scale: float) -> None:
    obs = np.clip(obs.astype(np.float64) * scale, -3e38, 3e38).astype(np.float32)
    for name, policy in policies.items():
        try:
            action = policy.act(obs, mask)
        except KdxError as exc:
            assert "logits are NaN or inf" in str(exc), name
        else:
            assert mask[action], (name, action)


def test_many_actions_take_the_same_checks(tmp_path: Path) -> None:
    """Over 20 actions the logits are checked by a numpy dot instead of a Python sum."""
    bundle = Bundle.load(add_c_sources(make_test_bundle(tmp_path / "many", n_agents=1, n_actions=24, with_mask=True,
                                                        student_hidden=(16,), teacher_hidden=None, seed=5)))
    only_seven = np.arange(24) == 7
    for name, cls in BACKENDS.items():
        if cls.unavailable_reason() is not None:
            continue
        policy = bundle.policy("agent_0", name)
        with pytest.raises(KdxError, match="logits are NaN or inf"):
            policy.act(np.full(18, 3e38, np.float32), only_seven)
        assert policy.act(np.full(18, 1e9, np.float32), only_seven) == 7, name
