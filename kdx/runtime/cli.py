"""The ``kdx-runtime`` command (torch-free): runs exported bundles on the device."""

from __future__ import annotations

import importlib
import sys

import typer
from rich.console import Console
from rich.markup import escape

from kdx import __version__
from kdx.errors import KdxError

# Modules that add runtime subcommands (info, bench, run, serve, build-engines), listed once.
COMMAND_MODULES = (
    "kdx.runtime.commands",
    "kdx.export.runtime_commands",
)

app = typer.Typer(
    name="kdx-runtime",
    help="kdx-runtime: run and profile exported kdx bundles on the device (no torch needed).",
    no_args_is_help=True,
    add_completion=False,
    pretty_exceptions_enable=False,
)


@app.callback()
def _root() -> None:
    """kdx-runtime: run and profile exported kdx bundles on the device (no torch needed)."""


@app.command("version")
def version() -> None:
    """Print the kdx version and the inference backends importable here."""
    found = []
    for mod in ("onnxruntime", "tensorrt"):
        try:
            importlib.import_module(mod)
            found.append(mod)
        except ImportError:
            pass
    typer.echo(f"kdx-runtime {__version__}; backends: numpy" + "".join(f", {m}" for m in found))


def _register_commands() -> None:
    for module_name in COMMAND_MODULES:
        try:
            module = importlib.import_module(module_name)
        except ModuleNotFoundError as exc:
            if exc.name == module_name:
                continue
            raise
        module.register(app)


_register_commands()


def main(argv: list[str] | None = None) -> None:
    """Entry point of the ``kdx-runtime`` console script."""
    try:
        app(args=argv, standalone_mode=False)
    except KdxError as exc:
        Console(stderr=True).print(f"[bold red]error:[/] {escape(str(exc))}", highlight=False)
        sys.exit(2)
    except typer.Exit as exc:
        sys.exit(exc.exit_code)
    except typer.Abort:
        sys.exit(130)
    except Exception as exc:
        import click

        if isinstance(exc, click.ClickException):
            exc.show()
            sys.exit(exc.exit_code)
        raise


if __name__ == "__main__":
    main()
