"""The ``c`` backend's fast caller: a tiny CPython extension compiled beside the policy.

A ctypes call converts its arguments and builds a frame on every call (~0.3 µs here), which is
more than an 18-32-5 policy costs in C (~0.17 µs). Where Python's headers are installed (they
are wherever pip can build a C extension), the backend also compiles, with the policy's sources,
this extension (what cffi's API mode would generate, written out instead of adding cffi): one
function per bound decision path, taking the observation itself. It reads the observation
through the buffer protocol without copying it (a C-contiguous float32 buffer of exactly
``obs_dim`` values: ``[obs_dim]`` or ``[1, obs_dim]``) and calls ``kdx_<sym>_act`` with the
backend's own state, mask and logits buffers, which it holds in a capsule (one per bound
function: two backends of the same agent never share buffers). Anything else (float64, another
shape, not a buffer) returns None and the backend takes its checked ctypes path. Torch-free; the
C code checks NaN/inf itself, as on the ctypes path.

No Python headers: :func:`build_fast_caller` returns None with the reason, and the backend uses
ctypes alone.
"""

from __future__ import annotations

import hashlib
import importlib.machinery
import importlib.util
import sysconfig
from pathlib import Path
from types import ModuleType

from kdx.errors import KdxError
from kdx.runtime.c_build import Compiler, cached_library

EXTENSION_NAME = "kdx_rt_fastcall.c"
EXTENSION = r"""#define PY_SSIZE_T_CLEAN
#include <Python.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>
#include "@HEADER@"

/* One bound decision path: the backend's buffers (state may be NULL, mask NULL = all legal). */
typedef struct { void *state; const uint8_t *mask; float *logits; Py_ssize_t obs_dim; } kdx_rt_bound;

static const char CAPSULE[] = "kdx_rt_bound";

/* act(obs) -> int (the action, or a negative KDX_ERR_* code), or None if obs is not a
   C-contiguous float32 buffer of obs_dim values (the caller then takes its checked path). */
static PyObject *kdx_rt_act(PyObject *self, PyObject *obs)
{
    kdx_rt_bound *b = (kdx_rt_bound *)PyCapsule_GetPointer(self, CAPSULE);
    Py_buffer view;
    int code;
    if (b == NULL)
        return NULL;
    if (PyObject_GetBuffer(obs, &view, PyBUF_C_CONTIGUOUS | PyBUF_FORMAT) != 0) {
        PyErr_Clear();
        Py_RETURN_NONE;
    }
    if (view.itemsize != 4 || view.format == NULL || strcmp(view.format, "f") != 0
        || view.len != b->obs_dim * 4 || view.ndim < 1 || view.ndim > 2
        || (view.ndim == 2 && view.shape[0] != 1)) {
        PyBuffer_Release(&view);
        Py_RETURN_NONE;
    }
    code = @CALL@;
    PyBuffer_Release(&view);
    return PyLong_FromLong(code);
}

static PyMethodDef kdx_rt_act_def = {"act", (PyCFunction)kdx_rt_act, METH_O, "act(obs) -> int or None"};

static void kdx_rt_free(PyObject *capsule)
{
    free(PyCapsule_GetPointer(capsule, CAPSULE));
}

/* bind(state, mask, logits, obs_dim) -> act: addresses as ints (0 = NULL). */
static PyObject *kdx_rt_bind(PyObject *module, PyObject *args)
{
    unsigned long long state, mask, logits;
    Py_ssize_t obs_dim;
    kdx_rt_bound *b;
    PyObject *capsule, *function;
    if (!PyArg_ParseTuple(args, "KKKn", &state, &mask, &logits, &obs_dim))
        return NULL;
    b = (kdx_rt_bound *)malloc(sizeof *b);
    if (b == NULL)
        return PyErr_NoMemory();
    b->state = (void *)(uintptr_t)state;
    b->mask = (const uint8_t *)(uintptr_t)mask;
    b->logits = (float *)(uintptr_t)logits;
    b->obs_dim = obs_dim;
    capsule = PyCapsule_New(b, CAPSULE, kdx_rt_free);
    if (capsule == NULL) {
        free(b);
        return NULL;
    }
    function = PyCFunction_NewEx(&kdx_rt_act_def, capsule, NULL);
    Py_DECREF(capsule);
    return function;
}

static PyMethodDef kdx_rt_methods[] = {
    {"bind", kdx_rt_bind, METH_VARARGS, "bind(state, mask, logits, obs_dim) -> act"},
    {NULL, NULL, 0, NULL},
};

static struct PyModuleDef kdx_rt_module = {PyModuleDef_HEAD_INIT, "@MODULE@", NULL, -1, kdx_rt_methods};

PyMODINIT_FUNC PyInit_@MODULE@(void)
{
    return PyModule_Create(&kdx_rt_module);
}
"""


def python_include() -> tuple[str | None, str]:
    """``(folder holding Python.h, "")`` or ``(None, why)``."""
    folder = sysconfig.get_paths().get("include")
    if folder and (Path(folder) / "Python.h").is_file():
        return folder, ""
    return None, f"Python's headers are not installed (no Python.h in {folder}); install python3-dev for the fast caller"


def build_fast_caller(compiler: Compiler, sources: dict[str, bytes], header: str, call: str) -> tuple[ModuleType | None, str]:
    """``(module with bind(state, mask, logits, obs_dim) -> act, "")`` compiled from the policy's
    ``sources`` and the extension (``header``: the policy's header; ``call``: the C call, reading
    ``b->state``, ``view.buf``, ``b->mask``, ``b->logits``), cached like the ctypes library; or
    ``(None, why)`` when Python's headers are missing or it does not build."""
    include, why = python_include()
    if include is None:
        return None, why
    digest = hashlib.sha256(header.encode() + call.encode())
    for rel in sorted(sources):
        digest.update(rel.encode() + b"\0" + hashlib.sha256(sources[rel]).digest())
    module = f"kdx_rt_{digest.hexdigest()[:16]}"
    text = EXTENSION.replace("@HEADER@", header).replace("@CALL@", call).replace("@MODULE@", module)
    try:
        path = cached_library(compiler, {**sources, EXTENSION_NAME: text.encode()}, ("-I" + include,))
        loader = importlib.machinery.ExtensionFileLoader(module, str(path))
        spec = importlib.util.spec_from_file_location(module, str(path), loader=loader)
        if spec is None:
            return None, f"{path}: not loadable as an extension module"
        loaded = importlib.util.module_from_spec(spec)
        loader.exec_module(loaded)
    except (KdxError, ImportError, OSError) as exc:
        return None, f"the fast caller did not build ({str(exc).splitlines()[0]}); using ctypes"
    return loaded, ""
