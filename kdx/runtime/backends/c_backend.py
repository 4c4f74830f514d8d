"""The ``c`` backend: the bundle's generated C code (``kdx export --target c``), compiled here.

At load it reads the agent's C files (its ``c_source`` and the ``c_header`` files it lists),
checks each against the manifest's sha256 (a mismatch refuses the bundle: the library would not
be the code that passed parity at export), and compiles them into a shared library with this
machine's C compiler, cached by the sources' hashes, the compiler and the flags
(:mod:`kdx.runtime.c_build`: ``$KDX_CACHE_DIR/c/`` else ``~/.cache/kdx/c/``). No compiler here:
the backend is unavailable, with the reason (``auto`` then skips it).

The per-decision path is one copy of the observation into a preallocated float32 buffer and one
ctypes call with one argument: a shim compiled beside the policy (``kdx_rt_call``, see
:data:`SHIM`) reads the state, observation, mask and logits pointers from a small array bound at
load (one with the mask, one without) and calls ``kdx_<sym>_act`` (ctypes converts each argument
on every call; one pointer instead of four halves the call's cost). The C code checks the
observation (NaN/inf), applies the mask, refuses NaN/inf logits and writes the recurrent state
in place (only when it returns an action), so Python adds no scan of its own. The negative
``KDX_ERR_*`` codes become KdxError with the same messages as the other backends.
"""

from __future__ import annotations

import ctypes
from collections.abc import Callable
from pathlib import Path

import numpy as np

from kdx.errors import KdxError
from kdx.fileio import sha256_bytes
from kdx.runtime.backends.base import _F32, Backend
from kdx.runtime.c_build import cached_library, find_compiler, load_library
from kdx.runtime.c_fastcall import build_fast_caller
from kdx.runtime.manifest import AgentEntry

#: the generated code's error codes (kdx.export.c_codegen.ERROR_CODES; restated here, the
#: runtime does not import the exporter)
ERR_NONFINITE_INPUT, ERR_NO_LEGAL_ACTION, ERR_NONFINITE_LOGITS = -1, -2, -3
_C_KINDS = ("c_source", "c_header")
SHIM_NAME = "kdx_rt_shim.c"
#: the one-argument entry point compiled with the agent's source (@HEADER@, @SYM@ and @CALL@
#: filled in); not part of the bundle, kdx's own code
SHIM = """#include "@HEADER@"
/* pointers: state (or unused), obs, mask (or NULL), logits */
int kdx_rt_call(void *const *p)
{
    return @CALL@;
}
"""


class CBackend(Backend):
    """Batch-1 decisions through the agent's generated C code, compiled on this machine."""

    name = "c"
    file_kinds = ("c_source",)
    install_hint = "install a C compiler (e.g. apt-get install gcc), or set $CC"

    @classmethod
    def unavailable_reason(cls) -> str | None:
        compiler, why = find_compiler()
        return None if compiler is not None else f"{why}; {cls.install_hint}"

    @classmethod
    def install_hint_for(cls, agent: AgentEntry) -> str | None:
        return None  # a compiler is not a pip install; other backends run the bundle's ONNX/npz

    @classmethod
    def unsupported_reason(cls, agent: AgentEntry) -> str | None:
        if agent.file_of_kind("c_source") is None or agent.c_symbol is None:
            return (f"agent {agent.name!r} has no C source (export with `kdx export RUN --target c` "
                    "for the c backend)")
        return None

    def __init__(self, agent: AgentEntry, bundle_dir: Path) -> None:
        super().__init__(agent, bundle_dir)
        self.infer = self._compile_infer()  # type: ignore[method-assign]

    def _sources(self) -> dict[str, bytes]:
        """The agent's C files, each checked against the manifest's sha256."""
        sources: dict[str, bytes] = {}
        for entry in self.agent.files:
            if entry.kind not in _C_KINDS:
                continue
            path = self.bundle_dir / entry.path
            try:
                data = path.read_bytes()
            except OSError as exc:
                raise KdxError(f"{path}: cannot be read ({exc.strerror}); copy the whole bundle") from None
            if sha256_bytes(data) != entry.sha256:
                raise KdxError(f"{path}: sha256 does not match the manifest (modified after export?); "
                               "refusing to compile this bundle's C code: copy the bundle again or re-export it")
            sources[entry.path] = data
        return sources

    def _load(self) -> None:
        reason = self.unsupported_reason(self.agent)
        if reason:
            raise KdxError(reason)
        compiler, why = find_compiler()
        if compiler is None:
            raise KdxError(f"backend c: {why}; {self.install_hint}")
        sources = self._sources()
        library_path = cached_library(compiler, {**sources, SHIM_NAME: self._shim(sources).encode()})
        self._library = load_library(library_path)  # kept: the function pointers live in it
        if self.h_in is not None:
            self.h_out = self.h_in  # the C code updates the state in place, on success only
        self._call = self._library.kdx_rt_call
        self._call.argtypes = [ctypes.c_void_p]
        self._call.restype = ctypes.c_int
        self._bound = (self._pointers(False), self._pointers(True))  # the shim's arguments, kept alive
        self._fast, self.fast_caller_note = self._fast_callers(compiler, sources)
        self.source = f"{self.model_file()[0].path} (compiled: {library_path.name}" + \
            (", fast caller)" if self._fast else f", ctypes: {self.fast_caller_note})")

    def _fast_callers(self, compiler, sources: dict[str, bytes]) -> tuple[tuple | None, str]:
        """``act(obs)`` without and with the mask, from :mod:`kdx.runtime.c_fastcall` (None and
        the reason where it cannot be built: the ctypes path then serves every call)."""
        sym = self.agent.c_symbol
        state = f"(kdx_{sym}_state *)b->state, " if self.h_in is not None else ""
        call = f"kdx_{sym}_act({state}(const float *)view.buf, b->mask, b->logits)"
        module, why = build_fast_caller(compiler, sources, self._header(sources), call)
        if module is None:
            return None, why
        state_addr = self.h_in.ctypes.data if self.h_in is not None else 0
        logits, width = self.logits_buf.ctypes.data, self.agent.obs_dim
        return (module.bind(state_addr, 0, logits, width), module.bind(state_addr, self.mask_buf.ctypes.data, logits, width)), ""

    def _header(self, sources: dict[str, bytes]) -> str:
        source = self.agent.file_of_kind("c_source").path
        header = source[:-2] + ".h"
        if header not in sources:
            raise KdxError(f"agent {self.agent.name!r}: the manifest lists {source} but not its header {header}; "
                           "re-export the bundle")
        return header

    def _shim(self, sources: dict[str, bytes]) -> str:
        header = self._header(sources)
        sym = self.agent.c_symbol
        state = f"(kdx_{sym}_state *)p[0], " if self.h_in is not None else ""
        call = f"kdx_{sym}_act({state}(const float *)p[1], (const uint8_t *)p[2], (float *)p[3])"
        return SHIM.replace("@HEADER@", header).replace("@CALL@", call)

    def _pointers(self, with_mask: bool) -> np.ndarray:
        """The shim's argument: uint64 [4] addresses of state, obs, mask (0: NULL), logits."""
        state = self.h_in.ctypes.data if self.h_in is not None else 0
        mask = self.mask_buf.ctypes.data if with_mask else 0
        return np.array([state, self.obs_buf.ctypes.data, mask, self.logits_buf.ctypes.data], dtype=np.uint64)

    def _infer_impl(self) -> int:  # the plain path (Backend.infer); infer() is _compile_infer's
        code = self._call(self._bound[0 if self._mask_all_true else 1].ctypes.data)
        if code < 0:
            raise self._error(code)
        return code

    def _error(self, code: int) -> KdxError:
        if code == ERR_NONFINITE_INPUT:
            return self._nonfinite_error()
        if code == ERR_NONFINITE_LOGITS:
            return self._nonfinite_logits_error()
        if code == ERR_NO_LEGAL_ACTION:
            return KdxError(f"agent {self.agent.name!r}: action mask has no legal action")
        return KdxError(f"agent {self.agent.name!r}: the C policy returned error code {code}")

    def _compile_infer(self) -> Callable[..., int]:
        """:meth:`Backend.infer` specialised to one ctypes call: the same checks and errors, the
        buffers' addresses bound once, the finiteness checks left to the C code; with the fast
        caller in front of it, for the observations that caller takes."""
        call, error = self._call, self._error
        obs_view, flat_shape = self._obs_view, (self.agent.obs_dim,)
        ndarray, copy_other_observation = np.ndarray, self._copy_other_observation
        no_mask, with_mask = (p.ctypes.data for p in self._bound)
        set_mask = self._set_mask

        def infer(obs: np.ndarray, mask: np.ndarray | None = None) -> int:
            if type(obs) is ndarray and obs.dtype is _F32 and obs.shape == flat_shape:
                obs_view[...] = obs
            else:
                copy_other_observation(obs)
            if mask is None:
                code = call(no_mask)
            else:
                set_mask(mask)
                code = call(with_mask)
            if code < 0:
                raise error(code)
            return code

        infer.__doc__ = Backend.infer.__doc__
        if self._fast is None:
            return infer
        fast_no_mask, fast_with_mask = self._fast

        def fast_infer(obs: np.ndarray, mask: np.ndarray | None = None) -> int:
            if mask is None:
                code = fast_no_mask(obs)
            else:
                set_mask(mask)
                code = fast_with_mask(obs)
            if code is None:  # not a flat float32 observation of obs_dim values: the checked path
                return infer(obs, mask)
            if code < 0:
                raise error(code)
            return code

        fast_infer.__doc__ = Backend.infer.__doc__
        return fast_infer
