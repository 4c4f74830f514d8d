"""Bundle archives (``.tar.gz``): limits, one bundle each, and no folder left in /tmp after
SIGTERM (issue 17)."""

from __future__ import annotations

import io
import os
import signal
import subprocess
import sys
import tarfile
import time
from pathlib import Path

import pytest

from kdx.errors import KdxError
from kdx.runtime.bundle import MAX_ARCHIVE_BYTES, MAX_ARCHIVE_MEMBERS, Bundle
from kdx.runtime.testing import make_test_bundle

REPO = Path(__file__).resolve().parents[2]


@pytest.fixture(scope="module")
def small_bundle(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return make_test_bundle(tmp_path_factory.mktemp("archived") / "rpi", n_agents=1, student_hidden=(8,),
                            teacher_hidden=None, with_onnx=False)


def _archive(path: Path, folders: dict[str, Path]) -> Path:
    with tarfile.open(path, "w:gz") as tar:
        for name, folder in folders.items():
            tar.add(folder, arcname=name)
    return path


def test_an_archive_of_one_bundle_loads(small_bundle: Path, tmp_path: Path) -> None:
    bundle = Bundle.load(_archive(tmp_path / "rpi.tar.gz", {"rpi": small_bundle}))
    assert bundle.agent_names == ["agent_0"]


def test_two_bundles_in_one_archive_are_refused_naming_both(small_bundle: Path, tmp_path: Path) -> None:
    archive = _archive(tmp_path / "two.tar.gz", {"rpi": small_bundle, "x86": small_bundle})
    with pytest.raises(KdxError, match=r"more than one bundle \('rpi/manifest.json' and 'x86/manifest.json'\)"):
        Bundle.load(archive)


def test_too_many_members_are_refused_before_extraction(tmp_path: Path) -> None:
    archive = tmp_path / "many.tar.gz"
    with tarfile.open(archive, "w:gz") as tar:
        for i in range(MAX_ARCHIVE_MEMBERS + 1):
            tar.addfile(tarfile.TarInfo(f"f{i}"), io.BytesIO(b""))
    with pytest.raises(KdxError, match=f"more than {MAX_ARCHIVE_MEMBERS} members"):
        Bundle.load(archive)


def test_a_member_too_large_is_refused_from_its_header(tmp_path: Path) -> None:
    """Only the header is written: the limit is checked before any data is read."""
    info = tarfile.TarInfo("weights.bin")
    info.size = MAX_ARCHIVE_BYTES + 1
    archive = tmp_path / "huge.tar"
    archive.write_bytes(info.tobuf(format=tarfile.PAX_FORMAT))
    with pytest.raises(KdxError, match=f"more than {MAX_ARCHIVE_BYTES} bytes"):
        Bundle.load(archive)


def test_the_extracted_folder_is_removed_on_sigterm(small_bundle: Path, tmp_path: Path) -> None:
    archive = _archive(tmp_path / "rpi.tar.gz", {"rpi": small_bundle})
    scratch = tmp_path / "tmp"
    scratch.mkdir()
    env = {**os.environ, "TMPDIR": str(scratch), "PYTHONPATH": str(REPO)}
    process = subprocess.Popen([sys.executable, "-m", "kdx.runtime.cli", "bench", str(archive), "--iters",
                                "100000000", "--backend", "numpy"], cwd=REPO, env=env,
                               stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
    try:
        deadline = time.monotonic() + 60
        while not list(scratch.glob("kdx-bundle-*/rpi/manifest.json")) and process.poll() is None:
            assert time.monotonic() < deadline, "the archive was never extracted"
            time.sleep(0.05)
        time.sleep(0.3)  # into the timed loop
        process.send_signal(signal.SIGTERM)
        process.wait(timeout=30)
    finally:
        process.kill()
        process.wait()
    assert process.returncode == -signal.SIGTERM, process.stderr.read()
    assert list(scratch.iterdir()) == []
