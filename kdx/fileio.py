"""Atomic file writes and file checksums, shared by every stage (stdlib only: torch-free).

A write goes to a temporary name in the destination folder, is flushed to disk, then renamed
into place, so a reader (or a killed writer) never sees a half-written file.
"""

from __future__ import annotations

import fcntl
import hashlib
import os
import re
import shutil
import tempfile
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

from kdx.errors import KdxError


def atomic_write_bytes(path: str | Path, data: bytes) -> Path:
    """Write ``data`` to ``path`` atomically (creating the parent folder); returns the path."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    try:
        with os.fdopen(fd, "wb") as handle:
            handle.write(data)
            handle.flush()
            os.fsync(handle.fileno())
        os.chmod(tmp, 0o644)  # mkstemp makes files private; kdx outputs are meant to be read
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise
    return path


def atomic_write_text(path: str | Path, text: str) -> Path:
    """Write UTF-8 ``text`` to ``path`` atomically; returns the path."""
    return atomic_write_bytes(path, text.encode("utf-8"))


def sha256_bytes(data: bytes) -> str:
    """Hex sha256 of ``data``."""
    return hashlib.sha256(data).hexdigest()


def sha256_file(path: str | Path) -> str:
    """Hex sha256 of a file's bytes, read in 1 MiB chunks."""
    digest = hashlib.sha256()
    with open(path, "rb") as handle:
        for chunk in iter(lambda: handle.read(1 << 20), b""):
            digest.update(chunk)
    return digest.hexdigest()


# ------------------------------------------------------------------ leftovers of killed writers
def pid_alive(pid: int) -> bool:
    """True when process ``pid`` exists (this process counts as alive)."""
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:  # alive, someone else's
        return True
    return True


def dead_writer_temporaries(folder: Path, name_pattern: re.Pattern[str]) -> list[Path]:
    """Entries of ``folder`` whose name matches ``name_pattern`` (group 1: the writer's PID) and
    whose writer process is gone: what a write killed part-way left behind."""
    if not folder.is_dir():
        return []
    found = []
    for path in sorted(folder.iterdir()):
        match = name_pattern.match(path.name)
        if match is not None and not pid_alive(int(match.group(1))):
            found.append(path)
    return found


def remove_path(path: Path) -> None:
    """Delete a file or a whole folder (missing is fine)."""
    if path.is_dir() and not path.is_symlink():
        shutil.rmtree(path, ignore_errors=True)
    else:
        path.unlink(missing_ok=True)


# ------------------------------------------------------------------ one writer at a time
_HELD_LOCKS: dict[str, list[int]] = {}  # resolved lock path -> [fd, depth]; re-entered in-process


@contextmanager
def exclusive_lock(path: Path, holder: str) -> Iterator[None]:
    """Hold an exclusive, non-blocking ``flock`` on ``path`` for the ``with`` block.

    The file records ``PID holder`` so that a second writer's ``KdxError`` names who holds it.
    The kernel drops the lock when the holder dies (even by SIGKILL), so a stale lock file never
    blocks anyone. Re-entrant within one process: the demo holds a run's lock while its stages
    take it again.
    """
    path.parent.mkdir(parents=True, exist_ok=True)
    key = str(path.resolve())
    if key in _HELD_LOCKS:
        _HELD_LOCKS[key][1] += 1
        try:
            yield
        finally:
            _HELD_LOCKS[key][1] -= 1
        return
    fd = os.open(path, os.O_RDWR | os.O_CREAT, 0o644)
    try:
        fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except BlockingIOError:
        owner = os.pread(fd, 200, 0).decode("utf-8", "replace").strip() or "another process"
        os.close(fd)
        pid = owner.split()[0] if owner.split() and owner.split()[0].isdigit() else None
        who = f"PID {pid} ({' '.join(owner.split()[1:])})" if pid else owner
        raise KdxError(f"{path.parent} is being written by {who}; wait for it to finish, or stop it "
                       f"(kill {pid or 'PID'}) before starting another writer on this run") from None
    try:
        os.ftruncate(fd, 0)
        os.pwrite(fd, f"{os.getpid()} {holder}\n".encode(), 0)
        _HELD_LOCKS[key] = [fd, 1]
        yield
    finally:
        _HELD_LOCKS.pop(key, None)
        fcntl.flock(fd, fcntl.LOCK_UN)
        os.close(fd)
