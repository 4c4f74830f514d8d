"""Test bundles of kdx.runtime.testing with C sources added by the exporter's torch-free code
generator (``kdx.export.c_codegen``), so the ``c`` backend runs beside numpy on the same weights."""

from __future__ import annotations

from pathlib import Path

import numpy as np

from kdx.export.c_codegen import CPolicy, c_symbols
from kdx.export.c_harness import HarnessPolicy, write_c_folder
from kdx.runtime.bundle import Bundle
from kdx.runtime.manifest import load_manifest, write_manifest
from kdx.runtime.mlp_npz import load_mlp_npz


def add_c_sources(bundle_dir: Path, rows: int = 64) -> Path:
    """Add ``c/`` (fp32) to a test bundle whose agents all have npz sidecars; the parity rows are
    random observations with the numpy backend's logits."""
    manifest = load_manifest(bundle_dir)
    entries, data = [], []
    bundle = Bundle.load(bundle_dir)
    rng = np.random.default_rng(0)
    for role, pool in (("student", manifest.agents), ("teacher", manifest.teacher)):
        symbols = c_symbols([a.name for a in pool])
        for agent in pool:
            weights = load_mlp_npz(bundle_dir / agent.file_of_kind("npz").path)
            tail = np.zeros(agent.id_one_hot_size, np.float32)
            if agent.id_one_hot_size:
                tail[agent.id_index] = 1.0
            scale = None if weights.input_std is None else (1.0 / weights.input_std).astype(np.float32)
            symbol = symbols[agent.name] if role == "student" else f"teacher_{symbols[agent.name]}"
            policy = CPolicy(agent.name, role, symbol, agent.obs_dim, agent.n_actions, weights.layers,
                             input_tail=tail, input_mean=weights.input_mean, input_scale=scale)
            folder = "teacher/" if role == "teacher" else ""
            stem = symbols[agent.name]
            entries.append(HarnessPolicy(policy, f"{folder}{stem}.h", f"{folder}{stem}.c", "fp32", 1e-5, 1.0))
            numpy_policy = bundle.policy(agent.name, "numpy", role)
            obs = rng.standard_normal((rows, agent.obs_dim)).astype(np.float32)
            logits = np.zeros((rows, agent.n_actions), np.float32)
            state = policy.state_size or 0
            h_in = np.zeros((rows, state), np.float32)
            for i in range(rows):
                if state:
                    h_in[i] = numpy_policy.backend.h_in[0]
                numpy_policy.act(obs[i])
                logits[i] = numpy_policy.last_logits()
            data.append({"obs": obs, "action_mask": np.ones((rows, agent.n_actions), bool), "logits": logits,
                         "h_in": h_in})
    files = write_c_folder(bundle_dir, "c", entries, data)
    for agent, entry, agent_files in zip([*manifest.agents, *manifest.teacher], entries, files, strict=True):
        agent.files.extend(agent_files)
        agent.c_symbol = entry.policy.symbol
    write_manifest(bundle_dir, manifest)
    return bundle_dir
