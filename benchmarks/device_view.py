"""What applying a student's view costs on the device, per decision (batch 1, numpy).

    .venv/bin/python benchmarks/device_view.py [--iters 20000] [--out benchmarks/results/device_view.json]

For a few envs and views, ``kdx.envs.view_numpy.DeviceView`` (what ``kdx-runtime run`` applies
before every ``Policy.act``) is timed on real observations of agent 0, one observation per call,
after a warm-up: p50/p99 µs per call, raw widths before and after. Prints a table and writes JSON
(with the load average: other work on the cores slows the numbers).
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import time
from pathlib import Path

import numpy as np
from rich.console import Console
from rich.table import Table

from kdx.envs.registry import make
from kdx.envs.view_numpy import DeviceView
from kdx.envs.view_spec import resolve_views

RESULTS = Path(__file__).parent / "results"
CASES = {
    "mpe/simple_spread": ["-comm.*", "sight:1", "-comm.* quant:4:2", "-comm.* dropout:landmark.*:0.2 noise:0.05"],
    "skirmish/8m": ["sight:6", "sight:4", "-ally.*.health", "quant:4", "sight:4 -ally.*.health quant:4 noise:0.1"],
    "skirmish/MMM": ["sight:4", "-enemy.*.health dropout:ally.*:0.1"],
}


def observations(env_name: str, rows: int = 256) -> tuple[object, np.ndarray]:
    """Agent 0's layout and ``rows`` of its observations from random legal play."""
    import torch

    env = make(env_name, num_envs=rows, seed=0)
    step = env.reset()
    gen = torch.Generator().manual_seed(0)
    for _ in range(5):
        acts = [torch.multinomial(m.float(), 1, generator=gen).squeeze(1) for m in step.action_mask]
        step = env.step(torch.stack(acts, 1))
    return env, step.obs[0].numpy().astype(np.float32)


def time_view(device: DeviceView, obs: np.ndarray, iters: int, warmup: int = 1000) -> np.ndarray:
    """Raw per-call samples in ns, one observation per call."""
    rows = list(obs)
    for i in range(warmup):
        device(rows[i % len(rows)])
    samples = np.empty(iters, dtype=np.int64)
    clock = time.perf_counter_ns
    for i in range(iters):
        row = rows[i % len(rows)]
        start = clock()
        device(row)
        samples[i] = clock() - start
    return samples


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--iters", type=int, default=20_000)
    parser.add_argument("--out", type=Path, default=RESULTS / "device_view.json")
    args = parser.parse_args()
    load_before = os.getloadavg()
    rows = []
    for env_name, texts in CASES.items():
        env, obs = observations(env_name)
        agent = env.spec.agent_names[0]
        layouts = dict(zip(env.spec.agent_names, env.observation_layouts()))
        for text in texts:
            view = resolve_views({agent: text}, layouts, env.spec.groups, env.observation_distance_unit)[agent]
            device = DeviceView(view, layouts[agent])
            samples = time_view(device, obs, args.iters)
            rows.append({"env": env_name, "view": text, "device_ops": device.view.text, "raw_dim": obs.shape[1],
                         "input_dim": device.width, "p50_us": float(np.median(samples)) / 1e3,
                         "p99_us": float(np.percentile(samples, 99)) / 1e3, "iters": args.iters})
    table = Table(title=f"DeviceView per decision (batch 1, numpy, {args.iters} calls each)")
    for column in ("env", "view", "device applies", "raw", "input", "p50 µs", "p99 µs"):
        table.add_column(column, justify="right" if column in ("raw", "input", "p50 µs", "p99 µs") else "left")
    for r in rows:
        table.add_row(r["env"], r["view"], " ".join(r["device_ops"]), str(r["raw_dim"]), str(r["input_dim"]),
                      f"{r['p50_us']:.2f}", f"{r['p99_us']:.2f}")
    console = Console(width=200)
    console.print(table)
    load_after = os.getloadavg()
    console.print(f"load average before {load_before[0]:.2f}, after {load_after[0]:.2f}; {platform.processor() or platform.machine()}")
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps({"rows": rows, "load_average_before": load_before, "load_average_after": load_after,
                                    "numpy": np.__version__, "machine": platform.machine()}, indent=1))
    console.print(f"wrote {args.out}")


if __name__ == "__main__":
    main()
