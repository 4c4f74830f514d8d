""".ci/run installs the cross toolchains of the C target's checks before `make test`, and an
install that cannot happen is reported loudly without failing CI (the tests then skip)."""

from __future__ import annotations

import os
import shutil
import subprocess
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]
INSTALL = REPO / ".ci" / "install-cross-toolchains"
PACKAGES = ("gcc-aarch64-linux-gnu", "libc6-dev-arm64-cross", "gcc-arm-none-eabi", "libnewlib-arm-none-eabi",
            "binutils-arm-none-eabi", "qemu-user-static")


def test_ci_run_installs_the_toolchains_before_make_test_and_stays_strict():
    run = (REPO / ".ci" / "run").read_text()
    assert "set -euo pipefail" in run  # any test error still fails CI
    assert run.index(".ci/install-cross-toolchains") < run.index("make test")
    assert os.access(INSTALL, os.X_OK) and os.access(REPO / ".ci" / "run", os.X_OK)
    script = INSTALL.read_text()
    for package in PACKAGES:
        assert package in script
    assert "--no-install-recommends" in script


def _fake_path(tmp_path: Path, uid: str, apt_exit: int | None) -> str:
    """A PATH with the shell tools, an `id` that reports ``uid`` and, if ``apt_exit`` is given, an
    apt-get that fails with that code; no cross toolchain on it."""
    bin_dir = tmp_path / "bin"
    bin_dir.mkdir()
    for tool in ("bash", "dirname"):
        os.symlink(shutil.which(tool), bin_dir / tool)
    (bin_dir / "id").write_text(f"#!/bin/bash\necho {uid}\n")
    if apt_exit is not None:
        (bin_dir / "apt-get").write_text(f"#!/bin/bash\necho 'E: mirror unreachable' >&2\nexit {apt_exit}\n")
    for tool in bin_dir.iterdir():
        tool.chmod(0o755)
    return str(bin_dir)


@pytest.mark.parametrize(("uid", "apt_exit", "expected"), [
    ("1000", None, "not root or no apt-get"),
    ("0", 100, "WARNING: apt-get could not install the cross toolchains"),
])
def test_an_install_that_cannot_happen_is_loud_but_not_fatal(tmp_path, uid, apt_exit, expected):
    path = _fake_path(tmp_path, uid, apt_exit)
    done = subprocess.run([shutil.which("bash"), str(INSTALL)], capture_output=True, text=True, timeout=60,
                          env={"PATH": path})
    assert done.returncode == 0
    assert expected in done.stderr and "skip" in done.stderr.lower()
