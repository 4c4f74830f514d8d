"""Bundle.load refuses anything it should not run, saying which file and why."""

from __future__ import annotations

import hashlib
import json
import os
from pathlib import Path

import numpy as np
import pytest

from kdx.errors import KdxError
from kdx.runtime.bundle import Bundle

MODEL = "agent_0.fp32.onnx"
SIDECAR = "agent_0.fp32.npz"


def _manifest(bundle: Path) -> dict:
    return json.loads((bundle / "manifest.json").read_text())


def _save(bundle: Path, data: dict) -> None:
    (bundle / "manifest.json").write_text(json.dumps(data))


def _relist(bundle: Path, rel: str) -> None:
    """Make the manifest agree with the file's current bytes (a corrupt file that checks out)."""
    data = _manifest(bundle)
    blob = (bundle / rel).read_bytes()
    for agent in data["agents"]:
        for f in agent["files"]:
            if f["path"] == rel:
                f["sha256"], f["size_bytes"] = hashlib.sha256(blob).hexdigest(), len(blob)
    _save(bundle, data)


def _refused(bundle: Path, *fragments: str, backend: str | None = None) -> str:
    with pytest.raises(KdxError) as info:
        loaded = Bundle.load(bundle)
        if backend is not None:
            loaded.policy("agent_0", backend)
    message = str(info.value)
    for fragment in fragments:
        assert fragment in message, message
    return message


def test_a_good_bundle_loads(fresh_bundle: Path) -> None:
    bundle = Bundle.load(fresh_bundle)
    assert bundle.agent_names == ["agent_0", "agent_1"]
    assert Bundle.load(fresh_bundle / "manifest.json").path == fresh_bundle


def test_flipped_byte_fails_the_checksum(fresh_bundle: Path) -> None:
    blob = bytearray((fresh_bundle / MODEL).read_bytes())
    blob[len(blob) // 2] ^= 0xFF
    (fresh_bundle / MODEL).write_bytes(bytes(blob))
    _refused(fresh_bundle, MODEL, "sha256", "does not match")


def test_truncated_file_is_named(fresh_bundle: Path) -> None:
    blob = (fresh_bundle / SIDECAR).read_bytes()
    (fresh_bundle / SIDECAR).write_bytes(blob[:100])
    _refused(fresh_bundle, SIDECAR, "100 bytes", "truncated")


def test_missing_file_is_named(fresh_bundle: Path) -> None:
    (fresh_bundle / MODEL).unlink()
    _refused(fresh_bundle, MODEL, "missing")


def test_missing_manifest(tmp_path: Path) -> None:
    _refused(tmp_path, "manifest.json", "missing")
    _refused(tmp_path / "nope", "not a bundle folder")


def test_unknown_schema_version(fresh_bundle: Path) -> None:
    data = _manifest(fresh_bundle)
    data["schema_version"] = 3
    _save(fresh_bundle, data)
    _refused(fresh_bundle, "schema_version 3", "supported: 1, 2")


def test_path_leaving_the_bundle(fresh_bundle: Path) -> None:
    data = _manifest(fresh_bundle)
    data["agents"][0]["files"][0]["path"] = "../" + MODEL
    _save(fresh_bundle, data)
    _refused(fresh_bundle, "../" + MODEL, "leaves the bundle")


def test_symlink_leaving_the_bundle(fresh_bundle: Path, tmp_path: Path) -> None:
    outside = tmp_path / "outside.onnx"
    outside.write_bytes((fresh_bundle / MODEL).read_bytes())
    (fresh_bundle / MODEL).unlink()
    os.symlink(outside, fresh_bundle / MODEL)
    _refused(fresh_bundle, MODEL, "outside the bundle folder")


@pytest.mark.parametrize("backend", ["onnxruntime", "numpy"])
def test_corrupt_onnx_whose_checksum_matches(fresh_bundle: Path, backend: str) -> None:
    pytest.importorskip("onnxruntime" if backend == "onnxruntime" else "onnx")
    blob = (fresh_bundle / MODEL).read_bytes()
    (fresh_bundle / MODEL).write_bytes(blob[: len(blob) // 3])
    _relist(fresh_bundle, MODEL)
    data = _manifest(fresh_bundle)  # numpy would prefer the sidecar: drop it for this agent
    data["agents"][0]["files"] = [f for f in data["agents"][0]["files"] if f["kind"] != "npz"]
    _save(fresh_bundle, data)
    _refused(fresh_bundle, MODEL, "ONNX", backend=backend)


def test_corrupt_npz_whose_checksum_matches(fresh_bundle: Path) -> None:
    (fresh_bundle / SIDECAR).write_bytes(b"PK\x03\x04 definitely not a zip")
    _relist(fresh_bundle, SIDECAR)
    _refused(fresh_bundle, SIDECAR, "npz", backend="numpy")


def test_model_that_disagrees_with_the_manifest(fresh_bundle: Path) -> None:
    pytest.importorskip("onnxruntime")
    data = _manifest(fresh_bundle)
    data["agents"][0]["obs_dim"] = 19
    _save(fresh_bundle, data)
    bundle = Bundle.load(fresh_bundle)
    for backend in ("onnxruntime", "numpy"):
        with pytest.raises(KdxError, match="agent_0"):
            bundle.policy("agent_0", backend).act(np.zeros(19, np.float32))


# --- archives (kdx export writes <target>.tar.gz) -----------------------------------------------

def _tar(path: Path, entries: list[tuple[str, bytes | None]], symlink: str | None = None) -> Path:
    import io
    import tarfile

    with tarfile.open(path, "w:gz") as tar:
        for name, data in entries:
            info = tarfile.TarInfo(name)
            if data is None:
                info.type = tarfile.DIRTYPE
                tar.addfile(info)
            else:
                info.size = len(data)
                tar.addfile(info, io.BytesIO(data))
        if symlink:
            info = tarfile.TarInfo(symlink)
            info.type, info.linkname = tarfile.SYMTYPE, "/etc/passwd"
            tar.addfile(info)
    return path


def _bundle_entries(bundle: Path, prefix: str) -> list[tuple[str, bytes | None]]:
    return [(prefix + p.name, p.read_bytes()) for p in sorted(bundle.iterdir())]


@pytest.mark.parametrize("prefix", ["rpi/", "", "./"])
def test_a_tar_gz_bundle_loads(fresh_bundle: Path, tmp_path: Path, prefix: str) -> None:
    archive = _tar(tmp_path / "rpi.tar.gz", _bundle_entries(fresh_bundle, prefix))
    bundle = Bundle.load(archive)
    assert bundle.agent_names == ["agent_0", "agent_1"]
    assert 0 <= bundle.policy("agent_1", "numpy").act(np.zeros(18, np.float32)) < 5


@pytest.mark.parametrize(("extra", "symlink", "fragment"), [
    ([("../evil.onnx", b"x")], None, "leaves the bundle"),
    ([("/abs.onnx", b"x")], None, "absolute"),
    ([], "rpi/link.onnx", "not a plain file"),
])
def test_archives_with_escaping_members_are_refused(fresh_bundle: Path, tmp_path: Path, extra, symlink,
                                                    fragment: str) -> None:
    archive = _tar(tmp_path / "bad.tar.gz", _bundle_entries(fresh_bundle, "rpi/") + extra, symlink)
    _refused(archive, "bad.tar.gz", fragment)
    assert not (tmp_path / "evil.onnx").exists()


def test_truncated_archive_is_refused(fresh_bundle: Path, tmp_path: Path) -> None:
    archive = _tar(tmp_path / "rpi.tar.gz", _bundle_entries(fresh_bundle, "rpi/"))
    archive.write_bytes(archive.read_bytes()[:200])
    _refused(archive, "rpi.tar.gz", "not a readable bundle archive")
