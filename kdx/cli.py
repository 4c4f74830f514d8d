"""The ``kdx`` command: train, distill, evaluate, export, run, report, envs, devices, demo.

Each feature package contributes its commands from a small ``commands`` module with a
``register(app)`` function; they are listed once in ``COMMAND_MODULES``. Heavy imports (torch)
happen inside the command bodies so that ``kdx --help`` stays fast.
"""

from __future__ import annotations

import typer

from kdx import __version__
from kdx.cli_common import make_app, register_command_modules, run_app

COMMAND_MODULES = (
    "kdx.envs.commands",
    "kdx.trainer.teacher.commands",
    "kdx.trainer.distill.commands",
    "kdx.trainer.commands",
    "kdx.trainer.sweep_commands",
    "kdx.devices.commands",
    "kdx.export.commands",
    "kdx.export.run_commands",
    "kdx.report.commands",
    "kdx.demo",
)

# Option spellings retired so that each name means one thing: `--profile` a device profile,
# `--torch-device` a torch device. Giving an old one stops with a message that names the new one.
_TORCH_DEVICE = "`--device` is now `--torch-device`"
RETIRED_OPTIONS = {
    "train": {"--device": _TORCH_DEVICE},
    "evaluate": {"--device": _TORCH_DEVICE},
    "distill": {"--device": "`--device` is now `--profile` (the device profile; the torch device is `--torch-device`)"},
    "sweep": {"--devices": "`--devices` is now `--profiles` (device profiles, comma-separated)"},
    "demo": {"--device": "`--device` is now `--profile` (the device profile the students are sized for)"},
}

app = make_app("kdx", "kdx: distil a cooperative multi-agent RL teacher into tiny per-agent students for edge devices.")


def _version(value: bool) -> None:
    if value:
        typer.echo(f"kdx {__version__}")
        raise typer.Exit()


@app.callback()
def _root(
    version: bool = typer.Option(False, "--version", callback=_version, is_eager=True, help="Print the version and exit."),
) -> None:
    """kdx: train a MAPPO teacher, distil per-agent students, export them, run them on the device."""


register_command_modules(app, COMMAND_MODULES)


def main(argv: list[str] | None = None) -> None:
    """Entry point of the ``kdx`` console script: user errors print one message, exit code 2."""
    run_app(app, argv, RETIRED_OPTIONS)


if __name__ == "__main__":
    main()
