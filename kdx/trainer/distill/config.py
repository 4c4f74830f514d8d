"""``DistillConfig``: every knob of stage 2 (distillation into students), one line of help each.

The help strings are the ``--help`` of ``kdx distill`` (the CLI is generated from the fields).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import ClassVar

from kdx.devices.mlp import ACTIVATIONS
from kdx.errors import KdxError
from kdx.trainer.common.config_options import config_field as _f
from kdx.trainer.common.loop_config import LoopConfig

LOSS_TERMS = ("pg", "kl", "ce", "margin", "rel", "role")


@dataclass(frozen=True, kw_only=True)
class DistillConfig(LoopConfig):
    """Hyper-parameters of stage 2. ``validate()`` checks them before any work.

    The loop settings (rollout shape, Adam, GAE of the teacher-guided advantages, the policy
    term's clip, checkpoints, hardware) come from ``LoopConfig``.
    """

    KIND: ClassVar[str] = "distill"
    RENAMED_FIELDS: ClassVar[dict[str, str]] = {"device_profile": "profile", "device": "torch_device"}

    profile: str = _f("x86-cpu", "Device profile that sizes the students (see `kdx devices list`).")
    students: tuple[str, ...] = _f((), "Per-agent overrides AGENT=W or AGENT=W1xW2 (hidden widths).")
    views: tuple[str, ...] = _f((), "Per-agent or per-group student views AGENT_OR_GROUP=OPS, e.g. "
                                     "'marine=sight:4 noise:0.05' (kdx.envs.view_spec); none = the full observation.")
    activation: str = _f("relu", f"Hidden activation of the students: {' or '.join(ACTIVATIONS)}.")
    min_mac_reduction: float = _f(30.0, "Sizing: each automatically sized student has at least this many times fewer "
                                        "MACs than the teacher's actor seen from its agent (1 = no such cap).")
    two_layer_min_obs_dim: int = _f(64, "Sizing: observations (or views) at least this wide get two hidden layers, "
                                        "narrower ones one.")
    total_steps: int = _f(300_000, "Environment steps of student rollouts (summed over the batched envs).")
    epochs: int = _f(10, "Passes over each rollout (students are tiny: many passes are cheap next to the teacher-labelled rollout).")
    minibatches: int = _f(4, "Minibatches per epoch (split over envs); must divide num_envs.")
    lr: float = _f(3e-3, "Adam learning rate of students and projection heads.")
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

    def capacity_rule(self):
        """The sizing rule these settings ask for (``kdx.devices.sizing.CapacityRule``)."""
        from kdx.devices.sizing import CapacityRule

        return CapacityRule(min_mac_reduction=self.min_mac_reduction, two_layer_min_obs_dim=self.two_layer_min_obs_dim)

    def weight(self, term: str) -> float:
        return getattr(self, f"w_{term}")

    def validate(self) -> DistillConfig:
        """Raise ``KdxError`` naming the bad field and the fix; return self when fine."""
        self.check_loop()
        for name in ("temperature", "role_tau", "margin"):
            if not getattr(self, name) > 0:
                raise self.bad(name, "must be positive")
        for name in ("entropy_coef", "rkd_w_distance", "rkd_w_angle", "structural_samples", "obs_norm_steps",
                     *(f"w_{t}" for t in LOSS_TERMS)):
            if getattr(self, name) < 0:
                raise self.bad(name, "must not be negative")
        for name in ("teacher_mix", "teacher_mix_fraction"):
            if not 0.0 <= getattr(self, name) <= 1.0:
                raise self.bad(name, "must be between 0 and 1")
        if not any(self.weight(t) > 0 for t in LOSS_TERMS):
            raise KdxError("every loss term is switched off (all --w-* are 0); give at least one a positive weight")
        self.capacity_rule()  # KdxError naming --min-mac-reduction / --two-layer-min-obs-dim
        if self.activation not in ACTIVATIONS:
            raise self.bad("activation", f"must be one of {', '.join(ACTIVATIONS)}")
        return self
