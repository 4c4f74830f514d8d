"""The numpy backend's specialised ``infer`` (npz sidecar): bit-for-bit the generic
``Backend.infer`` path, close to a plain numpy forward pass and to onnxruntime, and the same
input checks (NaN/inf anywhere, bad masks) without moving the recurrent state."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from kdx.errors import KdxError
from kdx.runtime.backends import BACKENDS
from kdx.runtime.backends.base import Backend
from kdx.runtime.bundle import Bundle
from kdx.runtime.mlp_npz import ACTIVATIONS, MlpWeights, load_mlp_npz
from kdx.runtime.testing import make_test_bundle

STEPS = 60


def _numpy_backend(bundle: Bundle, agent: str, role: str = "student") -> Backend:
    return bundle.open_backend(bundle.manifest.agent(agent, role), "numpy")


def _inputs(rng: np.random.Generator, obs_dim: int, n_actions: int, masked: bool):
    obs = (rng.standard_normal(obs_dim) * 2).astype(np.float32)
    mask = None
    if masked:
        mask = rng.random(n_actions) < 0.5
        mask[rng.integers(n_actions)] = True
    return obs, mask


def _plain_forward(weights: MlpWeights, x: np.ndarray) -> np.ndarray:
    """Independent reference for dense-only sidecars: ``x @ W + b`` and the activation, float32."""
    funcs = {"identity": lambda v: v, "relu": lambda v: np.maximum(v, 0), "tanh": np.tanh,
             "sigmoid": lambda v: 1 / (1 + np.exp(-v)), "elu": lambda v: np.where(v > 0, v, np.expm1(v)),
             "leaky_relu": lambda v: np.where(v > 0, v, np.float32(0.01) * v)}
    if weights.input_mean is not None:
        x = (x - weights.input_mean) / weights.input_std
    for layer in weights.layers:
        x = funcs[layer.activation](x @ layer.params["weight"] + layer.params["bias"]).astype(np.float32)
    return x


@pytest.fixture(scope="module", params=[a for a in ACTIVATIONS if a != "identity"])
def activation_bundle(request: pytest.FixtureRequest, tmp_path_factory: pytest.TempPathFactory) -> Path:
    """Students of every activation, with an action-mask input and unfolded normalisation on
    alternate ones (folded into the first dense layer by the program)."""
    index = ACTIVATIONS.index(request.param)
    return make_test_bundle(tmp_path_factory.mktemp(request.param), n_agents=1, student_hidden=(32, 32),
                            student_activation=request.param, teacher_hidden=None,
                            with_mask=index % 2 == 0, normalisation=index % 2 == 1, seed=index)


def _assert_same_as_generic(bundle_dir: Path, agent: str, role: str, masked: bool) -> None:
    bundle = Bundle.load(bundle_dir)
    fast, generic = _numpy_backend(bundle, agent, role), _numpy_backend(bundle, agent, role)
    assert "infer" in vars(fast)  # the specialised closure is installed
    rng = np.random.default_rng(5)
    for _ in range(STEPS):
        obs, mask = _inputs(rng, fast.agent.obs_dim, fast.agent.n_actions, masked)
        action = fast.infer(obs, mask)
        assert action == Backend.infer(generic, obs, mask)
        assert type(action) is int
        np.testing.assert_array_equal(fast.logits(), generic.logits())
        if fast.h_out is not None:
            np.testing.assert_array_equal(fast.h_out, generic.h_out)


@pytest.mark.parametrize("masked", [False, True])
def test_every_activation_is_bit_for_bit_the_generic_path(activation_bundle: Path, masked: bool) -> None:
    _assert_same_as_generic(activation_bundle, "agent_0", "student", masked)


@pytest.mark.parametrize(("fixture", "agent", "role"), [
    ("spread_bundle", "agent_1", "student"),     # dense first: the finiteness probe path
    ("spread_bundle", "agent_2", "teacher"),     # LayerNorm first + one-hot id: the sum check
    ("masked_bundle", "agent_0", "student"),     # LayerNorm, normalisation, mask input
    ("recurrent_bundle", "agent_0", "student"),  # GRU: the state carried identically
])
def test_bundles_are_bit_for_bit_the_generic_path(request: pytest.FixtureRequest, fixture: str,
                                                   agent: str, role: str) -> None:
    _assert_same_as_generic(request.getfixturevalue(fixture), agent, role, masked=True)
    _assert_same_as_generic(request.getfixturevalue(fixture), agent, role, masked=False)


def test_close_to_a_plain_forward_pass_and_to_onnxruntime(activation_bundle: Path) -> None:
    bundle = Bundle.load(activation_bundle)
    policy = bundle.policy("agent_0", "numpy")
    weights = load_mlp_npz(activation_bundle / "agent_0.fp32.npz")
    reference = None
    if BACKENDS["onnxruntime"].unavailable_reason() is None:
        reference = bundle.policy("agent_0", "onnxruntime")
    rng = np.random.default_rng(9)
    for _ in range(STEPS):
        obs, mask = _inputs(rng, 18, 5, masked=True)
        action = policy.act(obs, mask)
        expected = _plain_forward(weights, obs)
        np.testing.assert_allclose(policy.last_logits(), expected, rtol=1e-6, atol=1e-6)
        assert mask[action] and expected[action] == expected[mask].max()
        if reference is not None:
            assert action == reference.act(obs, mask)
            np.testing.assert_allclose(policy.last_logits(), reference.last_logits(), rtol=1e-5, atol=1e-6)


def test_the_probe_path_is_the_one_the_students_take(spread_bundle: Path) -> None:
    bundle = Bundle.load(spread_bundle)
    assert _numpy_backend(bundle, "agent_0")._program.first_dense_output is not None
    assert _numpy_backend(bundle, "agent_0", "teacher")._program.first_dense_output is None


@pytest.mark.parametrize("role", ["student", "teacher"])
@pytest.mark.parametrize("bad", [np.nan, np.inf, -np.inf])
def test_a_non_finite_value_anywhere_is_refused(spread_bundle: Path, role: str, bad: float) -> None:
    backend = _numpy_backend(Bundle.load(spread_bundle), "agent_0", role)
    for position in range(18):
        obs = np.zeros(18, np.float32)
        obs[position] = bad
        with pytest.raises(KdxError, match="NaN or inf"):
            backend.infer(obs)
        with pytest.raises(KdxError, match="NaN or inf"):
            backend.infer(obs.astype(np.float64)[None, :])
    assert 0 <= backend.infer(np.zeros(18, np.float32)) < 5


@settings(max_examples=150, deadline=None)
@given(st.lists(st.floats(allow_nan=True, allow_infinity=True, width=32), min_size=18, max_size=18))
def test_fuzz_refused_exactly_when_not_finite(spread_bundle: Path, values: list[float]) -> None:
    backend = _fuzz_backend(spread_bundle)
    obs = np.array(values, np.float32)
    with np.errstate(all="ignore"):  # huge values overflow inside the net, inf - inf is invalid
        if np.isfinite(obs).all():  # an action, unless the net overflows (tests/abuse)
            try:
                assert 0 <= backend.infer(obs) < 5
            except KdxError as exc:
                assert "logits are NaN or inf" in str(exc)
        else:
            with pytest.raises(KdxError, match="observation contains NaN or inf"):
                backend.infer(obs)


_FUZZ: dict[Path, Backend] = {}


def _fuzz_backend(bundle_dir: Path) -> Backend:
    if bundle_dir not in _FUZZ:
        _FUZZ[bundle_dir] = _numpy_backend(Bundle.load(bundle_dir), "agent_0")
    return _FUZZ[bundle_dir]


def test_refused_inputs_do_not_move_the_recurrent_state(recurrent_bundle: Path) -> None:
    bundle = Bundle.load(recurrent_bundle)
    backend, fresh = _numpy_backend(bundle, "agent_0"), _numpy_backend(bundle, "agent_0")
    obs = np.linspace(-1, 1, 18, dtype=np.float32)
    backend.infer(obs)
    fresh.infer(obs)
    bad_obs = obs.copy()
    bad_obs[3] = np.nan
    for args in ((bad_obs,), (obs, np.zeros(5, bool)), (obs, np.ones(4, bool))):
        with pytest.raises(KdxError):
            backend.infer(*args)
    assert backend.infer(obs) == fresh.infer(obs)
    np.testing.assert_array_equal(backend.h_in, fresh.h_in)
