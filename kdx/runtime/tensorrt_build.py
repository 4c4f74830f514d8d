"""TensorRT engines from a bundle's ONNX, built on the device (torch-free; TensorRT imported lazily).

``kdx-runtime build-engines BUNDLE`` runs :func:`build_engines` on a Jetson: one engine per
agent (students and teacher), written as a plain serialized plan (``trtexec --loadEngine`` can
read it) with its metadata in a JSON file beside it, plus one shared timing cache; the manifest
then lists them (kinds ``engine``, ``json``, ``timing-cache``) and is rewritten atomically. The
runtime's TensorRT backend uses the same recipe (:func:`build_engine_bytes`) to build an engine
at load time when the bundle has none for this device. The workstation side only writes
``build_engines.sh`` (``kdx.export.trtexec``), from the engine paths defined here.

Versions (``kdx/devices`` profiles name them):

* TensorRT 8.x (JetPack 4.6: 8.2, JetPack 5: 8.5): networks need the ``EXPLICIT_BATCH``
  creation flag; precision by builder flags (``FP16``; ``INT8`` for the Q/DQ models);
  workspace by ``set_memory_pool_limit`` from 8.4 (``max_workspace_size`` before).
* TensorRT 10.x (JetPack 6): explicit batch only (``create_network(0)``), builder flags as above.
* TensorRT 11.x (JetPack 7): no FP16/INT8 builder flags and no calibrator; the network is
  strongly typed and the precision comes from the ONNX itself (fp16 weights, or Q/DQ nodes).

Only symbolic enum names are used: their numeric values changed between versions. The dispatch
(:func:`plan_build`) and the manifest bookkeeping are plain Python and tested without TensorRT.
"""


from __future__ import annotations

import json
import platform
import time
from dataclasses import asdict, dataclass, replace
from pathlib import Path, PurePosixPath
from typing import Any

from kdx import __version__
from kdx.devices.targets import PRECISIONS
from kdx.errors import KdxError
from kdx.fileio import atomic_write_bytes, sha256_bytes
from kdx.runtime.manifest import AgentEntry, FileEntry, Manifest, load_manifest, write_manifest
from kdx.runtime.onnx_external import check_no_external_data

TENSORRT_MISSING = "TensorRT not found: build engines on the Jetson (JetPack ships it)"
MIN_VERSION = (8, 2)
ENGINE_DIR = "engines"
TIMING_CACHE = f"{ENGINE_DIR}/timing.cache"
ENGINE_KINDS = ("engine", "timing-cache")


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
    if precision not in PRECISIONS:
        raise KdxError(f"unknown precision {precision!r}; valid precisions: {', '.join(PRECISIONS)}")
    if major >= 11:
        # Strongly typed: layer precisions follow the ONNX types (fp16 weights, Q/DQ nodes).
        return TrtBuildPlan(tensorrt_version, major, precision, ("STRONGLY_TYPED",), (),
                            "set_memory_pool_limit")
    network_flags = ("EXPLICIT_BATCH",) if major < 10 else ()
    flag = PRECISIONS[precision].tensorrt_flag  # INT8: the kernels the Q/DQ nodes ask for, no calibrator
    builder_flags = (flag,) if flag else ()
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
    """Parse the ONNX and build a serialized engine; returns ``(plan bytes, timing cache bytes)``.
    An ONNX model with external data is refused (the parser would read it from the cwd)."""
    check_no_external_data(onnx_bytes, source)
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


# ------------------------------------------------------------------ bundle bookkeeping
@dataclass
class EngineRecord:
    """One built engine, as listed beside it (``<engine>.json``) and in the manifest.

    ``users`` are the ``[role, agent]`` pairs whose model it is (agents sharing one ONNX file,
    like a shared teacher actor with a runtime-appended agent id, share one engine).
    """

    users: list[list[str]]
    onnx: str
    onnx_sha256: str
    engine: str
    engine_sha256: str
    size_bytes: int
    precision: str
    tensorrt_version: str
    network_flags: list[str]
    builder_flags: list[str]
    build_seconds: float
    host: str
    built_at: str
    kdx_version: str = __version__

    @property
    def metadata_path(self) -> str:
        return self.engine + ".json"


def engine_path_for(onnx_path: str) -> str:
    """``teacher/agent_0.fp16.onnx`` -> ``engines/teacher/agent_0.fp16.engine``."""
    pure = PurePosixPath(onnx_path)
    return str(PurePosixPath(ENGINE_DIR) / pure.with_suffix(".engine"))


def engine_source(entry: AgentEntry) -> FileEntry:
    """The static batch-1 ONNX an agent's engine is built from."""
    source = entry.file_of_kind("onnx")
    if source is None:
        raise KdxError(f"{entry.role} {entry.name!r} has no static ONNX model to build an engine from")
    return source


def _write_bytes(path: Path, data: bytes) -> None:
    """Write atomically: an engine is never half-written."""
    atomic_write_bytes(path, data)


def store_engine(bundle_dir: Path, entries: list[AgentEntry], plan: TrtBuildPlan, engine: bytes,
                 build_seconds: float) -> EngineRecord:
    """Write an engine built from the ONNX of ``entries`` (one file) and its metadata JSON
    beside it; return the record."""
    entry = entries[0]
    source = engine_source(entry)
    record = EngineRecord(
        users=[[e.role, e.name] for e in entries], onnx=source.path, onnx_sha256=source.sha256,
        engine=engine_path_for(source.path), engine_sha256=sha256_bytes(engine),
        size_bytes=len(engine), precision=entry.precision, tensorrt_version=plan.tensorrt_version,
        network_flags=list(plan.network_flags), builder_flags=list(plan.builder_flags),
        build_seconds=build_seconds, host=f"{platform.node()} ({platform.machine()})",
        built_at=time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
    )
    _write_bytes(bundle_dir / record.engine, engine)
    _write_bytes(bundle_dir / record.metadata_path, (json.dumps(asdict(record), indent=2) + "\n").encode())
    return record


def with_engines(manifest: Manifest, bundle_dir: Path, records: list[EngineRecord],
                 timing_cache: str | None) -> Manifest:
    """A copy of ``manifest`` whose agents list their engine, its metadata and the timing cache
    (earlier engine entries of those agents are replaced)."""
    by_key = {(role, agent): r for r in records for role, agent in r.users}
    cache_entry = None if timing_cache is None else FileEntry.of_file(bundle_dir, timing_cache, "timing-cache")

    def updated(entry: AgentEntry) -> AgentEntry:
        record = by_key.get((entry.role, entry.name))
        if record is None:
            return entry
        stale = {record.engine, record.metadata_path}
        files = [f for f in entry.files if f.kind not in ENGINE_KINDS and f.path not in stale]
        files.append(FileEntry(record.engine, record.engine_sha256, "engine", record.size_bytes))
        files.append(FileEntry.of_file(bundle_dir, record.metadata_path, "json"))
        if cache_entry is not None:
            files.append(cache_entry)
        return replace(entry, files=files)

    return replace(manifest, agents=[updated(e) for e in manifest.agents],
                   teacher=[updated(e) for e in manifest.teacher])


def build_engines(bundle_dir: str | Path, workspace_mib: int = 256, agents: list[str] | None = None,
                  trt: Any = None, log: Any = print) -> list[EngineRecord]:
    """Build one engine per agent of the bundle on this device and list them in its manifest."""
    from kdx.runtime.bundle import verify_files  # here: bundle -> backends -> this module

    bundle = Path(bundle_dir)
    manifest = load_manifest(bundle)
    trt = trt or import_tensorrt()
    verify_files(bundle, manifest)
    entries = [e for e in manifest.entries() if agents is None or e.name in agents]
    if agents is not None:
        unknown = sorted(set(agents) - {e.name for e in manifest.entries()})
        if unknown:
            names = ", ".join(sorted({e.name for e in manifest.entries()}))
            raise KdxError(f"bundle has no agent(s) {', '.join(unknown)}; it has: {names}")
    cache_path = bundle / TIMING_CACHE
    cache = cache_path.read_bytes() if cache_path.is_file() else b""
    records = []
    for onnx_path, users in group_by_source(entries).items():
        precision = users[0].precision
        plan = plan_build(trt.__version__, precision)
        who = ", ".join(f"{e.role} {e.name}" for e in users)
        log(f"building {who} ({precision}, TensorRT {plan.tensorrt_version}) from {onnx_path}")
        start = time.perf_counter()
        engine, cache = build_engine_bytes(trt, (bundle / onnx_path).read_bytes(), plan,
                                           str(bundle / onnx_path), cache, workspace_mib)
        records.append(store_engine(bundle, users, plan, engine, time.perf_counter() - start))
    _write_bytes(cache_path, cache)
    write_manifest(bundle, with_engines(manifest, bundle, records, TIMING_CACHE))
    return records


def group_by_source(entries: list[AgentEntry]) -> dict[str, list[AgentEntry]]:
    """Entries grouped by the ONNX file their engine is built from (one build per file)."""
    groups: dict[str, list[AgentEntry]] = {}
    for entry in entries:
        groups.setdefault(engine_source(entry).path, []).append(entry)
    for path, users in groups.items():
        precisions = {e.precision for e in users}
        if len(precisions) > 1:
            raise KdxError(f"{path} is listed with precisions {sorted(precisions)}; the manifest "
                           "is inconsistent, re-export the bundle")
    return groups
