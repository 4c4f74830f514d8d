"""Measure one agent's generated C on a microcontroller: cross-compile it, read ``size``.

For a profile with a ``[cross]`` table (``kdx.devices.profile.CrossToolchain``) whose compiler
is on PATH, :func:`c_footprint` compiles the agent's ``.c`` alone with the profile's core flags
and ``-Os -std=c99 -ffunction-sections -fdata-sections -fstack-usage -c``, then reads the
object's sections with the cross ``size`` (Berkeley format):

- **flash** = ``text + data`` (code, const weights, and the initial values of ``data``);
- **RAM** = ``data + bss`` (the generator has no mutable globals, so both are normally 0) + the
  stack: the sum of every function's frame in the ``-fstack-usage`` report (an upper bound of
  the deepest call chain; the estimate's :data:`~kdx.devices.footprint.STACK_BYTES` when the
  report is missing or says a frame is dynamic) + the caller-owned buffers the API needs
  (observation and logits floats, mask bytes, recurrent state floats).

Without the toolchain, or when it fails, the row is :func:`~kdx.devices.footprint.estimated_footprint`
with a note saying why. Torch-free; the tools run with a timeout, never through a shell.
"""

from __future__ import annotations

import re
import shutil
import subprocess
import tempfile
from pathlib import Path

from kdx.devices.footprint import (
    STACK_BYTES,
    CFootprint,
    CPolicyShape,
    caller_buffer_parts,
    estimated_footprint,
)
from kdx.devices.profile import DeviceProfile

COMMON_CFLAGS = ("-Os", "-std=c99", "-ffunction-sections", "-fdata-sections", "-fstack-usage")
TOOL_TIMEOUT_S = 120


def cross_toolchain_missing(profile: DeviceProfile) -> str | None:
    """Why ``profile``'s cross toolchain cannot be used here (None: it can)."""
    cross = profile.cross
    if cross is None:
        return f"profile {profile.name} names no cross toolchain"
    absent = [tool for tool in (cross.cc, cross.size) if shutil.which(tool) is None]
    if absent:
        return f"{' and '.join(absent)} not found on PATH"
    return None


def _run(argv: list[str], cwd: Path) -> str:
    done = subprocess.run(argv, cwd=cwd, capture_output=True, text=True, timeout=TOOL_TIMEOUT_S, check=False)
    if done.returncode != 0:
        first = (done.stderr.strip() or done.stdout.strip() or f"exit code {done.returncode}").splitlines()[0]
        raise RuntimeError(f"{Path(argv[0]).name} failed: {first}")
    return done.stdout


def parse_berkeley_size(text: str) -> tuple[int, int, int]:
    """``(text, data, bss)`` from ``size``'s default (Berkeley) output for one object file."""
    lines = [line.split() for line in text.strip().splitlines() if line.strip()]
    if len(lines) < 2 or lines[0][:3] != ["text", "data", "bss"]:
        raise RuntimeError(f"unexpected size output: {text.strip()[:200]!r}")
    text_b, data_b, bss_b = (int(v) for v in lines[1][:3])
    return text_b, data_b, bss_b


def parse_stack_usage(text: str) -> int | None:
    """The sum of the frames in a GCC ``-fstack-usage`` (.su) report; None if any is dynamic."""
    total = 0
    for line in text.strip().splitlines():
        fields = line.rsplit("\t", 2)
        if len(fields) != 3 or not re.fullmatch(r"[0-9]+", fields[1].strip()):
            return None
        if "dynamic" in fields[2] and "bounded" not in fields[2]:
            return None
        total += int(fields[1])
    return total


def _tool_version(cc: str, cwd: Path) -> str:
    try:
        return _run([cc, "-dumpversion"], cwd).strip()
    except (RuntimeError, OSError, subprocess.TimeoutExpired):
        return "?"


def measure_c_footprint(
    agent: str, source: Path, include_dirs: list[Path], shape: CPolicyShape, profile: DeviceProfile
) -> CFootprint:
    """Cross-compile ``source`` for ``profile`` and measure it (see the module docstring).

    Raises ``RuntimeError`` when a tool fails (callers fall back to the estimate) and
    ``LookupError`` when the toolchain is not installed.
    """
    missing = cross_toolchain_missing(profile)
    if missing:
        raise LookupError(missing)
    cross = profile.cross
    with tempfile.TemporaryDirectory(prefix="kdx-size-") as tmp:
        work = Path(tmp)
        obj = work / "policy.o"
        argv = [cross.cc, *cross.cflags, *COMMON_CFLAGS, *(f"-I{d}" for d in include_dirs),
                "-c", str(Path(source).resolve()), "-o", str(obj)]
        try:
            _run(argv, work)
            text_b, data_b, bss_b = parse_berkeley_size(_run([cross.size, str(obj)], work))
        except (OSError, subprocess.TimeoutExpired) as exc:
            raise RuntimeError(f"{cross.cc}: {exc}") from exc
        su = work / "policy.su"
        stack = parse_stack_usage(su.read_text(encoding="utf-8")) if su.is_file() else None
        version = _tool_version(cross.cc, work)
    stack_basis = "-fstack-usage"
    if stack is None:
        stack, stack_basis = STACK_BYTES, "stack allowance (no static -fstack-usage figure)"
    caller = {f"ram_{k}": v for k, v in caller_buffer_parts(shape).items()}
    parts = {"flash_text": text_b, "flash_data": data_b, "ram_data": data_b, "ram_bss": bss_b,
             "ram_stack": stack, **caller}
    flags = " ".join([*cross.cflags, "-Os"])
    return CFootprint(
        agent=agent, profile=profile.name, precision=shape.precision,
        flash_bytes=text_b + data_b, ram_bytes=data_b + bss_b + stack + sum(caller.values()),
        basis="measured",
        method=f"{cross.cc} {version} {flags}; {cross.size}: flash = text + data, RAM = data + bss + "
               f"stack ({stack_basis}) + caller-owned obs/logits/mask/state",
        max_flash_bytes=profile.budget.max_flash_bytes_per_agent,
        max_ram_bytes=profile.budget.max_ram_bytes_per_agent, parts=parts,
    )


def c_footprint(
    agent: str, source: Path | None, include_dirs: list[Path], shape: CPolicyShape, profile: DeviceProfile
) -> CFootprint:
    """Measured when the profile's cross toolchain is installed and ``source`` is given, else the
    estimate, with a note saying why it was not measured."""
    if source is None:
        return estimated_footprint(agent, shape, profile, note="no C source to measure")
    try:
        return measure_c_footprint(agent, source, include_dirs, shape, profile)
    except (LookupError, RuntimeError) as exc:
        return estimated_footprint(agent, shape, profile, note=f"not measured: {exc}")

