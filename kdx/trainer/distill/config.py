"""``DistillConfig``: every knob of stage 2 (distillation into students), one line of help each.

The help strings are the ``--help`` of ``kdx distill`` (the CLI is generated from the fields).
"""

from __future__ import annotations

from dataclasses import asdict, dataclass, fields
from typing import Any

from kdx.devices.mlp import ACTIVATIONS
from kdx.errors import KdxError
from kdx.trainer.common.config_options import config_field as _f
from kdx.trainer.common.config_options import renamed_keys

LOSS_TERMS = ("pg", "kl", "ce", "margin", "rel", "role")
# Fields renamed since runs were first written: old key in a saved config.json -> field.
RENAMED_FIELDS = {"device_profile": "profile", "device": "torch_device"}


@dataclass(frozen=True)
class DistillConfig:
    """Hyper-parameters of stage 2. ``validate()`` checks them before any work."""

    profile: str = _f("x86-cpu", "Device profile that sizes the students (see `kdx devices list`).")
    students: tuple[str, ...] = _f((), "Per-agent overrides AGENT=W or AGENT=W1xW2 (hidden widths).")
    activation: str = _f("relu", f"Hidden activation of the students: {' or '.join(ACTIVATIONS)}.")
    total_steps: int = _f(300_000, "Environment steps of student rollouts (summed over the batched envs).")
    seed: int = _f(1, "Seed for student init, action sampling, minibatches and the env.")
    num_envs: int = _f(128, "Parallel environments stepped together.")
    rollout_length: int = _f(25, "Steps per env in one rollout (one update per rollout).")
    epochs: int = _f(10, "Passes over each rollout (students are tiny: many passes are cheap next to the teacher-labelled rollout).")
    minibatches: int = _f(4, "Minibatches per epoch (split over envs); must divide num_envs.")
    lr: float = _f(3e-3, "Adam learning rate of students and projection heads.")
    lr_decay: bool = _f(True, "Decay the learning rate linearly to zero over the run.")
    adam_eps: float = _f(1e-5, "Adam epsilon.")
    gamma: float = _f(0.99, "Discount factor of teacher-guided GAE.")
    gae_lambda: float = _f(0.95, "GAE lambda.")
    clip: float = _f(0.2, "PPO ratio clip of the policy term.")
    max_grad_norm: float = _f(10.0, "Gradient-norm clip over all students and heads.")
    w_pg: float = _f(1.0, "Weight of the PPO policy term on teacher-guided advantages (0 = off).")
    w_kl: float = _f(1.0, "Weight of KL(teacher || student) at --temperature (0 = off).")
    temperature: float = _f(1.0, "Softmax temperature of the KL term.")
    w_ce: float = _f(0.5, "Weight of the cross-entropy with the teacher's greedy action (0 = off).")
    # Measured (kdx issue 6, simple_spread rpi5 students, 160k steps): w_margin 0.5-4 with margin
    # 0.1-0.4 *raised* the share of the student's near ties (5% -> 6-10%) and lost 2-4 points of
    # sampled retention, so it stays off for every profile: the student's near ties sit at its own
    # decision boundaries, mostly where it already disagrees with a clearly decided teacher.
    w_margin: float = _f(0.0, "Weight of the hinge keeping --margin between the teacher's greedy action and the "
                              "student's runner-up (0 = off).")
    margin: float = _f(0.2, "Logit margin the --w-margin hinge asks of the student's greedy decision.")
    w_rel: float = _f(0.1, "Weight of the RKD relation term over the agents of a step (0 = off).")
    rkd_w_distance: float = _f(1.0, "Weight of RKD's distance potential inside the relation term.")
    rkd_w_angle: float = _f(2.0, "Weight of RKD's angle potential inside the relation term.")
    w_role: float = _f(0.1, "Weight of the InfoNCE role-alignment term (0 = off).")
    role_tau: float = _f(0.1, "InfoNCE temperature of the role-alignment term.")
    structural_samples: int = _f(256, "Time steps per minibatch used by the relation/role terms (subsampled; 0 = all).")
    entropy_coef: float = _f(0.0, "Entropy bonus weight.")
    teacher_mix: float = _f(0.0, "Initial probability that an agent executes the teacher's action instead of its own.")
    teacher_mix_fraction: float = _f(0.2, "Fraction of the run over which --teacher-mix decays linearly to 0.")
    obs_norm_steps: int = _f(25, "Steps of the sampled teacher whose observations set the students' input normalisation (0 = none).")
    checkpoint_every: int = _f(20, "Write a resumable checkpoint every N updates (and at the end).")
    log_every: int = _f(1, "Write a metrics line every N updates.")
    torch_device: str = _f("cpu", "Torch device (cpu or cuda).")
    threads: int = _f(0, "torch.set_num_threads; 0 = number of available cores.")

    @property
    def steps_per_update(self) -> int:
        return self.num_envs * self.rollout_length

    @property
    def num_updates(self) -> int:
        return max(1, self.total_steps // self.steps_per_update)

    def weight(self, term: str) -> float:
        return getattr(self, f"w_{term}")

    def validate(self) -> DistillConfig:
        """Raise ``KdxError`` naming the bad field and the fix; return self when fine."""

        def bad(name: str, why: str) -> KdxError:
            return KdxError(f"--{name.replace('_', '-')} {why} (got {getattr(self, name)!r})")

        for name in ("total_steps", "num_envs", "rollout_length", "epochs", "minibatches", "checkpoint_every", "log_every"):
            if getattr(self, name) < 1:
                raise bad(name, "must be a positive integer")
        for name in ("lr", "adam_eps", "max_grad_norm", "temperature", "role_tau", "margin"):
            if not getattr(self, name) > 0:
                raise bad(name, "must be positive")
        for name in ("clip", "entropy_coef", "rkd_w_distance", "rkd_w_angle", "structural_samples", "obs_norm_steps",
                     "threads", *(f"w_{t}" for t in LOSS_TERMS)):
            if getattr(self, name) < 0:
                raise bad(name, "must not be negative")
        for name in ("gamma", "gae_lambda", "teacher_mix", "teacher_mix_fraction"):
            if not 0.0 <= getattr(self, name) <= 1.0:
                raise bad(name, "must be between 0 and 1")
        if not any(self.weight(t) > 0 for t in LOSS_TERMS):
            raise KdxError("every loss term is switched off (all --w-* are 0); give at least one a positive weight")
        if self.activation not in ACTIVATIONS:
            raise bad("activation", f"must be one of {', '.join(ACTIVATIONS)}")
        if self.num_envs % self.minibatches:
            raise KdxError(f"--minibatches {self.minibatches} does not divide --num-envs {self.num_envs}")
        if self.total_steps < self.steps_per_update:
            raise KdxError(f"--total-steps {self.total_steps} is less than one rollout ({self.steps_per_update} steps)")
        return self

    def to_json(self) -> dict[str, Any]:
        data = asdict(self)
        data["students"] = list(self.students)
        return data

    @classmethod
    def from_json(cls, data: dict[str, Any]) -> DistillConfig:
        data = renamed_keys(data, RENAMED_FIELDS)
        unknown = sorted(set(data) - {f.name for f in fields(cls)})
        if unknown:
            raise KdxError(f"distill config has unknown fields {unknown}; was it written by a newer kdx?")
        return cls(**{**data, "students": tuple(data.get("students", ()))})

