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
from dataclasses import asdict, dataclass, fields
from typing import Any

from kdx.devices.mlp import ACTIVATIONS
from kdx.errors import KdxError
from kdx.trainer.common.config_options import config_field as _f
from kdx.trainer.common.config_options import renamed_keys

# Fields renamed since runs were first written: old key in a saved config.json -> field.
RENAMED_FIELDS = {"device": "torch_device"}


@dataclass(frozen=True)
class TeacherConfig:
    """Hyper-parameters of a MAPPO teacher run. ``validate()`` checks them before any work."""

    env: str = _f("mpe/simple_spread", "Environment name (see `kdx envs list`).")
    total_steps: int = _f(2_000_000, "Total environment steps (summed over the batched envs).")
    seed: int = _f(1, "Seed for network init, action sampling, minibatches and the env.")
    num_envs: int = _f(128, "Parallel environments stepped together.")
    rollout_length: int = _f(25, "Steps per env in one rollout (one PPO update per rollout).")
    epochs: int = _f(5, "PPO epochs over each rollout.")
    minibatches: int = _f(1, "Minibatches per epoch (split over envs); must divide num_envs.")
    lr: float = _f(7e-4, "Adam learning rate for actor and critic.")
    critic_lr: float = _f(0.0, "Critic learning rate; 0 means the same as --lr.")
    lr_decay: bool = _f(True, "Decay the learning rate linearly to zero over the run.")
    adam_eps: float = _f(1e-5, "Adam epsilon.")
    gamma: float = _f(0.99, "Discount factor.")
    gae_lambda: float = _f(0.95, "GAE lambda.")
    clip: float = _f(0.2, "PPO ratio clip (policy) and value clip range.")
    entropy_coef: float = _f(0.01, "Entropy bonus weight.")
    value_coef: float = _f(1.0, "Value loss weight.")
    huber_delta: float = _f(10.0, "Huber delta of the value loss (on normalised returns).")
    max_grad_norm: float = _f(10.0, "Gradient-norm clip for actor and critic.")
    value_norm: bool = _f(True, "Normalise value targets with a running mean/std.")
    hidden: str = _f("256,256,256", "Hidden widths of actor and critic MLPs, comma-separated.")
    activation: str = _f("relu", f"Hidden activation: {' or '.join(ACTIVATIONS)}.")
    input_norm: bool = _f(True, "LayerNorm on network inputs (MAPPO feature normalisation).")
    recurrent: bool = _f(False, "Add a GRU after the actor's MLP (needs full-rollout minibatches).")
    per_group_actors: bool = _f(False, "One actor per agent group instead of one shared actor.")
    agent_specific_state: bool = _f(False, "Critic sees global state + the agent's obs and id.")
    checkpoint_every: int = _f(20, "Write a resumable checkpoint every N updates (and at the end).")
    log_every: int = _f(1, "Write a metrics line every N updates.")
    torch_device: str = _f("cpu", "Torch device (cpu or cuda).")
    threads: int = _f(0, "torch.set_num_threads; 0 = number of available cores.")

    # ------------------------------------------------------------------ derived values
    @property
    def hidden_sizes(self) -> tuple[int, ...]:
        return tuple(int(w) for w in self.hidden.split(","))

    @property
    def steps_per_update(self) -> int:
        return self.num_envs * self.rollout_length

    @property
    def num_updates(self) -> int:
        return max(1, self.total_steps // self.steps_per_update)

    @property
    def envs_per_minibatch(self) -> int:
        return self.num_envs // self.minibatches

    @property
    def effective_critic_lr(self) -> float:
        return self.critic_lr if self.critic_lr > 0 else self.lr

    # ------------------------------------------------------------------ checks and I/O
    def validate(self) -> TeacherConfig:
        """Raise ``KdxError`` naming the bad field and the fix; return self when fine."""

        def bad(name: str, why: str) -> KdxError:
            return KdxError(f"--{name.replace('_', '-')} {why} (got {getattr(self, name)!r})")

        for name in ("total_steps", "num_envs", "rollout_length", "epochs", "minibatches",
                     "checkpoint_every", "log_every"):
            if getattr(self, name) < 1:
                raise bad(name, "must be a positive integer")
        for name in ("lr", "adam_eps", "max_grad_norm", "huber_delta"):
            if not getattr(self, name) > 0:
                raise bad(name, "must be positive")
        for name in ("critic_lr", "entropy_coef", "value_coef", "clip", "threads"):
            if getattr(self, name) < 0:
                raise bad(name, "must not be negative")
        for name in ("gamma", "gae_lambda"):
            if not 0.0 <= getattr(self, name) <= 1.0:
                raise bad(name, "must be between 0 and 1")
        if self.num_envs % self.minibatches:
            raise KdxError(
                f"--minibatches {self.minibatches} does not divide --num-envs {self.num_envs}: "
                "minibatches split the rollout by environment; pick a divisor of num_envs"
            )
        try:
            widths = self.hidden_sizes
        except ValueError:
            raise bad("hidden", "must be comma-separated positive integers like 256,256,256") from None
        if not widths or min(widths) < 1:
            raise bad("hidden", "must be comma-separated positive integers like 256,256,256")
        if self.activation not in ACTIVATIONS:
            raise bad("activation", f"must be one of {', '.join(ACTIVATIONS)}")
        if self.total_steps < self.steps_per_update:
            raise KdxError(
                f"--total-steps {self.total_steps} is less than one rollout "
                f"(num_envs x rollout_length = {self.steps_per_update}); raise it or shrink the rollout"
            )
        return self

    def to_json(self) -> dict[str, Any]:
        return asdict(self)

    @classmethod
    def from_json(cls, data: dict[str, Any]) -> TeacherConfig:
        data = renamed_keys(data, RENAMED_FIELDS)
        known = {f.name for f in fields(cls)}
        unknown = sorted(set(data) - known)
        if unknown:
            raise KdxError(f"teacher config has unknown fields {unknown}; was it written by a newer kdx?")
        return cls(**data)

    def dumps(self) -> str:
        return json.dumps(self.to_json(), indent=2, sort_keys=True)


