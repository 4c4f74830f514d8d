"""``LoopConfig``: the settings both stages' on-policy loops share, defined once.

Rollout shape, optimiser schedule, GAE, checkpointing and hardware mean the same in ``kdx train``
and ``kdx distill``; each stage's config (``TeacherConfig``, ``DistillConfig``) inherits them and
redeclares a field only where its default differs. The shared checks and the JSON round trip
live here too.
"""

from __future__ import annotations

import math
import typing
from dataclasses import asdict, dataclass, fields
from typing import Any, ClassVar

from kdx.errors import KdxError
from kdx.trainer.common.config_options import config_field as _f
from kdx.trainer.common.config_options import renamed_keys


@dataclass(frozen=True, kw_only=True)
class LoopConfig:
    """Settings of an on-policy loop: ``[rollout -> GAE -> epochs of minibatch updates] x updates``."""

    # What the saved config is called in error messages, and the fields renamed since runs were
    # first written (old key in a saved config.json -> field).
    KIND: ClassVar[str] = "loop"
    RENAMED_FIELDS: ClassVar[dict[str, str]] = {}

    total_steps: int = _f(2_000_000, "Total environment steps (summed over the batched envs).")
    minutes: float = _f(0.0, "Training-time budget in minutes (0 = none): the run ends when --steps or --minutes "
                             "runs out, whichever comes first, and the learning rate decays over that same span.")
    seed: int = _f(1, "Seed for network init, action sampling, minibatches and the env.")
    num_envs: int = _f(128, "Parallel environments stepped together.")
    rollout_length: int = _f(25, "Steps per env in one rollout (one update per rollout).")
    epochs: int = _f(5, "Passes over each rollout.")
    minibatches: int = _f(1, "Minibatches per epoch (split over envs); must divide num_envs.")
    lr: float = _f(7e-4, "Adam learning rate.")
    lr_decay: bool = _f(True, "Decay the learning rate linearly to zero over the run.")
    adam_eps: float = _f(1e-5, "Adam epsilon.")
    gamma: float = _f(0.99, "Discount factor of GAE.")
    gae_lambda: float = _f(0.95, "GAE lambda.")
    clip: float = _f(0.2, "PPO ratio clip.")
    max_grad_norm: float = _f(10.0, "Gradient-norm clip.")
    checkpoint_every: int = _f(20, "Write a resumable checkpoint every N updates (and at the end).")
    log_every: int = _f(1, "Write a metrics line every N updates.")
    torch_device: str = _f("cpu", "Torch device (cpu or cuda).")
    threads: int = _f(0, "Torch intra-op threads; 0 = adapt to the cores other processes leave free (re-checked every 2 s).")

    # ------------------------------------------------------------------ derived values
    @property
    def steps_per_update(self) -> int:
        return self.num_envs * self.rollout_length

    @property
    def num_updates(self) -> int:
        return max(1, self.total_steps // self.steps_per_update)

    @property
    def budget_s(self) -> float | None:
        """The training-time budget in seconds, or None when only ``total_steps`` ends the run."""
        return self.minutes * 60.0 if self.minutes > 0 else None

    @property
    def envs_per_minibatch(self) -> int:
        return self.num_envs // self.minibatches

    # ------------------------------------------------------------------ checks
    def bad(self, name: str, why: str) -> KdxError:
        """The error for field ``name``, spelled as its command-line option."""
        return KdxError(f"--{name.replace('_', '-')} {why} (got {getattr(self, name)!r})")

    def check_loop(self) -> None:
        """The checks every stage shares; ``KdxError`` naming the field and the fix."""
        hints = typing.get_type_hints(type(self))
        for f in fields(self):
            if hints[f.name] is float and not math.isfinite(getattr(self, f.name)):
                raise self.bad(f.name, "must be a finite number")
        for name in ("total_steps", "num_envs", "rollout_length", "epochs", "minibatches",
                     "checkpoint_every", "log_every"):
            if getattr(self, name) < 1:
                raise self.bad(name, "must be a positive integer")
        for name in ("lr", "adam_eps", "max_grad_norm"):
            if not getattr(self, name) > 0:
                raise self.bad(name, "must be positive")
        for name in ("clip", "threads", "minutes"):
            if getattr(self, name) < 0:
                raise self.bad(name, "must not be negative")
        for name in ("gamma", "gae_lambda"):
            if not 0.0 <= getattr(self, name) <= 1.0:
                raise self.bad(name, "must be between 0 and 1")
        if self.num_envs % self.minibatches:
            raise KdxError(
                f"--minibatches {self.minibatches} does not divide --num-envs {self.num_envs}: "
                "minibatches split the rollout by environment; pick a divisor of num_envs"
            )
        self.check_torch_device()
        if self.total_steps < self.steps_per_update:
            raise KdxError(
                f"--total-steps {self.total_steps} is less than one rollout "
                f"(num_envs x rollout_length = {self.steps_per_update}); raise it or shrink the rollout"
            )

    def check_torch_device(self) -> None:
        """``--torch-device`` names a device torch has here; ``KdxError`` with the choices otherwise."""
        check_torch_device(self.torch_device)

    # ------------------------------------------------------------------ JSON
    def to_json(self) -> dict[str, Any]:
        """Plain JSON values (tuples become lists)."""
        return {k: list(v) if isinstance(v, tuple) else v for k, v in asdict(self).items()}

    @classmethod
    def from_json(cls, data: dict[str, Any]):
        """The config a run saved; old field names are mapped, unknown ones are an error."""
        data = renamed_keys(data, cls.RENAMED_FIELDS)
        unknown = sorted(set(data) - {f.name for f in fields(cls)})
        if unknown:
            raise KdxError(f"{cls.KIND} config has unknown fields {unknown}; was it written by a newer kdx?")
        hints = typing.get_type_hints(cls)
        return cls(**{k: tuple(v) if hints[k] == tuple[str, ...] and isinstance(v, list) else v
                      for k, v in data.items()})


def check_torch_device(name: str) -> None:
    """``KdxError`` unless ``name`` is a torch device usable here (cpu, cuda, cuda:N, mps)."""
    import torch

    try:
        device = torch.device(name)
    except (RuntimeError, TypeError):
        raise KdxError(f"--torch-device {name!r} is not a torch device; use cpu, cuda or cuda:N") from None
    if device.type == "cuda":
        count = torch.cuda.device_count() if torch.cuda.is_available() else 0
        if count == 0:
            raise KdxError(f"--torch-device {name}: this torch has no CUDA device here; use --torch-device cpu")
        if device.index is not None and device.index >= count:
            raise KdxError(f"--torch-device {name}: only {count} CUDA device(s) here (cuda:0..cuda:{count - 1})")
    elif device.type == "mps":
        if not torch.backends.mps.is_available():
            raise KdxError(f"--torch-device {name}: MPS is not available here; use --torch-device cpu")
    elif device.type != "cpu":
        raise KdxError(f"--torch-device {name}: kdx trains on cpu, cuda or mps")
