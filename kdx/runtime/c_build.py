"""Compiling a bundle's generated C sources into a shared library, and calling it (torch-free).

Used by ``kdx export --target c`` (parity of the C code against torch) and by the runtime's
``c`` backend. The compiler is ``$CC`` if set (a name on PATH or a path), else ``cc``, else
``gcc``; none found is not an error here: :func:`find_compiler` says why, and the callers skip
(export: a note; runtime: the backend is unavailable).

Shared libraries are cached under ``$KDX_CACHE_DIR/c/`` (else ``~/.cache/kdx/c/``) by the sha256
of the sources' bytes, the compiler's identity and the flags: a second load compiles nothing.
A library is built in a temporary folder inside the cache and renamed into place, so two
processes compiling the same bundle never see half a file.
"""

from __future__ import annotations

import ctypes
import functools
import hashlib
import os
import shutil
import subprocess
import tempfile
from dataclasses import dataclass
from pathlib import Path

from kdx.errors import KdxError

#: flags for the shared library (C99, optimised, position independent); CFLAGS is not read, so
#: a cache entry means one thing
SHARED_FLAGS = ("-std=c99", "-O2", "-fPIC", "-shared")
_COMPILE_TIMEOUT_S = 300


@dataclass(frozen=True)
class Compiler:
    """A C compiler found on this machine: its path and the first line of ``--version``."""

    path: str
    version: str


def _candidates() -> list[str]:
    cc = os.environ.get("CC", "").strip()
    return [cc] if cc else ["cc", "gcc"]


@functools.lru_cache(maxsize=8)
def _probe(name: str, path_env: str) -> Compiler | None:
    path = shutil.which(name, path=path_env)
    if path is None:
        return None
    try:
        out = subprocess.run([path, "--version"], capture_output=True, text=True, timeout=30)
    except (OSError, subprocess.SubprocessError):
        return None
    if out.returncode != 0:
        return None
    return Compiler(path, (out.stdout.splitlines() or [""])[0].strip())


def find_compiler() -> tuple[Compiler | None, str]:
    """``(compiler, "")``, or ``(None, why)`` naming what was looked for."""
    names = _candidates()
    path_env = os.environ.get("PATH", os.defpath)
    for name in names:
        found = _probe(name, path_env)
        if found is not None:
            return found, ""
    looked = f"$CC={names[0]!r}" if os.environ.get("CC", "").strip() else "cc, gcc"
    return None, f"no C compiler found ({looked} not found or not working)"


def cache_dir() -> Path:
    """Where compiled policies are kept: ``$KDX_CACHE_DIR/c`` else ``~/.cache/kdx/c``."""
    root = os.environ.get("KDX_CACHE_DIR")
    return (Path(root) if root else Path.home() / ".cache" / "kdx") / "c"


def compile_shared(compiler: Compiler, sources: dict[str, bytes], out: Path, extra_flags: tuple[str, ...] = ()) -> None:
    """Write ``sources`` (relative path -> bytes; the ``.c`` files are compiled, the rest are
    headers) into a temporary folder and build the shared library ``out`` there (``extra_flags``
    after the usual ones, e.g. an include folder), then rename it into place. A compiler error
    is a KdxError with its message."""
    out.parent.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory(prefix=".build-", dir=out.parent) as tmp:
        root = Path(tmp)
        for rel, data in sources.items():
            path = root / rel
            path.parent.mkdir(parents=True, exist_ok=True)
            path.write_bytes(data)
        c_files = sorted(rel for rel in sources if rel.endswith(".c"))
        built = root / out.name
        command = [compiler.path, *SHARED_FLAGS, *extra_flags, *c_files, "-o", str(built), "-lm"]
        try:
            result = subprocess.run(command, cwd=root, capture_output=True, text=True,
                                    timeout=_COMPILE_TIMEOUT_S)
        except (OSError, subprocess.SubprocessError) as exc:
            raise KdxError(f"compiling the C policy failed to run {compiler.path} ({exc})") from None
        if result.returncode != 0:
            message = (result.stderr or result.stdout).strip().splitlines()[-20:]
            raise KdxError(f"{compiler.path} could not compile the bundle's C sources "
                           f"({' '.join(command[:-4])} ...):\n" + "\n".join(message))
        os.replace(built, out)


def cached_library(compiler: Compiler, sources: dict[str, bytes], extra_flags: tuple[str, ...] = ()) -> Path:
    """The shared library of ``sources``, compiled once per (sources, compiler, flags)."""
    digest = hashlib.sha256()
    for part in (compiler.path, compiler.version, " ".join(SHARED_FLAGS + extra_flags)):
        digest.update(part.encode() + b"\0")
    for rel in sorted(sources):
        digest.update(rel.encode() + b"\0" + hashlib.sha256(sources[rel]).digest())
    out = cache_dir() / f"kdx-{digest.hexdigest()[:32]}.so"
    if not out.is_file():
        try:
            compile_shared(compiler, sources, out, extra_flags)
        except OSError as exc:
            raise KdxError(f"cannot write the compiled policy to {out.parent} ({exc.strerror}); set KDX_CACHE_DIR "
                           "to a writable folder") from None
    return out


def load_library(path: Path) -> ctypes.CDLL:
    """``ctypes.CDLL(path)``; a loader error is a KdxError naming the file."""
    try:
        return ctypes.CDLL(str(path))
    except OSError as exc:
        raise KdxError(f"{path}: cannot load the compiled policy ({exc}); remove it to recompile") from None


def act_function(library: ctypes.CDLL, symbol: str, recurrent: bool):
    """``kdx_<symbol>_act`` with raw-pointer argtypes (pass ints from ``ndarray.ctypes.data``,
    or None for NULL), returning int."""
    try:
        function = getattr(library, f"kdx_{symbol}_act")
    except AttributeError:
        raise KdxError(f"the compiled C policy has no function kdx_{symbol}_act; the bundle is "
                       "inconsistent, re-export it") from None
    function.argtypes = [ctypes.c_void_p] * (4 if recurrent else 3)
    function.restype = ctypes.c_int
    return function
