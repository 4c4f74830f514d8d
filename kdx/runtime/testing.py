"""Build small bundles without the exporter: random-weight MLP (and GRU) policies written as
ONNX (with ``onnx.helper``), as the npz sidecar, and a manifest — following exactly the
conventions documented in :mod:`kdx.runtime.manifest`. Used by tests and benchmarks.

Needs the ``onnx`` package for the ONNX files (imported lazily); ``with_onnx=False`` writes
npz-only bundles with numpy alone.
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np

from kdx import __version__
from kdx.devices.cost import GRUCell, Layer, LayerNorm, Linear, count_cost
from kdx.runtime.manifest import (
    AgentEntry,
    FileEntry,
    InputNames,
    Manifest,
    OutputNames,
    write_manifest,
)
from kdx.runtime.mlp_npz import MlpLayer, MlpWeights, save_mlp_npz

MASK_FILL = -1e9  # the large negative written over illegal logits inside the graph


def random_mlp_weights(
    in_dim: int,
    n_actions: int,
    hidden: Sequence[int],
    seed: int = 0,
    activation: str = "relu",
    layernorm: bool = False,
    recurrent: bool = False,
    normalisation: bool = False,
    mappo: bool = False,
) -> MlpWeights:
    """Random weights: dense+activation per hidden size (LayerNorm after each if asked), a GRU
    after the first hidden layer if ``recurrent``, then the logits layer.

    ``layernorm``: Linear -> LayerNorm -> activation. ``mappo``: the kdx teacher's actor trunk
    (MAPPO reference): LayerNorm on the input, then Linear -> activation -> LayerNorm per layer.
    """
    rng = np.random.default_rng(seed)
    layers: list[MlpLayer] = []
    width = in_dim

    def norm(size: int, act: str) -> MlpLayer:
        return MlpLayer("layernorm", act, {
            "scale": rng.uniform(0.5, 1.5, size).astype(np.float32),
            "bias": rng.normal(0, 0.1, size).astype(np.float32),
            "epsilon": np.array(1e-5, dtype=np.float32)})
    if mappo:
        layers.append(norm(in_dim, "identity"))
    for i, size in enumerate(hidden):
        scale = 1.0 / np.sqrt(width)
        layers.append(MlpLayer("dense", "identity" if layernorm else activation, {
            "weight": rng.normal(0, scale, (width, size)).astype(np.float32),
            "bias": rng.normal(0, 0.1, size).astype(np.float32)}))
        if layernorm or mappo:
            layers.append(norm(size, activation if layernorm else "identity"))
        width = size
        if recurrent and i == 0:
            s = 1.0 / np.sqrt(size)
            layers.append(MlpLayer("gru", "identity", {
                "weight_ih": rng.uniform(-s, s, (size, 3 * size)).astype(np.float32),
                "weight_hh": rng.uniform(-s, s, (size, 3 * size)).astype(np.float32),
                "bias_ih": rng.uniform(-s, s, 3 * size).astype(np.float32),
                "bias_hh": rng.uniform(-s, s, 3 * size).astype(np.float32)}))
    layers.append(MlpLayer("dense", "identity", {
        "weight": rng.normal(0, 1.0 / np.sqrt(width), (width, n_actions)).astype(np.float32),
        "bias": rng.normal(0, 0.1, n_actions).astype(np.float32)}))
    weights = MlpWeights(layers)
    if normalisation:
        weights.input_mean = rng.normal(0, 1, in_dim).astype(np.float32)
        weights.input_std = rng.uniform(0.5, 2.0, in_dim).astype(np.float32)
    return weights


#: The ONNX operator of each npz activation but ``identity`` (none).
ONNX_ACTIVATIONS = {"relu": "Relu", "tanh": "Tanh", "sigmoid": "Sigmoid", "elu": "Elu",
                    "leaky_relu": "LeakyRelu"}


def mlp_onnx_bytes(weights: MlpWeights, with_mask: bool = False, opset: int = 17) -> bytes:
    """The ONNX model equivalent to ``weights``, with the bundle's input/output conventions."""
    from onnx import TensorProto, checker, helper, numpy_helper

    nodes, inits = [], []
    state = weights.state_size
    n_actions = weights.n_outputs

    def const(name: str, value: np.ndarray) -> str:
        inits.append(numpy_helper.from_array(np.asarray(value), name))
        return name

    x = "obs"
    if weights.input_mean is not None:
        nodes.append(helper.make_node("Sub", [x, const("norm_mean", weights.input_mean)], ["obs_c"]))
        nodes.append(helper.make_node("Div", ["obs_c", const("norm_std", weights.input_std)], ["obs_n"]))
        x = "obs_n"
    last = len(weights.layers) - 1
    for i, layer in enumerate(weights.layers):
        p = layer.params
        out = "logits" if i == last else f"l{i}"
        if layer.kind == "dense":
            nodes.append(helper.make_node("Gemm", [x, const(f"W{i}", p["weight"]), const(f"b{i}", p["bias"])], [out]))
        elif layer.kind == "layernorm":
            nodes.append(helper.make_node("LayerNormalization", [x, const(f"g{i}", p["scale"]), const(f"beta{i}", p["bias"])],
                                          [out], axis=-1, epsilon=float(p["epsilon"])))
        else:  # GRU, seq len 1; torch gate order r,z,n -> ONNX z,r,h
            h = state

            def onnx_order(m: np.ndarray) -> np.ndarray:
                r, z, n = np.split(m, 3, axis=-1)
                return np.concatenate([z, r, n], axis=-1)
            w = onnx_order(p["weight_ih"]).T[None]
            r = onnx_order(p["weight_hh"]).T[None]
            b = np.concatenate([onnx_order(p["bias_ih"]), onnx_order(p["bias_hh"])])[None]
            ax0 = const(f"ax0_{i}", np.array([0], dtype=np.int64))
            nodes += [
                helper.make_node("Unsqueeze", [x, ax0], [f"x3_{i}"]),
                helper.make_node("Unsqueeze", ["h_in", ax0], [f"h3_{i}"]),
                helper.make_node("GRU", [f"x3_{i}", const(f"Wg{i}", w), const(f"Rg{i}", r), const(f"Bg{i}", b), "",
                                         f"h3_{i}"], [f"y_{i}", f"yh_{i}"], hidden_size=h, linear_before_reset=1),
                helper.make_node("Squeeze", [f"yh_{i}", ax0], ["h_out"]),
                helper.make_node("Identity", ["h_out"], [out]),
            ]
        if layer.activation != "identity":
            nodes[-1].output[0] = out + "_pre"
            nodes.append(helper.make_node(ONNX_ACTIVATIONS[layer.activation], [out + "_pre"], [out]))
        x = out
    masked = "logits"
    if with_mask:
        nodes.append(helper.make_node("Where", ["action_mask", "logits", const("mask_fill", np.array(MASK_FILL, np.float32))],
                                      ["masked_logits"]))
        masked = "masked_logits"
    nodes.append(helper.make_node("ArgMax", [masked], ["action"], axis=1, keepdims=0))
    inputs = [helper.make_tensor_value_info("obs", TensorProto.FLOAT, [1, weights.in_dim])]
    if with_mask:
        inputs.append(helper.make_tensor_value_info("action_mask", TensorProto.BOOL, [1, n_actions]))
    outputs = [helper.make_tensor_value_info("logits", TensorProto.FLOAT, [1, n_actions]),
               helper.make_tensor_value_info("action", TensorProto.INT64, [1])]
    if state:
        inputs.append(helper.make_tensor_value_info("h_in", TensorProto.FLOAT, [1, state]))
        outputs.append(helper.make_tensor_value_info("h_out", TensorProto.FLOAT, [1, state]))
    graph = helper.make_graph(nodes, "kdx_policy", inputs, outputs, inits)
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", opset)],
                              producer_name="kdx.runtime.testing")
    model.ir_version = 8  # readable by every onnxruntime >= 1.14
    checker.check_model(model)
    return model.SerializeToString()


def sidecar_layers(weights: MlpWeights) -> list[Layer]:
    """The sidecar's layers as ``kdx.devices.cost`` describes them, for its one cost rule."""
    out: list[Layer] = []
    for layer in weights.layers:
        p = layer.params
        if layer.kind == "dense":
            out.append(Linear(int(p["weight"].shape[0]), int(p["weight"].shape[1]), "bias" in p))
        elif layer.kind == "layernorm":
            out.append(LayerNorm(int(p["scale"].shape[0])))
        else:
            out.append(GRUCell(int(p["weight_ih"].shape[0]), int(p["weight_hh"].shape[0]), "bias_ih" in p))
    return out


def write_agent(bundle_dir: Path, name: str, weights: MlpWeights, role: str = "student",
                file_stem: str | None = None, with_mask: bool = False, with_onnx: bool = True,
                with_npz: bool = True, id_one_hot_size: int = 0, id_index: int = 0) -> AgentEntry:
    """Write one agent's model files (ONNX and/or npz) and return its manifest entry."""
    stem = file_stem or f"{name}.fp32"
    files = []
    if with_onnx:
        (bundle_dir / f"{stem}.onnx").write_bytes(mlp_onnx_bytes(weights, with_mask))
        files.append(FileEntry.of_file(bundle_dir, f"{stem}.onnx", "onnx"))
    if with_npz:
        save_mlp_npz(bundle_dir / f"{stem}.npz", weights)
        files.append(FileEntry.of_file(bundle_dir, f"{stem}.npz", "npz"))
    dense = [layer for layer in weights.layers if layer.kind == "dense"]
    cost = count_cost(sidecar_layers(weights))
    state = weights.state_size
    return AgentEntry(
        name=name, role=role, obs_dim=weights.in_dim - id_one_hot_size, n_actions=weights.n_outputs,
        files=files, hidden_sizes=[int(layer.params["weight"].shape[1]) for layer in dense[:-1]],
        params=cost.params, macs=cost.macs,
        inputs=InputNames.of_policy(action_mask=with_mask, recurrent=bool(state)),
        outputs=OutputNames.of_policy(recurrent=bool(state)),
        recurrent_state_shape=[1, state] if state else None,
        id_one_hot_size=id_one_hot_size, id_index=id_index,
        normalisation_folded=weights.input_mean is None,
        parity={"source": "random test weights"},
    )


def make_test_bundle(
    path: str | Path,
    n_agents: int = 3,
    obs_dim: int = 18,
    n_actions: int = 5,
    student_hidden: Sequence[int] = (32, 32),
    teacher_hidden: Sequence[int] | None = (256, 256, 256),
    with_mask: bool = False,
    recurrent: bool = False,
    layernorm: bool = False,
    normalisation: bool = False,
    with_onnx: bool = True,
    with_npz: bool = True,
    seed: int = 0,
    env: str = "pettingzoo:mpe2.simple_spread_v3",
    student_activation: str = "relu",
    teacher_mappo: bool = False,
    teacher_npz: bool | None = None,
) -> Path:
    """A bundle folder with ``n_agents`` students ``agent_<i>`` and (unless ``teacher_hidden`` is
    None) one shared teacher actor that takes the observation plus a one-hot agent id
    (``teacher_mappo``: with the MAPPO LayerNorm trunk of kdx's teacher). ``teacher_npz``
    (default: ``with_npz``): False writes the teacher as ONNX only, as ``kdx export`` does."""
    bundle_dir = Path(path)
    bundle_dir.mkdir(parents=True, exist_ok=True)
    agents = []
    for i in range(n_agents):
        w = random_mlp_weights(obs_dim, n_actions, student_hidden, seed=seed + i, layernorm=layernorm,
                               recurrent=recurrent, normalisation=normalisation,
                               activation=student_activation)
        agents.append(write_agent(bundle_dir, f"agent_{i}", w, with_mask=with_mask,
                                  with_onnx=with_onnx, with_npz=with_npz))
    teacher = []
    if teacher_hidden is not None:
        w = random_mlp_weights(obs_dim + n_agents, n_actions, teacher_hidden, seed=seed + 1000,
                               activation="relu" if teacher_mappo else "tanh", mappo=teacher_mappo)
        for i in range(n_agents):
            teacher.append(write_agent(bundle_dir, f"agent_{i}", w, role="teacher", file_stem="teacher.fp32",
                                       with_mask=with_mask, with_onnx=with_onnx,
                                       with_npz=with_npz if teacher_npz is None else teacher_npz,
                                       id_one_hot_size=n_agents, id_index=i))
    manifest = Manifest(agents=agents, teacher=teacher, target="x86", precision="fp32", env=env,
                        kdx_version=__version__, created_at="2026-01-01T00:00:00Z")
    write_manifest(bundle_dir, manifest)
    return bundle_dir


def assert_served_like_local(client, local, rng: np.random.Generator, requests: int, obs_dim: int = 18,
                             n_actions: int = 5) -> None:
    """Send ``requests`` random observations to a ``serve`` ``client``, each once plain and once
    with a random mask (one legal action at least), and assert every reply equals ``local.act``."""
    for _ in range(requests):
        obs = rng.standard_normal(obs_dim).astype(np.float32)
        mask = rng.random(n_actions) < 0.5
        mask[rng.integers(n_actions)] = True
        assert client.act(obs) == local.act(obs)
        action = client.act(obs, mask)
        assert action == local.act(obs, mask) and mask[action]


def start_serve_process(bundle_dir: str | Path, agent: str, *options: str,
                        cwd: str | Path | None = None):
    """Start ``kdx-runtime serve BUNDLE --agent AGENT *options`` in a subprocess (this Python) and
    wait for its "serving ... on ADDRESS" line. Returns ``(process, address)``: ``address`` is
    ``{"host": ..., "port": ...}`` or ``{"unix_path": ...}``, keyword arguments of
    :class:`kdx.runtime.protocol.Client`. Pass ``--port 0`` (or ``--unix PATH``) among the
    options; stop it with :func:`stop_serve_process`."""
    import re
    import subprocess
    import sys

    process = subprocess.Popen(
        [sys.executable, "-m", "kdx.runtime.cli", "serve", str(bundle_dir), "--agent", agent, *options],
        cwd=cwd, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    line = process.stdout.readline()
    match = re.search(r"on (?:unix:(\S+)|([\d.]+):(\d+)) protocol", line)
    if not match:
        process.kill()
        _, err = process.communicate(timeout=10)
        raise RuntimeError(f"serve did not start: {line}{err}")
    address = ({"unix_path": match.group(1)} if match.group(1)
               else {"host": match.group(2), "port": int(match.group(3))})
    return process, address


def stop_serve_process(process) -> dict:
    """SIGTERM a ``kdx-runtime serve`` subprocess, check it exits cleanly, and return the
    statistics it prints on its way out."""
    import json
    import signal

    process.send_signal(signal.SIGTERM)
    out, err = process.communicate(timeout=10)
    assert process.returncode == 0, err
    return json.loads(out.split("stopped; ", 1)[1])


def targets_table(targets: list[tuple[str, float, bool]]) -> Any:
    """The benchmarks' verdicts as a rich table: ``(target, measured, met)`` rows."""
    from rich.table import Table

    table = Table(title="targets")
    for column in ("target", "measured", "met"):
        table.add_column(column)
    for name, value, ok in targets:
        table.add_row(name, f"{value:.3f}", "yes" if ok else "NO")
    return table
