"""The rollout's part of a checkpoint, saved and restored the same way by both stages.

A checkpoint taken at a rollout boundary holds the env's tensors (``env.*``, when the env keeps
its whole state in tensors: ``BatchedEnv.state_in_tensors``) and the pending ``EnvStep``
(``step.*``), so that on CPU a resumed run continues exactly as an uninterrupted one would. An
env wrapping an external simulator cannot be saved: its resume starts fresh episodes. With them
go the GRU state a recurrent policy carries across rollouts and each ``torch.Generator``'s state
(``rng.<name>``): :func:`loop_state_tensors` and :func:`restore_loop_state`.
"""

from __future__ import annotations

import torch

from kdx.envs.base import BatchedEnv, EnvStep


def step_tensors(step: EnvStep) -> dict[str, torch.Tensor]:
    """The pending ``EnvStep`` as flat tensors, so a checkpoint can resume mid-episode."""
    out = {"step.state": step.state}
    out.update({f"step.obs.{i}": o for i, o in enumerate(step.obs)})
    out.update({f"step.mask.{i}": m for i, m in enumerate(step.action_mask)})
    return out


def step_from_tensors(state: dict[str, torch.Tensor], n_agents: int, device: torch.device) -> EnvStep:
    """Inverse of :func:`step_tensors`."""
    s = state["step.state"].to(device)
    b = s.shape[0]
    zeros = torch.zeros(b, dtype=torch.bool, device=device)
    return EnvStep(
        obs=tuple(state[f"step.obs.{i}"].to(device) for i in range(n_agents)),
        action_mask=tuple(state[f"step.mask.{i}"].to(device) for i in range(n_agents)),
        state=s, reward=torch.zeros(b, n_agents, device=device), terminated=zeros, truncated=zeros.clone(),
    )


def env_checkpoint_tensors(env: BatchedEnv, step: EnvStep) -> dict[str, torch.Tensor]:
    """``env.*`` (when the env's state is in tensors) and ``step.*``: the env's part of a checkpoint."""
    out = {f"env.{k}": v for k, v in env.state_dict().items()} if env.state_in_tensors else {}
    out.update(step_tensors(step))
    return out


def restore_env(env: BatchedEnv, state: dict[str, torch.Tensor]) -> EnvStep:
    """Put ``env`` back where :func:`env_checkpoint_tensors` found it; returns the pending step.

    An env whose state is not in tensors starts fresh episodes instead (not bit-exact).
    """
    if not env.state_in_tensors:
        return env.reset()
    env.reset()  # builds every state tensor; the saved ones then overwrite them
    env.load_state_dict({k[len("env."):]: v for k, v in state.items() if k.startswith("env.")})
    return step_from_tensors(state, env.spec.n_agents, env.device)


def loop_state_tensors(env: BatchedEnv, step: EnvStep, hidden: torch.Tensor | None,
                       generators: dict[str, torch.Generator], hidden_key: str = "hidden") -> dict[str, torch.Tensor]:
    """Everything a training loop needs to continue at a rollout boundary: the env's part
    (:func:`env_checkpoint_tensors`), ``hidden [B, A, H]`` under ``hidden_key`` (when recurrent)
    and ``rng.<name>`` for each generator."""
    out = env_checkpoint_tensors(env, step)
    if hidden is not None:
        out[hidden_key] = hidden
    out.update({f"rng.{name}": generator.get_state() for name, generator in generators.items()})
    return out


def restore_loop_state(env: BatchedEnv, state: dict[str, torch.Tensor], generators: dict[str, torch.Generator],
                       hidden_key: str = "hidden") -> tuple[EnvStep, torch.Tensor | None]:
    """Inverse of :func:`loop_state_tensors`: restores ``env`` and the generators in place;
    returns the pending step and the GRU state (None when the policy is not recurrent)."""
    step = restore_env(env, state)
    for name, generator in generators.items():
        generator.set_state(state[f"rng.{name}"])
    return step, state[hidden_key].to(env.device) if hidden_key in state else None


def loop_generators(device: torch.device, sample_seed: int, minibatch_seed: int) -> dict[str, torch.Generator]:
    """The loop's own random streams: action sampling (on ``device``) and minibatch shuffling (CPU);
    saved and restored with the rest of the loop state."""
    return {"sample": torch.Generator(device=device).manual_seed(sample_seed),
            "minibatch": torch.Generator().manual_seed(minibatch_seed)}
