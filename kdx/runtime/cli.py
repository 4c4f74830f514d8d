"""The ``kdx-runtime`` command (torch-free): runs exported bundles on the device."""

from __future__ import annotations

import typer

from kdx import __version__
from kdx.cli_common import make_app, register_command_modules, run_app

# Modules that add runtime subcommands (info, bench, run, serve, build-engines), listed once.
COMMAND_MODULES = ("kdx.runtime.commands",)

app = make_app("kdx-runtime", "kdx-runtime: run and profile exported kdx bundles on the device (no torch needed).")


@app.callback()
def _root() -> None:
    """kdx-runtime: run and profile exported kdx bundles on the device (no torch needed)."""


@app.command("version")
def version() -> None:
    """Print the kdx version and the inference backends usable here."""
    from kdx.runtime.backends import available_backends

    usable = [name for name, why in available_backends().items() if why is None]
    typer.echo(f"kdx-runtime {__version__}; backends: {', '.join(sorted(usable))}")


register_command_modules(app, COMMAND_MODULES)


def main(argv: list[str] | None = None) -> None:
    """Entry point of the ``kdx-runtime`` console script: user errors print one message, exit code 2."""
    run_app(app, argv)


if __name__ == "__main__":
    main()
