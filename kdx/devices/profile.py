"""Device profiles: what a deployment target offers and how much of it one agent's student may use.

A profile is data: one TOML file per device under ``kdx/devices/profiles/``, loaded into a
frozen :class:`DeviceProfile` and validated here. Unknown keys are errors (a typo in a budget
must not silently fall back to a default). Torch-free.

A profile may name the default view of its students, the sensor suite of that class of robot
(issue 15)::

    [view]
    default = ["sight:4", "-ally.*.health"]     # view ops (kdx.envs.view_spec), for every agent

``kdx distill RUN --profile P`` gives every student that view unless ``--view``/``--views-file``
is given, and checks it against the env's observation layout there (this layer cannot: it sits
below the envs). No shipped profile names one: they describe compute, not sensors.
"""

from __future__ import annotations

import sys
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from kdx.devices.targets import PRECISIONS, TARGETS
from kdx.errors import KdxError

if sys.version_info >= (3, 11):
    import tomllib
else:  # pragma: no cover - exercised on Python 3.10 only
    import tomli as tomllib

RUNTIME_BACKENDS = ("tensorrt", "onnxruntime", "numpy", "c")


@dataclass(frozen=True)
class CpuSpec:
    """The device's CPU: instruction set, core type, core count and nominal clock."""

    arch: str
    core: str
    cores: int
    clock_ghz: float


@dataclass(frozen=True)
class AcceleratorSpec:
    """An on-board accelerator (a Jetson GPU) and the TensorRT its JetPack ships."""

    kind: str
    name: str
    cuda_cores: int | None = None
    tops_int8: float | None = None  # as the vendor quotes it (sparse INT8 on Orin)
    tflops_fp16: float | None = None
    jetpack: str | None = None
    tensorrt: str | None = None


@dataclass(frozen=True)
class Budget:
    """What one agent's student may cost on this device (batch 1, one decision).

    ``max_macs_per_agent`` counts the multiply-accumulates of the student's Linear layers;
    ``max_param_bytes_per_agent`` is parameter count x bytes per parameter at the profile's
    default precision; ``latency_budget_us`` is the per-decision budget (observation in, action
    out) that the runtime's latency profiler compares measurements against.
    """

    max_macs_per_agent: int
    max_param_bytes_per_agent: int
    latency_budget_us: float


@dataclass(frozen=True)
class DeviceProfile:
    """One deployment device: hardware facts, default precision, export target and budgets."""

    name: str
    display_name: str
    target: str
    default_precision: str
    memory_gb: tuple[float, ...]
    preferred_backends: tuple[str, ...]
    cpu: CpuSpec
    budget: Budget
    accelerator: AcceleratorSpec | None = None
    notes: str = ""
    default_view: tuple[str, ...] = ()  # view ops of every student ([view] default); () = full observations

    @property
    def bytes_per_param(self) -> int:
        """Storage bytes of one parameter at the default precision."""
        return PRECISIONS[self.default_precision].bytes_per_param

    @property
    def max_params_per_agent(self) -> int:
        """The parameter-memory budget expressed as a parameter count."""
        return self.budget.max_param_bytes_per_agent // self.bytes_per_param

    @property
    def tensorrt(self) -> str | None:
        """TensorRT version the device's JetPack ships, or None without one."""
        return self.accelerator.tensorrt if self.accelerator else None


# --- loading and validation ---------------------------------------------------------------

_SPEC = {
    "": {
        "name": (str, True),
        "display_name": (str, True),
        "target": (str, True),
        "default_precision": (str, True),
        "memory_gb": (list, True),
        "preferred_backends": (list, True),
        "notes": (str, False),
        "cpu": (dict, True),
        "budget": (dict, True),
        "accelerator": (dict, False),
        "view": (dict, False),
    },
    "view": {
        "default": (list, True),
    },
    "cpu": {
        "arch": (str, True),
        "core": (str, True),
        "cores": (int, True),
        "clock_ghz": (float, True),
    },
    "accelerator": {
        "kind": (str, True),
        "name": (str, True),
        "cuda_cores": (int, False),
        "tops_int8": (float, False),
        "tflops_fp16": (float, False),
        "jetpack": (str, False),
        "tensorrt": (str, False),
    },
    "budget": {
        "max_macs_per_agent": (int, True),
        "max_param_bytes_per_agent": (int, True),
        "latency_budget_us": (float, True),
    },
}


_KIND_NAMES = {int: "an integer", float: "a number", str: "a string", list: "a list", dict: "a table"}


def _checked_table(table: dict[str, Any], section: str, where: str) -> dict[str, Any]:
    """Check keys and value types of one TOML table against ``_SPEC[section]``."""
    spec = _SPEC[section]
    # No square brackets: the CLI prints messages through rich, which would eat "[cpu]".
    label = f"the '{section}' table" if section else "the top level"
    unknown = sorted(set(table) - set(spec))
    if unknown:
        raise KdxError(
            f"{where}: unknown key(s) {', '.join(unknown)} in {label}; "
            f"accepted keys: {', '.join(spec)}."
        )
    for key, (kind, required) in spec.items():
        if key not in table:
            if required:
                raise KdxError(f"{where}: missing required key '{key}' in {label}.")
            continue
        value = table[key]
        # TOML integers are acceptable where a float is expected; booleans never are numbers.
        accepted = (int, float) if kind is float else kind
        if isinstance(value, bool) or not isinstance(value, accepted):
            raise KdxError(
                f"{where}: '{key}' in {label} must be {_KIND_NAMES[kind]}, got {value!r}."
            )
    return table


def _positive(value: float, key: str, where: str) -> None:
    if value <= 0:
        raise KdxError(f"{where}: '{key}' must be positive, got {value!r}.")


def profile_from_dict(data: dict[str, Any], where: str = "profile") -> DeviceProfile:
    """Build and validate a :class:`DeviceProfile` from parsed TOML; ``where`` names the source."""
    _checked_table(data, "", where)
    cpu_t = _checked_table(data["cpu"], "cpu", where)
    budget_t = _checked_table(data["budget"], "budget", where)
    acc_t = data.get("accelerator")
    if acc_t is not None:
        _checked_table(acc_t, "accelerator", where)

    if data["target"] not in TARGETS:
        raise KdxError(f"{where}: target {data['target']!r} is not one of {', '.join(TARGETS)}.")
    if data["default_precision"] not in PRECISIONS:
        raise KdxError(
            f"{where}: default_precision {data['default_precision']!r} is not one of "
            f"{', '.join(PRECISIONS)}."
        )
    memory = data["memory_gb"]
    if not memory or any(isinstance(m, bool) or not isinstance(m, (int, float)) or m <= 0 for m in memory):
        raise KdxError(f"{where}: memory_gb must be a non-empty list of positive numbers, got {memory!r}.")
    backends = data["preferred_backends"]
    if not backends or any(b not in RUNTIME_BACKENDS for b in backends):
        raise KdxError(
            f"{where}: preferred_backends must list some of {', '.join(RUNTIME_BACKENDS)}, "
            f"got {backends!r}."
        )
    _positive(cpu_t["cores"], "cores", where)
    _positive(cpu_t["clock_ghz"], "clock_ghz", where)
    for key in ("max_macs_per_agent", "max_param_bytes_per_agent", "latency_budget_us"):
        _positive(budget_t[key], key, where)
    if acc_t is not None:
        for key in ("cuda_cores", "tops_int8", "tflops_fp16"):
            if key in acc_t:
                _positive(acc_t[key], key, where)
    view_t = data.get("view")
    if view_t is not None:
        ops = _checked_table(view_t, "view", where)["default"]
        if not ops or any(not isinstance(op, str) or not op.strip() for op in ops):
            raise KdxError(f"{where}: 'default' in the 'view' table must be a non-empty list of view ops, "
                           f"e.g. [\"sight:4\", \"-ally.*.health\"], got {ops!r}.")
    if "tensorrt" in backends and (acc_t is None or "tensorrt" not in acc_t):
        raise KdxError(f"{where}: preferred_backends lists tensorrt but the 'accelerator' table names no tensorrt version.")

    return DeviceProfile(
        name=data["name"],
        display_name=data["display_name"],
        target=data["target"],
        default_precision=data["default_precision"],
        memory_gb=tuple(float(m) for m in memory),
        preferred_backends=tuple(backends),
        cpu=CpuSpec(
            arch=cpu_t["arch"],
            core=cpu_t["core"],
            cores=cpu_t["cores"],
            clock_ghz=float(cpu_t["clock_ghz"]),
        ),
        budget=Budget(
            max_macs_per_agent=budget_t["max_macs_per_agent"],
            max_param_bytes_per_agent=budget_t["max_param_bytes_per_agent"],
            latency_budget_us=float(budget_t["latency_budget_us"]),
        ),
        accelerator=None
        if acc_t is None
        else AcceleratorSpec(
            kind=acc_t["kind"],
            name=acc_t["name"],
            cuda_cores=acc_t.get("cuda_cores"),
            tops_int8=None if "tops_int8" not in acc_t else float(acc_t["tops_int8"]),
            tflops_fp16=None if "tflops_fp16" not in acc_t else float(acc_t["tflops_fp16"]),
            jetpack=acc_t.get("jetpack"),
            tensorrt=acc_t.get("tensorrt"),
        ),
        notes=" ".join(data.get("notes", "").split()),
        default_view=tuple(view_t["default"]) if view_t is not None else (),
    )


def load_profile_file(path: str | Path) -> DeviceProfile:
    """Load one profile TOML file; its ``name`` must equal the file name without ``.toml``."""
    path = Path(path)
    try:
        text = path.read_text(encoding="utf-8")
    except OSError as exc:
        raise KdxError(f"cannot read device profile {path}: {exc.strerror or exc}.") from exc
    return load_profile_text(text, where=str(path), expected_name=path.stem)


def load_profile_text(text: str, where: str, expected_name: str | None = None) -> DeviceProfile:
    """Parse and validate profile TOML ``text``; ``where`` names the source in error messages."""
    try:
        data = tomllib.loads(text)
    except tomllib.TOMLDecodeError as exc:
        raise KdxError(f"{where}: not valid TOML ({exc}).") from exc
    profile = profile_from_dict(data, where)
    if expected_name is not None and profile.name != expected_name:
        raise KdxError(
            f"{where}: name {profile.name!r} does not match the file name; "
            f"rename the file to {profile.name}.toml or set name = {expected_name!r}."
        )
    return profile
