"""TensorRT backend (Jetson / NVIDIA GPUs): engines built on the device, one CUDA stream,
``execute_async_v3``.

Engines only run on the GPU and TensorRT version that built them, so the backend uses an
``engine`` file from the manifest when one was built on this device (``kdx-runtime
build-engines``) and otherwise builds the engine from the agent's ONNX at load time
(:func:`build_engine`). CUDA is reached through ``libcudart`` with ctypes, so no extra Python
package (pycuda, cuda-python) is needed. Host buffers are pinned memory wrapped as numpy arrays.
Only symbolic TensorRT enum names are used (their numeric values changed between versions).
"""

from __future__ import annotations

import ctypes
import ctypes.util
import importlib
from typing import Any

import numpy as np

from kdx.errors import KdxError
from kdx.runtime.backends.base import Backend
from kdx.runtime.tensorrt_build import build_engine_bytes, plan_build

_H2D, _D2H = 1, 2  # cudaMemcpyKind
_CUDART_NAMES = ("libcudart.so", "libcudart.so.12", "libcudart.so.11.0", "libcudart.so.10.2")


def _load_cudart() -> ctypes.CDLL:
    found = ctypes.util.find_library("cudart")
    for name in ((found,) if found else ()) + _CUDART_NAMES:
        try:
            lib = ctypes.CDLL(name)
        except OSError:
            continue
        lib.cudaMemcpyAsync.argtypes = [ctypes.c_void_p, ctypes.c_void_p, ctypes.c_size_t,
                                        ctypes.c_int, ctypes.c_void_p]
        lib.cudaStreamSynchronize.argtypes = [ctypes.c_void_p]
        lib.cudaMalloc.argtypes = [ctypes.POINTER(ctypes.c_void_p), ctypes.c_size_t]
        lib.cudaMallocHost.argtypes = [ctypes.POINTER(ctypes.c_void_p), ctypes.c_size_t]
        lib.cudaStreamCreate.argtypes = [ctypes.POINTER(ctypes.c_void_p)]
        lib.cudaFree.argtypes = [ctypes.c_void_p]
        lib.cudaFreeHost.argtypes = [ctypes.c_void_p]
        lib.cudaStreamDestroy.argtypes = [ctypes.c_void_p]
        return lib
    raise KdxError("TensorRT backend: libcudart (the CUDA runtime) was not found")


def _check(status: int, what: str) -> None:
    if status != 0:
        raise KdxError(f"TensorRT backend: {what} failed with CUDA error {status}")


def build_engine(onnx_bytes: bytes, precision: str, source: str, workspace_mib: int = 256) -> bytes:
    """Parse an ONNX model and build a serialized TensorRT engine for this device, with the
    version-specific recipe of :func:`kdx.runtime.tensorrt_build.plan_build`."""
    trt = importlib.import_module("tensorrt")
    plan = plan_build(trt.__version__, precision)
    engine, _timing_cache = build_engine_bytes(trt, onnx_bytes, plan, source, workspace_mib=workspace_mib)
    return engine


class TensorRTBackend(Backend):
    """TensorRT execution context over pinned host buffers and device buffers, one stream."""

    name = "tensorrt"
    file_kinds = ("engine", "onnx", "onnx-dynamic")
    library = "tensorrt"
    install_hint = "it ships with JetPack on Jetson"

    @classmethod
    def unavailable_reason(cls) -> str | None:
        """TensorRT importable, and the CUDA runtime it runs on found."""
        reason = super().unavailable_reason()
        if reason is None:
            try:
                _load_cudart()
            except KdxError as exc:
                return str(exc)
        return reason

    def _load(self) -> None:
        import tensorrt as trt

        entry, path, data = self.read_model()
        if entry.kind != "engine":
            data = build_engine(data, self.agent.precision, str(path))
        self._cuda = _load_cudart()
        self._logger = trt.Logger(trt.Logger.WARNING)
        self._runtime = trt.Runtime(self._logger)
        self._engine = self._runtime.deserialize_cuda_engine(data)
        if self._engine is None:
            raise KdxError(f"{path}: not a TensorRT engine for this GPU/TensorRT version; "
                           "rebuild it on this device with `kdx-runtime build-engines`")
        self._context = self._engine.create_execution_context()
        stream = ctypes.c_void_p()
        _check(self._cuda.cudaStreamCreate(ctypes.byref(stream)), "cudaStreamCreate")
        self._stream = stream
        self._device_ptrs: list[ctypes.c_void_p] = []
        self._host_ptrs: list[ctypes.c_void_p] = []
        a = self.agent
        roles = {a.inputs.obs: "obs_buf", a.inputs.action_mask: "mask_buf", a.inputs.h_in: "h_in",
                 a.outputs.logits: "logits_buf", a.outputs.action: "action_buf",
                 a.outputs.h_out: "h_out"}
        self._copies_in: list[tuple[Any, Any, int]] = []
        self._copies_out: list[tuple[Any, Any, int]] = []
        for i in range(self._engine.num_io_tensors):
            name = self._engine.get_tensor_name(i)
            if name not in roles or name is None:
                raise KdxError(f"{path}: engine tensor {name!r} is not named in the manifest")
            is_input = self._engine.get_tensor_mode(name) == trt.TensorIOMode.INPUT
            dtype = np.dtype(trt.nptype(self._engine.get_tensor_dtype(name)))
            dims = tuple(self._engine.get_tensor_shape(name))
            if name == a.inputs.obs and dims and dims[-1] >= 0:
                self.check_model_input(int(dims[-1]), path)  # an engine built from another model
            shape = tuple(1 if d < 0 else d for d in dims)
            if is_input:
                self._context.set_input_shape(name, shape)
            host = self._pinned(shape, dtype)
            attr = roles[name]
            if getattr(self, attr, None) is not None:
                host[...] = getattr(self, attr).reshape(shape).astype(dtype)
            setattr(self, attr, host)
            device = ctypes.c_void_p()
            _check(self._cuda.cudaMalloc(ctypes.byref(device), host.nbytes), "cudaMalloc")
            self._device_ptrs.append(device)
            self._context.set_tensor_address(name, device.value)
            copy = (device.value, host.ctypes.data, host.nbytes)
            (self._copies_in if is_input else self._copies_out).append(copy)
        # TensorRT < 10 casts int64 outputs to int32; the action is read as an int either way.
        self._copies_out_d2h = [(h, d, n) for d, h, n in self._copies_out]

    def _pinned(self, shape: tuple[int, ...], dtype: np.dtype) -> np.ndarray:
        nbytes = int(np.prod(shape)) * dtype.itemsize
        ptr = ctypes.c_void_p()
        _check(self._cuda.cudaMallocHost(ctypes.byref(ptr), max(nbytes, 1)), "cudaMallocHost")
        self._host_ptrs.append(ptr)
        buffer = (ctypes.c_byte * max(nbytes, 1)).from_address(ptr.value)
        return np.frombuffer(buffer, dtype=dtype, count=int(np.prod(shape))).reshape(shape)

    def _infer_impl(self) -> int:
        copy, stream = self._cuda.cudaMemcpyAsync, self._stream
        for device, host, nbytes in self._copies_in:
            copy(device, host, nbytes, _H2D, stream)
        if not self._context.execute_async_v3(stream.value):
            raise KdxError(f"agent {self.agent.name!r}: TensorRT execution failed")
        for host, device, nbytes in self._copies_out_d2h:
            copy(host, device, nbytes, _D2H, stream)
        _check(self._cuda.cudaStreamSynchronize(stream), "cudaStreamSynchronize")
        return int(self.action_buf.reshape(-1)[0])

    def __del__(self) -> None:
        cuda = getattr(self, "_cuda", None)
        if cuda is None:
            return
        for ptr in getattr(self, "_device_ptrs", []):
            cuda.cudaFree(ptr)
        for ptr in getattr(self, "_host_ptrs", []):
            cuda.cudaFreeHost(ptr)
        if getattr(self, "_stream", None) is not None:
            cuda.cudaStreamDestroy(self._stream)
