"""The bundle manifest: the contract between ``kdx export`` and ``kdx-runtime`` (torch-free).

A bundle is a folder holding ``manifest.json`` and the model files it lists. This module defines
the manifest's schema (dataclasses), its JSON form, its validation and its atomic write. It uses
only the standard library (numpy is not even needed), so the exporter and the runtime validate
against exactly the same code.

Schema (version 1)
------------------
``manifest.json`` is one JSON object::

    schema_version   int, 1 or 2 (2: some student has a view)   (unknown versions are refused)
    kdx_version      str, version of kdx that wrote the bundle
    target           a key of kdx.devices.targets.TARGETS
    precision        a key of kdx.devices.targets.PRECISIONS  (bundle-wide request; agents may differ)
    env              str, environment name the policies were trained on
    created_at       str, ISO 8601 UTC time of export
    agents           [AgentEntry, ...]            students (role "student"), at least one
    teacher          [AgentEntry, ...]            optional teacher actor per agent (role "teacher")

Each ``AgentEntry``::

    name, role, obs_dim, n_actions, hidden_sizes [int], params, macs (kdx.devices.cost.COST_RULE),
    inputs  {"obs": "obs", "action_mask": null | "action_mask", "h_in": null | "h_in"}
    outputs {"logits": "logits", "action": "action", "h_out": null | "h_out"}
    recurrent_state_shape  null | [1, hidden]
    id_one_hot_size, id_index   (0, 0) unless the model expects a one-hot agent id appended
    files   [{"path": rel path, "sha256": hex, "kind": FILE_KINDS key, "size_bytes": int|null}]
    precision, normalisation_folded, parity {str: number | bool | str}
    view    (students only, schema 2) null, or what the student reads: its view of the raw
            observation and what the device applies to it (kdx.runtime.manifest_view.AgentView);
            obs_dim is then the view's width (the model's input), view.raw_obs_dim the raw width
    c_symbol  (target c only; absent otherwise) the infix of the agent's C API, kdx_<c_symbol>_act

Schema version 2 differs from 1 only by the optional ``view``; an export writes 2 only when some
student has a view, so bundles without views stay readable by version-1 runtimes.

Keys starting with ``x_`` are extensions and are ignored; any other unknown key is an error
(new fields come with a new schema version).

Conventions the exporter follows
--------------------------------
* One ONNX model per agent (``kind`` "onnx": static batch 1; "onnx-dynamic": batch dimension
  symbolic). Inputs:

  - ``obs``: float32 ``[1, obs_dim + id_one_hot_size]`` for every precision (fp16/int8 models
    convert inside the graph). If ``id_one_hot_size > 0`` the runtime appends
    ``one_hot(id_index, id_one_hot_size)`` to the user's ``obs_dim`` values (shared teacher actor
    with agent id); the user always passes ``obs_dim`` values.
  - ``action_mask`` (optional): **bool** ``[1, n_actions]``, True = legal. Masking happens inside
    the graph: ``masked = Where(action_mask, logits, -1e9)``; ``action = ArgMax(masked)``.
  - ``h_in`` (recurrent only): float32 ``[1, hidden]``; zeros at the start of an episode.

  Outputs: ``logits`` float32 ``[1, n_actions]`` (raw, before masking), ``action`` int64 ``[1]``
  (argmax of the masked logits), ``h_out`` float32 ``[1, hidden]`` (recurrent only).
* Observation normalisation is part of the model: either folded into the first layer's
  weights (``normalisation_folded: true``) or as explicit ``Sub``/``Div`` nodes at the start of
  the graph (``false``). The runtime never normalises on its own.
* Beside each ONNX the exporter writes a ``.npz`` weights sidecar (``kind`` "npz", format in
  :mod:`kdx.runtime.mlp_npz`) so that the numpy backend runs without the ``onnx`` package.
* Target ``c`` adds the C code (``c_source``, ``c_header``, ``c_build``, ``c_harness``,
  ``c_data``; see ``kdx.export.c_target``) beside the fp32 ONNX and npz models; the agent's
  ``c_source`` is the one the runtime's c backend compiles.
* TensorRT engines (``kind`` "engine") are built on the device and only added to the manifest
  there; metadata lives in this manifest, never in a header in front of the engine.
* Every path is relative to the bundle folder, uses ``/``, and stays inside it (no ``..``, no
  absolute paths). Every file's sha256 is checked at load.
"""

from __future__ import annotations

import json
import math
import os
import re
from collections.abc import Collection
from dataclasses import asdict, dataclass, field
from pathlib import Path, PurePosixPath
from typing import Any

from kdx.devices.targets import PRECISIONS, TARGETS
from kdx.errors import KdxError
from kdx.fileio import atomic_write_text, sha256_file
from kdx.runtime.manifest_view import VIEW_SCHEMA_VERSION, AgentView

SCHEMA_VERSION = 1  # written when no student has a view (else VIEW_SCHEMA_VERSION)
SUPPORTED_SCHEMA_VERSIONS = (1, VIEW_SCHEMA_VERSION)
MANIFEST_NAME = "manifest.json"
ROLES = ("student", "teacher")
# File kinds a manifest may list, and what each is. "Model" kinds are ones a backend can run.
FILE_KINDS = {
    "onnx": "ONNX model, static batch 1",
    "onnx-dynamic": "ONNX model, symbolic batch dimension",
    "engine": "TensorRT engine, built on this device",
    "npz": "numpy MLP weights sidecar (kdx.runtime.mlp_npz)",
    "calib": "int8 calibration observations (npz)",
    "json": "auxiliary JSON (parity report, sizing)",
    "script": "shell script (build_engines.sh: trtexec commands equivalent to build-engines)",
    "timing-cache": "TensorRT timing cache shared by the engine builds on this device",
    "c_source": "C99 source of one policy (target c; the runtime's c backend compiles it)",
    "c_header": "C header (a policy's API, or the shared kdx_policy.h)",
    "c_build": "Makefile building the C policies, a static and a shared library and the harness",
    "c_harness": "C program replaying the parity rows through the C policies",
    "c_data": "binary data of the C harness (held-out parity rows and torch's logits)",
}
MODEL_FILE_KINDS = ("onnx", "onnx-dynamic", "engine", "npz", "c_source")
_SHA256 = re.compile(r"^[0-9a-f]{64}$")
_NAME = re.compile(r"^[A-Za-z0-9_.\-]{1,128}$")
_C_SYMBOL = re.compile(r"^[A-Za-z_][A-Za-z0-9_]{0,255}$")
_MAX_DIM = 1 << 20


@dataclass(frozen=True)
class FileEntry:
    """One file of the bundle: relative ``path``, lowercase hex ``sha256``, ``kind``."""

    path: str
    sha256: str
    kind: str
    size_bytes: int | None = None

    @classmethod
    def of_file(cls, bundle_dir: str | Path, path: str, kind: str) -> FileEntry:
        """The entry of ``bundle_dir / path`` as it is on disk now (its sha256 and size)."""
        full = Path(bundle_dir) / path
        return cls(path, sha256_file(full), kind, full.stat().st_size)


@dataclass(frozen=True)
class InputNames:
    """ONNX input names of an agent's model (``None``: the model has no such input)."""

    obs: str = "obs"
    action_mask: str | None = None
    h_in: str | None = None

    @classmethod
    def of_policy(cls, action_mask: bool, recurrent: bool) -> InputNames:
        """The names kdx gives a policy model's inputs (exporter, test bundles)."""
        return cls(action_mask="action_mask" if action_mask else None, h_in="h_in" if recurrent else None)


@dataclass(frozen=True)
class OutputNames:
    """ONNX output names of an agent's model (``None``: the model has no such output)."""

    logits: str = "logits"
    action: str = "action"
    h_out: str | None = None

    @classmethod
    def of_policy(cls, recurrent: bool) -> OutputNames:
        """The names kdx gives a policy model's outputs (exporter, test bundles)."""
        return cls(h_out="h_out" if recurrent else None)


@dataclass
class AgentEntry:
    """One agent's exported policy (student, or the teacher actor seen from that agent)."""

    name: str
    obs_dim: int
    n_actions: int
    files: list[FileEntry]
    role: str = "student"
    hidden_sizes: list[int] = field(default_factory=list)
    params: int = 0
    macs: int = 0
    inputs: InputNames = field(default_factory=InputNames)
    outputs: OutputNames = field(default_factory=OutputNames)
    recurrent_state_shape: list[int] | None = None
    id_one_hot_size: int = 0
    id_index: int = 0
    precision: str = "fp32"
    normalisation_folded: bool = True
    parity: dict[str, Any] = field(default_factory=dict)
    view: AgentView | None = None  # students distilled on a view of their observation
    #: target c: the infix of the agent's C API (``kdx_<c_symbol>_act``); None in other bundles
    #: (and then left out of the JSON, which older runtimes read unchanged)
    c_symbol: str | None = None

    @property
    def model_input_dim(self) -> int:
        """Width of the model's ``obs`` input: the observation plus any one-hot agent id."""
        return self.obs_dim + self.id_one_hot_size

    @property
    def is_recurrent(self) -> bool:
        return self.recurrent_state_shape is not None

    def file_of_kind(self, *kinds: str) -> FileEntry | None:
        """The first listed file whose kind is one of ``kinds`` (in the order of ``kinds``)."""
        for kind in kinds:
            for entry in self.files:
                if entry.kind == kind:
                    return entry
        return None


@dataclass
class Manifest:
    """The whole manifest. ``agents`` are the students; ``teacher`` is optional."""

    agents: list[AgentEntry]
    target: str = "x86"
    precision: str = "fp32"
    env: str = ""
    kdx_version: str = ""
    created_at: str = ""
    teacher: list[AgentEntry] = field(default_factory=list)
    schema_version: int = SCHEMA_VERSION

    @property
    def needed_schema_version(self) -> int:
        """The oldest schema version that can hold this manifest (2 once a student has a view)."""
        return VIEW_SCHEMA_VERSION if any(e.view is not None for e in self.agents) else SCHEMA_VERSION

    def entries(self) -> list[AgentEntry]:
        """Students then teacher entries."""
        return [*self.agents, *self.teacher]

    def agent(self, name: str, role: str = "student") -> AgentEntry:
        """The entry of agent ``name`` with ``role`` (one of :data:`ROLES`); KdxError listing
        the names (or the roles) otherwise."""
        pool = self.agents if check_role(role) == "student" else self.teacher
        for entry in pool:
            if entry.name == name:
                return entry
        names = ", ".join(e.name for e in pool) or "(none)"
        raise KdxError(f"bundle has no {role} policy for agent {name!r}; it has: {names}")

    def files(self) -> list[FileEntry]:
        """Every file listed, each path once."""
        seen: dict[str, FileEntry] = {}
        for entry in self.entries():
            for f in entry.files:
                seen.setdefault(f.path, f)
        return list(seen.values())

    # --- JSON ----------------------------------------------------------------------------
    def to_dict(self) -> dict[str, Any]:
        data = asdict(self)
        for agent in [*data["agents"], *data["teacher"]]:
            if agent["c_symbol"] is None:
                del agent["c_symbol"]
        return data

    def to_json(self) -> str:
        """The manifest as indented JSON (validated first: never write a bad manifest)."""
        self.validate()
        return json.dumps(self.to_dict(), indent=2, sort_keys=False) + "\n"

    @classmethod
    def from_json(cls, text: str | bytes, source: str = MANIFEST_NAME) -> Manifest:
        """Parse and validate; any problem raises KdxError naming ``source`` and the field."""
        try:
            data = json.loads(text)
        except (ValueError, RecursionError) as exc:  # JSONDecodeError and bad UTF-8
            raise KdxError(f"{source}: not valid JSON ({exc}); re-export the bundle") from None
        return cls.from_dict(data, source)

    @classmethod
    def from_dict(cls, data: Any, source: str = MANIFEST_NAME) -> Manifest:
        reader = _Reader(source)
        manifest = reader.manifest(data)
        manifest.validate(source)
        return manifest

    # --- validation ----------------------------------------------------------------------
    def validate(self, source: str = MANIFEST_NAME) -> None:
        """Check every field; raise KdxError saying which one is wrong and why."""
        if self.schema_version not in SUPPORTED_SCHEMA_VERSIONS:
            raise KdxError(
                f"{source}: schema_version {self.schema_version!r} is not supported by this "
                f"kdx-runtime (supported: {', '.join(map(str, SUPPORTED_SCHEMA_VERSIONS))}); "
                "upgrade kdx-runtime or re-export with a matching kdx"
            )
        if self.schema_version < self.needed_schema_version:
            raise KdxError(f"{source}: students have views, which need schema_version {VIEW_SCHEMA_VERSION} "
                           f"(got {self.schema_version}); re-export the bundle")
        _one_of(self.target, TARGETS, f"{source}: target")
        _one_of(self.precision, PRECISIONS, f"{source}: precision")
        if not self.agents:
            raise KdxError(f"{source}: 'agents' is empty; a bundle needs at least one student")
        for role, pool in (("student", self.agents), ("teacher", self.teacher)):
            names = [e.name for e in pool]
            duplicates = sorted({n for n in names if names.count(n) > 1})
            if duplicates:
                raise KdxError(f"{source}: {role} agent names repeat: {', '.join(duplicates)}")
            for entry in pool:
                _validate_agent(entry, role, f"{source}: {role} {entry.name!r}")
        sha_by_path: dict[str, str] = {}
        for f in (f for e in self.entries() for f in e.files):
            if sha_by_path.setdefault(f.path, f.sha256) != f.sha256:
                raise KdxError(f"{source}: file {f.path!r} is listed with two different sha256")


def _one_of(value: Any, allowed: Collection[str], what: str) -> None:
    if value not in allowed:
        raise KdxError(f"{what} is {value!r}; expected one of {', '.join(allowed)}")


def _positive_int(value: Any, what: str, minimum: int = 1) -> None:
    if not isinstance(value, int) or isinstance(value, bool) or not minimum <= value <= _MAX_DIM:
        raise KdxError(f"{what} is {value!r}; expected an integer in [{minimum}, {_MAX_DIM}]")


def check_role(role: Any, what: str = "role") -> str:
    """``role`` if it is one of :data:`ROLES` (exactly: no case folding); KdxError otherwise."""
    if role not in ROLES:
        raise KdxError(f"{what} {role!r} is not a role; choose one of {', '.join(ROLES)}")
    return role


def validate_relative_path(path: Any, what: str) -> PurePosixPath:
    """A bundle path must be relative, use ``/``, and stay inside the bundle folder."""
    if not isinstance(path, str) or not path or "\\" in path or "\x00" in path:
        raise KdxError(f"{what}: path {path!r} is not a plain relative path")
    pure = PurePosixPath(path)
    if pure.is_absolute() or path.startswith("~"):
        raise KdxError(f"{what}: path {path!r} is absolute; bundle paths must be relative")
    if any(part in ("..", "") for part in path.split("/")) or pure.name in (".", ""):
        raise KdxError(f"{what}: path {path!r} leaves the bundle folder or is not a file name")
    return pure


def _validate_agent(entry: AgentEntry, role: str, where: str) -> None:
    if not isinstance(entry.name, str) or not _NAME.match(entry.name):
        raise KdxError(f"{where}: agent name must be 1-128 of [A-Za-z0-9_.-]")
    if entry.role != role:
        raise KdxError(f"{where}: role is {entry.role!r} but it is listed under the {role}s")
    _positive_int(entry.obs_dim, f"{where}: obs_dim")
    _positive_int(entry.n_actions, f"{where}: n_actions")
    for key in ("params", "macs"):
        value = getattr(entry, key)
        if not isinstance(value, int) or isinstance(value, bool) or value < 0:
            raise KdxError(f"{where}: {key} is {value!r}; expected a non-negative integer")
    for size in entry.hidden_sizes:
        _positive_int(size, f"{where}: hidden_sizes entry")
    _one_of(entry.precision, PRECISIONS, f"{where}: precision")
    if not isinstance(entry.normalisation_folded, bool):
        raise KdxError(f"{where}: normalisation_folded must be true or false")
    _positive_int(entry.id_one_hot_size, f"{where}: id_one_hot_size", minimum=0)
    _positive_int(entry.id_index, f"{where}: id_index", minimum=0)
    if entry.id_one_hot_size and entry.id_index >= entry.id_one_hot_size:
        raise KdxError(f"{where}: id_index {entry.id_index} >= id_one_hot_size")
    _validate_io(entry, where)
    if entry.c_symbol is not None and not _C_SYMBOL.match(entry.c_symbol):
        raise KdxError(f"{where}: c_symbol {entry.c_symbol!r} is not a C identifier fragment")
    if entry.view is not None:
        if role != "student":
            raise KdxError(f"{where}: a {role} reads the full observation and has no view")
        entry.view.validate(entry.obs_dim, where)
    if not entry.files:
        raise KdxError(f"{where}: 'files' is empty; the agent needs a model file")
    for f in entry.files:
        validate_relative_path(f.path, f"{where}: file")
        if not isinstance(f.sha256, str) or not _SHA256.match(f.sha256):
            raise KdxError(f"{where}: file {f.path!r} sha256 must be 64 lowercase hex digits")
        _one_of(f.kind, tuple(FILE_KINDS), f"{where}: file {f.path!r} kind")
        if f.size_bytes is not None:
            if not isinstance(f.size_bytes, int) or isinstance(f.size_bytes, bool) or f.size_bytes < 0:
                raise KdxError(f"{where}: file {f.path!r} size_bytes must be a non-negative int")
    if not any(f.kind in MODEL_FILE_KINDS for f in entry.files):
        raise KdxError(f"{where}: no model file (kinds {', '.join(MODEL_FILE_KINDS)})")
    for key, value in entry.parity.items():
        if not isinstance(key, str) or not isinstance(value, (int, float, str, bool)) \
                or (isinstance(value, float) and not math.isfinite(value)):
            raise KdxError(f"{where}: parity[{key!r}] must map a name to a finite number, a "
                           "bool or a string")


def _validate_io(entry: AgentEntry, where: str) -> None:
    names = [entry.inputs.obs, entry.outputs.logits, entry.outputs.action]
    optional = [entry.inputs.action_mask, entry.inputs.h_in, entry.outputs.h_out]
    for name in names + [n for n in optional if n is not None]:
        if not isinstance(name, str) or not name:
            raise KdxError(f"{where}: input/output names must be non-empty strings")
    shape = entry.recurrent_state_shape
    has_state_io = entry.inputs.h_in is not None, entry.outputs.h_out is not None
    if shape is None:
        if any(has_state_io):
            raise KdxError(f"{where}: h_in/h_out named but recurrent_state_shape is null")
        return
    if not isinstance(shape, list) or len(shape) != 2 or shape[0] != 1:
        raise KdxError(f"{where}: recurrent_state_shape must be [1, hidden], got {shape!r}")
    _positive_int(shape[1], f"{where}: recurrent_state_shape[1]")
    if not all(has_state_io):
        raise KdxError(f"{where}: a recurrent model needs both inputs.h_in and outputs.h_out")


class _Reader:
    """Turns parsed JSON into dataclasses, with messages that name the offending key."""

    def __init__(self, source: str) -> None:
        self.source = source

    def _obj(self, data: Any, where: str, allowed: set[str], required: set[str]) -> dict:
        if not isinstance(data, dict):
            raise KdxError(f"{self.source}: {where} must be a JSON object, got {type(data).__name__}")
        unknown = sorted(k for k in data if k not in allowed and not str(k).startswith("x_"))
        if unknown:
            raise KdxError(
                f"{self.source}: {where} has unknown key(s) {', '.join(map(repr, unknown))} "
                f"(known: {', '.join(sorted(allowed))})"
            )
        missing = sorted(required - set(data))
        if missing:
            raise KdxError(f"{self.source}: {where} lacks required key(s) {', '.join(missing)}")
        return {k: v for k, v in data.items() if k in allowed}

    def _typed(self, value: Any, types: tuple[type, ...], where: str) -> Any:
        ok = isinstance(value, types) and not (isinstance(value, bool) and bool not in types)
        if isinstance(value, float) and not math.isfinite(value) and float in types:
            ok = False
        if not ok:
            names = "/".join(t.__name__ for t in types)
            raise KdxError(f"{self.source}: {where} is {value!r}; expected {names}")
        return value

    def _list(self, value: Any, where: str) -> list:
        return self._typed(value, (list,), where)

    def manifest(self, data: Any) -> Manifest:
        if isinstance(data, dict) and "schema_version" in data:
            version = data["schema_version"]
            if version not in SUPPORTED_SCHEMA_VERSIONS or isinstance(version, bool):
                raise KdxError(
                    f"{self.source}: schema_version {version!r} is not supported by this "
                    f"kdx-runtime (supported: {', '.join(map(str, SUPPORTED_SCHEMA_VERSIONS))})"
                )
        fields = {"schema_version", "kdx_version", "target", "precision", "env", "created_at",
                  "agents", "teacher"}
        d = self._obj(data, "manifest", fields, {"schema_version", "agents"})
        for key in ("kdx_version", "target", "precision", "env", "created_at"):
            if key in d:
                self._typed(d[key], (str,), key)
        agents = [self.agent(a, f"agents[{i}]") for i, a in enumerate(self._list(d["agents"], "agents"))]
        teacher = [self.agent(a, f"teacher[{i}]")
                   for i, a in enumerate(self._list(d.get("teacher", []), "teacher"))]
        rest = {k: v for k, v in d.items() if k not in ("agents", "teacher")}
        return Manifest(agents=agents, teacher=teacher, **rest)

    def agent(self, data: Any, where: str) -> AgentEntry:
        fields = {f for f in AgentEntry.__dataclass_fields__}
        d = self._obj(data, where, fields, {"name", "obs_dim", "n_actions", "files"})
        files = [self.file(f, f"{where}.files[{i}]")
                 for i, f in enumerate(self._list(d.pop("files"), f"{where}.files"))]
        d["inputs"] = InputNames(**self._names(d.get("inputs", {}), f"{where}.inputs",
                                               {"obs"}, {"action_mask", "h_in"}))
        d["outputs"] = OutputNames(**self._names(d.get("outputs", {}), f"{where}.outputs",
                                                 {"logits", "action"}, {"h_out"}))
        for key in ("name", "role", "precision"):
            if key in d:
                self._typed(d[key], (str,), f"{where}.{key}")
        if d.get("c_symbol") is not None:
            self._typed(d["c_symbol"], (str,), f"{where}.c_symbol")
        for key in ("obs_dim", "n_actions", "params", "macs", "id_one_hot_size", "id_index"):
            if key in d:
                self._typed(d[key], (int,), f"{where}.{key}")
        if "hidden_sizes" in d:
            for size in self._list(d["hidden_sizes"], f"{where}.hidden_sizes"):
                self._typed(size, (int,), f"{where}.hidden_sizes entry")
        if d.get("recurrent_state_shape") is not None:
            for size in self._list(d["recurrent_state_shape"], f"{where}.recurrent_state_shape"):
                self._typed(size, (int,), f"{where}.recurrent_state_shape entry")
        if "normalisation_folded" in d:
            self._typed(d["normalisation_folded"], (bool,), f"{where}.normalisation_folded")
        if "parity" in d:
            parity = self._typed(d["parity"], (dict,), f"{where}.parity")
            for key, value in parity.items():
                self._typed(value, (int, float, str, bool), f"{where}.parity[{key!r}]")
        if d.get("view") is not None:
            d["view"] = AgentView.from_json(d["view"], f"{self.source}: {where}")
        return AgentEntry(files=files, **d)

    def _names(self, data: Any, where: str, required: set[str], optional: set[str]) -> dict:
        d = self._obj(data, where, required | optional, set())
        for key, value in d.items():
            if value is not None or key in required:
                self._typed(value, (str,), f"{where}.{key}")
        return d

    def file(self, data: Any, where: str) -> FileEntry:
        d = self._obj(data, where, {"path", "sha256", "kind", "size_bytes"}, {"path", "sha256", "kind"})
        for key in ("path", "sha256", "kind"):
            self._typed(d[key], (str,), f"{where}.{key}")
        if d.get("size_bytes") is not None:
            self._typed(d["size_bytes"], (int,), f"{where}.size_bytes")
        return FileEntry(**d)


def load_manifest(bundle_dir: str | os.PathLike[str]) -> Manifest:
    """Read and validate ``<bundle_dir>/manifest.json``."""
    path = Path(bundle_dir) / MANIFEST_NAME
    if not path.is_file():
        raise KdxError(f"{path}: missing; is {bundle_dir} a kdx bundle folder?")
    try:
        raw = path.read_bytes()
    except OSError as exc:
        raise KdxError(f"{path}: cannot be read ({exc.strerror})") from None
    return Manifest.from_json(raw, source=str(path))


def write_manifest(path: str | os.PathLike[str], manifest: Manifest) -> Path:
    """Validate and write ``manifest`` atomically (temp file in the same folder, then rename).

    ``path`` is the manifest file or the bundle folder (then ``manifest.json`` inside it).
    """
    target = Path(path)
    if target.is_dir():
        target = target / MANIFEST_NAME
    text = manifest.to_json()
    atomic_write_text(target, text)
    return target
