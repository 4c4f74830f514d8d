"""Data-parallel teacher training on ``torch.distributed`` (launched by ``torchrun``).

``torchrun --nproc_per_node N -m kdx train ...`` starts N copies of ``kdx train``; each is one
*rank*. ``mappo.train`` asks ``data_parallel(config)`` for a ``DataParallel`` object and calls
its hooks; in a plain single process that object is ``SingleProcess``, whose hooks change
nothing, so the single-process run is exactly what it was.

What each rank does under ``torchrun`` (``WORLD_SIZE > 1``):

- runs its own batched envs (``--num-envs`` per rank) seeded ``seed + rank``; action sampling
  and minibatch shuffling get rank-specific seeds too;
- starts from rank 0's weights (broadcast after init), so all ranks hold identical networks;
- after every ``backward()`` the gradients of actor and critic are averaged over ranks with one
  ``all_reduce`` of a flat buffer (the loss is a per-rank mean, so the average is the gradient
  of the global-batch loss when ranks hold equal batches); identical gradients + identical Adam
  state keep the weights identical, which ``KDX_CHECK_RANK_SYNC=1`` verifies per update;
- the value normaliser folds in the *global* batch's count/mean/variance (all_gather of each
  rank's moments, combined with Chan's parallel formula), so its statistics stay identical;
- rank 0 alone writes config, metrics, TensorBoard and checkpoints. A checkpoint holds rank 0's
  env/RNG state under the usual keys and every other rank's under ``rank<r>.``, gathered with
  tensor collectives into the one atomically written ``state.safetensors``; on resume each rank
  takes its own part back. ``progress.json`` records ``world_size``; a resume with another world
  size is refused.

``--steps`` counts environment steps over all ranks: an update consumes
``world_size x num_envs x rollout_length`` steps, so N ranks run 1/N of the updates of one
process at the same ``--steps`` (more data per update; the usual data-parallel trade-off).

Why not ``DistributedDataParallel``? Its reducer expects one forward per backward and wraps the
module (``.module.`` keys, attributes hidden), while the recurrent actor is unrolled T times per
minibatch and the critic is also used outside the update. The gradient average DDP would do is
one ``all_reduce`` of the flattened gradients, which is what ``sync_grads`` calls; bucketing and
overlap matter little for networks of a few hundred thousand parameters.

Backends: ``gloo`` on CPU, ``nccl`` when ``--torch-device cuda`` (each rank then uses
``cuda:LOCAL_RANK``). Multi-node runs use torchrun's own rendezvous flags, e.g. on every node
``torchrun --nnodes 2 --nproc_per_node 4 --rdzv_backend c10d --rdzv_endpoint HOST:29400
--rdzv_id RUN -m kdx train --out /shared/run ...`` (the run folder must be on a shared file
system: rank 0 writes it, every rank reads it on resume).
"""

from __future__ import annotations

import hashlib
import json
import os
import subprocess
import sys
from collections.abc import Sequence
from dataclasses import replace
from typing import Any

import torch
import torch.distributed as dist

from kdx.errors import KdxError
from kdx.trainer.teacher.config import TeacherConfig

# Env var that makes every rank append a hash of its weights after each update to
# ``RUN/teacher/rank_sync/rank<r>.jsonl`` (tests and debugging: ranks must never drift apart).
CHECK_SYNC_ENV = "KDX_CHECK_RANK_SYNC"
# Seed stride between ranks for the sampling/minibatch generators (envs use seed + rank).
_GEN_SEED_STRIDE = 100_003


def world_from_env() -> tuple[int, int, int]:
    """``(rank, world_size, local_rank)`` as set by torchrun; ``(0, 1, 0)`` in a plain process."""
    try:
        world = int(os.environ.get("WORLD_SIZE", "1"))
        rank = int(os.environ.get("RANK", "0"))
        local = int(os.environ.get("LOCAL_RANK", "0"))
    except ValueError:
        raise KdxError("WORLD_SIZE / RANK / LOCAL_RANK must be integers (they are set by torchrun)") from None
    return rank, world, local


class SingleProcess:
    """The hooks of ``mappo.train`` for one process: every one leaves things as they are."""

    rank, world, is_main = 0, 1, True

    def env_seed(self, seed: int) -> int:
        return seed

    def gen_seed(self, seed: int) -> int:
        return seed

    def rank_config(self, config: TeacherConfig) -> TeacherConfig:
        return config

    def setup_teacher(self, teacher: Any) -> None:
        pass

    def grad_sync(self, teacher: Any):
        return None

    def rank_state(self, state: dict[str, torch.Tensor], progress: dict[str, Any]) -> dict[str, torch.Tensor]:
        """This rank's env/RNG state from a checkpoint (written by the same number of processes)."""
        check_world_size(progress, self.world)
        return state

    def gather_state(self, state: dict[str, torch.Tensor], episodes: int) -> dict[str, torch.Tensor]:
        return state

    def progress_extra(self, env_steps: int) -> dict[str, Any]:
        return {}

    def resume_episodes(self, state: dict[str, torch.Tensor], progress: dict[str, Any]) -> int:
        return int(progress["episodes"])

    def global_metrics(self, metrics: dict[str, Any], buf: Any, has_win_flag: bool) -> dict[str, Any]:
        return metrics

    def after_update(self, paths: Any, update: int, teacher: Any) -> None:
        pass

    def agree(self, flag: bool) -> bool:
        return flag

    def max_over_ranks(self, value: float) -> float:
        return value

    def close(self) -> None:
        pass


class DataParallel(SingleProcess):
    """One rank of a data-parallel run; the process group is set up by ``data_parallel``."""

    def __init__(self, rank: int, world: int, local_rank: int, device: torch.device, owns_group: bool) -> None:
        self.rank, self.world, self.local_rank = rank, world, local_rank
        self.is_main = rank == 0
        self.device = device
        self.owns_group = owns_group
        # nccl moves only CUDA tensors; gloo only CPU ones
        self.comm_device = device if dist.get_backend() == "nccl" else torch.device("cpu")
        self.check_sync = os.environ.get(CHECK_SYNC_ENV, "") not in ("", "0")

    # ---- seeds and sizes
    def env_seed(self, seed: int) -> int:
        return seed + self.rank

    def gen_seed(self, seed: int) -> int:
        return seed + _GEN_SEED_STRIDE * self.rank

    def rank_config(self, config: TeacherConfig) -> TeacherConfig:
        """The config this rank's loop runs: ``total_steps`` shrunk to this rank's share."""
        share = config.total_steps // self.world
        if share < config.steps_per_update:
            raise KdxError(
                f"--steps {config.total_steps} gives each of the {self.world} ranks less than one rollout "
                f"(num_envs x rollout_length = {config.steps_per_update} per rank); raise --steps"
            )
        return replace(config, total_steps=share)

    # ---- weights, gradients, value normalisation
    @torch.no_grad()
    def setup_teacher(self, teacher: Any) -> None:
        """Broadcast rank 0's initial weights and make the value normaliser use global moments."""
        for module in (teacher.actor, teacher.critic, teacher.value_norm):
            for tensor in module.state_dict().values():
                self._broadcast_(tensor)
        teacher.value_norm.moments_reducer = self.global_moments

    def _broadcast_(self, tensor: torch.Tensor) -> None:
        buf = tensor.to(self.comm_device)
        dist.broadcast(buf, src=0)
        if buf is not tensor:
            tensor.copy_(buf)

    def grad_sync(self, teacher: Any):
        params = [p for m in (teacher.actor, teacher.critic) for p in m.parameters() if p.requires_grad]

        def sync() -> None:
            average_gradients(params, self.world)

        return sync

    def global_moments(self, n: float, mean: torch.Tensor, var: torch.Tensor) -> tuple[float, torch.Tensor, torch.Tensor]:
        """Count, mean and (population) variance of the union of every rank's batch."""
        mine = torch.stack([torch.tensor(n, dtype=torch.float64, device=mean.device), mean.double(), var.double()])
        parts = [torch.empty(3, dtype=torch.float64, device=self.comm_device) for _ in range(self.world)]
        dist.all_gather(parts, mine.to(self.comm_device))
        stacked = torch.stack(parts).to(mean.device)
        total, g_mean, g_var = combine_moments(stacked[:, 0], stacked[:, 1], stacked[:, 2])
        return float(total), g_mean, g_var

    # ---- checkpoints
    def rank_state(self, state: dict[str, torch.Tensor], progress: dict[str, Any]) -> dict[str, torch.Tensor]:
        """This rank's env/RNG state from a checkpoint written by rank 0 (same world size only)."""
        check_world_size(progress, self.world)
        if self.rank == 0:
            return {k: v for k, v in state.items() if not k.startswith("rank")}
        prefix = f"rank{self.rank}."
        return {k[len(prefix):]: v for k, v in state.items() if k.startswith(prefix)}

    def resume_episodes(self, state: dict[str, torch.Tensor], progress: dict[str, Any]) -> int:
        """This rank's own episode counter (``progress.json`` holds rank 0's)."""
        return int(state["counter.episodes"]) if "counter.episodes" in state else int(progress["episodes"])

    def gather_state(self, state: dict[str, torch.Tensor], episodes: int) -> dict[str, torch.Tensor]:
        """Every rank's state gathered to rank 0 (``rank<r>.`` keys for r > 0); ``{}`` elsewhere.

        Uses ``all_gather`` per tensor (same keys and shapes on every rank: the envs are
        built alike), bools sent as uint8 because not every backend reduces bools.
        """
        state = dict(state)
        state["counter.episodes"] = torch.tensor(episodes, dtype=torch.int64)
        merged: dict[str, torch.Tensor] = {}
        for key in sorted(state):
            tensor = state[key].detach()
            is_bool = tensor.dtype == torch.bool
            send = (tensor.to(torch.uint8) if is_bool else tensor).contiguous().to(self.comm_device)
            parts = [torch.empty_like(send) for _ in range(self.world)]
            dist.all_gather(parts, send)
            if self.is_main:
                for r, part in enumerate(parts):
                    part = part.cpu()
                    merged[key if r == 0 else f"rank{r}.{key}"] = part.to(torch.bool) if is_bool else part
        return merged

    def progress_extra(self, env_steps: int) -> dict[str, Any]:
        """``env_steps`` in progress.json stays per rank (what a resume restores); this adds the total."""
        return {"world_size": self.world, "env_steps_all_ranks": env_steps * self.world}

    # ---- logging
    def global_metrics(self, metrics: dict[str, Any], buf: Any, has_win_flag: bool) -> dict[str, Any]:
        """Metrics of the whole world: env steps summed, episode stats over every rank's episodes.

        Losses, grad norms and value means stay rank 0's (the ranks share weights, so they differ
        only by their batches).
        """
        sums = torch.tensor([len(buf.episode_returns), sum(buf.episode_returns), sum(buf.episode_lengths),
                             sum(buf.episode_wins), metrics["episodes"]], dtype=torch.float64, device=self.comm_device)
        dist.all_reduce(sums)
        n, ret, length, wins, episodes = sums.tolist()
        out = dict(metrics)
        out["env_steps"] = metrics["env_steps"] * self.world
        out["env_steps_per_s"] = metrics["env_steps_per_s"] * self.world
        out["episodes"] = int(episodes)
        out["episode_return"] = ret / n if n else None
        out["episode_length"] = length / n if n else None
        out["win_rate"] = wins / n if n and has_win_flag else None
        out["world_size"] = self.world
        return out

    def after_update(self, paths: Any, update: int, teacher: Any) -> None:
        if not self.check_sync:
            return
        folder = paths.rank_sync
        folder.mkdir(parents=True, exist_ok=True)
        with open(folder / f"rank{self.rank}.jsonl", "a") as f:
            f.write(json.dumps({"update": update, "sha256": teacher_hash(teacher)}) + "\n")

    def agree(self, flag: bool) -> bool:
        """True on every rank when any rank says True (a stop request must stop them all)."""
        t = torch.tensor([1.0 if flag else 0.0], device=self.comm_device)
        dist.all_reduce(t, op=dist.ReduceOp.MAX)
        return bool(t.item() > 0)

    def max_over_ranks(self, value: float) -> float:
        """The largest ``value`` of all ranks (their training clocks, so that all decay and stop alike)."""
        t = torch.tensor([value], dtype=torch.float64, device=self.comm_device)
        dist.all_reduce(t, op=dist.ReduceOp.MAX)
        return float(t.item())

    def close(self) -> None:
        dist.barrier()
        if self.owns_group:
            dist.destroy_process_group()


def data_parallel(config: TeacherConfig) -> SingleProcess:
    """``SingleProcess`` unless launched by torchrun with ``WORLD_SIZE > 1``; then join the group.

    Call after the run folder was checked (the group's rendezvous doubles as a barrier: no rank
    writes before every rank has checked).
    """
    rank, world, local = world_from_env()
    if world <= 1:
        return SingleProcess()
    import faulthandler

    faulthandler.enable()  # a rank killed by a C++ abort still says where it was
    device = torch.device(config.torch_device)
    if device.type == "cuda":
        if not torch.cuda.is_available():
            raise KdxError("--torch-device cuda but torch sees no CUDA device on this node")
        torch.cuda.set_device(local)
        device = torch.device("cuda", local)
    owns = not dist.is_initialized()
    if owns:
        dist.init_process_group(backend="nccl" if device.type == "cuda" else "gloo")
    dist.barrier()
    return DataParallel(rank, world, local, device, owns)


# ------------------------------------------------------------------ pure helpers
def check_world_size(progress: dict[str, Any], world: int) -> None:
    """Refuse to resume a checkpoint written by a different number of processes."""
    saved = int(progress.get("world_size", 1))
    if saved != world:
        raise KdxError(
            f"this run's checkpoint was written by {saved} process(es) but {world} are resuming it: each "
            f"process owns its own envs, so resume with the same number (`kdx train --resume RUN --nproc {saved}` "
            f"or torchrun --nproc_per_node {saved} ... summed over nodes)"
        )


def combine_moments(counts: torch.Tensor, means: torch.Tensor, variances: torch.Tensor
                    ) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """Count, mean and population variance of the union of groups given theirs (Chan et al.)."""
    total = counts.sum()
    mean = (counts * means).sum() / total
    m2 = (counts * variances).sum() + (counts * (means - mean) ** 2).sum()
    return total, mean, m2 / total


@torch.no_grad()
def average_gradients(params: Sequence[torch.nn.Parameter], world: int) -> None:
    """Replace each parameter's gradient with its mean over ranks (one flat all_reduce).

    A parameter without a gradient on this rank contributes zeros, so every rank sends the same
    layout; afterwards every parameter has a gradient.
    """
    if not params:
        return
    grads = [p.grad if p.grad is not None else torch.zeros_like(p) for p in params]
    flat = torch.cat([g.reshape(-1) for g in grads])
    backend_device = torch.device("cpu") if dist.get_backend() != "nccl" else flat.device
    buf = flat.to(backend_device)
    dist.all_reduce(buf)
    buf = buf.to(flat.device).div_(world)
    offset = 0
    for p in params:
        n = p.numel()
        p.grad = buf[offset: offset + n].view_as(p).clone()
        offset += n


def teacher_hash(teacher: Any) -> str:
    """sha256 over every weight and value-norm buffer (names and bytes), for rank-sync checks."""
    h = hashlib.sha256()
    for prefix, module in (("actor", teacher.actor), ("critic", teacher.critic), ("value_norm", teacher.value_norm)):
        for name, tensor in sorted(module.state_dict().items()):
            h.update(f"{prefix}.{name}".encode())
            h.update(tensor.detach().cpu().contiguous().numpy().tobytes())
    return h.hexdigest()


# ------------------------------------------------------------------ launching
def torchrun_command(nproc: int, kdx_args: Sequence[str], standalone: bool = True) -> list[str]:
    """The command line that runs ``kdx <kdx_args>`` in ``nproc`` processes on this machine."""
    cmd = [sys.executable, "-m", "torch.distributed.run"]
    if standalone:
        cmd.append("--standalone")
    return [*cmd, f"--nproc_per_node={nproc}", "-m", "kdx", *kdx_args]


def launch(nproc: int, kdx_args: Sequence[str]) -> None:
    """Run ``kdx <kdx_args>`` under torchrun with ``nproc`` local processes; errors if it fails."""
    if nproc < 1:
        raise KdxError(f"--nproc must be at least 1 (got {nproc})")
    if world_from_env()[1] > 1:
        raise KdxError("--nproc starts torchrun itself; under torchrun leave it out")
    result = subprocess.run(torchrun_command(nproc, kdx_args), check=False)
    if result.returncode != 0:
        raise KdxError(f"the {nproc}-process run failed (torchrun exit code {result.returncode}); "
                       "see the ranks' messages above")


def option_args(options: dict[str, Any]) -> list[str]:
    """``{"num_envs": 8, "lr_decay": False}`` -> ``["--num-envs", "8", "--no-lr-decay"]``."""
    args: list[str] = []
    for name, value in options.items():
        flag = name.replace("_", "-")
        if isinstance(value, bool):
            args.append(f"--{flag}" if value else f"--no-{flag}")
        else:
            args += [f"--{flag}", str(value)]
    return args
