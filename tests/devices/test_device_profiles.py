"""The device profile registry: every shipped profile loads and is sane; bad files say why."""

from __future__ import annotations

from pathlib import Path

import pytest

from kdx.devices.profile import load_profile_file, load_profile_text
from kdx.devices.registry import PROFILES, get_profile
from kdx.devices.sizing import CapacityRule, StudentArch, student_cost
from kdx.devices.targets import PRECISIONS, TARGETS
from kdx.errors import KdxError

EXPECTED = {
    "jetson-orin-nano", "jetson-orin-nx", "jetson-agx-orin", "jetson-xavier-nx",
    "jetson-nano", "rpi4", "rpi5", "x86-cpu",
}
TENSORRT_BY_PROFILE = {
    "jetson-orin-nano": "10.3", "jetson-orin-nx": "10.3", "jetson-agx-orin": "10.3",
    "jetson-xavier-nx": "8.5", "jetson-nano": "8.2",
}
PROFILE_DIR = Path(__file__).resolve().parents[2] / "kdx" / "devices" / "profiles"


def expected_target(name: str) -> str:
    if name.startswith("jetson-"):
        return "jetson"
    if name.startswith("rpi"):
        return "rpi"
    assert name == "x86-cpu"
    return "x86"


def test_registry_holds_exactly_the_shipped_profiles():
    assert set(PROFILES) == EXPECTED
    assert {p.stem for p in PROFILE_DIR.glob("*.toml")} == EXPECTED


@pytest.mark.parametrize("name", sorted(EXPECTED))
def test_profile_fields_are_valid(name):
    p = get_profile(name)
    assert p.name == name
    assert p.target in TARGETS and p.target == expected_target(name)
    expected_precision = {"jetson": "fp16", "rpi": "int8", "x86": "fp32"}[p.target]
    assert p.default_precision == expected_precision
    assert p.bytes_per_param == PRECISIONS[expected_precision].bytes_per_param
    assert p.cpu.cores >= 4 and 1.0 <= p.cpu.clock_ghz <= 5.0
    assert p.cpu.arch == ("x86_64" if p.target == "x86" else "aarch64")
    assert all(m > 0 for m in p.memory_gb)
    assert p.budget.max_macs_per_agent > 0 and p.budget.latency_budget_us > 0
    assert p.max_params_per_agent * p.bytes_per_param <= p.budget.max_param_bytes_per_agent
    assert "estimate" in p.notes.lower()  # budgets are ours, not vendor figures: say so
    if p.target == "jetson":
        assert p.accelerator is not None and p.accelerator.kind == "gpu"
        assert p.accelerator.cuda_cores and p.accelerator.cuda_cores >= 128
        assert p.tensorrt == TENSORRT_BY_PROFILE[name]
        assert p.preferred_backends[0] == "tensorrt"
    else:
        assert p.accelerator is None and p.tensorrt is None
        assert "tensorrt" not in p.preferred_backends


@pytest.mark.parametrize("name", sorted(EXPECTED))
def test_budgets_fit_typical_students_but_stay_far_below_a_3x256_teacher(name):
    p = get_profile(name)
    # The biggest SMAC observation in REFERENCE.md (MMM2: 176 obs, 18 actions) must fit the
    # smallest student everywhere, or the profile is useless for SMAC.
    smallest = StudentArch((CapacityRule().min_width,))
    assert student_cost(smallest, 176, 18).macs <= p.budget.max_macs_per_agent
    assert student_cost(smallest, 176, 18).params * p.bytes_per_param <= p.budget.max_param_bytes_per_agent
    # The MAC ceiling itself is a real compression of the 3x256 teacher actor (>= 4x even at the
    # ceiling; the capacity rule usually lands far lower).
    teacher = student_cost(StudentArch((256, 256, 256)), 18, 5).macs
    assert p.budget.max_macs_per_agent * 4 <= teacher


def test_weakest_devices_have_the_tightest_budgets():
    tight = [PROFILES["rpi4"], PROFILES["jetson-nano"]]
    others = [p for n, p in PROFILES.items() if n not in ("rpi4", "jetson-nano")]
    for weak in tight:
        for other in others:
            assert weak.budget.max_macs_per_agent <= other.budget.max_macs_per_agent
            assert weak.budget.latency_budget_us >= other.budget.latency_budget_us


def test_unknown_profile_lists_the_profiles_and_suggests_the_closest():
    with pytest.raises(KdxError) as info:
        get_profile("rpi")
    message = str(info.value)
    assert "'rpi'" in message and "Did you mean" in message
    for name in EXPECTED:
        assert name in message


def test_profile_can_be_loaded_from_a_user_file(tmp_path):
    text = (PROFILE_DIR / "rpi5.toml").read_text().replace('name = "rpi5"', 'name = "my-board"')
    text = text.replace("max_macs_per_agent = 8192", "max_macs_per_agent = 1234")
    path = tmp_path / "my-board.toml"
    path.write_text(text)
    profile = get_profile(str(path))
    assert profile.name == "my-board" and profile.budget.max_macs_per_agent == 1234
    with pytest.raises(KdxError, match="does not exist"):
        get_profile(str(tmp_path / "missing.toml"))


def _valid_text() -> str:
    return (PROFILE_DIR / "jetson-orin-nano.toml").read_text()


@pytest.mark.parametrize(
    ("edit", "expected"),
    [
        (lambda t: t.replace("max_macs_per_agent", "max_mac_per_agent"), "unknown key"),
        (lambda t: t.replace("cores = 6\n", ""), "missing required key 'cores'"),
        (lambda t: t.replace("cores = 6", 'cores = "six"'), "'cores' in the 'cpu' table must be an integer"),
        (lambda t: t.replace('target = "jetson"', 'target = "fpga"'), "target 'fpga'"),
        (lambda t: t.replace('default_precision = "fp16"', 'default_precision = "bf16"'), "default_precision"),
        (lambda t: t.replace("latency_budget_us = 400", "latency_budget_us = 0"), "must be positive"),
        (lambda t: t.replace("memory_gb = [8]", "memory_gb = []"), "memory_gb"),
        (lambda t: t.replace('tensorrt = "10.3"\n', ""), "tensorrt"),
        (lambda t: t.replace('"tensorrt", "onnxruntime"', '"tensorflow", "onnxruntime"'), "preferred_backends"),
        (lambda t: t + "\n[cpu\n", "not valid TOML"),
    ],
)
def test_bad_profile_text_raises_a_clear_error(edit, expected):
    with pytest.raises(KdxError, match=expected):
        load_profile_text(edit(_valid_text()), where="test.toml")


def test_name_must_match_file_name(tmp_path):
    path = tmp_path / "other-name.toml"
    path.write_text(_valid_text())
    with pytest.raises(KdxError, match="does not match the file name"):
        load_profile_file(path)


def test_profiles_are_frozen():
    with pytest.raises(AttributeError):
        PROFILES["rpi4"].budget.max_macs_per_agent = 1  # type: ignore[misc]


def test_a_profile_may_name_a_default_view():
    profile = load_profile_text(_valid_text() + '\n[view]\ndefault = ["sight:4", "-ally.*.health"]\n', where="t.toml")
    assert profile.default_view == ("sight:4", "-ally.*.health")
    assert all(p.default_view == () for p in PROFILES.values())  # shipped profiles describe compute only
    for table, expected in (('[view]\ndefault = []\n', "non-empty list of view ops"),
                            ('[view]\ndefault = ["sight:4", 3]\n', "non-empty list of view ops"),
                            ('[view]\ndefault = "sight:4"\n', "'default' in the 'view' table must be a list"),
                            ('[view]\nops = ["sight:4"]\n', "unknown key")):
        with pytest.raises(KdxError, match=expected):
            load_profile_text(_valid_text() + "\n" + table, where="t.toml")
    with pytest.raises(KdxError, match="'view' in the top level must be a table"):
        load_profile_text("view = 3\n" + _valid_text(), where="t.toml")
