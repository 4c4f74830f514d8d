"""Draw one skirmish episode as an animated GIF: units as circles coloured by side (shade by type),
health (and shield) bars, and a line from each unit to whom it shot or healed during the step."""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path

import torch

from kdx.envs.skirmish.env import SkirmishEnv
from kdx.envs.skirmish.maps import MAP_SIZE
from kdx.envs.skirmish.scripted import SCRIPTED_POLICIES
from kdx.errors import KdxError

_ALLY_COLOURS = ("#1f77b4", "#17becf", "#2ca02c", "#9edae5")
_ENEMY_COLOURS = ("#d62728", "#ff7f0e", "#e377c2", "#8c564b")


@dataclass
class RenderSummary:
    """What was drawn."""

    path: Path
    steps: int
    won: bool
    frames: int


def _frame(fig, ax, env: SkirmishEnv, lines: list[tuple[int, int]], step: int, title: str):
    from matplotlib.patches import Circle, Rectangle
    from PIL import Image

    b, t = env.battle, env.table
    ax.clear()
    ax.set_xlim(0, MAP_SIZE)
    ax.set_ylim(0, MAP_SIZE)
    ax.set_aspect("equal")
    ax.set_xticks([])
    ax.set_yticks([])
    ax.set_title(f"{title}  step {step}", fontsize=9)
    x, y = b.x[0].tolist(), b.y[0].tolist()
    health, shield = b.health[0].tolist(), b.shield[0].tolist()
    n_a = env.map.n_agents
    for src, dst in lines:
        colour = "#2ca02c" if bool(t.healer[src]) else ("#1f77b4" if src < n_a else "#d62728")
        ax.plot([x[src], x[dst]], [y[src], y[dst]], color=colour, linewidth=0.8, alpha=0.7)
    kinds = {name: i for i, name in enumerate(dict.fromkeys(u.name for u in t.types))}
    for i, unit in enumerate(t.types):
        if health[i] <= 0:
            continue
        palette = _ALLY_COLOURS if i < n_a else _ENEMY_COLOURS
        colour = palette[kinds[unit.name] % len(palette)]
        ax.add_patch(Circle(
            (x[i], y[i]), unit.radius, color=colour, alpha=0.9))
        width = max(2 * unit.radius, 0.8)
        left, top = x[i] - width / 2, y[i] + unit.radius + 0.15
        ax.add_patch(Rectangle(
            (left, top), width * health[i] / unit.health, 0.15, color="#2ca02c"))
        if unit.shield > 0:
            ax.add_patch(Rectangle(
                (left, top + 0.17), width * shield[i] / unit.shield, 0.12, color="#1f77b4"))
    fig.canvas.draw()
    return Image.frombuffer("RGBA", fig.canvas.get_width_height(), bytes(fig.canvas.buffer_rgba())).convert("P")


def render_episode(map_name: str, policy: str = "focus-fire", out: str | Path = "battle.gif",
                   seed: int = 0, fps: int = 4, max_steps: int | None = None) -> RenderSummary:
    """Play one episode of ``skirmish/<map_name>`` with a scripted ``policy`` and save a GIF."""
    if policy not in SCRIPTED_POLICIES:
        raise KdxError(f"unknown policy {policy!r}; scripted policies: {', '.join(SCRIPTED_POLICIES)}")
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    env = SkirmishEnv(map_name, num_envs=1, seed=seed)
    env.record_actions = True
    step_out = env.reset()
    fig, ax = plt.subplots(figsize=(5, 5), dpi=80)
    title = f"skirmish/{env.map.name} - {policy}"
    frames = [_frame(fig, ax, env, [], 0, title)]
    limit = env.spec.episode_limit if max_steps is None else min(max_steps, env.spec.episode_limit)
    won, steps = False, 0
    for steps in range(1, limit + 1):
        actions = SCRIPTED_POLICIES[policy](env, step_out)
        before = (env.battle.x.clone(), env.battle.y.clone())
        step_out = env.step(actions)
        acting = env.battle.acting_on[0].tolist()
        if bool(step_out.done[0]):
            won = bool(step_out.info["won"][0])
            env.battle.x, env.battle.y = before  # draw the last positions, not the reset ones
            final = step_out.info["final_state"][0]
            _apply_final_health(env, final)
            frames.append(_frame(fig, ax, env, [], steps, title + (" - won" if won else " - lost")))
            break
        lines = [(i, j) for i, j in enumerate(acting) if j >= 0]
        frames.append(_frame(fig, ax, env, lines, steps, title))
    plt.close(fig)
    path = Path(out)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(path.name + ".tmp")
    frames[0].save(tmp, format="GIF", save_all=True, append_images=frames[1:], duration=int(1000 / fps),
                   loop=0)
    os.replace(tmp, path)
    return RenderSummary(path=path, steps=steps, won=won, frames=len(frames))


def _apply_final_health(env: SkirmishEnv, final_state: torch.Tensor) -> None:
    """Set health from the finished episode's state (health fractions lead each unit's block)."""
    lay, t = env.layout, env.table
    ally_w = 4 + int(lay.ally_shields) + lay.type_bits
    enemy_w = 3 + int(lay.enemy_shields) + lay.type_bits
    n_a = lay.n_allies
    h = torch.cat([final_state[: n_a * ally_w].view(n_a, ally_w)[:, 0],
                   final_state[n_a * ally_w: n_a * ally_w + lay.n_enemies * enemy_w].view(-1, enemy_w)[:, 0]])
    env.battle.health = (h * t.max_health).unsqueeze(0)
