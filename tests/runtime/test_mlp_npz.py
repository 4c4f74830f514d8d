"""The npz sidecar: its compiled forward pass against a plain per-element loop, and refusals."""

from __future__ import annotations

import math
from pathlib import Path

import numpy as np
import pytest

from kdx.errors import KdxError
from kdx.runtime.mlp_npz import MlpLayer, MlpProgram, MlpWeights, load_mlp_npz, save_mlp_npz
from kdx.runtime.testing import random_mlp_weights


def _act(name: str, v: float) -> float:
    return {"identity": v, "relu": max(v, 0.0), "tanh": math.tanh(v),
            "sigmoid": 1 / (1 + math.exp(-v)), "elu": v if v > 0 else math.expm1(v),
            "leaky_relu": v if v > 0 else 0.01 * v}[name]


def _loop_forward(w: MlpWeights, x: list[float], h: list[float] | None) -> tuple[list[float], list[float] | None]:
    """The reference: plain Python loops over scalars, straight from the format's definition."""
    if w.input_mean is not None:
        x = [(xi - m) / s for xi, m, s in zip(x, w.input_mean, w.input_std)]
    for layer in w.layers:
        p = layer.params
        if layer.kind == "dense":
            W, b = p["weight"], p["bias"]
            x = [sum(x[i] * float(W[i, j]) for i in range(len(x))) + float(b[j]) for j in range(W.shape[1])]
        elif layer.kind == "layernorm":
            mean = sum(x) / len(x)
            var = sum((v - mean) ** 2 for v in x) / len(x)
            x = [(v - mean) / math.sqrt(var + float(p["epsilon"])) * float(g) + float(b)
                 for v, g, b in zip(x, p["scale"], p["bias"])]
        else:
            n = p["weight_hh"].shape[0]

            def lin(vec, W, b, j):
                return sum(vec[i] * float(W[i, j]) for i in range(len(vec))) + float(b[j])
            new_h = []
            for j in range(n):
                r = 1 / (1 + math.exp(-(lin(x, p["weight_ih"], p["bias_ih"], j) + lin(h, p["weight_hh"], p["bias_hh"], j))))
                z = 1 / (1 + math.exp(-(lin(x, p["weight_ih"], p["bias_ih"], n + j) + lin(h, p["weight_hh"], p["bias_hh"], n + j))))
                c = math.tanh(lin(x, p["weight_ih"], p["bias_ih"], 2 * n + j) + r * lin(h, p["weight_hh"], p["bias_hh"], 2 * n + j))
                new_h.append((1 - z) * c + z * h[j])
            x = h = new_h
        x = [_act(layer.activation, v) for v in x]
    return x, h


@pytest.mark.parametrize("activation", ["relu", "tanh", "sigmoid", "elu", "leaky_relu"])
@pytest.mark.parametrize(("layernorm", "recurrent", "normalisation", "mappo"),
                         [(False, False, False, False), (True, False, True, False),
                          (False, True, False, False), (True, True, True, False), (False, False, True, True)])
def test_program_matches_plain_loops(tmp_path: Path, activation: str, layernorm: bool, recurrent: bool,
                                     normalisation: bool, mappo: bool) -> None:
    weights = random_mlp_weights(7, 4, (6, 5), seed=3, activation=activation, layernorm=layernorm,
                                 recurrent=recurrent, normalisation=normalisation, mappo=mappo)
    save_mlp_npz(tmp_path / "w.npz", weights)
    program = MlpProgram(load_mlp_npz(tmp_path / "w.npz"))
    rng = np.random.default_rng(0)
    h = [0.0] * 6 if recurrent else None
    for _ in range(3):  # several steps: the recurrent state must carry
        x = rng.standard_normal(7).astype(np.float32)
        program.input[:] = x
        logits = program.run().copy()
        expected, h = _loop_forward(weights, [float(v) for v in x], h)
        np.testing.assert_allclose(logits, expected, rtol=1e-4, atol=1e-5)
        if recurrent:
            np.testing.assert_allclose(program.state_out, h, rtol=1e-4, atol=1e-5)
            program.state_in[:] = program.state_out


def test_unfolded_normalisation_does_not_modify_the_callers_input() -> None:
    weights = random_mlp_weights(4, 3, (5,), layernorm=True, normalisation=True)
    program = MlpProgram(weights)
    program.input[:] = [1, 2, 3, 4]
    first = program.run().copy()
    np.testing.assert_array_equal(program.input, [1, 2, 3, 4])
    np.testing.assert_array_equal(program.run(), first)


def _arrays(path: Path) -> dict[str, np.ndarray]:
    with np.load(path) as data:
        return {k: data[k] for k in data.files}


@pytest.mark.parametrize(("change", "fragment"), [
    (lambda a: a.pop("layer0.weight"), "layer0.weight"),
    (lambda a: a.__setitem__("kdx_mlp_format", np.array(2)), "kdx_mlp_format"),
    (lambda a: a.__setitem__("layer_kinds", np.array(["conv", "dense"])), "conv"),
    (lambda a: a.__setitem__("layer_activations", np.array(["swish", "identity"])), "swish"),
    (lambda a: a.__setitem__("layer1.weight", np.zeros((3, 4), np.float32)), "chain"),
    (lambda a: a.__setitem__("layer0.bias", np.full(5, np.nan, np.float32)), "finite"),
    (lambda a: a.__setitem__("layer_activations", np.array(["relu", "relu"])), "identity"),
])
def test_bad_sidecars_are_refused(tmp_path: Path, change, fragment: str) -> None:
    save_mlp_npz(tmp_path / "ok.npz", random_mlp_weights(4, 3, (5,)))
    arrays = _arrays(tmp_path / "ok.npz")
    change(arrays)
    np.savez(tmp_path / "bad.npz", **arrays)
    with pytest.raises(KdxError, match=fragment) as info:
        load_mlp_npz(tmp_path / "bad.npz")
    assert "bad.npz" in str(info.value)


def test_garbage_and_truncated_files_are_refused(tmp_path: Path) -> None:
    save_mlp_npz(tmp_path / "ok.npz", random_mlp_weights(4, 3, (5,)))
    data = (tmp_path / "ok.npz").read_bytes()
    (tmp_path / "cut.npz").write_bytes(data[: len(data) // 2])
    (tmp_path / "junk.npz").write_bytes(b"not a zip at all")
    for name in ("cut.npz", "junk.npz"):
        with pytest.raises(KdxError, match=name):
            load_mlp_npz(tmp_path / name)


def test_save_refuses_what_load_would_refuse(tmp_path: Path) -> None:
    weights = MlpWeights([MlpLayer("dense", "relu", {"weight": np.ones((2, 2)), "bias": np.ones(2)})])
    with pytest.raises(KdxError, match="last layer"):
        save_mlp_npz(tmp_path / "w.npz", weights)
    assert list(tmp_path.iterdir()) == []
