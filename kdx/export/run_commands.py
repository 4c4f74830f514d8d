"""``kdx run BUNDLE``: ``kdx-runtime run`` in kdx's own (torch) envs, for the envs that have no
torch-free PettingZoo twin (``skirmish/*``, ``smac/*``). Needs kdx[train]; the policies are the
bundle's, run by the same runtime backends as on the device."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import typer

from kdx.runtime.commands import closed_loop_command


def _open_kdx_env(env: str, max_cycles: int | None, bundle_path: Path) -> tuple[str, Any]:
    """One copy of kdx env ``env`` (any registered name, ``pettingzoo:`` ones too) as a ParallelEnv."""
    from kdx.envs import make
    from kdx.envs.parallel import ParallelEnvView

    return env, ParallelEnvView(make(env, num_envs=1), max_cycles)


run = closed_loop_command(
    _open_kdx_env,
    "default: the bundle's env; or any kdx env name (kdx envs list), e.g. skirmish/3m.",
    "Closed loop in kdx's own env (torch): for envs kdx-runtime cannot play without torch, such "
    "as skirmish/*. Each agent acts from its own observation only.",
)


def register(app: typer.Typer) -> None:
    """Add ``run`` to the ``kdx`` app."""
    app.command("run")(run)
