"""``kdx envs``: list environments and roll them out."""

from __future__ import annotations

import typer
from rich.console import Console
from rich.table import Table


def register(app: typer.Typer) -> None:
    envs_app = typer.Typer(help="Batched multi-agent environments.", no_args_is_help=True)

    @envs_app.command("list")
    def list_envs(
        specs: bool = typer.Option(False, "--specs", help="Also build each env once and show agents and sizes."),
    ) -> None:
        """List every registered environment."""
        from kdx.envs import available, make, prefixes

        table = Table(title="kdx environments")
        table.add_column("name")
        table.add_column("family")
        table.add_column("PettingZoo twin")
        if specs:
            table.add_column("agents")
            table.add_column("obs / actions")
            table.add_column("state")
            table.add_column("limit")
        table.add_column("description")
        for name, entry in available().items():
            row = [name, entry.family, entry.pettingzoo_twin or "-"]
            if specs:
                from kdx.errors import KdxError

                try:
                    env = make(name, num_envs=1)
                except KdxError:  # e.g. smac/* without StarCraft II: listed, not buildable here
                    table.add_row(*row, "-", "-", "-", "-", entry.description + " [unavailable here]")
                    continue
                s = env.spec
                sizes = sorted({(a.obs_dim, a.n_actions) for a in s.agents})
                row += [
                    str(s.n_agents),
                    ", ".join(f"{o}/{n}" for o, n in sizes),
                    str(s.state_dim),
                    str(s.episode_limit),
                ]
                env.close()
            table.add_row(*row, entry.description)
        for entry in prefixes().values():
            row = [entry.name, entry.family, "itself"] + ([""] * 4 if specs else [])
            table.add_row(*row, entry.description)
        Console().print(table)

    @envs_app.command("rollout")
    def rollout(
        env: str = typer.Argument(..., help="Environment name, e.g. mpe/simple_spread."),
        num_envs: int = typer.Option(256, help="Parallel environments."),
        steps: int = typer.Option(200, help="Agent steps to run."),
        seed: int = typer.Option(0, help="Random seed."),
        device: str = typer.Option("cpu", help="torch device."),
    ) -> None:
        """Roll out uniformly random legal actions and summarise the episodes."""
        from kdx.envs.rollout import print_rollout_summary, random_rollout

        summary = random_rollout(env, num_envs=num_envs, steps=steps, seed=seed, device=device)
        print_rollout_summary(summary)

    @envs_app.command("render")
    def render(
        env: str = typer.Argument(..., help="A skirmish environment, e.g. skirmish/3m."),
        policy: str = typer.Option("focus-fire", help="Scripted policy: random, attack-nearest, focus-fire."),
        out: str = typer.Option("battle.gif", help="GIF file to write."),
        seed: int = typer.Option(0, help="Random seed of the episode."),
        fps: int = typer.Option(4, help="Frames (agent steps) per second in the GIF."),
        max_steps: int = typer.Option(0, help="Stop after this many steps (0: the map's step limit)."),
    ) -> None:
        """Draw one episode of a skirmish map as a GIF (units, health bars, attack lines)."""
        from kdx.envs.skirmish.render import render_episode
        from kdx.errors import KdxError

        if not env.startswith("skirmish/"):
            raise KdxError(f"`kdx envs render` draws skirmish maps (skirmish/<map>), not {env!r}")
        summary = render_episode(env.removeprefix("skirmish/"), policy=policy, out=out, seed=seed,
                                 fps=fps, max_steps=max_steps or None)
        result = "won" if summary.won else "not won"
        Console().print(f"wrote {summary.path} ({summary.frames} frames, {summary.steps} steps, {result})")

    app.add_typer(envs_app, name="envs")
