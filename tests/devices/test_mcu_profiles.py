"""Microcontroller profiles (target "c"): flash/RAM budgets, the footprint estimate, sizing
against them, and the cross-compiled measurement (skipped without arm-none-eabi-gcc)."""

from __future__ import annotations

import shutil
from dataclasses import replace
from pathlib import Path

import pytest

from kdx.devices.cross_size import c_footprint, parse_berkeley_size, parse_stack_usage
from kdx.devices.footprint import (
    CODE_BYTES_BASE,
    CODE_BYTES_PER_LAYER,
    STACK_BYTES,
    CFootprint,
    CPolicyShape,
    estimate_c_footprint,
    mcu_profiles,
)
from kdx.devices.profile import Budget, CrossToolchain, load_profile_text
from kdx.devices.registry import PROFILES
from kdx.devices.sizing import StudentArch, read_sizing_json, size_students, write_sizing_json
from kdx.errors import KdxError

MCUS = ("stm32f4", "stm32h7", "esp32-s3")
PROFILE_DIR = Path(__file__).resolve().parents[2] / "kdx" / "devices" / "profiles"
ARM_MISSING = shutil.which("arm-none-eabi-gcc") is None or shutil.which("arm-none-eabi-size") is None


def test_the_microcontroller_profiles_are_the_c_target_ones():
    assert {p.name for p in mcu_profiles()} == set(MCUS)


@pytest.mark.parametrize("name", MCUS)
def test_microcontroller_profile_fields(name):
    p = PROFILES[name]
    assert p.target == "c" and p.default_precision == "int8" and p.preferred_backends == ("c",)
    assert p.accelerator is None and p.cross is not None and p.cross.cflags
    assert 0.1 <= p.cpu.clock_ghz <= 0.5 and p.cpu.cores <= 2
    assert max(p.memory_gb) * 2**20 <= 1024  # SRAM in KiB: a microcontroller, not a Linux board
    b = p.budget
    assert b.max_flash_bytes_per_agent and b.max_ram_bytes_per_agent
    # Parameters must leave room in the flash budget for code, scales and biases.
    assert b.max_param_bytes_per_agent < b.max_flash_bytes_per_agent
    # One agent's RAM is a small share of the SRAM.
    assert b.max_ram_bytes_per_agent <= 0.05 * max(p.memory_gb) * 2**30
    assert "estimate" in p.notes.lower()


def test_the_cortex_m4_has_the_tightest_budgets_of_all():
    m4 = PROFILES["stm32f4"].budget
    for other in PROFILES.values():
        assert m4.max_macs_per_agent <= other.budget.max_macs_per_agent
        assert m4.max_param_bytes_per_agent <= other.budget.max_param_bytes_per_agent
        if other.target == "c":
            assert m4.max_flash_bytes_per_agent <= other.budget.max_flash_bytes_per_agent
            assert m4.max_ram_bytes_per_agent <= other.budget.max_ram_bytes_per_agent


def test_cortex_m4_profile_core_flags_are_the_issues():
    cross = PROFILES["stm32f4"].cross
    assert cross.cc == "arm-none-eabi-gcc" and cross.size == "arm-none-eabi-size"
    assert cross.cflags == ("-mcpu=cortex-m4", "-mthumb", "-mfpu=fpv4-sp-d16", "-mfloat-abi=hard")


def test_estimate_by_hand():
    # 80 -> 32 -> 32 -> 14, int8: weights 1 B each, biases and scales 4 B per output channel.
    shape = CPolicyShape(80, (32, 32), 14, "int8")
    weights = 80 * 32 + 32 * 32 + 32 * 14
    outputs = 32 + 32 + 14
    flash = weights + 4 * outputs + 4 * outputs + 8 * 80 + CODE_BYTES_BASE + 3 * CODE_BYTES_PER_LAYER
    ram = (4 * 80 + 4 * 14 + 14) + 4 * (80 + 32 + 32 + 14) + 80 + STACK_BYTES
    assert estimate_c_footprint(shape) == (flash, ram)
    # fp32: 4 B per weight, no scales, no int8 input vector; a recurrent state adds 4 B per unit.
    fp32 = CPolicyShape(18, (32,), 5, "fp32", state_size=32)
    assert estimate_c_footprint(fp32) == (
        4 * (18 * 32 + 32 * 5) + 4 * 37 + 8 * 18 + CODE_BYTES_BASE + 2 * CODE_BYTES_PER_LAYER,
        (4 * 18 + 4 * 5 + 5 + 4 * 32) + 4 * (18 + 32 + 5) + STACK_BYTES,
    )
    with pytest.raises(KdxError, match="unknown precision"):
        CPolicyShape(18, (32,), 5, "int4")


def test_issue_target_an_8m_student_fits_a_cortex_m4_in_16_kib_flash_and_4_kib_ram():
    flash, ram = estimate_c_footprint(CPolicyShape(80, (32, 32), 14, "int8"))
    assert flash <= 16 * 1024 and ram <= 4 * 1024
    assert flash <= PROFILES["stm32f4"].budget.max_flash_bytes_per_agent
    assert ram <= PROFILES["stm32f4"].budget.max_ram_bytes_per_agent
    # ... and sizing agrees: an 80-32-32-14 override is within the Cortex-M4 budget.
    row = size_students([("m8", 80, 14)], PROFILES["stm32f4"], {"m8": StudentArch((32, 32))})[0]
    assert row.within_budget and (row.flash_bytes, row.ram_bytes) == (flash, ram)


def _only_footprint_binds(flash: int | None, ram: int | None):
    p = PROFILES["stm32f4"]
    return replace(p, budget=Budget(10**9, 10**9, p.budget.latency_budget_us, flash, ram))


@pytest.mark.parametrize(("flash", "ram", "limit"), [(8 * 1024, None, "flash"), (None, 1280, "RAM")])
def test_sizing_shrinks_students_to_the_flash_and_ram_budgets(flash, ram, limit):
    profile = _only_footprint_binds(flash, ram)
    free = size_students([("m8", 80, 14)], _only_footprint_binds(None, None))[0]
    row = size_students([("m8", 80, 14)], profile)[0]
    assert free.arch == StudentArch((128, 128)) and free.flash_bytes is None  # no budget, no estimate
    assert row.arch != free.arch and row.within_budget and limit in row.limited_by
    assert row.flash_bytes <= (flash or 10**9) and row.ram_bytes <= (ram or 10**9)
    # The largest that fits: one step up in MACs would not.
    bigger = StudentArch((2 * max(row.arch.hidden),) * len(row.arch.hidden))
    over = size_students([("m8", 80, 14)], profile, {"m8": bigger})[0]
    assert not over.within_budget


def test_no_student_fits_a_tiny_flash_budget_says_by_how_much():
    with pytest.raises(KdxError, match=r"bytes of flash \(estimated, C code\) against a budget of 1024"):
        size_students([("m8", 80, 14)], _only_footprint_binds(1024, None))


def test_sizing_json_keeps_the_footprint(tmp_path):
    rows = size_students([("m8", 80, 14), ("s", 18, 5)], PROFILES["stm32f4"])
    path = write_sizing_json(tmp_path / "sizing.json", rows, PROFILES["stm32f4"])
    assert read_sizing_json(path) == rows
    assert '"max_flash_bytes_per_agent": 16384' in path.read_text()


def _text(name: str = "stm32f4") -> str:
    return (PROFILE_DIR / f"{name}.toml").read_text()


@pytest.mark.parametrize(
    ("edit", "expected"),
    [
        (lambda t: t.replace("max_flash_bytes_per_agent = 16384\n", ""), "must give max_flash_bytes_per_agent"),
        (lambda t: t.replace("max_ram_bytes_per_agent", "max_sram_bytes_per_agent"), "unknown key"),
        (lambda t: t.replace("max_ram_bytes_per_agent = 4096", "max_ram_bytes_per_agent = 0"), "must be positive"),
        (lambda t: t.replace('"-mthumb"', '"thumb"'), "cflags"),
        (lambda t: t.replace('size = "arm-none-eabi-size"\n', ""), "missing required key 'size'"),
    ],
)
def test_bad_microcontroller_profile_text_raises_a_clear_error(edit, expected):
    with pytest.raises(KdxError, match=expected):
        load_profile_text(edit(_text()), where="test.toml")


def test_flash_and_ram_budgets_stay_optional_for_linux_profiles():
    assert PROFILES["rpi4"].budget.max_flash_bytes_per_agent is None
    assert size_students([("a", 18, 5)], PROFILES["rpi4"])[0].flash_bytes is None


# --- measuring ------------------------------------------------------------------------------


def test_size_and_stack_usage_parsers():
    out = "   text\t   data\t    bss\t    dec\t    hex\tfilename\n   1234\t      8\t     16\t   1258\t    4ea\tp.o\n"
    assert parse_berkeley_size(out) == (1234, 8, 16)
    assert parse_stack_usage("p.c:3:5:kdx_a_act\t48\tstatic\np.c:9:12:helper\t16\tstatic\n") == 64
    assert parse_stack_usage("p.c:3:5:f\t48\tdynamic\n") is None
    with pytest.raises(RuntimeError, match="unexpected size output"):
        parse_berkeley_size("garbage")


_SOURCE = """
#include <stdint.h>
static const int8_t kWeights[2000] = {1, 2, 3};
int kdx_t_act(const float *obs, const uint8_t *mask, float *logits) {
    float acc[8];
    int best = 0;
    for (int o = 0; o < 8; ++o) {
        acc[o] = 0.0f;
        for (int i = 0; i < 250; ++i) acc[o] += (float)kWeights[o * 250 + i] * obs[i % 4];
        if (logits) logits[o] = acc[o];
        if ((!mask || mask[o]) && acc[o] > acc[best]) best = o;
    }
    return best;
}
"""


@pytest.mark.skipif(ARM_MISSING, reason="arm-none-eabi-gcc/-size not installed (Debian: gcc-arm-none-eabi, "
                    "libnewlib-arm-none-eabi, binutils-arm-none-eabi)")
def test_cross_measurement_reads_text_data_bss_and_stack(tmp_path):
    source = tmp_path / "t.c"
    source.write_text(_SOURCE)
    shape = CPolicyShape(4, (), 8, "int8")
    row = c_footprint("t", source, [tmp_path], shape, PROFILES["stm32f4"])
    assert row.basis == "measured" and "arm-none-eabi-gcc" in row.method and "-mcpu=cortex-m4" in row.method
    assert row.parts["flash_text"] >= 2000  # the const weights live in .rodata, counted as text
    assert row.flash_bytes == row.parts["flash_text"] + row.parts["flash_data"]
    assert 0 < row.parts["ram_stack"] < 256 and row.parts["ram_bss"] == 0
    assert row.ram_bytes == row.parts["ram_data"] + row.parts["ram_bss"] + row.parts["ram_stack"] + 4 * 4 + 4 * 8 + 8
    assert row.fits
    assert CFootprint.from_dict(row.to_dict()) == row


def test_without_the_toolchain_the_estimate_is_used_and_says_why(tmp_path):
    source = tmp_path / "t.c"
    source.write_text(_SOURCE)
    absent = replace(PROFILES["stm32f4"], cross=CrossToolchain("kdx-no-such-gcc", "kdx-no-such-size"))
    shape = CPolicyShape(4, (16,), 8, "int8")
    row = c_footprint("t", source, [tmp_path], shape, absent)
    assert row.basis == "estimate" and "kdx-no-such-gcc" in row.note and "not found" in row.note
    assert (row.flash_bytes, row.ram_bytes) == estimate_c_footprint(shape)


@pytest.mark.skipif(ARM_MISSING, reason="arm-none-eabi-gcc not installed")
def test_a_source_the_cross_compiler_rejects_falls_back_to_the_estimate(tmp_path):
    source = tmp_path / "bad.c"
    source.write_text("this is not C;\n")
    row = c_footprint("bad", source, [tmp_path], CPolicyShape(4, (16,), 8, "int8"), PROFILES["stm32f4"])
    assert row.basis == "estimate" and "arm-none-eabi-gcc failed" in row.note
