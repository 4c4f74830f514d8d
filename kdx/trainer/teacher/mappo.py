"""Stage 1: train a MAPPO teacher (CTDE), top to bottom.

config -> env -> networks -> [rollout -> GAE -> PPO epochs -> log -> checkpoint] x updates.

Reproducibility: network init uses the global torch RNG seeded with ``config.seed``; action
sampling and minibatch shuffling use their own ``torch.Generator``s; the env owns a third. All
three, the env's tensors and the last observation are saved at rollout boundaries, so on CPU a
resumed run continues exactly as an uninterrupted one would.
"""

from __future__ import annotations

from collections.abc import Callable
from contextlib import nullcontext
from dataclasses import replace
from pathlib import Path
from typing import Any

import torch
from torch import nn

from kdx.envs.registry import make
from kdx.errors import KdxError
from kdx.layout import RunLayout, TeacherFolder
from kdx.trainer.common.checkpoints import load_optimizer_tensors, optimizer_tensors
from kdx.trainer.common.env_state import loop_generators, loop_state_tensors, restore_loop_state
from kdx.trainer.common.episodes import reset_ended
from kdx.trainer.common.gae import gae_advantages
from kdx.trainer.common.metrics_log import mean_or_none, read_metrics_file
from kdx.trainer.common.ppo_losses import entropy, masked_log_probs, policy_loss, value_loss
from kdx.trainer.common.progress import TrainProgress
from kdx.trainer.common.recipes import RecipeUse
from kdx.trainer.common.threads import ThreadGovernor
from kdx.trainer.common.update_loop import Counters, UpdateLoop
from kdx.trainer.teacher.config import TeacherConfig
from kdx.trainer.teacher.distributed import data_parallel, world_from_env
from kdx.trainer.teacher.model import Teacher
from kdx.trainer.teacher.rollout import RolloutBuffer, collect_rollout
from kdx.trainer.teacher.store import (
    checkpoint_store,
    load_teacher_tensors,
    publish_teacher,
    read_teacher_config,
    teacher_tensors,
    write_teacher_config,
)


def ppo_update(teacher: Teacher, optimizer: torch.optim.Optimizer, buf: RolloutBuffer,
               advantages: torch.Tensor, returns: torch.Tensor, config: TeacherConfig,
               generator: torch.Generator, grad_sync: Callable[[], None] | None = None) -> dict[str, float]:
    """``config.epochs`` passes of clipped PPO over the rollout, minibatches split by env.

    ``grad_sync()`` runs after each ``backward()`` (data-parallel runs average gradients there).
    """
    T, B, A = advantages.shape
    adv = (advantages - advantages.mean()) / (advantages.std() + 1e-8)
    teacher.value_norm.update(returns)
    target = teacher.value_norm.normalize(returns)
    stats: dict[str, list[float]] = {k: [] for k in ("policy_loss", "value_loss", "entropy", "approx_kl",
                                                        "clip_frac", "actor_grad_norm", "critic_grad_norm")}
    for _ in range(config.epochs):
        for mb in torch.randperm(B, generator=generator).chunk(config.minibatches):
            obs, mask, states = buf.obs[:, mb], buf.masks[:, mb], buf.states[:, mb]
            b = len(mb)
            if teacher.actor.recurrent:  # replay the rollout from its first hidden state
                hidden, steps = buf.hidden0[mb], []
                for t in range(T):
                    if t > 0:
                        hidden = reset_ended(hidden, buf.done[t - 1, mb])
                    out = teacher.actor(obs[t], hidden, states[t])
                    hidden = out.hidden
                    steps.append(out.logits)
                logits = torch.stack(steps)
            else:
                flat_states = states.reshape(T * b, -1)
                logits = teacher.actor(obs.reshape(T * b, A, -1), None, flat_states).logits.reshape(T, b, A, -1)
            log_probs = masked_log_probs(logits, mask)
            new_logp = log_probs.gather(-1, buf.actions[:, mb].unsqueeze(-1)).squeeze(-1)
            old_logp = buf.log_probs[:, mb]
            new_v = teacher.critic(states.reshape(T * b, -1), obs.reshape(T * b, A, -1)).reshape(T, b, A)

            pl = policy_loss(new_logp, old_logp, adv[:, mb], config.clip)
            vl = value_loss(new_v, buf.old_values[:, mb], target[:, mb], config.clip, config.huber_delta)
            ent = entropy(log_probs)
            loss = pl - config.effective_entropy_coef * ent + config.value_coef * vl

            optimizer.zero_grad(set_to_none=True)
            loss.backward()
            if grad_sync is not None:
                grad_sync()
            a_norm = nn.utils.clip_grad_norm_(teacher.actor.parameters(), config.max_grad_norm)
            c_norm = nn.utils.clip_grad_norm_(teacher.critic.parameters(), config.max_grad_norm)
            optimizer.step()

            with torch.no_grad():
                log_ratio = new_logp - old_logp
                stats["approx_kl"].append(float(((log_ratio.exp() - 1) - log_ratio).mean()))
                stats["clip_frac"].append(float(((log_ratio.exp() - 1).abs() > config.clip).float().mean()))
            stats["policy_loss"].append(pl.item())
            stats["value_loss"].append(vl.item())
            stats["entropy"].append(ent.item())
            stats["actor_grad_norm"].append(float(a_norm))
            stats["critic_grad_norm"].append(float(c_norm))
    return {k: sum(v) / len(v) for k, v in stats.items()}


def prepare_run(run_dir: str | Path, config: TeacherConfig | None, resume: bool,
                total_steps: int | None = None, minutes: float | None = None) -> tuple[TeacherFolder, TeacherConfig]:
    """Check the run folder and the config before any work: new runs never overwrite. A resume
    may extend the run: ``total_steps`` and ``minutes`` replace the saved ones when given."""
    paths = RunLayout(Path(run_dir)).teacher
    if resume:
        saved, _ = read_teacher_config(paths)
        if total_steps is not None:
            saved = replace(saved, total_steps=total_steps)
        if minutes is not None:
            saved = replace(saved, minutes=minutes)
        return paths, saved.validate()
    if config is None:
        raise KdxError("a new run needs a config")
    if paths.exists():
        raise KdxError(
            f"{run_dir} already holds a teacher run; continue it with `kdx train --resume {run_dir}` "
            "or choose another --out"
        )
    return paths, config.validate()


def train(run_dir: str | Path, config: TeacherConfig | None = None, resume: bool = False,
          total_steps: int | None = None, show_progress: bool = True,
          stop_after_updates: int | None = None,
          callback: Callable[[dict[str, Any], Teacher], bool] | None = None,
          recipe: RecipeUse | None = None, minutes: float | None = None) -> dict[str, Any]:
    """Train (or resume) the teacher of ``run_dir``; returns the last metrics line.

    On resume, ``total_steps`` and ``minutes`` (the time budget) extend the saved run when given.
    ``stop_after_updates`` ends the process-local loop early (tests use it to emulate a stop
    between checkpoints); the run stays resumable. ``callback(metrics, teacher)`` runs after
    every update (benchmarks evaluate there); returning True stops training after a checkpoint.
    ``recipe`` (how ``kdx train`` used the env's recipe) is recorded in ``teacher/config.json``.
    Rank 0 holds the run's writer lock throughout (a second writer gets an error naming it).
    """
    if not resume and config is not None:
        config.validate()  # bad input fails before anything is created
    rank, _, _ = world_from_env()
    with RunLayout(Path(run_dir)).writing("kdx train", create=not resume) if rank == 0 else nullcontext():
        return _train(run_dir, config, resume, total_steps, show_progress, stop_after_updates, callback, recipe,
                      minutes)


def _train(run_dir: str | Path, config: TeacherConfig | None, resume: bool, total_steps: int | None,
           show_progress: bool, stop_after_updates: int | None,
           callback: Callable[[dict[str, Any], Teacher], bool] | None, recipe: RecipeUse | None,
           minutes: float | None = None) -> dict[str, Any]:
    paths, config = prepare_run(run_dir, config, resume, total_steps, minutes)
    # torchrun ranks: seeds, gradient/statistics sync, rank-0-only I/O (a no-op in one process)
    dp = data_parallel(config)
    run_config, config = config, dp.rank_config(config)
    threads = ThreadGovernor(config.threads)
    device = torch.device(config.torch_device)

    # ---- env and networks
    env = make(config.env, num_envs=config.num_envs, seed=dp.env_seed(config.seed), device=config.torch_device)
    env.check_actions = False  # actions come from masked distributions
    spec = env.spec
    torch.manual_seed(config.seed)
    teacher = Teacher.build(config, spec)
    dp.setup_teacher(teacher)
    optimizer = torch.optim.Adam(
        [{"params": teacher.actor.parameters(), "lr": config.lr},
         {"params": teacher.critic.parameters(), "lr": config.effective_critic_lr}],
        eps=config.adam_eps,
    )
    generators = loop_generators(device, dp.gen_seed(config.seed + 1), dp.gen_seed(config.seed + 2))
    sample_gen, minibatch_gen = generators["sample"], generators["minibatch"]

    # ---- fresh start or resume at a rollout boundary
    store = checkpoint_store(paths)
    ckpt = store.resume_point(resume)
    if ckpt is not None:
        load_teacher_tensors(teacher, ckpt.weights, ckpt.path)
        load_optimizer_tensors(optimizer, ckpt.optimizer, ckpt.optimizer_meta)
        state = dp.rank_state(ckpt.state, ckpt.progress)  # this rank's env/RNG state
        step, hidden = restore_loop_state(env, state, generators)
        start = replace(Counters.from_progress(ckpt.progress), episodes=dp.resume_episodes(state, ckpt.progress))
    else:
        if dp.is_main:
            write_teacher_config(paths, run_config, spec.to_json(), recipe)
        step = env.reset()
        hidden = teacher.actor.initial_hidden(config.num_envs, device)
        start = Counters()

    def checkpoint(at: Counters) -> None:
        state = dp.gather_state(loop_state_tensors(env, step, hidden, generators), at.episodes)  # all ranks', on rank 0
        progress = {**at.to_progress(), **dp.progress_extra(at.env_steps)}
        if dp.is_main:
            weights, opt = teacher_tensors(teacher), optimizer_tensors(optimizer)
            store.save(at.update, weights, opt, state, progress)
            publish_teacher(paths, weights, opt, at.update)

    def stop_asked(metrics: dict[str, Any]) -> bool:  # the loop makes every rank stop together (dp.agree)
        return callback is not None and bool(callback(metrics, teacher))

    # ---- the loop
    # the bar counts env steps over all ranks (run_config.total_steps), as the metrics do
    bar = TrainProgress(run_config, start.update, enabled=show_progress and dp.is_main, budget_s=config.budget_s)
    with UpdateLoop(config, start, checkpoint, folder=paths, tag="teacher", bar=bar, writes_metrics=dp.is_main,
                    stop_after_updates=stop_after_updates, threads=threads, sync_time=dp.max_over_ranks,
                    agree=dp.agree) as loop:
        for update in loop:
            frac = 1.0 - loop.progress(update) if config.lr_decay else 1.0
            optimizer.param_groups[0]["lr"] = config.lr * frac
            optimizer.param_groups[1]["lr"] = config.effective_critic_lr * frac

            teacher.actor.train()
            buf, step, hidden = collect_rollout(env, teacher, step, hidden, config.rollout_length, sample_gen)
            advantages, returns = gae_advantages(buf.rewards, buf.values, buf.next_values, buf.terminated,
                                                 buf.done, config.gamma, config.gae_lambda)
            losses = ppo_update(teacher, optimizer, buf, advantages, returns, config, minibatch_gen,
                                grad_sync=dp.grad_sync(teacher))
            dp.after_update(paths, update + 1, teacher)

            metrics = loop.metrics(len(buf.episode_returns), {
                "episode_return": mean_or_none(buf.episode_returns),
                "episode_length": mean_or_none(buf.episode_lengths),
                "win_rate": mean_or_none(buf.episode_wins) if spec.has_win_flag else None,
                "value_mean": float(buf.values.mean()),
                "lr": optimizer.param_groups[0]["lr"],
                **losses,
            })
            metrics = dp.global_metrics(metrics, buf, spec.has_win_flag)
            if loop.end_update(metrics, stop_asked):
                break
    env.close()
    dp.close()
    return loop.last


def read_metrics(run_dir: str | Path) -> list[dict[str, Any]]:
    """Every metrics line of a run's teacher."""
    return read_metrics_file(RunLayout(Path(run_dir)).teacher.metrics)
