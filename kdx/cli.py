"""The ``kdx`` command: train, distill, evaluate, export, report, envs, devices, demo.

Each feature package contributes its commands from a small ``commands`` module with a
``register(app)`` function; they are listed once in ``COMMAND_MODULES``. Heavy imports (torch)
happen inside the command bodies so that ``kdx --help`` stays fast.
"""

from __future__ import annotations

import importlib
import sys

import typer
from rich.console import Console
from rich.markup import escape

from kdx import __version__
from kdx.errors import KdxError

COMMAND_MODULES = (
    "kdx.envs.commands",
    "kdx.trainer.commands",
    "kdx.trainer.distill_commands",
    "kdx.devices.commands",
    "kdx.export.commands",
    "kdx.report.commands",
    "kdx.demo",
)

app = typer.Typer(
    name="kdx",
    help="kdx: distil a cooperative multi-agent RL teacher into tiny per-agent students for edge devices.",
    no_args_is_help=True,
    add_completion=False,
    pretty_exceptions_enable=False,
)


def _version(value: bool) -> None:
    if value:
        typer.echo(f"kdx {__version__}")
        raise typer.Exit()


@app.callback()
def _root(
    version: bool = typer.Option(False, "--version", callback=_version, is_eager=True, help="Print the version and exit."),
) -> None:
    """kdx: train a MAPPO teacher, distil per-agent students, export them, run them on the device."""


def _register_commands() -> None:
    for module_name in COMMAND_MODULES:
        try:
            module = importlib.import_module(module_name)
        except ModuleNotFoundError as exc:
            if exc.name == module_name:
                continue  # that feature has not landed yet
            raise
        module.register(app)


_register_commands()


def main(argv: list[str] | None = None) -> None:
    """Entry point of the ``kdx`` console script: user errors print one message, exit code 2."""
    try:
        app(args=argv, standalone_mode=False)
    except KdxError as exc:
        Console(stderr=True).print(f"[bold red]error:[/] {escape(str(exc))}", highlight=False)
        sys.exit(2)
    except typer.Exit as exc:
        sys.exit(exc.exit_code)
    except typer.Abort:
        sys.exit(130)
    except Exception as exc:  # click usage errors carry their own exit code
        import click

        if isinstance(exc, click.ClickException):
            exc.show()
            sys.exit(exc.exit_code)
        raise


if __name__ == "__main__":
    main()
