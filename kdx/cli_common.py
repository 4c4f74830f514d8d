"""What the ``kdx`` and ``kdx-runtime`` commands share: the typer app, command-module loading
and the entry point that turns user errors into one clear line (torch-free: the runtime uses it)."""

from __future__ import annotations

import importlib
import sys
from collections.abc import Iterable

import typer
from rich.console import Console
from rich.markup import escape

from kdx.errors import KdxError


def make_app(name: str, help: str) -> typer.Typer:
    """A kdx console command's typer app: help when called bare, no shell-completion options,
    and no rich tracebacks (``run_app`` prints user errors as one line)."""
    return typer.Typer(name=name, help=help, no_args_is_help=True, add_completion=False,
                       pretty_exceptions_enable=False)


def register_command_modules(app: typer.Typer, module_names: Iterable[str]) -> None:
    """Import each module and call its ``register(app)``; a module not in this version is skipped."""
    for module_name in module_names:
        try:
            module = importlib.import_module(module_name)
        except ModuleNotFoundError as exc:
            if exc.name == module_name:
                continue  # that feature has not landed in this version
            raise
        module.register(app)


def usage_error_types() -> tuple[type[BaseException], ...]:
    """Typer's usage-error types: recent typer vendors click, older typer depends on it."""
    types: list[type[BaseException]] = []
    if hasattr(typer, "TyperException"):
        types.append(typer.TyperException)
    try:
        import click

        types.append(click.ClickException)
    except ImportError:
        pass
    return tuple(types)


def exit_types() -> tuple[type[BaseException], ...]:
    types: list[type[BaseException]] = [typer.Exit]
    try:
        import click

        types.append(click.exceptions.Exit)
    except ImportError:
        pass
    return tuple(types)


def run_app(app: typer.Typer, argv: list[str] | None = None) -> None:
    """Run a typer app as a console script: ``KdxError`` prints one message and exits with 2."""
    try:
        rc = app(args=argv, standalone_mode=False)
    except KdxError as exc:
        Console(stderr=True).print(f"[bold red]error:[/] {escape(str(exc))}", highlight=False)
        sys.exit(2)
    except exit_types() as exc:
        sys.exit(exc.exit_code)
    except typer.Abort:
        sys.exit(130)
    except usage_error_types() as exc:
        if hasattr(exc, "show"):
            exc.show()
        else:
            Console(stderr=True).print(f"Error: {escape(str(exc))}", highlight=False)
        sys.exit(getattr(exc, "exit_code", 2))
    sys.exit(rc if isinstance(rc, int) else 0)
