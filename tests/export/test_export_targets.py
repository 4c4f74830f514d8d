"""Resolving export targets and precisions against the registries, and the capability table."""

from __future__ import annotations

import pytest

from kdx.devices.registry import PROFILES
from kdx.devices.targets import PRECISIONS, TARGETS
from kdx.errors import KdxError
from kdx.export.targets import capability_rows, default_precision, get_target, resolve_precision


@pytest.mark.parametrize("name", list(TARGETS))
def test_every_target_is_consistent(name: str) -> None:
    target = TARGETS[name]
    assert target.name == name
    assert target.default_precision in target.precisions
    assert set(target.precisions) <= set(PRECISIONS)
    assert resolve_precision(target, None) == target.default_precision
    for precision in target.precisions:
        assert resolve_precision(target, precision) == precision


def test_issue_defaults() -> None:
    assert TARGETS["jetson"].default_precision == "fp16" and TARGETS["jetson"].engine_build_on_device
    assert TARGETS["rpi"].default_precision == "int8" and "tensorrt" not in TARGETS["rpi"].backends
    assert TARGETS["x86"].default_precision == "fp32"


def test_unknown_target_and_precision_name_the_choices() -> None:
    with pytest.raises(KdxError, match="valid targets: jetson, rpi, x86, c, or a device profile") as info:
        get_target("esp32")
    assert "rpi5" in str(info.value)
    with pytest.raises(KdxError, match="valid precisions: fp32, fp16, int8"):
        resolve_precision(TARGETS["rpi"], "int4")


@pytest.mark.parametrize("name", list(PROFILES))
def test_device_profiles_are_accepted_as_targets(name: str) -> None:
    profile = PROFILES[name]
    assert get_target(name) is TARGETS[profile.target]
    assert default_precision(name) == profile.default_precision
    assert profile.default_precision in TARGETS[profile.target].precisions


@pytest.mark.parametrize("name", [n for n, p in PROFILES.items() if p.tensorrt])
def test_every_jetson_profile_tensorrt_is_supported(name: str) -> None:
    from kdx.runtime.tensorrt_build import plan_build

    for precision in TARGETS["jetson"].precisions:
        plan = plan_build(PROFILES[name].tensorrt, precision)
        assert plan.major == int(PROFILES[name].tensorrt.split(".")[0])


def test_capability_rows_map_every_profile_to_its_target() -> None:
    rows = {row["target"]: row for row in capability_rows()}
    assert set(rows) == set(TARGETS)
    for name, profile in PROFILES.items():
        assert name in rows[profile.target]["profiles"]
    assert sum(len(r["profiles"]) for r in rows.values()) == len(PROFILES)
    assert {"8.2", "8.5", "10.3"} <= set(rows["jetson"]["tensorrt_versions"])
    assert rows["rpi"]["tensorrt_versions"] == []
