"""Inference backends behind one interface (:class:`~kdx.runtime.backends.base.Backend`).

The registry is filled here, in one place. Importing this package imports no inference library:
each backend imports onnxruntime / tensorrt only when it loads a model (the c backend
compiles the bundle's C code then).
"""

from __future__ import annotations

from kdx.runtime.backends.base import Backend
from kdx.runtime.backends.c_backend import CBackend
from kdx.runtime.backends.numpy_backend import NumpyBackend
from kdx.runtime.backends.onnxruntime_backend import OnnxRuntimeBackend
from kdx.runtime.backends.tensorrt_backend import TensorRTBackend

BACKENDS: dict[str, type[Backend]] = {
    "tensorrt": TensorRTBackend,
    "onnxruntime": OnnxRuntimeBackend,
    "numpy": NumpyBackend,
    "c": CBackend,
}


def available_backends() -> dict[str, str | None]:
    """Each backend name -> ``None`` if usable here, else the reason it is not."""
    return {name: cls.unavailable_reason() for name, cls in BACKENDS.items()}


__all__ = ["BACKENDS", "Backend", "available_backends"]
