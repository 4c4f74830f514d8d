"""The one small backend interface: ``infer()`` checks inputs, ``_infer_impl()`` runs the model.

Every backend runs over the same preallocated buffers (batch 1)::

    obs_buf     float32 [1, obs_dim + id_one_hot_size]   model input ``obs``
    mask_buf    bool    [1, n_actions]                   model input ``action_mask`` (True = legal)
    h_in/h_out  float32 [1, hidden]                      recurrent state (None if not recurrent)
    logits_buf  float32 [1, n_actions]                   model output ``logits`` after each call

``infer`` copies the caller's observation into ``obs_buf`` (one copy, no allocation), checks it,
calls the backend's ``_infer_impl() -> int``, applies the mask itself when the model has no
``action_mask`` input, checks the outcome, and carries the recurrent state. The outcome check:
NaN or inf logits (a finite observation can overflow the model, e.g. 3e38) raise KdxError, and
a graph action the mask forbids or out of range (the graph's ``Where(mask, logits, -1e9)`` loses
to legal logits below -1e9) is replaced by the masked argmax of the logits: an illegal action is
never returned. Backends bind the buffers once at load
(IOBinding, device pointers) so the per-call path does no allocation.
"""

from __future__ import annotations

import importlib
import math
from abc import ABC, abstractmethod
from pathlib import Path
from typing import ClassVar

import numpy as np

from kdx.errors import KdxError
from kdx.runtime.manifest import AgentEntry, FileEntry
from kdx.runtime.model_width import check_model_widths, width_error
from kdx.runtime.onnx_external import ONNX_FILE_KINDS, check_no_external_data

_INF = math.inf
_isfinite = math.isfinite
_sum = sum
_FEW_ACTIONS = 20  # up to here a Python sum of the logits costs less than a numpy dot (measured)
_F32 = np.dtype(np.float32)  # identity check first: the common case costs one comparison
_FLOAT_OBS = (_F32, np.dtype(np.float64))


def _describe(value: object) -> str:
    if isinstance(value, np.ndarray):
        return f"an array of shape {list(value.shape)} dtype {value.dtype}"
    return f"a {type(value).__name__}"


class Backend(ABC):
    """A loaded model of one agent, ready for batch-1 decisions."""

    name: ClassVar[str]
    #: model file kinds this backend can run, in order of preference
    file_kinds: ClassVar[tuple[str, ...]]
    #: the inference library it imports (None: numpy alone) and where to get it
    library: ClassVar[str | None] = None
    install_hint: ClassVar[str] = ""

    @classmethod
    def unavailable_reason(cls) -> str | None:
        """``None`` if the backend's library is importable here, else why not."""
        if cls.library is None:
            return None
        try:
            importlib.import_module(cls.library)
        except ImportError as exc:
            return f"{cls.library} not installed ({exc}); {cls.install_hint}"
        return None

    @classmethod
    def install_hint_for(cls, agent: AgentEntry) -> str | None:
        """What to install so that this backend runs ``agent`` here, e.g. ``onnxruntime (pip
        install 'kdx[runtime]')``; None if nothing is missing or nothing would help."""
        if agent.file_of_kind(*cls.file_kinds) is None or cls.unavailable_reason() is None:
            return None
        return f"{cls.library} ({cls.install_hint})"

    @classmethod
    def unsupported_reason(cls, agent: AgentEntry) -> str | None:
        """``None`` if this backend can run ``agent`` from its listed files, else why not."""
        if agent.file_of_kind(*cls.file_kinds) is None:
            return f"agent {agent.name!r} has no file of kind {'/'.join(cls.file_kinds)}"
        return None

    def __init__(self, agent: AgentEntry, bundle_dir: Path) -> None:
        self.agent = agent
        self.bundle_dir = Path(bundle_dir)
        n, width = agent.n_actions, agent.model_input_dim
        self.obs_buf = np.zeros((1, width), dtype=np.float32)
        self.mask_buf = np.ones((1, n), dtype=np.bool_)
        self.logits_buf = np.zeros((1, n), dtype=np.float32)
        state = agent.recurrent_state_shape
        self.h_in = np.zeros(state, dtype=np.float32) if state else None
        self.h_out = np.zeros(state, dtype=np.float32) if state else None
        #: what this backend runs (file, and for the numpy sidecar its float32 weights)
        self.source = ""
        check_model_widths(agent, self.bundle_dir)  # every backend: the files agree with the manifest
        self._load()  # may replace the buffers above with its own (same shapes)
        self.source = self.source or self.model_file()[0].path
        self._check_buffers()
        if agent.id_one_hot_size:
            self.obs_buf[0, agent.obs_dim:] = 0.0
            self.obs_buf[0, agent.obs_dim + agent.id_index] = 1.0
        self._obs_view = self.obs_buf[0, : agent.obs_dim]
        self._ones = np.ones(agent.obs_dim, dtype=np.float32)
        self._logits_row = self.logits_buf[0]
        self._logits_list = self._logits_row.tolist
        self._ones_actions = np.ones(n, dtype=np.float32)
        self._n_actions = n
        self._few_actions = n <= _FEW_ACTIONS
        self._mask_view = self.mask_buf[0]
        self._obs_shapes = ((agent.obs_dim,), (1, agent.obs_dim))
        self._mask_shapes = ((n,), (1, n))
        self._mask_in_graph = agent.inputs.action_mask is not None
        self._mask_all_true = True
        self._masked_logits = np.empty(n, dtype=np.float32)
        self._neg_inf = np.full(n, -_INF, dtype=np.float32)

    # --- to implement ---------------------------------------------------------------------
    @abstractmethod
    def _load(self) -> None:
        """Open the model file and bind the buffers; raise KdxError naming the file on failure."""

    @abstractmethod
    def _infer_impl(self) -> int:
        """One decision from the buffers; writes ``logits_buf`` (and ``h_out``), returns the
        graph's action (argmax of the masked logits when the mask is in the graph)."""

    # --- shared ----------------------------------------------------------------------------
    def model_file(self) -> tuple[FileEntry, Path]:
        entry = self.agent.file_of_kind(*self.file_kinds)
        if entry is None:
            raise KdxError(self.unsupported_reason(self.agent) or "no model file")
        return entry, self.bundle_dir / entry.path

    def read_model(self) -> tuple[FileEntry, Path, bytes]:
        """The model file's entry, path and bytes; an unreadable file, or an ONNX model with
        external data (outside the bundle), is a KdxError naming it."""
        entry, path = self.model_file()
        try:
            data = path.read_bytes()
        except OSError as exc:
            raise KdxError(f"{path}: cannot be read ({exc.strerror})") from None
        if entry.kind in ONNX_FILE_KINDS:
            check_no_external_data(data, str(path))
        return entry, path, data

    def check_model_input(self, width: object, path: Path) -> None:
        """KdxError when the model at ``path`` reads ``width`` observation values but the manifest
        says another number (with a view: the view's width). A symbolic ``width`` is not checked.
        Every model file's width is checked before ``_load`` (:mod:`kdx.runtime.model_width`);
        this checks what a backend actually loaded (an onnxruntime session, a TensorRT engine)."""
        if isinstance(width, int) and width != self.agent.model_input_dim:
            raise width_error(self.agent, path.name, width, self.agent.model_input_dim)

    def _check_buffers(self) -> None:
        a = self.agent
        expected = {
            "obs_buf": ((1, a.model_input_dim), np.float32),
            "mask_buf": ((1, a.n_actions), np.bool_),
            "logits_buf": ((1, a.n_actions), np.float32),
        }
        for key, (shape, dtype) in expected.items():
            buf = getattr(self, key)
            if buf.shape != shape or buf.dtype != dtype:  # a backend bug, not a user error
                raise RuntimeError(f"{self.name}: {key} is {buf.shape} {buf.dtype}, want {shape}")

    def reset(self) -> None:
        """Start of an episode: zero the recurrent state."""
        if self.h_in is not None:
            self.h_in.fill(0.0)
            self.h_out.fill(0.0)

    def infer(self, obs: np.ndarray, mask: np.ndarray | None = None) -> int:
        """One decision. ``obs``: float32/float64 [obs_dim] or [1, obs_dim], finite;
        ``mask``: bool or integer [n_actions] (nonzero = legal), at least one legal action."""
        try:  # attribute checks inside try: free when they pass (this is the per-decision path)
            dtype = obs.dtype
            bad = obs.shape not in self._obs_shapes or (dtype is not _F32 and dtype not in _FLOAT_OBS)
        except AttributeError:
            bad = True
        if bad or not isinstance(obs, np.ndarray):
            raise self._observation_error(obs)
        view = self._obs_view
        view[:] = obs
        # One dot product with ones (the sum) catches NaN and inf: they propagate, and inf - inf
        # is NaN. It costs less than np.isfinite().all(); the exact check runs only if it fires,
        # so a sum overflowing on huge finite values is not refused.
        if not _isfinite(view.dot(self._ones)) and not np.isfinite(view).all():
            raise self._nonfinite_error()
        if mask is None:
            if not self._mask_all_true:
                self._mask_view.fill(True)
                self._mask_all_true = True
            action = self._infer_impl()
            if not 0 <= action < self._n_actions:  # a graph's action is trusted no further
                action = self._masked_argmax(self._logits_row)
        else:
            self._set_mask(mask)
            action = self._infer_impl()
            if not self._mask_in_graph or not (0 <= action < self._n_actions and self._mask_view[action]):
                action = self._masked_argmax(self._logits_row)
        # Python sums few float32 logits in double precision, cheaper than a numpy call: finite
        # exactly when every logit is (NaN and inf propagate, nothing overflows).
        if not (_isfinite(_sum(self._logits_list())) if self._few_actions else self._many_logits_finite()):
            raise self._nonfinite_logits_error()
        if self.h_in is not None:
            np.copyto(self.h_in, self.h_out)
        return action

    def _copy_other_observation(self, obs: object) -> None:
        """The compiled ``infer`` paths' slow branch: check an observation that is not a flat
        float32 array of the right shape (float64, or ``[1, obs_dim]`` is fine; anything else is a
        KdxError) and copy it into ``obs_buf``."""
        try:
            dtype = obs.dtype  # type: ignore[attr-defined]
            bad = obs.shape not in self._obs_shapes or (dtype is not _F32 and dtype not in _FLOAT_OBS)  # type: ignore[attr-defined]
        except AttributeError:
            bad = True
        if bad or not isinstance(obs, np.ndarray):
            raise self._observation_error(obs)
        np.copyto(self.obs_buf[:, : self.agent.obs_dim], obs)

    def _many_logits_finite(self) -> bool:
        """True if no logit of the last decision is NaN or inf (many actions: one numpy dot, as
        for the observation, with the exact check if it fires)."""
        return _isfinite(self._logits_row.dot(self._ones_actions)) or bool(np.isfinite(self._logits_row).all())

    def _set_mask(self, mask: np.ndarray) -> None:
        if not isinstance(mask, np.ndarray) or mask.shape not in self._mask_shapes \
                or mask.dtype.kind not in "biu":
            shape = getattr(mask, "shape", None)
            raise KdxError(
                f"agent {self.agent.name!r}: action mask must be a bool (or integer 0/1) array of "
                f"shape [{self.agent.n_actions}], got {type(mask).__name__} {shape}"
            )
        np.not_equal(mask, 0, out=self.mask_buf)  # [n] and [1, n] both broadcast to [1, n]
        self._mask_all_true = False
        if not self._mask_view.any():
            raise KdxError(f"agent {self.agent.name!r}: action mask has no legal action")

    def _masked_argmax(self, logits: np.ndarray) -> int:
        """``argmax(where(mask, logits, -inf))`` over preallocated buffers (no allocation)."""
        masked = self._masked_logits
        np.copyto(masked, self._neg_inf)
        np.copyto(masked, logits, where=self._mask_view)
        return int(masked.argmax())

    def _observation_error(self, obs: object) -> KdxError:
        return KdxError(
            f"agent {self.agent.name!r}: observation is {_describe(obs)}; expected a numpy "
            f"float32 array of shape [{self.agent.obs_dim}] (or [1, {self.agent.obs_dim}])"
        )

    def _nonfinite_error(self) -> KdxError:
        return KdxError(f"agent {self.agent.name!r}: observation contains NaN or inf (or "
                        "float64 values beyond the float32 range)")

    def _nonfinite_logits_error(self) -> KdxError:
        largest = float(np.abs(self._obs_view).max())
        return KdxError(f"agent {self.agent.name!r}: the model's logits are NaN or inf for this "
                        f"observation (largest |value| {largest:.3g}): no action is safe to take; "
                        "check the observation's scale (the model was trained on normalised inputs)")

    def logits(self) -> np.ndarray:
        """A copy of the logits of the last decision, float32 [n_actions]."""
        return self.logits_buf[0].copy()
