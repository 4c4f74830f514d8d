"""``kdx envs``: list environments, show their observation layouts, roll them out."""

from __future__ import annotations

import json

import typer
from rich.console import Console
from rich.table import Table

from kdx.envs.obs_layout import ObservationLayout


def _shorten(features: tuple[str, ...], most: int = 12) -> str:
    """Feature names for a table cell; long generic blocks show their ends only."""
    if len(features) <= most:
        return ", ".join(features)
    return ", ".join(features[: most // 2]) + f", ... ({len(features) - most} more), " + ", ".join(
        features[-(most // 2):])


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

    @envs_app.command("show")
    def show(
        env: str = typer.Argument(..., help="Environment name, e.g. skirmish/3m."),
        as_json: bool = typer.Option(False, "--json", help="Print the layouts as JSON instead of tables."),
    ) -> None:
        """Show each agent's observation layout: blocks, the entity each describes, index ranges, features."""
        from kdx.envs import make

        built = make(env, num_envs=1)
        try:
            spec, layouts = built.spec, built.observation_layouts()
        finally:
            built.close()
        if as_json:
            agents = [{"name": a.name, "group": a.group, "obs_dim": a.obs_dim, "layout": layout.to_json()}
                      for a, layout in zip(spec.agents, layouts)]
            typer.echo(json.dumps({"env": spec.name, "agents": agents}, indent=2))
            return
        # Agents with equal layouts (a group, usually) share one table.
        shared: dict[ObservationLayout, list[str]] = {}
        for a, layout in zip(spec.agents, layouts):
            shared.setdefault(layout, []).append(a.name)
        console = Console()
        for layout, names in shared.items():
            table = Table(title=f"{spec.name}: observation of {', '.join(names)} ({layout.size} features)")
            for column in ("block", "entity", "indices [start, stop)", "features"):
                table.add_column(column)
            for b in layout.blocks:
                table.add_row(b.name, b.entity.label, f"[{b.start}, {b.stop})", _shorten(b.features))
            console.print(table)

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
