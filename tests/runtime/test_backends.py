"""Every backend in the registry gives the same actions as onnxruntime, and checks its inputs."""

from __future__ import annotations

import dataclasses
from pathlib import Path

import numpy as np
import pytest

from kdx.errors import KdxError
from kdx.runtime.backends import BACKENDS, available_backends
from kdx.runtime.bundle import Bundle
from kdx.runtime.policy import Policy

REFERENCE = "onnxruntime"
# Each backend of the registry, plus the numpy backend reading the ONNX graph (no npz sidecar).
VARIANTS = [*BACKENDS, "numpy-onnx-graph"]


def _policy(bundle: Bundle, variant: str, agent: str, role: str = "student") -> Policy:
    backend = "numpy" if variant == "numpy-onnx-graph" else variant
    reason = BACKENDS[backend].unavailable_reason()
    if reason:
        pytest.skip(f"{backend} not available here: {reason}")
    entry = bundle.manifest.agent(agent, role)
    if variant == "numpy-onnx-graph":
        pytest.importorskip("onnx", reason="the ONNX-graph path of the numpy backend needs onnx")
        entry = dataclasses.replace(entry, files=[f for f in entry.files if f.kind != "npz"])
    return Policy(entry, bundle.open_backend(entry, backend))


def _reference(bundle: Bundle, agent: str, role: str = "student") -> Policy:
    reason = BACKENDS[REFERENCE].unavailable_reason()
    if reason:
        pytest.skip(f"reference backend onnxruntime not available: {reason}")
    return bundle.policy(agent, REFERENCE, role)


def _compare(bundle: Bundle, variant: str, agent: str, role: str, masked: bool, steps: int = 200) -> None:
    policy, reference = _policy(bundle, variant, agent, role), _reference(bundle, agent, role)
    rng = np.random.default_rng(7)
    for _episode in range(2):
        policy.reset()
        reference.reset()
        for _ in range(steps // 2):
            obs = (rng.standard_normal(policy.obs_dim) * 2).astype(np.float32)
            mask = None
            if masked:
                mask = rng.random(policy.n_actions) < 0.5
                mask[rng.integers(policy.n_actions)] = True
            action = policy.act(obs, mask)
            assert action == reference.act(obs, mask)
            if mask is not None:
                assert mask[action]
            np.testing.assert_allclose(policy.last_logits(), reference.last_logits(), rtol=1e-4, atol=1e-4)


@pytest.mark.parametrize("variant", VARIANTS)
@pytest.mark.parametrize("role", ["student", "teacher"])
def test_same_actions_as_onnxruntime_mlp(spread_bundle: Path, variant: str, role: str) -> None:
    _compare(Bundle.load(spread_bundle), variant, "agent_1", role, masked=False)


@pytest.mark.parametrize("variant", VARIANTS)
def test_same_actions_with_mask_layernorm_and_normalisation(masked_bundle: Path, variant: str) -> None:
    _compare(Bundle.load(masked_bundle), variant, "agent_2", "student", masked=True)


@pytest.mark.parametrize("variant", VARIANTS)
def test_same_actions_recurrent(recurrent_bundle: Path, variant: str) -> None:
    _compare(Bundle.load(recurrent_bundle), variant, "agent_0", "student", masked=True)


def test_mask_applied_by_the_runtime_when_the_graph_has_no_mask_input(spread_bundle: Path) -> None:
    policy = Bundle.load(spread_bundle).policy("agent_0", "numpy")
    obs = np.ones(18, dtype=np.float32)
    free = policy.act(obs)
    mask = np.ones(5, dtype=bool)
    mask[free] = False
    masked = policy.act(obs, mask)
    assert masked != free and mask[masked]
    assert policy.act(obs) == free  # the mask does not stick to later calls
    int_mask = np.zeros(5, dtype=np.int8)
    int_mask[3] = 1
    assert policy.act(obs, int_mask) == 3


def test_recurrent_state_is_carried_and_reset(recurrent_bundle: Path) -> None:
    policy = Bundle.load(recurrent_bundle).policy("agent_1", "numpy")
    rng = np.random.default_rng(1)
    episode = [rng.standard_normal(18).astype(np.float32) for _ in range(6)]
    first_logits = []
    for obs in episode:
        policy.act(obs)
        first_logits.append(policy.last_logits())
    policy.act(episode[0])
    assert not np.allclose(policy.last_logits(), first_logits[0])  # state changed the output
    policy.reset()
    for obs, expected in zip(episode, first_logits):
        policy.act(obs)
        np.testing.assert_array_equal(policy.last_logits(), expected)


@pytest.mark.parametrize("backend", [name for name, why in available_backends().items() if why is None])
@pytest.mark.parametrize(("obs", "fragment"), [
    (np.zeros(17, np.float32), "shape [17]"),
    (np.zeros((2, 18), np.float32), "shape [2, 18]"),
    (np.zeros(18, np.int32), "dtype int32"),
    (np.zeros(18, np.complex64), "complex64"),
    ([0.0] * 18, "a list"),
    (None, "a NoneType"),
    (np.array([np.nan] + [0.0] * 17, np.float32), "NaN or inf"),
    (np.array([0.0] * 17 + [np.inf], np.float32), "NaN or inf"),
    (np.array([-np.inf] * 18), "NaN or inf"),
])
def test_bad_observations_raise_kdx_error(spread_bundle: Path, backend: str, obs, fragment: str) -> None:
    policy = Bundle.load(spread_bundle).policy("agent_0", backend)
    with pytest.raises(KdxError, match="agent_0") as info:
        policy.act(obs)
    assert fragment in str(info.value)
    assert 0 <= policy.act(np.zeros(18, np.float32)) < 5  # still usable afterwards


@pytest.mark.filterwarnings("ignore::RuntimeWarning")  # inf inside the net, by design
def test_large_finite_observations_are_not_mistaken_for_inf(spread_bundle: Path) -> None:
    """The observation check lets 3e38 through (the sum overflows, the values do not); the net
    then overflows, and that is refused as non-finite logits (tests/abuse), not as the input."""
    policy = Bundle.load(spread_bundle).policy("agent_0", "numpy")
    with pytest.raises(KdxError, match="logits are NaN or inf"):
        policy.act(np.full(18, 3e38, np.float32))


@pytest.mark.parametrize(("mask", "fragment"), [
    (np.zeros(5, bool), "no legal action"),
    (np.ones(4, bool), "shape [5]"),
    (np.ones(5, np.float32), "bool"),
    ([1, 1, 1, 1, 1], "bool"),
])
def test_bad_masks_raise_kdx_error(masked_bundle: Path, mask, fragment: str) -> None:
    policy = Bundle.load(masked_bundle).policy("agent_0", "numpy")
    with pytest.raises(KdxError) as info:
        policy.act(np.zeros(18, np.float32), mask)
    assert fragment in str(info.value)


def test_float64_and_batched_observations_are_accepted(spread_bundle: Path) -> None:
    policy = Bundle.load(spread_bundle).policy("agent_0", "numpy")
    obs = np.random.default_rng(3).standard_normal(18)
    expected = policy.act(obs.astype(np.float32))
    assert policy.act(obs) == expected
    assert policy.act(obs.astype(np.float32)[None, :]) == expected


def test_auto_measures_the_usable_backends_and_keeps_the_fastest(spread_bundle: Path) -> None:
    bundle = Bundle.load(spread_bundle)
    policy = bundle.policy("agent_0")
    measured = policy.selection
    assert set(measured) == set(BACKENDS)
    timings = {k: v for k, v in measured.items() if isinstance(v, float)}
    assert policy.backend_name in timings
    assert timings[policy.backend_name] == min(timings.values())
    for name, why in available_backends().items():
        if why is not None:
            assert measured[name] == why  # unusable backends are listed with their reason


def test_unknown_backend_and_agent_are_refused(spread_bundle: Path) -> None:
    bundle = Bundle.load(spread_bundle)
    with pytest.raises(KdxError, match="unknown backend 'cuda'"):
        bundle.policy("agent_0", "cuda")
    with pytest.raises(KdxError, match="agent_0, agent_1, agent_2"):
        bundle.policy("agent_9")


def test_tensorrt_reports_why_it_cannot_run_here() -> None:
    reason = BACKENDS["tensorrt"].unavailable_reason()
    if reason is None:
        pytest.skip("TensorRT is installed here: covered by the equivalence tests above")
    assert "tensorrt" in reason.lower() or "cudart" in reason.lower()


@pytest.mark.parametrize("name", list(BACKENDS))
def test_unavailable_reason_follows_the_backend_library(name: str) -> None:
    """A backend is usable exactly when its library imports (TensorRT also needs libcudart);
    otherwise the reason names the library and where to get it."""
    import importlib.util

    cls = BACKENDS[name]
    reason = cls.unavailable_reason()
    if name == "c":  # its "library" is a C compiler
        from kdx.runtime.c_build import find_compiler

        assert (reason is None) == (find_compiler()[0] is not None)
    elif cls.library is None:
        assert reason is None
    elif importlib.util.find_spec(cls.library) is None:
        assert reason is not None and reason.startswith(f"{cls.library} not installed")
        assert reason.endswith(cls.install_hint) and cls.install_hint
    elif name != "tensorrt":
        assert reason is None
