"""Flash and RAM of one agent's generated C policy on a microcontroller: the estimate (torch-free).

:func:`estimate_c_footprint` is the rule sizing applies (``kdx.devices.sizing`` keeps a student
only if it fits a profile's ``max_flash_bytes_per_agent`` and ``max_ram_bytes_per_agent``), and
what ``kdx export --target c`` reports when no cross compiler is installed to measure the real
numbers (:mod:`kdx.devices.cross_size`). The rule, :data:`FOOTPRINT_RULE`:

- **flash** = weights at the precision (``in x out`` per Linear layer x bytes per parameter)
  + 4 bytes per bias (biases stay fp32) + 4 bytes per output channel for the int8 per-channel
  weight scales + 8 bytes per observation feature for the observation normalisation (mean and
  scale; counted even where the generator folds them into the first layer, so the estimate
  errs high) + a code allowance of :data:`CODE_BYTES_BASE` plus :data:`CODE_BYTES_PER_LAYER`
  per Linear layer (the ``-Os`` Thumb-2 code of the loops, the argmax and the input checks).
- **RAM** = the caller-owned buffers of the API (observation and logits floats, the mask's
  bytes, the recurrent state's floats) + the function's stack: a normalised copy of the
  observation and every layer's output as floats (no buffer reuse assumed), the int8 input
  vector of the widest layer (int8 only), and an allowance of :data:`STACK_BYTES` (saved
  registers, loop counters, alignment).

The allowances were set against ``arm-none-eabi-gcc -Os`` builds of the generator's output for
Cortex-M4 (the tests compare estimate and measurement where the toolchain is installed).
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

from kdx.devices.targets import PRECISIONS
from kdx.errors import KdxError

CODE_BYTES_BASE = 512
CODE_BYTES_PER_LAYER = 160
STACK_BYTES = 128
FLOAT_BYTES = 4

FOOTPRINT_RULE = (
    "estimate: flash = weights x bytes per parameter + 4 B per bias + 4 B per output channel "
    "(int8 scales) + 8 B per observation feature (normalisation) + code "
    f"({CODE_BYTES_BASE} B + {CODE_BYTES_PER_LAYER} B per Linear layer); RAM = 4 B per "
    "observation feature, hidden unit and logit + the widest layer input as int8 (int8 only) + "
    f"4 B per recurrent state unit + 1 B per action (mask) + {STACK_BYTES} B stack"
)


@dataclass(frozen=True)
class CFootprint:
    """Flash and RAM that one agent's C needs on one device, and where the numbers come from.

    ``basis`` is ``"measured"`` (cross-compiled and read with ``size``, see
    :mod:`kdx.devices.cross_size`) or ``"estimate"`` (:data:`FOOTPRINT_RULE`); ``method`` says
    which tool or rule, and ``note`` why a measurement fell back to the estimate. ``parts``
    breaks both numbers down (bytes), so a reader can see what dominates.
    """

    agent: str
    profile: str
    precision: str
    flash_bytes: int
    ram_bytes: int
    basis: str
    method: str
    max_flash_bytes: int | None = None
    max_ram_bytes: int | None = None
    parts: dict[str, int] = field(default_factory=dict)
    note: str = ""
    role: str = "student"

    @property
    def fits(self) -> bool:
        """Within the profile's flash and RAM budgets (True where a budget is not set)."""
        return (self.max_flash_bytes is None or self.flash_bytes <= self.max_flash_bytes) and (
            self.max_ram_bytes is None or self.ram_bytes <= self.max_ram_bytes
        )

    def to_dict(self) -> dict[str, Any]:
        return {
            "agent": self.agent, "profile": self.profile, "precision": self.precision,
            "flash_bytes": self.flash_bytes, "ram_bytes": self.ram_bytes,
            "max_flash_bytes": self.max_flash_bytes, "max_ram_bytes": self.max_ram_bytes,
            "fits": self.fits, "basis": self.basis, "method": self.method,
            "parts": dict(self.parts), "note": self.note, "role": self.role,
        }

    @classmethod
    def from_dict(cls, row: dict[str, Any]) -> CFootprint:
        try:
            return cls(
                agent=row["agent"], profile=row["profile"], precision=row["precision"],
                flash_bytes=int(row["flash_bytes"]), ram_bytes=int(row["ram_bytes"]),
                basis=row["basis"], method=row["method"],
                max_flash_bytes=row.get("max_flash_bytes"), max_ram_bytes=row.get("max_ram_bytes"),
                parts={str(k): int(v) for k, v in row.get("parts", {}).items()}, note=row.get("note", ""),
                role=row.get("role", "student"),
            )
        except (KeyError, TypeError, ValueError) as exc:
            raise KdxError(f"malformed footprint entry {row!r} ({exc!r}); re-export the bundle.") from exc


@dataclass(frozen=True)
class CPolicyShape:
    """What the estimate needs to know of one agent's C policy (a manifest entry has it all)."""

    obs_dim: int
    hidden: tuple[int, ...]
    n_actions: int
    precision: str
    state_size: int = 0  # recurrent state units; 0 = feed-forward

    def __post_init__(self) -> None:
        if self.precision not in PRECISIONS:
            raise KdxError(f"unknown precision {self.precision!r}; choose one of {', '.join(PRECISIONS)}.")

    @property
    def widths(self) -> tuple[int, ...]:
        return (self.obs_dim, *self.hidden, self.n_actions)


def estimate_flash_parts(shape: CPolicyShape) -> dict[str, int]:
    """The flash estimate's parts in bytes: weights, biases, scales, normalisation, code."""
    widths = shape.widths
    layers = list(zip(widths[:-1], widths[1:]))
    weights = sum(i * o for i, o in layers)
    outputs = sum(o for _, o in layers)
    quantized = PRECISIONS[shape.precision].quantized
    return {
        "weights": weights * PRECISIONS[shape.precision].bytes_per_param,
        "biases": FLOAT_BYTES * outputs,
        "scales": FLOAT_BYTES * outputs if quantized else 0,
        "normalisation": 2 * FLOAT_BYTES * shape.obs_dim,
        "code": CODE_BYTES_BASE + CODE_BYTES_PER_LAYER * len(layers),
    }


def caller_buffer_parts(shape: CPolicyShape) -> dict[str, int]:
    """RAM the caller owns for one agent's API (measured or estimated alike): obs, logits, mask, state."""
    return {
        "caller_obs": FLOAT_BYTES * shape.obs_dim,
        "caller_logits": FLOAT_BYTES * shape.n_actions,
        "caller_mask": shape.n_actions,
        "caller_state": FLOAT_BYTES * shape.state_size,
    }


def estimate_ram_parts(shape: CPolicyShape) -> dict[str, int]:
    """The RAM estimate's parts in bytes: caller buffers, then the stack's."""
    quantized = PRECISIONS[shape.precision].quantized
    return {
        **caller_buffer_parts(shape),
        "stack_activations": FLOAT_BYTES * sum(shape.widths),
        "stack_int8_input": max(shape.widths[:-1]) if quantized else 0,
        "stack_allowance": STACK_BYTES,
    }


def estimate_c_footprint(shape: CPolicyShape) -> tuple[int, int]:
    """``(flash_bytes, ram_bytes)`` of one agent's C policy under :data:`FOOTPRINT_RULE`."""
    return sum(estimate_flash_parts(shape).values()), sum(estimate_ram_parts(shape).values())


def estimated_footprint(agent: str, shape: CPolicyShape, profile: Any, note: str = "") -> CFootprint:
    """The estimate as a :class:`CFootprint` row for ``profile`` (a DeviceProfile)."""
    flash, ram = estimate_c_footprint(shape)
    parts = {f"flash_{k}": v for k, v in estimate_flash_parts(shape).items()}
    parts.update({f"ram_{k}": v for k, v in estimate_ram_parts(shape).items()})
    return CFootprint(
        agent=agent, profile=profile.name, precision=shape.precision, flash_bytes=flash, ram_bytes=ram,
        basis="estimate", method=FOOTPRINT_RULE,
        max_flash_bytes=profile.budget.max_flash_bytes_per_agent,
        max_ram_bytes=profile.budget.max_ram_bytes_per_agent, parts=parts, note=note,
    )


def mcu_profiles(profiles: Sequence[Any] | None = None) -> list[Any]:
    """The device profiles whose export target is ``"c"`` (microcontrollers), shipped by default."""
    if profiles is None:
        from kdx.devices.registry import PROFILES

        profiles = list(PROFILES.values())
    return [p for p in profiles if p.target == "c"]
