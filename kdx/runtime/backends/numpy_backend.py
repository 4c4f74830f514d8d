"""Pure-numpy backend: runs the exported MLP policies with nothing but numpy.

It prefers the agent's ``.npz`` sidecar (compiled into preallocated steps, see
:class:`kdx.runtime.mlp_npz.MlpProgram`); without one it interprets the ONNX graph with the
``onnx`` package (:mod:`kdx.runtime.onnx_numpy`), which is general but slower.

With the sidecar, ``infer`` is replaced by one closure over the program's steps (same checks,
same errors, same results as :meth:`Backend.infer`): a small student's decision is then a
handful of numpy calls (copy, one ``dot`` and one activation per layer, argmax) and the Python
between them, which is what a batch-1 decision of a tiny MLP costs.
"""

from __future__ import annotations

import importlib.util
import math
from collections.abc import Callable
from pathlib import Path

import numpy as np

from kdx.errors import KdxError
from kdx.runtime.backends.base import _F32, Backend
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

    def __init__(self, agent: AgentEntry, bundle_dir: Path) -> None:
        self._program: MlpProgram | None = None
        super().__init__(agent, bundle_dir)
        if self._program is not None:
            self.infer = self._compile_infer(self._program)  # type: ignore[method-assign]

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

    @classmethod
    def install_hint_for(cls, agent: AgentEntry) -> str | None:
        if agent.file_of_kind("npz") is None and agent.file_of_kind("onnx", "onnx-dynamic") is not None \
                and not _onnx_importable():
            return "onnx (pip install onnx; the numpy backend then interprets the ONNX graph, slowly)"
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
        self.check_model_input(weights.in_dim, path)
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
        self._program = program
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
        out = self.agent.outputs
        wanted = [n for n in (out.logits, out.action, out.h_out) if n is not None]
        if not set(wanted) <= set(self._graph.output_names):
            raise KdxError(f"{path}: graph outputs {self._graph.output_names} lack some of the "
                           f"manifest's {wanted}")

    def _infer_impl(self) -> int:
        if self._graph is None:
            logits = self._run_program()
            if self._mask_all_true:
                return int(logits.argmax())
            return self._masked_argmax(logits)
        outputs = self._graph.run(self._feeds)
        out = self.agent.outputs
        try:
            np.copyto(self.logits_buf, np.asarray(outputs[out.logits], dtype=np.float32).reshape(1, -1))
            if out.h_out is not None:
                np.copyto(self.h_out, np.asarray(outputs[out.h_out], dtype=np.float32).reshape(self.h_out.shape))
            return int(np.asarray(outputs[out.action]).reshape(-1)[0])
        except (ValueError, TypeError, IndexError) as exc:
            raise KdxError(f"{self._graph.source}: the graph's outputs do not have the manifest's "
                           f"shapes ({exc})") from None

    def _compile_infer(self, program: MlpProgram) -> Callable[..., int]:
        """:meth:`Backend.infer` specialised to ``program``: the same checks and errors, every
        buffer, bound method and constant bound once, and the finiteness check folded into the
        first layer when it can be (see :class:`MlpProgram`'s ``first_dense_output``)."""
        agent = self.agent
        ndarray, isfinite, copyto = np.ndarray, math.isfinite, np.copyto
        obs_view, flat_shape = self._obs_view, (agent.obs_dim,)
        copy_other_observation = self._copy_other_observation
        isfinite_all = np.isfinite
        ops = program.ops
        if program.first_dense_output is not None:
            # A NaN or inf input makes every output of x @ W + b non-finite (inf * 0 is NaN,
            # inf - inf is NaN), so one entry of the first product checks the whole input for the
            # price of reading it. Infinities can make numpy warn "invalid value encountered in
            # dot" before the KdxError.
            (first_function, first_args), remaining = ops[0], ops[1:]
            probe = program.first_dense_output[:1]
        else:
            # As Backend.infer: NaN and inf propagate into the sum (inf - inf is NaN).
            probe = np.zeros((), dtype=np.float32)
            first_function, first_args, remaining = obs_view.dot, (self._ones, probe), ops
        h_in, h_out = self.h_in, self.h_out
        probe_item = probe.item
        logit_of, masked_logit_of = program.logits.item, self._masked_logits.item
        nonfinite_logits = self._nonfinite_logits_error
        logits_argmax = program.logits.argmax
        masked_argmax, set_mask = self._masked_argmax, self._set_mask
        logits, mask_view = program.logits, self._mask_view

        def infer(obs: np.ndarray, mask: np.ndarray | None = None) -> int:
            if type(obs) is ndarray and obs.dtype is _F32 and obs.shape == flat_shape:
                copyto(obs_view, obs)  # the common case, checked in three comparisons
            else:
                copy_other_observation(obs)
            first_function(*first_args)
            # The exact check runs only when the probe fires: a huge finite observation may
            # overflow the product (or the sum) and is not refused.
            if not isfinite(probe_item()) and not isfinite_all(obs_view).all():
                raise self._nonfinite_error()
            # Checks in Backend.infer's order, all before the recurrent state moves.
            if mask is not None:
                set_mask(mask)
            elif not self._mask_all_true:
                mask_view.fill(True)
                self._mask_all_true = True
            for function, args in remaining:
                function(*args)
            if mask is None:
                action = int(logits_argmax())
                chosen = logit_of(action)
            else:
                action = masked_argmax(logits)
                chosen = masked_logit_of(action)  # -inf if illegal: every legal logit was -inf
            # The outcome check of Backend.infer, cheaper: numpy's argmax returns the first NaN
            # (and +inf beats every finite logit), so a finite chosen logit means no NaN or +inf
            # among the logits the decision considered, and a legal action. Before the
            # recurrent state moves.
            if not isfinite(chosen):
                raise nonfinite_logits()
            if h_in is not None:
                copyto(h_in, h_out)
            return action

        infer.__doc__ = Backend.infer.__doc__
        return infer
