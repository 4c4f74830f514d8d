"""kdx.fileio: the one sha256 helper pair and the atomic writes every stage uses."""

from __future__ import annotations

import hashlib
from pathlib import Path

from kdx.fileio import atomic_write_bytes, sha256_bytes, sha256_file


def test_sha256_of_bytes_and_of_a_file_agree(tmp_path: Path) -> None:
    assert sha256_bytes(b"abc") == "ba7816bf8f01cfea414140de5dae2223b00361a396177a9cb410ff61f20015ad"
    data = bytes(range(256)) * 5000  # > 1 MiB: the file is read in more than one chunk
    path = atomic_write_bytes(tmp_path / "sub" / "blob.bin", data)
    assert sha256_file(path) == sha256_bytes(data) == hashlib.sha256(data).hexdigest()
    assert sorted(p.name for p in path.parent.iterdir()) == ["blob.bin"]  # no temporary left
