"""Building TensorRT engines from ONNX, for every supported TensorRT version (torch-free).

Shared by ``kdx-runtime build-engines`` (``kdx.export.tensorrt``) and the runtime's TensorRT
backend, which builds an engine at load time when the bundle has none for this device.

Versions (``kdx/devices`` profiles name them):

* TensorRT 8.x (JetPack 4.6: 8.2, JetPack 5: 8.5): networks need the ``EXPLICIT_BATCH``
  creation flag; precision by builder flags (``FP16``; ``INT8`` for the Q/DQ models);
  workspace by ``set_memory_pool_limit`` from 8.4 (``max_workspace_size`` before).
* TensorRT 10.x (JetPack 6): explicit batch only (``create_network(0)``), builder flags as above.
* TensorRT 11.x (JetPack 7): no FP16/INT8 builder flags and no calibrator; the network is
  strongly typed and the precision comes from the ONNX itself (fp16 weights, or Q/DQ nodes).

Only symbolic enum names are used: their numeric values changed between versions. The dispatch
(:func:`plan_build`) is plain Python and tested without TensorRT.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from kdx.errors import KdxError

TENSORRT_MISSING = "TensorRT not found: build engines on the Jetson (JetPack ships it)"
MIN_VERSION = (8, 2)


@dataclass(frozen=True)
class TrtBuildPlan:
    """How to build with one TensorRT version at one precision (no TensorRT objects in here).

    ``network_flags`` and ``builder_flags`` are symbolic names of
    ``trt.NetworkDefinitionCreationFlag`` and ``trt.BuilderFlag``.
    """

    tensorrt_version: str
    major: int
    precision: str
    network_flags: tuple[str, ...]
    builder_flags: tuple[str, ...]
    workspace_api: str  # "set_memory_pool_limit" | "max_workspace_size"
    cleared_flags: tuple[str, ...] = ()  # BuilderFlags switched off (TF32 for true fp32)

    @property
    def strongly_typed(self) -> bool:
        return "STRONGLY_TYPED" in self.network_flags


def parse_version(version: str) -> tuple[int, int]:
    """``"10.3.0.30"`` -> ``(10, 3)``; KdxError for anything else."""
    parts = str(version).split(".")
    try:
        return int(parts[0]), int(parts[1]) if len(parts) > 1 else 0
    except ValueError:
        raise KdxError(f"cannot read the TensorRT version {version!r}") from None


def plan_build(tensorrt_version: str, precision: str) -> TrtBuildPlan:
    """The build recipe for ``precision`` (fp32/fp16/int8) with TensorRT ``tensorrt_version``."""
    major, minor = parse_version(tensorrt_version)
    if (major, minor) < MIN_VERSION:
        raise KdxError(f"TensorRT {tensorrt_version} is too old: kdx needs >= 8.2 "
                       "(JetPack 4.6 or newer)")
    if precision not in ("fp32", "fp16", "int8"):
        raise KdxError(f"unknown precision {precision!r}; valid precisions: fp32, fp16, int8")
    if major >= 11:
        # Strongly typed: layer precisions follow the ONNX types (fp16 weights, Q/DQ nodes).
        return TrtBuildPlan(tensorrt_version, major, precision, ("STRONGLY_TYPED",), (),
                            "set_memory_pool_limit")
    network_flags = ("EXPLICIT_BATCH",) if major < 10 else ()
    # INT8 enables the int8 kernels the explicit Q/DQ nodes ask for (no calibrator needed).
    builder_flags = {"fp32": (), "fp16": ("FP16",), "int8": ("INT8",)}[precision]
    workspace = "set_memory_pool_limit" if (major, minor) >= (8, 4) else "max_workspace_size"
    # TF32 is on by default on Ampere (Orin): fp32 would then not match the fp32 parity check.
    cleared = ("TF32",) if precision == "fp32" else ()
    return TrtBuildPlan(tensorrt_version, major, precision, network_flags, builder_flags, workspace,
                        cleared)


def import_tensorrt() -> Any:
    """The ``tensorrt`` module, or KdxError saying where engines are built."""
    try:
        import tensorrt
    except ImportError:
        raise KdxError(TENSORRT_MISSING) from None
    return tensorrt


def build_engine_bytes(trt: Any, onnx_bytes: bytes, plan: TrtBuildPlan, source: str,
                       timing_cache: bytes = b"", workspace_mib: int = 256) -> tuple[bytes, bytes]:
    """Parse the ONNX and build a serialized engine; returns ``(plan bytes, timing cache bytes)``."""
    logger = trt.Logger(trt.Logger.WARNING)
    builder = trt.Builder(logger)
    flags = 0
    for name in plan.network_flags:
        flags |= 1 << int(getattr(trt.NetworkDefinitionCreationFlag, name))
    network = builder.create_network(flags)
    parser = trt.OnnxParser(network, logger)
    if not parser.parse(onnx_bytes):
        errors = "; ".join(str(parser.get_error(i)) for i in range(parser.num_errors))
        raise KdxError(f"{source}: TensorRT {plan.tensorrt_version} cannot parse the ONNX ({errors})")
    config = builder.create_builder_config()
    if plan.workspace_api == "set_memory_pool_limit":
        config.set_memory_pool_limit(trt.MemoryPoolType.WORKSPACE, workspace_mib << 20)
    else:
        config.max_workspace_size = workspace_mib << 20
    for name in plan.builder_flags:
        config.set_flag(getattr(trt.BuilderFlag, name))
    for name in plan.cleared_flags:
        if hasattr(trt.BuilderFlag, name):
            config.clear_flag(getattr(trt.BuilderFlag, name))
    cache = config.create_timing_cache(timing_cache)
    config.set_timing_cache(cache, False)
    dynamic = [network.get_input(i) for i in range(network.num_inputs)
               if any(d < 0 for d in network.get_input(i).shape)]
    if dynamic:  # a dynamic-batch model is built for batch 1, the runtime's shape
        profile = builder.create_optimization_profile()
        for tensor in dynamic:
            shape = tuple(1 if d < 0 else d for d in tensor.shape)
            profile.set_shape(tensor.name, shape, shape, shape)
        config.add_optimization_profile(profile)
    serialized = builder.build_serialized_network(network, config)
    if serialized is None:
        raise KdxError(f"{source}: TensorRT {plan.tensorrt_version} failed to build an engine "
                       "(see its log above)")
    return bytes(serialized), bytes(config.get_timing_cache().serialize())
