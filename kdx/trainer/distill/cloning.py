"""Behaviour cloning: a StudentPolicy team trained to imitate a scripted policy.

The scripted policy (by default the env's oracle, ``kdx.envs.mpe.oracles``) plays ``num_envs``
batched envs for ``rollout_steps`` steps; each agent's student then fits the recorded
(own observation, action) pairs with full-batch cross-entropy. The students' logits get real
margins in seconds, which untrained networks lack: tests and benchmarks of the exporter and the
runtime use them as stand-ins for distilled students (``kdx.trainer.distill.store.save_students``
writes them into a run folder).
"""

from __future__ import annotations

from collections.abc import Callable, Sequence

import torch

from kdx.envs.base import BatchedEnv
from kdx.envs.registry import make
from kdx.trainer.distill.students import StudentPolicy

#: ``policy(env) -> long [num_envs, n_agents]``: actions for the env's current state.
ScriptedPolicy = Callable[[BatchedEnv], torch.Tensor]


def record_demonstrations(env: BatchedEnv, policy: ScriptedPolicy, steps: int
                          ) -> dict[str, tuple[torch.Tensor, torch.Tensor]]:
    """``{agent: (obs [steps * num_envs, obs_dim], actions long [steps * num_envs])}`` from
    ``steps`` steps of ``policy`` on ``env`` (reset first)."""
    step = env.reset()
    obs: list[list[torch.Tensor]] = [[] for _ in env.spec.agents]
    actions: list[list[torch.Tensor]] = [[] for _ in env.spec.agents]
    for _ in range(steps):
        chosen = policy(env)
        for i in range(env.spec.n_agents):
            obs[i].append(step.obs[i])
            actions[i].append(chosen[:, i])
        step = env.step(chosen)
    return {a.name: (torch.cat(obs[i]), torch.cat(actions[i])) for i, a in enumerate(env.spec.agents)}


def fit_student(student: StudentPolicy, obs: torch.Tensor, actions: torch.Tensor, train_steps: int,
                lr: float = 1e-2) -> StudentPolicy:
    """Set ``student``'s input normalisation from ``obs [N, obs_dim]``, then fit ``actions long [N]``
    with ``train_steps`` full-batch Adam steps of cross-entropy; returns it in eval mode."""
    student.set_obs_normalisation(obs.mean(0), obs.std(0))
    optimizer = torch.optim.Adam(student.parameters(), lr)
    for _ in range(train_steps):
        loss = torch.nn.functional.cross_entropy(student(obs)[0], actions)
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()
    return student.eval()


def clone_students(env_name: str, policy: ScriptedPolicy | None = None, *, hidden: Sequence[int] = (32,),
                   activation: str = "tanh", num_envs: int = 64, rollout_steps: int = 40, train_steps: int = 150,
                   seed: int = 0) -> dict[str, StudentPolicy]:
    """One StudentPolicy per agent of ``env_name`` (env agent order), cloned from ``policy``
    (default: the env's scripted oracle; ``KdxError`` when it has none).

    Seeds the global torch RNG with ``seed`` (student init) and the env with ``seed``.
    """
    if policy is None:
        from kdx.envs.mpe.oracles import oracle_actions

        policy = oracle_actions
    torch.manual_seed(seed)
    env = make(env_name, num_envs=num_envs, seed=seed)
    demos = record_demonstrations(env, policy, rollout_steps)
    env.close()
    return {a.name: fit_student(StudentPolicy(a.obs_dim, a.n_actions, hidden, activation), *demos[a.name], train_steps)
            for a in env.spec.agents}
