"""The C target on other machines: the harness cross-compiled for aarch64 and run under qemu,
the policies compiled for a Cortex-M4 and measured with `size` against the profile's budget, and
the flash/RAM report (c/footprint.json) that export writes. Each toolchain check skips with its
reason when the toolchain is absent (`.ci/run` installs them from Debian's packages)."""

from __future__ import annotations

import copy
import json
import shutil
import subprocess
from dataclasses import replace
from pathlib import Path

import pytest
import torch

from kdx.devices.cross_size import parse_berkeley_size, parse_stack_usage
from kdx.devices.footprint import CPolicyShape, estimate_c_footprint
from kdx.devices.profile import CrossToolchain
from kdx.devices.registry import PROFILES
from kdx.fileio import sha256_file
from kdx.runtime.c_footprint import FOOTPRINT_NAME, bundle_footprints, read_footprint_json
from kdx.runtime.manifest import load_manifest

QEMU = shutil.which("qemu-aarch64-static") or shutil.which("qemu-aarch64")
AARCH64_GCC = shutil.which("aarch64-linux-gnu-gcc")
ARM_GCC, ARM_SIZE = shutil.which("arm-none-eabi-gcc"), shutil.which("arm-none-eabi-size")
HOST_CC = shutil.which("cc") or shutil.which("gcc")
MAKE = shutil.which("make")
M4_FLAGS = "-mcpu=cortex-m4 -mthumb -mfpu=fpv4-sp-d16 -mfloat-abi=hard -Os"

needs_host_cc = pytest.mark.skipif(HOST_CC is None, reason="no host C compiler (cc/gcc): the C export's parity is not checked")
needs_aarch64 = pytest.mark.skipif(
    AARCH64_GCC is None or QEMU is None or MAKE is None,
    reason="aarch64-linux-gnu-gcc, qemu-aarch64(-static) or make not installed "
           "(Debian: gcc-aarch64-linux-gnu libc6-dev-arm64-cross qemu-user-static)")
needs_arm = pytest.mark.skipif(
    ARM_GCC is None or ARM_SIZE is None or MAKE is None,
    reason="arm-none-eabi-gcc/-size or make not installed "
           "(Debian: gcc-arm-none-eabi libnewlib-arm-none-eabi binutils-arm-none-eabi)")


@pytest.fixture(scope="module")
def c_export(tmp_path_factory, spread_students, run_saver):
    """One fp32 C export of a 3-agent simple_spread run with a recurrent teacher."""
    from kdx.export.bundle import ExportConfig, export_bundle

    run = run_saver(tmp_path_factory.mktemp("c") / "run", "mpe/simple_spread", spread_students,
                   recurrent_teacher=True)
    return export_bundle(ExportConfig(run, "c", precision="fp32"))


@pytest.fixture(scope="module")
def m8_export(tmp_path_factory, run_saver):
    """An int8 export for the Cortex-M4 profile of skirmish/8m students 80-32-32-14 (random
    weights with clear logit margins, so int8 keeps every layer; quality is not the point)."""
    from kdx.export.bundle import ExportConfig, export_bundle
    from kdx.trainer.distill.students import StudentPolicy

    torch.manual_seed(0)
    student = StudentPolicy(80, 14, (32, 32), activation="relu")
    torch.nn.init.normal_(student.head.weight, std=0.5)
    students = {f"agent_{i}": copy.deepcopy(student) for i in range(8)}
    run = run_saver(tmp_path_factory.mktemp("m8") / "run", "skirmish/8m", students, recurrent_teacher=False)
    return export_bundle(ExportConfig(run, "stm32f4", include_teacher=False))


def _c_copy(bundle_dir: Path, dest: Path) -> Path:
    shutil.copytree(bundle_dir / "c", dest)
    return dest


def _make(folder: Path, *args: str) -> None:
    done = subprocess.run([MAKE, "-s", *args], cwd=folder, capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stdout + done.stderr


@needs_host_cc
@needs_aarch64
def test_harness_cross_compiled_for_aarch64_passes_parity_under_qemu(c_export, tmp_path):
    folder = _c_copy(c_export.bundle_dir, tmp_path / "c")
    _make(folder, "CC=aarch64-linux-gnu-gcc", "CFLAGS=-std=c99 -O2 -static", "harness")
    binary = folder / "harness"
    assert binary.read_bytes()[18:20] == (183).to_bytes(2, "little")  # ELF e_machine: EM_AARCH64
    done = subprocess.run([QEMU, str(binary), "parity_rows.bin"], cwd=folder, capture_output=True, text=True,
                          timeout=300)
    assert done.returncode == 0, done.stdout + done.stderr
    manifest = load_manifest(c_export.bundle_dir)
    lines = [line.split() for line in done.stdout.splitlines() if line.strip()]
    replayed = {(w[0], w[1]) for w in lines if w[-1] == "ok"}
    # every policy, the recurrent teacher included, was replayed and passed
    assert replayed == {(e.role, e.name) for e in manifest.entries()}, done.stdout


@needs_host_cc
@needs_aarch64
def test_aarch64_harness_fails_on_tampered_rows(c_export, tmp_path):
    """The qemu run above can fail: flip torch's logits in the rows and it must."""
    folder = _c_copy(c_export.bundle_dir, tmp_path / "c")
    rows = bytearray((folder / "parity_rows.bin").read_bytes())
    rows[-64:] = bytes(b ^ 0x40 for b in rows[-64:])  # the last policy's reference values
    (folder / "parity_rows.bin").write_bytes(bytes(rows))
    _make(folder, "CC=aarch64-linux-gnu-gcc", "CFLAGS=-std=c99 -O2 -static", "harness")
    done = subprocess.run([QEMU, str(folder / "harness"), "parity_rows.bin"], cwd=folder, capture_output=True,
                          text=True, timeout=300)
    assert done.returncode != 0


def _m4_sections(folder: Path, stem: str) -> tuple[int, int, int, int]:
    """text, data, bss and the -fstack-usage stack of ``stem``.o built by ``make objects``."""
    out = subprocess.run([ARM_SIZE, f"{stem}.o"], cwd=folder, capture_output=True, text=True, timeout=60)
    assert out.returncode == 0, out.stderr
    text, data, bss = parse_berkeley_size(out.stdout)
    stack = parse_stack_usage((folder / f"{stem}.su").read_text())
    assert stack is not None
    return text, data, bss, stack


@needs_host_cc
@needs_arm
def test_8m_student_compiled_for_cortex_m4_fits_the_profile_budget(m8_export, tmp_path):
    """Issue 18's target: an 8m student (80-32-32-14, int8) in <= 16 KiB flash and <= 4 KiB RAM."""
    profile = PROFILES["stm32f4"]
    budget = profile.budget
    assert (budget.max_flash_bytes_per_agent, budget.max_ram_bytes_per_agent) == (16 * 1024, 4 * 1024)
    manifest = load_manifest(m8_export.bundle_dir)
    folder = _c_copy(m8_export.bundle_dir, tmp_path / "c")
    _make(folder, "CC=arm-none-eabi-gcc", f"CFLAGS={M4_FLAGS} -std=c99 -fstack-usage", "objects")
    rows = {(r.profile, r.agent): r for r in read_footprint_json(m8_export.bundle_dir)}
    for entry in manifest.agents:
        assert entry.hidden_sizes == [32, 32] and entry.precision == "int8"
        stem = Path(entry.file_of_kind("c_source").path).stem
        text, data, bss, stack = _m4_sections(folder, stem)
        caller = 4 * 80 + 4 * 14 + 14  # obs, logits, mask
        assert text + data <= budget.max_flash_bytes_per_agent
        assert data + bss + stack + caller <= budget.max_ram_bytes_per_agent
        assert data == 0 and bss == 0  # no mutable globals
        # export measured the same thing (its own -ffunction-sections build: within a few bytes)
        row = rows[("stm32f4", entry.name)]
        assert row.basis == "measured" and row.fits
        assert abs(row.flash_bytes - (text + data)) <= 64
        # the estimate sizing uses is in the same range and errs high on flash
        flash_est, ram_est = estimate_c_footprint(CPolicyShape(80, (32, 32), 14, "int8"))
        assert text + data <= flash_est <= 1.5 * (text + data)
        assert 0.5 * row.ram_bytes <= ram_est <= 1.5 * row.ram_bytes


@needs_host_cc
def test_footprint_json_is_listed_in_the_manifest_and_covers_every_policy(c_export):
    bundle = c_export.bundle_dir
    manifest = load_manifest(bundle)
    listed = [f for f in manifest.files() if f.path == FOOTPRINT_NAME]
    assert len(listed) == 1 and listed[0].kind == "json"
    assert listed[0].sha256 == sha256_file(bundle / FOOTPRINT_NAME)
    rows = read_footprint_json(bundle)
    mcus = {n for n, p in PROFILES.items() if p.target == "c"}
    assert {(r.profile, r.role, r.agent) for r in rows} == {
        (p, e.role, e.name) for p in mcus for e in manifest.entries()}
    for row in rows:
        assert row.flash_bytes > 0 and row.ram_bytes > 0 and row.basis in ("measured", "estimate")
        if row.basis == "estimate":
            assert row.note  # says why it was not measured
    doc = json.loads((bundle / FOOTPRINT_NAME).read_text())
    assert doc["schema_version"] == 1 and "flash =" in doc["estimate_rule"]


@needs_host_cc
def test_without_the_cross_toolchain_the_report_is_the_estimate(c_export):
    manifest = load_manifest(c_export.bundle_dir)
    absent = replace(PROFILES["stm32f4"], cross=CrossToolchain("kdx-no-such-gcc", "kdx-no-such-size"))
    rows = bundle_footprints(c_export.bundle_dir, manifest.entries(), [absent])
    assert len(rows) == len(manifest.entries())
    for row, entry in zip(rows, manifest.entries()):
        assert row.basis == "estimate" and "kdx-no-such-gcc" in row.note and "not found" in row.note
        state = entry.recurrent_state_shape[1] if entry.recurrent_state_shape else 0
        shape = CPolicyShape(entry.model_input_dim, tuple(entry.hidden_sizes), entry.n_actions, entry.precision, state)
        assert (row.flash_bytes, row.ram_bytes) == estimate_c_footprint(shape)


@needs_host_cc
def test_kdx_runtime_info_prints_flash_and_ram(c_export):
    from typer.testing import CliRunner

    from kdx.runtime.cli import app

    result = CliRunner().invoke(app, ["info", str(c_export.bundle_dir)], env={"COLUMNS": "200"})
    assert result.exit_code == 0, result.output
    assert "flash and RAM per agent" in result.output
    for name in ("stm32f4", "stm32h7", "esp32-s3"):
        assert name in result.output
