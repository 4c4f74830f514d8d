"""Pure-numpy backend: runs the exported MLP policies with nothing but numpy.

It prefers the agent's ``.npz`` sidecar (compiled into preallocated steps, see
:class:`kdx.runtime.mlp_npz.MlpProgram`); without one it interprets the ONNX graph with the
``onnx`` package (:mod:`kdx.runtime.onnx_numpy`), which is general but slower.
"""

from __future__ import annotations

import importlib.util

import numpy as np

from kdx.errors import KdxError
from kdx.runtime.backends.base import Backend
from kdx.runtime.manifest import AgentEntry
from kdx.runtime.mlp_npz import MlpProgram, load_mlp_npz


def _onnx_importable() -> bool:
    try:
        return importlib.util.find_spec("onnx") is not None
    except (ImportError, ValueError):
        return False


class NumpyBackend(Backend):
    """Batch-1 inference in numpy, from the npz sidecar (fast) or the ONNX graph (fallback)."""

    name = "numpy"
    file_kinds = ("npz", "onnx", "onnx-dynamic")

    @classmethod
    def unavailable_reason(cls) -> str | None:
        return None  # numpy is a base dependency

    @classmethod
    def unsupported_reason(cls, agent: AgentEntry) -> str | None:
        if agent.file_of_kind("npz") is not None:
            return None
        if agent.file_of_kind("onnx", "onnx-dynamic") is None:
            return f"agent {agent.name!r} has neither an npz sidecar nor an ONNX file"
        if not _onnx_importable():
            return (f"agent {agent.name!r} has no npz sidecar and the 'onnx' package is not "
                    "installed to read its ONNX graph")
        return None

    def _load(self) -> None:
        reason = self.unsupported_reason(self.agent)
        if reason:
            raise KdxError(reason)
        npz = self.agent.file_of_kind("npz")
        if npz is not None:
            self._load_npz(npz.path)
        else:
            self._load_onnx()

    def _load_npz(self, rel_path: str) -> None:
        path = self.bundle_dir / rel_path
        weights = load_mlp_npz(path)
        a = self.agent
        if weights.in_dim != a.model_input_dim or weights.n_outputs != a.n_actions:
            raise KdxError(
                f"{path}: weights take {weights.in_dim} inputs and give {weights.n_outputs} "
                f"logits but the manifest says {a.model_input_dim} and {a.n_actions}"
            )
        state = a.recurrent_state_shape[1] if a.recurrent_state_shape else None
        if weights.state_size != state:
            raise KdxError(f"{path}: recurrent state size {weights.state_size} but manifest {state}")
        program = MlpProgram(weights)
        # The sidecar holds float32 weights whatever the agent's ONNX precision (int8/fp16).
        self.source = f"{rel_path} (float32 weights)"
        self.obs_buf = program.input.reshape(1, -1)
        self.logits_buf = program.logits.reshape(1, -1)
        if state:
            self.h_in = program.state_in.reshape(1, -1)
            self.h_out = program.state_out.reshape(1, -1)
        self._run_program = program.run
        self._graph = None

    def _load_onnx(self) -> None:
        from kdx.runtime.onnx_numpy import OnnxNumpyGraph

        entry, path, data = self.read_model()
        self._graph = OnnxNumpyGraph(data, str(path))
        self.source = f"{entry.path} (ONNX graph, interpreted)"
        names = self.agent.inputs
        self._feeds = {names.obs: self.obs_buf}
        if names.action_mask is not None:
            self._feeds[names.action_mask] = self.mask_buf
        if names.h_in is not None:
            self._feeds[names.h_in] = self.h_in
        missing = [n for n in self._graph.input_names if n not in self._feeds]
        missing += [n for n in self._feeds if n not in self._graph.input_names]
        if missing:
            raise KdxError(f"{path}: graph inputs {self._graph.input_names} do not match the "
                           f"manifest's {list(self._feeds)}")

    def _infer_impl(self) -> int:
        if self._graph is None:
            logits = self._run_program()
            if self._mask_all_true:
                return int(logits.argmax())
            return int(np.argmax(np.where(self._mask_view, logits, -np.inf)))
        outputs = self._graph.run(self._feeds)
        out = self.agent.outputs
        np.copyto(self.logits_buf, np.asarray(outputs[out.logits], dtype=np.float32).reshape(1, -1))
        if out.h_out is not None:
            np.copyto(self.h_out, np.asarray(outputs[out.h_out], dtype=np.float32).reshape(self.h_out.shape))
        return int(np.asarray(outputs[out.action]).reshape(-1)[0])
