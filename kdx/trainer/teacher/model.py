"""The teacher as later stages see it: networks + value normaliser + the env's spec.

``Teacher`` bundles the actor, the critic and the value normaliser of one run; ``load_teacher``
(in ``kdx.trainer.teacher.store``) rebuilds it, frozen, from a run folder. Shapes as in
``kdx.trainer.teacher.networks``.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch

from kdx.envs.base import AgentSpec, EnvSpec
from kdx.trainer.common.sampling import masked_logits, sample_actions
from kdx.trainer.teacher.config import TeacherConfig
from kdx.trainer.teacher.networks import ActorOutput, TeacherActor, TeacherCritic
from kdx.trainer.teacher.value_norm import ValueNormalizer


@dataclass
class Teacher:
    """A MAPPO teacher: ``actor`` (local, or centralised with ``teacher_input``), ``critic``
    (centralised), ``value_norm``. Every caller of the actor passes the global state too; a
    local actor ignores it."""

    config: TeacherConfig
    spec: EnvSpec
    actor: TeacherActor
    critic: TeacherCritic
    value_norm: ValueNormalizer

    @classmethod
    def build(cls, config: TeacherConfig, spec: EnvSpec) -> Teacher:
        """Fresh networks (initialised from the global torch RNG: seed it first)."""
        actor = TeacherActor(spec, config.hidden_sizes, config.activation, config.recurrent,
                             config.per_group_actors, config.input_norm,
                             spec.state_dim if config.centralised_actor else 0)
        critic = TeacherCritic(spec, config.hidden_sizes, config.activation, config.agent_specific_state,
                               config.input_norm)
        teacher = cls(config, spec, actor, critic, ValueNormalizer(config.value_norm))
        return teacher.to(config.torch_device)

    def to(self, device: str | torch.device) -> Teacher:
        for m in (self.actor, self.critic, self.value_norm):
            m.to(device)
        return self

    def eval(self) -> Teacher:
        for m in (self.actor, self.critic, self.value_norm):
            m.eval()
            for p in m.parameters():
                p.requires_grad_(False)
        return self

    # ------------------------------------------------------------------ what stage 2 calls
    def forward_actor(self, obs: torch.Tensor, state: torch.Tensor, mask: torch.Tensor | None = None,
                      hidden: torch.Tensor | None = None) -> ActorOutput:
        """``obs [B, A, max_obs]`` (padded) and global ``state [B, S]`` (read by a centralised
        actor only) -> logits ``[B, A, max_actions]`` (masked if ``mask``), embedding ``[B, A, H]``,
        hidden."""
        out = self.actor(obs, hidden, state)
        if mask is not None:
            out = ActorOutput(masked_logits(out.logits, mask), out.embedding, out.hidden)
        return out

    def values(self, state: torch.Tensor, obs: torch.Tensor | None = None) -> torch.Tensor:
        """Denormalised value ``[B, A]`` of global ``state [B, S]`` (``obs`` for agent-specific)."""
        return self.value_norm.denormalize(self.critic(state, obs))

    def act(self, obs: torch.Tensor, state: torch.Tensor, mask: torch.Tensor, hidden: torch.Tensor | None = None,
            greedy: bool = False, generator: torch.Generator | None = None) -> tuple[torch.Tensor, torch.Tensor | None]:
        """Actions ``long [B, A]`` (legal by ``mask [B, A, K]``) and the next hidden state."""
        out = self.forward_actor(obs, state, mask, hidden)
        actions = out.logits.argmax(-1) if greedy else sample_actions(out.logits, generator)
        return actions, out.hidden


def spec_from_json(data: dict) -> EnvSpec:
    """Inverse of ``EnvSpec.to_json``."""
    return EnvSpec(
        name=data["name"],
        agents=tuple(AgentSpec(a["name"], int(a["obs_dim"]), int(a["n_actions"]), a["group"]) for a in data["agents"]),
        state_dim=int(data["state_dim"]),
        episode_limit=int(data["episode_limit"]),
        has_win_flag=bool(data["has_win_flag"]),
        shared_reward=bool(data.get("shared_reward", False)),
    )
