"""What the ``kdx`` and ``kdx-runtime`` commands share: the typer app, command-module loading
and the entry point that turns user errors into one clear line (torch-free: the runtime uses it)."""

from __future__ import annotations

import errno
import importlib
import sys
from collections.abc import Iterable, Mapping

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


def retired_option_message(exc: BaseException, retired: Mapping[str, Mapping[str, str]]) -> str | None:
    """The message of ``retired`` for the unknown option that raised ``exc`` (click's
    ``NoSuchOption``), looked up by the command's path below the app (``"distill"``, ``"devices
    show"``); None when ``exc`` is another error or the option was never a kdx option."""
    option, ctx = getattr(exc, "option_name", None), getattr(exc, "ctx", None)
    if option is None or ctx is None:
        return None
    names = []
    while ctx.parent is not None:
        names.append(ctx.info_name)
        ctx = ctx.parent
    return retired.get(" ".join(reversed(names)), {}).get(option)


def _print_error(message: str) -> None:
    Console(stderr=True).print(f"[bold red]error:[/] {escape(message)}", highlight=False)


# Errors of the file system that a user causes and fixes (permissions, a full disk, a file where a
# folder belongs): one message instead of a traceback. Writes are atomic, so nothing is half-written.
_DISK_ERRNOS = {errno.EACCES, errno.EPERM, errno.EROFS, errno.ENOSPC, errno.EDQUOT, errno.ENOTDIR,
                errno.EISDIR, errno.EEXIST, errno.ENAMETOOLONG}


def disk_error_message(exc: OSError) -> str:
    """One line naming the path, what the system said, and the fix."""
    where = exc.filename or "a file"
    fix = {errno.ENOSPC: "free some space", errno.EDQUOT: "free some space",
           errno.EROFS: "choose a writable folder", errno.EACCES: "choose a folder you may write to",
           errno.EPERM: "choose a folder you may write to"}.get(exc.errno, "choose another path")
    return (f"cannot write {where}: {exc.strerror or exc}; {fix} and run the command again "
            "(completed files are intact: kdx writes each file under a temporary name first)")


def run_app(app: typer.Typer, argv: list[str] | None = None,
            retired: Mapping[str, Mapping[str, str]] | None = None) -> None:
    """Run a typer app as a console script: ``KdxError`` prints one message and exits with 2.

    ``retired`` maps a command (``"train"``) to its retired option spellings and the message that
    names their replacement (``{"--device": "`--device` is now `--torch-device`"}``): giving one is
    a user error like any other.
    """
    try:
        rc = app(args=argv, standalone_mode=False)
    except KdxError as exc:
        _print_error(str(exc))
        sys.exit(2)
    except exit_types() as exc:
        sys.exit(exc.exit_code)
    except typer.Abort:
        sys.exit(130)
    except OSError as exc:
        if exc.errno not in _DISK_ERRNOS:
            raise
        _print_error(disk_error_message(exc))
        sys.exit(2)
    except usage_error_types() as exc:
        message = retired_option_message(exc, retired or {})
        if message is not None:
            _print_error(message)
            sys.exit(2)
        if hasattr(exc, "show"):
            exc.show()
        else:
            Console(stderr=True).print(f"Error: {escape(str(exc))}", highlight=False)
        sys.exit(getattr(exc, "exit_code", 2))
    sys.exit(rc if isinstance(rc, int) else 0)
