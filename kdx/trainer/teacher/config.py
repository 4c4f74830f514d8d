"""``TeacherConfig``: every knob of stage 1 (MAPPO teacher), one line of help each.

The help strings are the ``--help`` of ``kdx train`` (the CLI is generated from the fields).
Defaults follow the MAPPO reference implementation where they suit vectorised environments
(see /work/shared/REFERENCE.md): Adam 7e-4 (eps 1e-5), clip 0.2, entropy 0.01, Huber value loss
(delta 10) with value clipping, value normalisation, gamma 0.99, GAE lambda 0.95, grad norm 10,
LayerNorm and orthogonal init. Widths are larger (3 x 256: a high-capacity teacher) and the
rollout shape is tuned for wall-clock learning on a few CPU cores (many envs, few epochs).
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from typing import ClassVar

from kdx.devices.mlp import ACTIVATIONS
from kdx.trainer.common.config_options import config_field as _f
from kdx.trainer.common.loop_config import LoopConfig


@dataclass(frozen=True, kw_only=True)
class TeacherConfig(LoopConfig):
    """Hyper-parameters of a MAPPO teacher run. ``validate()`` checks them before any work.

    The loop settings (rollout shape, Adam, GAE, clip, checkpoints, hardware) come from
    ``LoopConfig``; ``lr`` and ``clip`` apply to actor and critic (the clip also bounds values).
    """

    KIND: ClassVar[str] = "teacher"
    RENAMED_FIELDS: ClassVar[dict[str, str]] = {"device": "torch_device"}

    env: str = _f("mpe/simple_spread", "Environment name (see `kdx envs list`).")
    critic_lr: float = _f(0.0, "Critic learning rate; 0 means the same as --lr.")
    entropy_coef: float = _f(0.01, "Entropy bonus weight.")
    value_coef: float = _f(1.0, "Value loss weight.")
    huber_delta: float = _f(10.0, "Huber delta of the value loss (on normalised returns).")
    value_norm: bool = _f(True, "Normalise value targets with a running mean/std.")
    hidden: str = _f("256,256,256", "Hidden widths of actor and critic MLPs, comma-separated.")
    activation: str = _f("relu", f"Hidden activation: {' or '.join(ACTIVATIONS)}.")
    input_norm: bool = _f(True, "LayerNorm on network inputs (MAPPO feature normalisation).")
    recurrent: bool = _f(False, "Add a GRU after the actor's MLP (needs full-rollout minibatches).")
    per_group_actors: bool = _f(False, "One actor per agent group instead of one shared actor.")
    agent_specific_state: bool = _f(False, "Critic sees global state + the agent's obs and id.")
    teacher_input: str = _f("local", "Actor input: local (own obs) or centralised (own obs + global state; "
                                     "an expert for distillation that cannot be deployed or exported).")
    centralised_entropy_scale: float = _f(2.0, "Multiplies --entropy-coef for a centralised actor: with the "
                                               "global state it turns deterministic sooner and stalls (skirmish/8m: "
                                               "x1 plateaus at 85% win, x2 matches the local actor).")

    TEACHER_INPUTS: ClassVar[tuple[str, ...]] = ("local", "centralised")

    # ------------------------------------------------------------------ derived values
    @property
    def centralised_actor(self) -> bool:
        """True when the actor also reads the global state (``teacher_input == "centralised"``)."""
        return self.teacher_input == "centralised"

    @property
    def hidden_sizes(self) -> tuple[int, ...]:
        return tuple(int(w) for w in self.hidden.split(","))

    @property
    def effective_entropy_coef(self) -> float:
        """The entropy bonus weight the PPO loss uses: ``entropy_coef``, times
        ``centralised_entropy_scale`` for a centralised actor."""
        return self.entropy_coef * (self.centralised_entropy_scale if self.centralised_actor else 1.0)

    @property
    def effective_critic_lr(self) -> float:
        return self.critic_lr if self.critic_lr > 0 else self.lr

    # ------------------------------------------------------------------ checks and I/O
    def validate(self) -> TeacherConfig:
        """Raise ``KdxError`` naming the bad field and the fix; return self when fine."""
        self.check_loop()
        if not self.huber_delta > 0:
            raise self.bad("huber_delta", "must be positive")
        for name in ("critic_lr", "entropy_coef", "value_coef", "centralised_entropy_scale"):
            if getattr(self, name) < 0:
                raise self.bad(name, "must not be negative")
        try:
            widths = self.hidden_sizes
        except ValueError:
            raise self.bad("hidden", "must be comma-separated positive integers like 256,256,256") from None
        if not widths or min(widths) < 1:
            raise self.bad("hidden", "must be comma-separated positive integers like 256,256,256")
        if self.activation not in ACTIVATIONS:
            raise self.bad("activation", f"must be one of {', '.join(ACTIVATIONS)}")
        if self.teacher_input not in self.TEACHER_INPUTS:
            raise self.bad("teacher_input", f"must be one of {', '.join(self.TEACHER_INPUTS)}")
        return self

    def dumps(self) -> str:
        return json.dumps(self.to_json(), indent=2, sort_keys=True)


