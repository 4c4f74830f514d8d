"""The ``kdx-runtime`` command (torch-free): runs exported bundles on the device."""

from __future__ import annotations

import importlib

import typer

from kdx import __version__
from kdx.cli_common import register_command_modules, run_app

# Modules that add runtime subcommands (info, bench, run, serve, build-engines), listed once.
COMMAND_MODULES = ("kdx.runtime.commands",)

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


register_command_modules(app, COMMAND_MODULES)


def main(argv: list[str] | None = None) -> None:
    """Entry point of the ``kdx-runtime`` console script: user errors print one message, exit code 2."""
    run_app(app, argv)


if __name__ == "__main__":
    main()
