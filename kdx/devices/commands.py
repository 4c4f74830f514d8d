"""``kdx devices``: list the device profiles, show one, and size students for one."""

from __future__ import annotations

import json
import re
from dataclasses import asdict

import typer
from rich.console import Console

from kdx.errors import KdxError

_AGENT = re.compile(r"^([^=]+)=([1-9][0-9]*):([1-9][0-9]*)$")


def _parse_agent(spec: str) -> tuple[str, int, int]:
    match = _AGENT.match(spec.strip())
    if not match:
        raise KdxError(f"malformed --agent {spec!r}; expected NAME=OBS_DIM:N_ACTIONS, e.g. listener_0=11:5.")
    return match.group(1).strip(), int(match.group(2)), int(match.group(3))


def _parse_hidden(text: str) -> tuple[int, ...]:
    if not re.match(r"^[1-9][0-9]*(x[1-9][0-9]*)*$", text):
        raise KdxError(f"malformed --teacher-hidden {text!r}; expected widths like 256x256x256.")
    return tuple(int(w) for w in text.split("x"))


def register(app: typer.Typer) -> None:
    from kdx.devices.sizing import CapacityRule  # torch-free and light: the option defaults below

    defaults = CapacityRule()
    devices_app = typer.Typer(help="Device profiles and resource-aware student sizing.", no_args_is_help=True)

    @devices_app.command("list")
    def list_profiles() -> None:
        """List every device profile with its export target, precision and per-agent budgets."""
        from kdx.devices.registry import PROFILES
        from kdx.devices.tables import profiles_table

        Console().print(profiles_table(list(PROFILES.values())))

    @devices_app.command("show")
    def show(
        name: str = typer.Argument(..., help="Profile name (see `kdx devices list`) or a path to a profile .toml."),
        as_json: bool = typer.Option(False, "--json", help="Print the profile as JSON instead of a table."),
    ) -> None:
        """Show every field of one device profile."""
        from kdx.devices.registry import get_profile
        from kdx.devices.tables import profile_detail_table

        profile = get_profile(name)
        if as_json:
            typer.echo(json.dumps(asdict(profile), indent=2))
        else:
            Console().print(profile_detail_table(profile))

    @devices_app.command("size")
    def size(
        name: str = typer.Argument(..., help="Profile name or a path to a profile .toml."),
        agent: list[str] = typer.Option(..., "--agent", help="An agent as NAME=OBS_DIM:N_ACTIONS; repeat per agent."),
        student: list[str] = typer.Option([], "--student", help="Override one agent's hidden widths: AGENT=W or AGENT=W1xW2."),
        teacher_hidden: str = typer.Option("", "--teacher-hidden", help="Teacher actor hidden widths (e.g. 256x256x256) to cap students at the target MAC reduction."),
        min_mac_reduction: float = typer.Option(
            defaults.min_mac_reduction, "--min-mac-reduction",
            help="With --teacher-hidden: students cost at least this many times fewer MACs (kdx distill's option; MPE's recipe uses 10)."),
        two_layer_min_obs_dim: int = typer.Option(
            defaults.two_layer_min_obs_dim, "--two-layer-min-obs-dim",
            help="Observations at least this wide get two hidden layers (kdx distill's option; MPE's recipe uses 16)."),
    ) -> None:
        """Size students for hand-described agents on a device (what `kdx distill` does for an env)."""
        from kdx.devices.registry import get_profile
        from kdx.devices.sizing import mlp_teacher_costs, parse_overrides, size_students
        from kdx.devices.tables import sizing_table

        profile = get_profile(name)
        agents = [_parse_agent(a) for a in agent]
        overrides = parse_overrides(student, [a[0] for a in agents])
        teacher = _parse_hidden(teacher_hidden) if teacher_hidden else None
        rule = CapacityRule(min_mac_reduction=min_mac_reduction, two_layer_min_obs_dim=two_layer_min_obs_dim)  # checks them
        rows = size_students(agents, profile, overrides, teacher=mlp_teacher_costs(agents, teacher) if teacher else None,
                             rule=rule)
        Console().print(sizing_table(rows, profile))

    app.add_typer(devices_app, name="devices")
