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

import os
import time
from collections.abc import Callable, Sequence
from dataclasses import MISSING, asdict, dataclass, field, fields, replace
from pathlib import Path
from types import SimpleNamespace
from typing import Any

import torch
from torch import nn

from kdx.envs.registry import make
from kdx.errors import KdxError
from kdx.trainer.checkpoint import load_optimizer_tensors, load_teacher, optimizer_tensors
from kdx.trainer.distill_losses import (
    greedy_cross_entropy,
    greedy_margin_loss,
    kl_distillation,
    relation_loss,
    role_alignment_loss,
)
from kdx.trainer.distill_rollout import (
    StudentRollout,
    collect_student_rollout,
    teacher_observation_stats,
)
from kdx.trainer.gae import gae_advantages
from kdx.trainer.mappo import step_from_tensors, step_tensors
from kdx.trainer.metrics_log import (
    append_metrics,
    mean_or_none,
    open_tensorboard,
    read_metrics_file,
    truncate_metrics,
)
from kdx.trainer.ppo_losses import entropy, masked_log_probs, policy_loss
from kdx.trainer.progress import TrainProgress
from kdx.trainer.student_io import (
    StudentPaths,
    load_distill_checkpoint,
    load_module_tensors,
    module_tensors,
    publish_students,
    read_students_config,
    save_distill_checkpoint,
    teacher_fingerprint,
    write_students_config,
)
from kdx.trainer.students import StudentPolicy
from kdx.trainer.teacher import Teacher

TIMING_METRICS = ("env_steps_per_s", "time_s")
LOSS_TERMS = ("pg", "kl", "ce", "margin", "rel", "role")


def _f(default: Any, help: str) -> Any:
    return field(default=default, metadata={"help": help})


@dataclass(frozen=True)
class DistillConfig:
    """Hyper-parameters of stage 2. ``validate()`` checks them before any work."""

    device_profile: str = _f("x86-cpu", "Device profile that sizes the students (see `kdx devices list`).")
    students: tuple[str, ...] = _f((), "Per-agent overrides AGENT=W or AGENT=W1xW2 (hidden widths).")
    activation: str = _f("relu", "Hidden activation of the students: relu or tanh.")
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
    device: str = _f("cpu", "Torch device (cpu or cuda).")
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
        if self.activation not in ("relu", "tanh"):
            raise bad("activation", "must be relu or tanh")
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
        unknown = sorted(set(data) - {f.name for f in fields(cls)})
        if unknown:
            raise KdxError(f"distill config has unknown fields {unknown}; was it written by a newer kdx?")
        return cls(**{**data, "students": tuple(data.get("students", ()))})


def field_help() -> dict[str, str]:
    return {f.name: f.metadata["help"] for f in fields(DistillConfig)}


def field_defaults() -> dict[str, Any]:
    return {f.name: f.default for f in fields(DistillConfig) if f.default is not MISSING}


# ------------------------------------------------------------------ students and sizing
def size_run_students(teacher: Teacher, config: DistillConfig):
    """The sizing rows for the teacher's agents on ``config.device_profile`` (overrides honoured)."""
    from kdx.devices.registry import get_profile
    from kdx.devices.sizing import parse_overrides, size_students

    profile = get_profile(config.device_profile)
    overrides = parse_overrides(config.students, teacher.spec.agent_names)
    rows = size_students(teacher.spec.agents, profile, overrides, teacher_hidden=teacher.config.hidden_sizes,
                         activation=config.activation)
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
            console: Any = None) -> dict[str, Any]:
    """Distil (or resume distilling) the students of ``run_dir``; returns the last metrics line.

    ``stop_after_updates`` ends this process's loop early (the run stays resumable);
    ``callback(metrics, students)`` runs after every update, returning True stops after a checkpoint.
    """
    run_dir = Path(run_dir)
    paths = StudentPaths(run_dir)
    if resume:
        saved = read_students_config(run_dir)
        config = DistillConfig.from_json(saved["distill"])
        if total_steps is not None:
            config = replace(config, total_steps=total_steps)
    elif config is None:
        raise KdxError("a new distillation needs a config")
    elif paths.students.exists() and any(paths.students.iterdir()):
        raise KdxError(f"{paths.students} already holds students; continue with `kdx distill {run_dir} --resume` "
                       "or delete that folder to start over")
    config = config.validate()
    torch.set_num_threads(config.threads or max(1, len(os.sched_getaffinity(0))))
    device = torch.device(config.device)

    # ---- teacher, env, sizing
    teacher = _teacher_for(run_dir, config.device)
    if resume and saved["teacher_sha256"] != teacher_fingerprint(run_dir):
        raise KdxError(f"the teacher of {run_dir} changed since these students were distilled; start over without --resume")
    spec = teacher.spec
    profile, rows = size_run_students(teacher, config)
    env = make(teacher.config.env, num_envs=config.num_envs, seed=config.seed, device=config.device)
    env.check_actions = False  # actions come from masked distributions
    torch.manual_seed(config.seed)
    students_by_name = build_students(rows)
    heads_by_name = build_heads(students_by_name, teacher.actor.hidden_dim)
    for m in (*students_by_name.values(), heads_by_name):
        m.to(device)
    students, heads = list(students_by_name.values()), list(heads_by_name.values())
    params = [p for m in (*students, *heads) for p in m.parameters()]
    optimizer = torch.optim.Adam(params, lr=config.lr, eps=config.adam_eps)
    sample_gen = torch.Generator(device=device).manual_seed(config.seed + 1)
    minibatch_gen = torch.Generator().manual_seed(config.seed + 2)

    if resume:
        ckpt = load_distill_checkpoint(paths)
        load_module_tensors("student", students_by_name, ckpt.weights, ckpt.path)
        load_module_tensors("head", dict(heads_by_name), ckpt.weights, ckpt.path)
        load_optimizer_tensors(optimizer, ckpt.optimizer, ckpt.optimizer_meta)
        env.reset()  # creates every lazily-built env tensor, then the checkpoint overwrites them
        env.load_state_dict({k[4:]: v for k, v in ckpt.state.items() if k.startswith("env.")})
        step = step_from_tensors(ckpt.state, spec.n_agents, device)
        t_hidden = ckpt.state["teacher_hidden"].to(device) if "teacher_hidden" in ckpt.state else None
        sample_gen.set_state(ckpt.state["rng.sample"])
        minibatch_gen.set_state(ckpt.state["rng.minibatch"])
        start_update, env_steps, episodes = (int(ckpt.progress[k]) for k in ("update", "env_steps", "episodes"))
        elapsed0 = float(ckpt.progress["time_s"])
        truncate_metrics(paths.metrics, start_update)
    else:
        from kdx.devices.sizing import write_sizing_json

        write_sizing_json(paths.sizing, rows, profile, teacher.config.hidden_sizes)
        step = env.reset()
        if config.obs_norm_steps > 0:  # fixed input normalisation from the teacher's own visits
            stats, step = teacher_observation_stats(env, teacher, step, config.obs_norm_steps, sample_gen)
            for student, (mean, std) in zip(students, stats):
                student.set_obs_normalisation(mean, torch.where(std < 1e-3, torch.ones_like(std), std))
        write_students_config(paths, {
            "distill": config.to_json(), "env": teacher.config.env, "device_profile": profile.name,
            "teacher_sha256": teacher_fingerprint(run_dir), "teacher_embedding_dim": teacher.actor.hidden_dim,
            "agents": {name: s.arch_json() for name, s in students_by_name.items()}, "env_spec": spec.to_json(),
        })
        t_hidden = teacher.actor.initial_hidden(config.num_envs, device)
        start_update, env_steps, episodes, elapsed0 = 0, 0, 0, 0.0
    if console is not None and show_progress:
        from kdx.devices.tables import sizing_table

        console.print(sizing_table(rows, profile))

    def checkpoint(update: int, elapsed: float) -> None:
        state = {f"env.{k}": v for k, v in env.state_dict().items()}
        state.update(step_tensors(step))
        if t_hidden is not None:
            state["teacher_hidden"] = t_hidden
        state["rng.sample"] = sample_gen.get_state()
        state["rng.minibatch"] = minibatch_gen.get_state()
        weights = {**module_tensors("student", students_by_name), **module_tensors("head", dict(heads_by_name))}
        progress = {"update": update, "env_steps": env_steps, "episodes": episodes, "time_s": elapsed}
        save_distill_checkpoint(paths, update, weights, optimizer_tensors(optimizer), state, progress)
        publish_students(paths, students_by_name)

    # ---- the loop
    tb = open_tensorboard(paths.tensorboard)
    t0 = time.perf_counter()
    last: dict[str, Any] = {}
    bar_cfg = SimpleNamespace(env=f"distill {teacher.config.env}", total_steps=config.num_updates * config.steps_per_update,
                              steps_per_update=config.steps_per_update)
    with TrainProgress(bar_cfg, start_update, enabled=show_progress) as bar:
        for update in range(start_update, config.num_updates):
            if stop_after_updates is not None and update - start_update >= stop_after_updates:
                break
            progress_frac = update / config.num_updates
            optimizer.param_groups[0]["lr"] = config.lr * ((1.0 - progress_frac) if config.lr_decay else 1.0)
            mix = config.teacher_mix * max(0.0, 1.0 - progress_frac / config.teacher_mix_fraction) if config.teacher_mix_fraction > 0 else 0.0

            buf, step, t_hidden = collect_student_rollout(env, teacher, students, step, t_hidden,
                                                          config.rollout_length, sample_gen, mix)
            advantages, _ = gae_advantages(buf.rewards, buf.values, buf.next_values, buf.terminated, buf.done,
                                           config.gamma, config.gae_lambda)
            losses = distill_update(students, heads, params, optimizer, buf, advantages, config, minibatch_gen)

            env_steps += config.steps_per_update
            episodes += len(buf.episode_returns)
            elapsed = elapsed0 + time.perf_counter() - t0
            legal_choice = buf.masks.sum(-1) > 1  # agreement only where there was a choice
            metrics: dict[str, Any] = {
                "update": update + 1,
                "env_steps": env_steps,
                "episodes": episodes,
                "episode_return": mean_or_none(buf.episode_returns),
                "win_rate": mean_or_none(buf.episode_wins) if spec.has_win_flag else None,
                "teacher_agreement": float(buf.agreement[legal_choice].float().mean()) if bool(legal_choice.any()) else None,
                "teacher_mix": mix,
                "lr": optimizer.param_groups[0]["lr"],
                **losses,
                "env_steps_per_s": (env_steps - start_update * config.steps_per_update) / max(elapsed - elapsed0, 1e-9),
                "time_s": elapsed,
            }
            last = metrics
            if (update + 1) % config.log_every == 0 or update + 1 == config.num_updates:
                append_metrics(paths.metrics, tb, metrics, "distill")
            bar.advance(metrics)
            stop = callback is not None and bool(callback(metrics, students_by_name))
            if stop or (update + 1) % config.checkpoint_every == 0 or update + 1 == config.num_updates:
                checkpoint(update + 1, elapsed)
            if stop:
                break
    if tb is not None:
        tb.close()
    env.close()
    return last


def read_distill_metrics(run_dir: str | Path) -> list[dict[str, Any]]:
    """Every metrics line of a run's distillation."""
    return read_metrics_file(StudentPaths(Path(run_dir)).metrics)
