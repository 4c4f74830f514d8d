"""Stage 2: distil a frozen MAPPO teacher into one small student per agent, top to bottom.

teacher -> env -> sizing (device profile) -> students + projection heads -> obs normalisation ->
[student rollout (teacher labels it) -> teacher-guided GAE -> composite loss epochs -> log ->
checkpoint] x updates.

The composite loss, per agent and averaged over agents (invalid actions masked in every term):

    w_pg  * PPO-clipped policy loss on teacher-guided advantages (GAE with the teacher's critic)
  + w_kl  * T^2 KL(teacher || student) at temperature T
  + w_ce  * cross-entropy with the teacher's greedy action
  + w_margin * hinge relu(margin - (s[a_T] - max_{j != a_T} s_j)) on the teacher's greedy action a_T
    (off by default: on simple_spread rpi5 students it did not reduce the near ties that int8
    rounding flips, see the field's help)
  + w_rel * RKD distance + angle potentials over the agents of each step (team geometry)
  + w_role* InfoNCE role alignment across agents
  - entropy_coef * entropy

Students have no critic. The structural terms compare the teacher's embeddings with the
students' embeddings projected to the teacher's width by per-agent linear heads (trained here,
not exported). A weight of 0 switches a term off (it is then not computed).
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import replace
from pathlib import Path
from types import SimpleNamespace
from typing import Any

import torch
from torch import nn

from kdx.envs.registry import make
from kdx.errors import KdxError
from kdx.layout import RunLayout
from kdx.trainer.common.checkpoints import (
    load_module_tensors,
    load_optimizer_tensors,
    module_tensors,
    optimizer_tensors,
)
from kdx.trainer.common.env_state import loop_generators, loop_state_tensors, restore_loop_state
from kdx.trainer.common.gae import gae_advantages
from kdx.trainer.common.metrics_log import mean_or_none, read_metrics_file
from kdx.trainer.common.ppo_losses import entropy, masked_log_probs, policy_loss
from kdx.trainer.common.progress import TrainProgress
from kdx.trainer.common.recipes import RecipeUse
from kdx.trainer.common.threads import ThreadGovernor
from kdx.trainer.common.update_loop import Counters, UpdateLoop
from kdx.trainer.distill.config import LOSS_TERMS, DistillConfig
from kdx.trainer.distill.losses import (
    greedy_cross_entropy,
    greedy_margin_loss,
    kl_distillation,
    relation_loss,
    role_alignment_loss,
)
from kdx.trainer.distill.rollout import (
    StudentRollout,
    collect_student_rollout,
    teacher_observation_stats,
)
from kdx.trainer.distill.store import (
    checkpoint_store,
    profile_record,
    publish_students,
    read_students_config,
    teacher_fingerprint,
    write_students_config,
)
from kdx.trainer.distill.students import StudentPolicy
from kdx.trainer.distill.views import StudentViews
from kdx.trainer.teacher.model import Teacher
from kdx.trainer.teacher.store import load_teacher


# ------------------------------------------------------------------ students and sizing
def size_run_students(teacher: Teacher, config: DistillConfig, views: StudentViews | None = None):
    """The sizing rows for the teacher's agents on ``config.profile`` (overrides honoured),
    with every agent's student and teacher-actor costs: what ``students/sizing.json`` stores.
    With active ``views`` each student is sized by its view's width, and its row names the view."""
    from kdx.devices.registry import get_profile
    from kdx.devices.sizing import parse_overrides, size_students
    from kdx.trainer.distill.costs import teacher_view_costs

    profile = get_profile(config.profile)
    overrides = parse_overrides(config.students, teacher.spec.agent_names)
    agents = teacher.spec.agents
    if views is not None and views.active:
        widths = views.widths()
        agents = [(a.name, widths[a.name], a.n_actions) for a in agents]
    rows = size_students(agents, profile, overrides, teacher=teacher_view_costs(teacher), rule=config.capacity_rule(),
                         activation=config.activation)
    if views is not None and views.active:
        rows = [replace(r, view=tuple(views.views[r.agent].text)) for r in rows]
    return profile, rows


def build_students(rows: Sequence[Any]) -> dict[str, StudentPolicy]:
    return {r.agent: StudentPolicy(r.obs_dim, r.n_actions, r.arch.hidden, r.arch.activation) for r in rows}


def build_heads(students: dict[str, StudentPolicy], teacher_width: int) -> nn.ModuleDict:
    """Per-agent projections of the student embedding to the teacher's embedding width."""
    return nn.ModuleDict({name: nn.Linear(s.embedding_dim, teacher_width) for name, s in students.items()})


# ------------------------------------------------------------------ the update
def distill_losses(students: Sequence[StudentPolicy], heads: Sequence[nn.Linear], obs: torch.Tensor,
                   masks: torch.Tensor, actions: torch.Tensor, old_logp: torch.Tensor, acted: torch.Tensor,
                   advantages: torch.Tensor, teacher_logits: torch.Tensor, teacher_emb: torch.Tensor,
                   config: DistillConfig, generator: torch.Generator | None = None) -> dict[str, torch.Tensor]:
    """Every term of the composite loss on a flat batch; ``"loss"`` is their weighted sum.

    Shapes: ``obs [N, A, D]``, ``masks [N, A, K]``, ``actions/old_logp/advantages [N, A]``,
    ``acted bool [N, A]`` (PG only where the student itself acted), ``teacher_logits [N, A, K]``,
    ``teacher_emb [N, A, H]``.
    """
    zero = obs.new_zeros(())
    per_agent: dict[str, list[torch.Tensor]] = {t: [] for t in ("pg", "kl", "ce", "margin", "entropy")}
    embeddings = []
    for i, student in enumerate(students):
        k = student.n_actions
        logits, emb = student(obs[:, i, : student.obs_dim])
        embeddings.append(emb)
        mask, t_logits = masks[:, i, :k], teacher_logits[:, i, :k]
        logp = masked_log_probs(logits, mask)
        if config.w_pg > 0:
            new_logp = logp.gather(-1, actions[:, i].unsqueeze(-1)).squeeze(-1)
            per_agent["pg"].append(policy_loss(new_logp, old_logp[:, i], advantages[:, i], config.clip,
                                               weights=acted[:, i].to(logp.dtype)))
        if config.w_kl > 0:
            per_agent["kl"].append(kl_distillation(t_logits, logits, mask, config.temperature))
        if config.w_ce > 0:
            per_agent["ce"].append(greedy_cross_entropy(t_logits, logits, mask))
        if config.w_margin > 0:
            per_agent["margin"].append(greedy_margin_loss(t_logits, logits, mask, config.margin))
        per_agent["entropy"].append(entropy(logp))
    terms = {t: (torch.stack(v).mean() if v else zero) for t, v in per_agent.items()}
    terms["rel"] = terms["role"] = zero
    if (config.w_rel > 0 or config.w_role > 0) and len(students) >= 2:
        rows = torch.arange(obs.shape[0], device=obs.device)
        if 0 < config.structural_samples < obs.shape[0]:
            rows = torch.randperm(obs.shape[0], generator=generator)[: config.structural_samples].to(obs.device)
        proj = torch.stack([head(e[rows]) for head, e in zip(heads, embeddings)], dim=1)  # [n, A, H]
        t_emb = teacher_emb[rows]
        if config.w_rel > 0:
            terms["rel"] = relation_loss(t_emb, proj, config.rkd_w_distance, config.rkd_w_angle)
        if config.w_role > 0:
            terms["role"] = role_alignment_loss(t_emb, proj, config.role_tau)
    terms["loss"] = sum(config.weight(t) * terms[t] for t in LOSS_TERMS) - config.entropy_coef * terms["entropy"]
    return terms


def distill_update(students: Sequence[StudentPolicy], heads: Sequence[nn.Linear], params: list[nn.Parameter],
                   optimizer: torch.optim.Optimizer, buf: StudentRollout, advantages: torch.Tensor,
                   config: DistillConfig, generator: torch.Generator) -> dict[str, float]:
    """``config.epochs`` passes of the composite loss over the rollout, minibatches split by env."""
    T, B, A = advantages.shape
    acted = buf.student_acted
    sel = advantages[acted]
    adv = (advantages - sel.mean()) / (sel.std() + 1e-8) if sel.numel() > 1 else advantages
    stats: dict[str, list[float]] = {}
    for _ in range(config.epochs):
        for mb in torch.randperm(B, generator=generator).chunk(config.minibatches):
            batch = (buf.obs, buf.masks, buf.actions, buf.log_probs, acted, adv, buf.teacher_logits,
                     buf.teacher_embedding)  # [T, B, ...] -> this minibatch's envs, flattened to [T * b, ...]
            flat = [x[:, mb].reshape(T * len(mb), *x.shape[2:]) for x in batch]
            terms = distill_losses(students, heads, *flat, config, generator)
            optimizer.zero_grad(set_to_none=True)
            terms["loss"].backward()
            grad_norm = nn.utils.clip_grad_norm_(params, config.max_grad_norm)
            optimizer.step()
            for key, value in terms.items():
                stats.setdefault(f"loss_{key}" if key != "loss" else "loss", []).append(float(value.detach()))
            stats.setdefault("grad_norm", []).append(float(grad_norm))
    return {k: sum(v) / len(v) for k, v in stats.items()}


# ------------------------------------------------------------------ the run
def _teacher_for(run_dir: Path, device: str, env: str | None = None) -> Teacher:
    teacher = load_teacher(run_dir, device=device, env=env)
    probe = make(teacher.config.env, num_envs=1, seed=0)
    if probe.spec.to_json() != teacher.spec.to_json():
        raise KdxError(
            f"the teacher in {run_dir} was trained on an {teacher.config.env!r} with different agents, "
            "observations or actions than this kdx builds; retrain the teacher"
        )
    probe.close()
    return teacher


def distill(run_dir: str | Path, config: DistillConfig | None = None, resume: bool = False,
            total_steps: int | None = None, show_progress: bool = True, stop_after_updates: int | None = None,
            callback: Callable[[dict[str, Any], dict[str, StudentPolicy]], bool] | None = None,
            console: Any = None, recipe: RecipeUse | None = None, minutes: float | None = None) -> dict[str, Any]:
    """Distil (or resume distilling) the students of ``run_dir``; returns the last metrics line.

    On resume, ``total_steps`` and ``minutes`` (the time budget) extend the saved run when given.
    ``stop_after_updates`` ends this process's loop early (the run stays resumable);
    ``callback(metrics, students)`` runs after every update, returning True stops after a checkpoint.
    ``recipe`` (how ``kdx distill`` used the env's recipe) is recorded in ``students/config.json``.
    Holds the run's writer lock throughout (a second writer gets an error naming it).
    """
    with RunLayout(Path(run_dir)).writing("kdx distill"):
        return _distill(Path(run_dir), config, resume, total_steps, show_progress, stop_after_updates, callback, console,
                        recipe, minutes)


def _distill(run_dir: Path, config: DistillConfig | None, resume: bool, total_steps: int | None,
             show_progress: bool, stop_after_updates: int | None,
             callback: Callable[[dict[str, Any], dict[str, StudentPolicy]], bool] | None,
             console: Any, recipe: RecipeUse | None, minutes: float | None = None) -> dict[str, Any]:
    paths = RunLayout(run_dir).students
    if resume:
        saved = read_students_config(run_dir)
        config = DistillConfig.from_json(saved["distill"])
        if total_steps is not None:
            config = replace(config, total_steps=total_steps)
        if minutes is not None:
            config = replace(config, minutes=minutes)
    elif config is None:
        raise KdxError("a new distillation needs a config")
    elif paths.exists():
        raise KdxError(f"{paths.root} already holds students; continue with `kdx distill {run_dir} --resume` "
                       "or delete that folder to start over")
    config = config.validate()
    threads = ThreadGovernor(config.threads)
    device = torch.device(config.torch_device)

    # ---- teacher, env, sizing
    teacher = _teacher_for(run_dir, config.torch_device)
    if resume and saved["teacher_sha256"] != teacher_fingerprint(run_dir):
        raise KdxError(f"the teacher of {run_dir} changed since these students were distilled; start over without --resume")
    spec = teacher.spec
    env = make(teacher.config.env, num_envs=config.num_envs, seed=config.seed, device=config.torch_device)
    try:
        views = StudentViews.resolve(config.views, env) if config.views else None
    except KdxError:
        env.close()
        raise
    profile, rows = size_run_students(teacher, config, views)
    env.check_actions = False  # actions come from masked distributions
    torch.manual_seed(config.seed)
    students_by_name = build_students(rows)
    heads_by_name = build_heads(students_by_name, teacher.actor.hidden_dim)
    for m in (*students_by_name.values(), heads_by_name):
        m.to(device)
    students, heads = list(students_by_name.values()), list(heads_by_name.values())
    params = [p for m in (*students, *heads) for p in m.parameters()]
    optimizer = torch.optim.Adam(params, lr=config.lr, eps=config.adam_eps)
    generators = loop_generators(device, config.seed + 1, config.seed + 2)
    sample_gen, minibatch_gen = generators["sample"], generators["minibatch"]

    store = checkpoint_store(paths)
    ckpt = store.resume_point(resume)
    if ckpt is not None:
        load_module_tensors(students_by_name, ckpt.weights, ckpt.path, prefix="student.")
        load_module_tensors(dict(heads_by_name), ckpt.weights, ckpt.path, prefix="head.")
        load_optimizer_tensors(optimizer, ckpt.optimizer, ckpt.optimizer_meta)
        step, t_hidden = restore_loop_state(env, ckpt.state, generators, hidden_key="teacher_hidden")
        start = Counters.from_progress(ckpt.progress)
    else:
        from kdx.devices.sizing import write_sizing_json

        write_sizing_json(paths.sizing, rows, profile)  # the run's costs, counted once (kdx.trainer.distill.costs)
        step = env.reset()
        if config.obs_norm_steps > 0:  # fixed input normalisation from the teacher's own visits
            stats, step = teacher_observation_stats(env, teacher, step, config.obs_norm_steps, sample_gen, views)
            for student, (mean, std) in zip(students, stats):
                student.set_obs_normalisation(mean, torch.where(std < 1e-3, torch.ones_like(std), std))
        write_students_config(paths, {
            "distill": config.to_json(), "env": teacher.config.env, "profile": profile_record(profile),
            "teacher_sha256": teacher_fingerprint(run_dir), "teacher_embedding_dim": teacher.actor.hidden_dim,
            "agents": {name: s.arch_json() for name, s in students_by_name.items()}, "env_spec": spec.to_json(),
            **({"recipe": recipe.to_json()} if recipe is not None else {}),
            **({"views": views.to_json()} if views is not None and views.active else {}),
        })
        t_hidden = teacher.actor.initial_hidden(config.num_envs, device)
        start = Counters()
    if console is not None and show_progress:
        from kdx.devices.tables import sizing_table

        console.print(sizing_table(rows, profile))

    def checkpoint(at: Counters) -> None:
        state = loop_state_tensors(env, step, t_hidden, generators, hidden_key="teacher_hidden")
        weights = {**module_tensors(students_by_name, prefix="student."), **module_tensors(dict(heads_by_name), prefix="head.")}
        store.save(at.update, weights, optimizer_tensors(optimizer), state, at.to_progress())
        publish_students(paths, students_by_name)

    def stop_asked(metrics: dict[str, Any]) -> bool:
        return callback is not None and bool(callback(metrics, students_by_name))

    # ---- the loop
    bar = TrainProgress(SimpleNamespace(env=f"distill {teacher.config.env}", total_steps=config.num_updates * config.steps_per_update,
                                        steps_per_update=config.steps_per_update), start.update, enabled=show_progress,
                        budget_s=config.budget_s)
    with UpdateLoop(config, start, checkpoint, folder=paths, tag="distill", bar=bar,
                    stop_after_updates=stop_after_updates, threads=threads) as loop:
        for update in loop:
            progress_frac = loop.progress(update)
            optimizer.param_groups[0]["lr"] = config.lr * ((1.0 - progress_frac) if config.lr_decay else 1.0)
            mix = config.teacher_mix * max(0.0, 1.0 - progress_frac / config.teacher_mix_fraction) if config.teacher_mix_fraction > 0 else 0.0

            buf, step, t_hidden = collect_student_rollout(env, teacher, students, step, t_hidden,
                                                          config.rollout_length, sample_gen, mix, views)
            advantages, _ = gae_advantages(buf.rewards, buf.values, buf.next_values, buf.terminated, buf.done,
                                           config.gamma, config.gae_lambda)
            losses = distill_update(students, heads, params, optimizer, buf, advantages, config, minibatch_gen)

            legal_choice = buf.masks.sum(-1) > 1  # agreement only where there was a choice
            metrics = loop.metrics(len(buf.episode_returns), {
                "episode_return": mean_or_none(buf.episode_returns),
                "win_rate": mean_or_none(buf.episode_wins) if spec.has_win_flag else None,
                "teacher_agreement": float(buf.agreement[legal_choice].float().mean()) if bool(legal_choice.any()) else None,
                "teacher_mix": mix,
                "lr": optimizer.param_groups[0]["lr"],
                **losses,
            })
            if loop.end_update(metrics, stop_asked):
                break
    env.close()
    return loop.last


def read_distill_metrics(run_dir: str | Path) -> list[dict[str, Any]]:
    """Every metrics line of a run's distillation."""
    return read_metrics_file(RunLayout(Path(run_dir)).students.metrics)
