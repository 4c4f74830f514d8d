"""The ``c`` backend: refuses NaN/inf (state unchanged) and modified sources, never returns an
illegal action, caches its library, and is unavailable with a reason when there is no compiler.
Its agreement with onnxruntime (masks, LayerNorm, unfolded normalisation, GRU state, one-hot
agent id) is tested with every backend in test_backends.py: the test bundles carry C code."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from kdx.errors import KdxError
from kdx.runtime.backends import BACKENDS
from kdx.runtime.backends.c_backend import CBackend
from kdx.runtime.bundle import Bundle
from kdx.runtime.c_build import cache_dir, find_compiler
from kdx.runtime.c_fastcall import python_include

pytestmark = pytest.mark.skipif(find_compiler()[0] is None, reason=f"{find_compiler()[1]}; the c backend needs one")


@pytest.fixture(scope="module")
def c_masked(masked_bundle: Path) -> Path:
    return masked_bundle  # the runtime's test bundles carry C sources (tests.runtime.c_bundles)


@pytest.fixture(scope="module")
def c_recurrent(recurrent_bundle: Path) -> Path:
    return recurrent_bundle


def test_plain_infer_path_agrees_with_the_fast_one(c_recurrent: Path) -> None:
    bundle = Bundle.load(c_recurrent)
    fast, plain = bundle.policy("agent_1", "c"), bundle.policy("agent_1", "c")
    rng = np.random.default_rng(5)
    for _ in range(10):
        obs = rng.standard_normal(fast.obs_dim).astype(np.float32)
        mask = rng.random(fast.n_actions) < 0.7
        mask[0] = True
        assert fast.act(obs, mask) == CBackend.infer(plain.backend, obs, mask)
        np.testing.assert_array_equal(fast.backend.h_in, plain.backend.h_in)


@pytest.mark.parametrize("bad", [np.nan, np.inf, -np.inf])
def test_nonfinite_observation_refused_state_unchanged(c_recurrent: Path, bad: float) -> None:
    policy = Bundle.load(c_recurrent).policy("agent_0", "c")
    obs = np.linspace(-1, 1, policy.obs_dim).astype(np.float32)
    policy.act(obs)
    state = policy.backend.h_in.copy()
    assert np.abs(state).sum() > 0
    obs[3] = bad
    with pytest.raises(KdxError, match="NaN or inf"):
        policy.act(obs)
    np.testing.assert_array_equal(policy.backend.h_in, state)


@pytest.mark.filterwarnings("ignore:overflow encountered in cast:RuntimeWarning")
def test_float64_beyond_float32_range_refused(c_masked: Path) -> None:
    policy = Bundle.load(c_masked).policy("agent_0", "c")
    obs = np.zeros(policy.obs_dim)
    obs[0] = 1e300  # becomes inf in the float32 buffer
    with pytest.raises(KdxError, match="NaN or inf"):
        policy.act(obs)


def test_mask_never_returns_an_illegal_action_and_needs_one_legal(c_masked: Path) -> None:
    policy = Bundle.load(c_masked).policy("agent_1", "c")
    rng = np.random.default_rng(11)
    for _ in range(50):
        obs = rng.standard_normal(policy.obs_dim).astype(np.float32)
        free = policy.act(obs)
        mask = np.ones(policy.n_actions, bool)
        mask[free] = False
        assert policy.act(obs, mask) != free
    with pytest.raises(KdxError, match="no legal action"):
        policy.act(obs, np.zeros(policy.n_actions, bool))


def test_wrong_observation_shape_refused(c_masked: Path) -> None:
    policy = Bundle.load(c_masked).policy("agent_0", "c")
    with pytest.raises(KdxError, match="expected a numpy float32 array"):
        policy.act(np.zeros(policy.obs_dim + 1, np.float32))


def test_modified_source_refused(c_masked: Path, tmp_path: Path) -> None:
    import shutil

    copy = tmp_path / "bundle"
    shutil.copytree(c_masked, copy)
    bundle = Bundle.load(copy)
    source = copy / "c" / "agent_0.c"
    text = source.read_text()
    source.write_text(text.replace("return best;", "return 0;   "))  # same size: only the sha256 tells
    assert source.stat().st_size == len(text)
    with pytest.raises(KdxError, match="sha256 does not match the manifest"):
        bundle.policy("agent_0", "c")
    with pytest.raises(KdxError, match="sha256"):
        Bundle.load(copy)


def test_library_cached_and_reused(c_masked: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("KDX_CACHE_DIR", str(tmp_path / "cache"))
    Bundle.load(c_masked).policy("agent_0", "c")
    libraries = sorted(cache_dir().glob("*.so"))
    # the ctypes library, and the fast caller where Python's headers are installed
    assert cache_dir() == tmp_path / "cache" / "c" and len(libraries) == (2 if python_include()[0] else 1)
    before = libraries[0].stat().st_mtime_ns
    Bundle.load(c_masked).policy("agent_0", "c")
    assert sorted(cache_dir().glob("*.so")) == libraries and libraries[0].stat().st_mtime_ns == before
    assert not [p for p in cache_dir().iterdir() if p.name.startswith(".build-")]


def test_auto_measures_the_c_backend(c_masked: Path) -> None:
    bundle = Bundle.load(c_masked)
    policy = bundle.policy("agent_0")
    assert isinstance(policy.selection["c"], float)


def test_no_compiler_makes_the_backend_unavailable(c_masked: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("CC", "/nonexistent/cc")
    reason = BACKENDS["c"].unavailable_reason()
    assert reason is not None and "no C compiler found" in reason and "/nonexistent/cc" in reason
    bundle = Bundle.load(c_masked)
    with pytest.raises(KdxError, match="no C compiler found"):
        bundle.policy("agent_0", "c")
    policy = bundle.policy("agent_0")  # auto skips it, with the reason
    assert policy.backend_name != "c" and "no C compiler found" in policy.selection["c"]


def test_bundle_without_c_sources_is_unsupported(fresh_bundle: Path) -> None:
    entry = Bundle.load(fresh_bundle).manifest.agent("agent_0")
    assert "no C source" in CBackend.unsupported_reason(entry)


@pytest.mark.skipif(python_include()[0] is None, reason="Python's headers (Python.h) are not installed: "
                    "the c backend runs through ctypes alone")
def test_fast_caller_matches_the_checked_path_and_keeps_backends_apart(c_masked: Path) -> None:
    """The fast caller (a compiled extension taking the observation itself) gives the ctypes
    path's actions and logits; float64, [1, D] and strided observations take the checked path;
    two policies of one agent keep their own buffers; NaN is still refused."""
    bundle = Bundle.load(c_masked)
    first, second = bundle.policy("agent_0", "c"), bundle.policy("agent_0", "c")
    assert "fast caller" in first.backend.source
    rng = np.random.default_rng(4)
    obs = rng.standard_normal((64, first.obs_dim)).astype(np.float32)
    reference = bundle.policy("agent_0", "numpy")
    for row in obs:
        action = first.act(row)
        logits = first.last_logits()
        other = second.act(row[::-1].copy())  # a different observation in between
        assert first.last_logits().tolist() == logits.tolist()  # not overwritten by `second`
        assert action == reference.act(row) and np.allclose(logits, reference.last_logits(), atol=1e-5)
        assert second.act(row[::-1].copy()) == other
        assert first.act(row.astype(np.float64)) == action
        assert first.act(row[None, :]) == action
        strided = np.repeat(row, 2)[::2]
        assert not strided.flags.c_contiguous and first.act(strided) == action
    mask = np.zeros(first.n_actions, dtype=bool)
    mask[1] = True
    assert first.act(obs[0], mask) == 1
    bad = obs[0].copy()
    bad[0] = np.nan
    with pytest.raises(KdxError, match="NaN|non-finite|finite"):
        first.act(bad)
    with pytest.raises(KdxError):
        first.act(obs[0][:-1])  # too short: the checked path names the problem


def test_without_python_headers_the_c_backend_uses_ctypes(c_masked: Path, tmp_path: Path,
                                                          monkeypatch: pytest.MonkeyPatch) -> None:
    import sysconfig

    monkeypatch.setenv("KDX_CACHE_DIR", str(tmp_path / "cache"))
    monkeypatch.setattr(sysconfig, "get_paths", lambda *a, **k: {"include": str(tmp_path / "no-headers")})
    policy = Bundle.load(c_masked).policy("agent_0", "c")
    assert policy.backend._fast is None and "Python.h" in policy.backend.fast_caller_note
    assert "ctypes" in policy.backend.source
    obs = np.random.default_rng(1).standard_normal(policy.obs_dim).astype(np.float32)
    assert policy.act(obs) == Bundle.load(c_masked).policy("agent_0", "numpy").act(obs)
