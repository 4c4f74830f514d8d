"""Env-steps/s and training env-steps/s, CPU vs GPU, on the big skirmish maps.

    .venv/bin/python benchmarks/gpu_path.py                              # 8m and 27m_vs_30m
    .venv/bin/python benchmarks/gpu_path.py --num-envs 256 --updates 6 --env skirmish/8m

For each env and each device (``cpu``, and ``cuda`` when torch sees one):

- *env steps/s*: the batched env alone, stepped with random legal actions drawn on the device
  (no host round trip per step), after a warm-up;
- *training env-steps/s*: ``kdx train`` (``mappo.train``) for a few updates with envs, rollouts
  and updates on that device; the first update (warm-up, allocator, kernels) is left out.

Prints a table and writes benchmarks/results/gpu_path.json with the machine's load average.
Rows for ``cuda`` say "not available" on a machine without a GPU.
"""

from __future__ import annotations

import argparse
import json
import os
import tempfile
import time
from pathlib import Path

import torch
from rich.console import Console
from rich.table import Table

from kdx.envs.registry import make
from kdx.trainer.teacher.config import TeacherConfig
from kdx.trainer.teacher.mappo import read_metrics, train


def _sync(device: str) -> None:
    if device.startswith("cuda"):
        torch.cuda.synchronize()


@torch.no_grad()
def env_steps_per_s(env_name: str, num_envs: int, device: str, steps: int, warmup: int = 10) -> float:
    env = make(env_name, num_envs=num_envs, seed=0, device=device)
    env.check_actions = False
    gen = torch.Generator(device=device).manual_seed(0)
    step = env.reset()
    for i in range(warmup + steps):
        if i == warmup:
            _sync(device)
            t0 = time.perf_counter()
        mask = step.padded_action_mask()  # [B, A, K]
        flat = mask.reshape(-1, mask.shape[-1]).float()
        actions = torch.multinomial(flat, 1, generator=gen).view(mask.shape[:2])
        step = env.step(actions)
    _sync(device)
    elapsed = time.perf_counter() - t0
    env.close()
    return steps * num_envs / elapsed


def train_steps_per_s(env_name: str, num_envs: int, device: str, updates: int, rollout: int, hidden: str) -> float:
    with tempfile.TemporaryDirectory(prefix="kdx-gpu-bench-") as tmp:
        config = TeacherConfig(env=env_name, num_envs=num_envs, rollout_length=rollout, hidden=hidden, torch_device=device,
                               total_steps=num_envs * rollout * updates, checkpoint_every=10_000, epochs=5)
        train(Path(tmp) / "run", config, show_progress=False)
        metrics = read_metrics(Path(tmp) / "run")
    first, last = metrics[0], metrics[-1]
    return (last["env_steps"] - first["env_steps"]) / (last["time_s"] - first["time_s"])


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--env", action="append", help="env names (default: skirmish/8m and skirmish/27m_vs_30m)")
    parser.add_argument("--num-envs", type=int, default=64)
    parser.add_argument("--env-steps", type=int, default=200, help="steps of the batched env for env-only timing")
    parser.add_argument("--updates", type=int, default=4, help="training updates (the first is warm-up)")
    parser.add_argument("--rollout", type=int, default=60)
    parser.add_argument("--hidden", default="256,256,256")
    parser.add_argument("--out", default="benchmarks/results/gpu_path.json")
    args = parser.parse_args()

    envs = args.env or ["skirmish/8m", "skirmish/27m_vs_30m"]
    devices = ["cpu"] + (["cuda"] if torch.cuda.is_available() else [])
    rows = []
    for env_name in envs:
        for device in ["cpu", "cuda"]:
            row = {"env": env_name, "device": device, "num_envs": args.num_envs, "load_avg_1m": os.getloadavg()[0]}
            if device in devices:
                row["env_steps_per_s"] = env_steps_per_s(env_name, args.num_envs, device, args.env_steps)
                row["train_env_steps_per_s"] = train_steps_per_s(env_name, args.num_envs, device, args.updates,
                                                                 args.rollout, args.hidden)
                row["gpu"] = torch.cuda.get_device_name() if device == "cuda" else None
            else:
                row["env_steps_per_s"] = row["train_env_steps_per_s"] = None
            rows.append(row)

    table = Table(title=f"CPU vs GPU ({args.num_envs} envs, torch threads {torch.get_num_threads()})")
    for col in ("env", "device", "env steps/s", "training env-steps/s", "load 1m"):
        table.add_column(col, justify="left" if col in ("env", "device") else "right")
    def fmt(x: float | None) -> str:
        return "not available" if x is None else f"{x:,.0f}"

    for r in rows:
        table.add_row(r["env"], r["device"], fmt(r["env_steps_per_s"]), fmt(r["train_env_steps_per_s"]),
                      f"{r['load_avg_1m']:.1f}")
    Console().print(table)
    out = Path(args.out)
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps({"torch": torch.__version__, "cores": len(os.sched_getaffinity(0)), "rows": rows}, indent=2))
    print(f"wrote {out}")


if __name__ == "__main__":
    main()
