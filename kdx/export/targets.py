"""Export targets: what ``kdx export --target T`` produces for each kind of device (torch-free).

``TARGETS`` is the registry, filled here and nowhere else. Device profiles
(``kdx/devices/profiles/*.toml``) name their target in their ``target`` field; the capability
table of ``kdx export --list-targets`` joins the two.
"""

from __future__ import annotations

from dataclasses import dataclass

from kdx.errors import KdxError


@dataclass(frozen=True)
class ExportTarget:
    """One deployment target.

    Attributes:
        name: the ``--target`` value (also the manifest's ``target``).
        default_precision: precision used when ``--precision`` is not given.
        precisions: precisions this target accepts.
        backends: runtime backends that can run the bundle there, best first.
        engine_build_on_device: TensorRT engines are built on the device
            (``kdx-runtime build-engines``), never by ``kdx export``.
        fallback_to_fp32: an agent whose quantised model misses the parity bar is shipped in
            fp32 instead (with a warning), rather than failing the export.
        symmetric_int8_activations: int8 activations quantised with zero point 0 (TensorRT
            accepts only symmetric Q/DQ; onnxruntime on a CPU does better with asymmetric).
            Used by the ``static-qdq`` int8 recipe.
        int8_recipe: how int8 models are made, a key of ``kdx.export.quantize.INT8_RECIPES``.
        description: one line for the capability table.
    """

    name: str
    default_precision: str
    precisions: tuple[str, ...]
    backends: tuple[str, ...]
    engine_build_on_device: bool
    fallback_to_fp32: bool
    symmetric_int8_activations: bool
    description: str
    int8_recipe: str = "static-qdq"


TARGETS: dict[str, ExportTarget] = {
    "jetson": ExportTarget(
        name="jetson",
        default_precision="fp16",
        precisions=("fp32", "fp16", "int8"),
        backends=("tensorrt", "onnxruntime", "numpy"),
        engine_build_on_device=True,
        fallback_to_fp32=True,
        symmetric_int8_activations=True,
        description="NVIDIA Jetson: ONNX + calibration data; TensorRT engines built on the device",
    ),
    "rpi": ExportTarget(
        name="rpi",
        default_precision="int8",
        precisions=("fp32", "fp16", "int8"),
        backends=("onnxruntime", "numpy"),
        engine_build_on_device=False,
        fallback_to_fp32=True,
        symmetric_int8_activations=False,
        description="Raspberry Pi / ARM CPU: int8 (onnxruntime MatMulInteger, block-wise run-time "
                    "activation scales), fp32 per agent as fallback",
        # Static QDQ ranges cost distilled students 4-6% greedy-action agreement (near ties);
        # per-row run-time ranges with a standardised observation 1-2%, block-wise scales ~0.5-1.4%.
        int8_recipe="blockwise-dynamic",
    ),
    "x86": ExportTarget(
        name="x86",
        default_precision="fp32",
        precisions=("fp32", "fp16", "int8"),
        backends=("onnxruntime", "numpy"),
        engine_build_on_device=False,
        fallback_to_fp32=True,
        symmetric_int8_activations=False,
        description="Any x86-64 Linux box: fp32 ONNX",
    ),
}



def get_target(name: str) -> ExportTarget:
    """The target ``name`` (or the target of the device profile ``name``); KdxError listing the
    valid targets and profiles otherwise."""
    if name in TARGETS:
        return TARGETS[name]
    from kdx.devices.registry import PROFILES

    if name in PROFILES:
        return TARGETS[PROFILES[name].target]
    raise KdxError(f"unknown export target {name!r}; valid targets: {', '.join(TARGETS)}, or a device "
                   f"profile ({', '.join(PROFILES)}); see `kdx export --list-targets`")


def default_precision(name: str) -> str:
    """The precision used without ``--precision``: the device profile's if ``name`` is a profile,
    else the target's."""
    if name not in TARGETS:
        from kdx.devices.registry import PROFILES

        if name in PROFILES:
            return PROFILES[name].default_precision
    return get_target(name).default_precision


def resolve_precision(target: ExportTarget, precision: str | None) -> str:
    """``precision`` if the target accepts it, the target's default if ``None``; else KdxError."""
    if precision is None:
        return target.default_precision
    if precision not in target.precisions:
        raise KdxError(f"unknown precision {precision!r} for target {target.name!r}; valid "
                       f"precisions: {', '.join(target.precisions)}")
    return precision


def profiles_by_target() -> dict[str, list[str]]:
    """Device profile names grouped by the target they export to."""
    from kdx.devices.registry import PROFILES

    grouped: dict[str, list[str]] = {name: [] for name in TARGETS}
    for profile_name, profile in PROFILES.items():
        grouped.setdefault(profile.target, []).append(profile_name)
    return grouped


def capability_rows() -> list[dict[str, object]]:
    """One row per target for ``--list-targets``: plain data, formatted by the CLI."""
    from kdx.devices.registry import PROFILES

    grouped = profiles_by_target()
    return [
        {
            "target": t.name,
            "default_precision": t.default_precision,
            "precisions": list(t.precisions),
            "backends": list(t.backends),
            "engine_build_on_device": t.engine_build_on_device,
            "profiles": grouped.get(t.name, []),
            "tensorrt_versions": sorted({PROFILES[p].tensorrt for p in grouped.get(t.name, [])
                                         if PROFILES[p].tensorrt}),
            "description": t.description,
        }
        for t in TARGETS.values()
    ]
