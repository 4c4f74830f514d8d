"""Resolving ``kdx export --target T --precision P`` against the registries (torch-free).

The targets themselves (``TARGETS``, :class:`ExportTarget`) and the precisions are defined once,
in :mod:`kdx.devices.targets`. Device profiles (``kdx/devices/profiles/*.toml``) name their
target in their ``target`` field; a profile name is accepted wherever a target is, and the
capability table of ``kdx export --list-targets`` joins the two.
"""

from __future__ import annotations

from kdx.devices.targets import TARGETS, ExportTarget
from kdx.errors import KdxError


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
