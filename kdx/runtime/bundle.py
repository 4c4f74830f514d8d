"""Loading a bundle: manifest validation, file checks (inside the folder, size, sha256), and
per-agent policies on a chosen backend (``"auto"`` measures the candidates and keeps the fastest).
"""

from __future__ import annotations

import atexit
import os
import shutil
import signal
import tarfile
import tempfile
import threading
import time
import zlib
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from kdx.errors import KdxError
from kdx.fileio import sha256_file
from kdx.runtime.backends import BACKENDS, Backend, available_backends
from kdx.runtime.manifest import (
    MANIFEST_NAME,
    AgentEntry,
    Manifest,
    load_manifest,
    validate_relative_path,
)
from kdx.runtime.model_width import check_model_widths
from kdx.runtime.policy import Policy

AUTO = "auto"
ARCHIVE_SUFFIXES = (".tar.gz", ".tgz", ".tar")
#: limits of a bundle archive: members (files and folders) and the sum of their sizes; a bundle
#: holds tens of files and megabytes, and /tmp is often in RAM on the device
MAX_ARCHIVE_MEMBERS = 4096
MAX_ARCHIVE_BYTES = 1 << 30
# Python >= 3.11.4 / 3.12 has the "data" extraction filter; the member checks above already
# enforce it, the filter is a second lock where available.
_EXTRACT_KW = {"filter": "data"} if hasattr(tarfile, "data_filter") else {}
_AUTO_WARMUP, _AUTO_ITERS = 100, 400
# The order in which "needs ..." notes suggest installs: the portable library first.
_INSTALL_ADVICE_ORDER = ("onnxruntime", "numpy", "tensorrt")


class BackendMissing(KdxError):
    """No backend installed here can run an agent's model; installing a library would help.

    ``note``: one line saying what to install, e.g. ``needs onnxruntime (pip install
    'kdx[runtime]')``; commands that run what they can (bench) skip the agent with it."""

    def __init__(self, entry: AgentEntry, hints: list[str], details: str = "") -> None:
        self.note = _needs(hints)
        #: why each backend could not run it
        self.details = details
        others = f"; or install {' or '.join(hints[1:])}" if len(hints) > 1 else ""
        super().__init__(f"{entry.role} {entry.name}: no backend installed here can run it; "
                         f"{self.note}{others}")


def _needs(hints: list[str]) -> str:
    """The one-line note: the first (preferred) install only."""
    return f"needs {hints[0]}"


def install_note(entry: AgentEntry) -> str | None:
    """``needs <library> (<how to install>)`` if no backend installed here can run ``entry`` and
    an install would help (the preferred one, see :func:`install_hints`); None otherwise."""
    hints = install_hints(entry)
    return _needs(hints) if hints else None


def install_hints(entry: AgentEntry) -> list[str]:
    """What to install so that some backend runs ``entry`` here (empty if one already can, or
    if no install would help)."""
    runnable = any(cls.unavailable_reason() is None and cls.unsupported_reason(entry) is None
                   for cls in BACKENDS.values())
    if runnable:
        return []
    order = sorted(BACKENDS, key=lambda name: _INSTALL_ADVICE_ORDER.index(name)
                   if name in _INSTALL_ADVICE_ORDER else len(_INSTALL_ADVICE_ORDER))
    return [hint for name in order if (hint := BACKENDS[name].install_hint_for(entry))]


def verify_files(bundle_dir: Path, manifest: Manifest) -> None:
    """Every listed file exists inside ``bundle_dir`` (symlinks included), has the listed size
    and sha256; otherwise KdxError naming the file and what is wrong."""
    root = bundle_dir.resolve()
    for entry in manifest.files():
        path = bundle_dir / entry.path
        resolved = path.resolve()
        if root not in resolved.parents:
            raise KdxError(f"{path}: resolves to {resolved}, outside the bundle folder {root}; "
                           "refusing to load")
        if not resolved.is_file():
            raise KdxError(f"{path}: listed in {MANIFEST_NAME} but missing; copy the whole bundle")
        size = resolved.stat().st_size
        if entry.size_bytes is not None and size != entry.size_bytes:
            raise KdxError(f"{path}: {size} bytes but the manifest says {entry.size_bytes} "
                           "(truncated or replaced?); copy the bundle again")
        actual = sha256_file(resolved)
        if actual != entry.sha256:
            raise KdxError(f"{path}: sha256 {actual[:16]}... does not match the manifest's "
                           f"{entry.sha256[:16]}... (corrupt or modified); copy the bundle again")


# Folders archives were extracted into: removed at exit, and on SIGTERM (which skips atexit).
_EXTRACTED: list[Path] = []


def _remove_extracted() -> None:
    while _EXTRACTED:
        shutil.rmtree(_EXTRACTED.pop(), ignore_errors=True)


def _remove_extracted_then_terminate(signum: int, frame: object) -> None:
    _remove_extracted()
    signal.signal(signum, signal.SIG_DFL)
    os.kill(os.getpid(), signum)  # die of the signal, as without this handler


def _extraction_folder() -> Path:
    """A private temporary folder, removed at exit and on SIGTERM. A SIGTERM handler is only
    installed where none is (``serve`` installs its own, which exits normally: atexit runs)."""
    if not _EXTRACTED:
        atexit.register(_remove_extracted)
        if threading.current_thread() is threading.main_thread() \
                and signal.getsignal(signal.SIGTERM) is signal.SIG_DFL:
            signal.signal(signal.SIGTERM, _remove_extracted_then_terminate)
    folder = Path(tempfile.mkdtemp(prefix="kdx-bundle-"))
    _EXTRACTED.append(folder)
    return folder


def unpack_archive(archive: Path) -> Path:
    """Extract a bundle archive (``kdx export`` writes ``<target>.tar.gz``) into a private
    temporary folder, removed at exit (and on SIGTERM), and return the folder holding
    ``manifest.json``.

    Only regular files and folders with relative names inside the archive are accepted: a
    member that is a link, a device, absolute, or climbs out with ``..`` refuses the archive.
    At most MAX_ARCHIVE_MEMBERS members and MAX_ARCHIVE_BYTES bytes in all (checked while the
    headers are read, before anything is written); one bundle per archive.
    """
    destination = _extraction_folder()
    try:
        return _extract_bundle(archive, destination)
    except BaseException:
        shutil.rmtree(destination, ignore_errors=True)
        _EXTRACTED.remove(destination)
        raise


def _extract_bundle(archive: Path, destination: Path) -> Path:
    try:
        with tarfile.open(archive, "r:*") as tar:
            members = []
            total = 0
            for member in tar:
                members.append(member)
                if len(members) > MAX_ARCHIVE_MEMBERS:
                    raise KdxError(f"{archive}: more than {MAX_ARCHIVE_MEMBERS} members, more than "
                                   "a bundle has; refusing the archive")
                if not (member.isfile() or member.isdir()):
                    raise KdxError(f"{archive}: member {member.name!r} is not a plain file or folder; "
                                   "refusing the archive")
                name = member.name.rstrip("/")
                while name.startswith("./"):
                    name = name[2:]
                if name not in ("", ".") or not member.isdir():  # "." is the archive's root
                    validate_relative_path(name, f"{archive}: member")
                total += member.size
                if total > MAX_ARCHIVE_BYTES:
                    raise KdxError(f"{archive}: unpacks to more than {MAX_ARCHIVE_BYTES} bytes, more "
                                   "than a bundle has; refusing the archive")
            for member in members:
                tar.extract(member, destination, set_attrs=False, **_EXTRACT_KW)
    except (tarfile.TarError, OSError, EOFError, zlib.error) as exc:
        raise KdxError(f"{archive}: not a readable bundle archive ({exc})") from None
    candidates = [destination, *sorted(p for p in destination.iterdir() if p.is_dir())]
    found = [c for c in candidates if (c / MANIFEST_NAME).is_file()]
    if len(found) > 1:
        names = " and ".join(repr(str(c.relative_to(destination)) + "/" + MANIFEST_NAME) for c in found)
        raise KdxError(f"{archive}: holds more than one bundle ({names}); archive one bundle each")
    if found:
        return found[0]
    raise KdxError(f"{archive}: no {MANIFEST_NAME} at its top level or in its top folder")


@dataclass
class Bundle:
    """A validated bundle folder. Build policies with :meth:`policy`."""

    path: Path
    manifest: Manifest
    load_seconds: float = 0.0
    #: per (role, agent): what ``auto`` measured, backend -> p50 µs (float) or why skipped (str)
    auto_choices: dict[tuple[str, str], dict[str, float | str]] = field(default_factory=dict)

    @classmethod
    def load(cls, path: str | os.PathLike[str]) -> Bundle:
        """Validate ``path`` (the bundle folder, its manifest.json, or a ``.tar.gz`` of it) and
        every file's sha256."""
        start = time.perf_counter()
        folder = Path(path)
        if folder.is_file() and folder.name == MANIFEST_NAME:
            folder = folder.parent
        elif folder.is_file() and folder.name.endswith(ARCHIVE_SUFFIXES):
            folder = unpack_archive(folder)
        if not folder.is_dir():
            raise KdxError(f"{path}: not a bundle folder (expected a folder with {MANIFEST_NAME})")
        manifest = load_manifest(folder)
        verify_files(folder, manifest)
        return cls(folder, manifest, load_seconds=time.perf_counter() - start)

    @property
    def agent_names(self) -> list[str]:
        return [a.name for a in self.manifest.agents]

    @property
    def has_teacher(self) -> bool:
        return bool(self.manifest.teacher)

    def policy(self, agent: str, backend: str = AUTO, role: str = "student") -> Policy:
        """The policy of ``agent`` (``role`` "student" or "teacher") on ``backend``
        ("auto", or a name from :data:`kdx.runtime.backends.BACKENDS`)."""
        entry = self.manifest.agent(agent, role)
        if backend == AUTO:  # one clear refusal of model files that disagree, not one per backend
            check_model_widths(entry, self.path)
            chosen, measured = self._auto(entry)
            self.auto_choices[(role, agent)] = measured
            return Policy(entry, chosen, selection=measured)
        return Policy(entry, self.open_backend(entry, backend))

    def open_backend(self, entry: AgentEntry, name: str) -> Backend:
        """Load ``entry`` on backend ``name``; KdxError saying why if it cannot run here."""
        if name not in BACKENDS:
            raise KdxError(f"unknown backend {name!r}; choose auto or one of {', '.join(BACKENDS)}")
        cls = BACKENDS[name]
        reason = cls.unavailable_reason() or cls.unsupported_reason(entry)
        if reason:
            hint = cls.install_hint_for(entry)
            if hint:
                raise BackendMissing(entry, [hint], f"backend {name}: {reason}")
            raise KdxError(f"backend {name} cannot run agent {entry.name!r}: {reason}")
        return cls(entry, self.path)

    def _auto(self, entry: AgentEntry) -> tuple[Backend, dict[str, float | str]]:
        """Load every usable backend, time batch-1 decisions on random observations, keep the
        fastest (median). Reasons for skipped backends are kept for ``info``/``bench``."""
        measured: dict[str, float | str] = {}
        best: tuple[float, Backend] | None = None
        obs = np.random.default_rng(0).standard_normal((16, entry.obs_dim)).astype(np.float32)
        for name, cls in BACKENDS.items():
            reason = cls.unavailable_reason() or cls.unsupported_reason(entry)
            if reason:
                measured[name] = reason
                continue
            try:
                candidate = cls(entry, self.path)
            except KdxError as exc:
                measured[name] = f"failed to load: {exc}"
                continue
            p50_us = _median_decision_us(candidate, obs)
            candidate.reset()
            measured[name] = p50_us
            if best is None or p50_us < best[0]:
                best = (p50_us, candidate)
        if best is None:
            details = "; ".join(f"{k}: {v}" for k, v in measured.items())
            failed_to_load = any(str(v).startswith("failed to load") for v in measured.values())
            hints = [] if failed_to_load else install_hints(entry)
            if hints:
                raise BackendMissing(entry, hints, details)
            raise KdxError(f"no backend can run agent {entry.name!r} here ({details})")
        return best[1], measured


def _median_decision_us(backend: Backend, obs: np.ndarray) -> float:
    clock = time.perf_counter_ns
    for i in range(_AUTO_WARMUP):
        backend.infer(obs[i % len(obs)])
    samples = np.empty(_AUTO_ITERS, dtype=np.int64)
    for i in range(_AUTO_ITERS):
        start = clock()
        backend.infer(obs[i % len(obs)])
        samples[i] = clock() - start
    return float(np.median(samples)) / 1e3


def backends_here() -> dict[str, str | None]:
    """Backend name -> None if usable on this machine, else why not (for ``info``)."""
    return available_backends()
