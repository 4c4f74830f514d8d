"""Fixtures shared by every test folder."""

from __future__ import annotations

from collections.abc import Callable

import pytest


@pytest.fixture
def run_kdx() -> Callable[[list[str]], int]:
    """Run the `kdx` console entry point in-process on a list of arguments; returns its exit code
    (0 when it returns normally). User errors print to stderr and give 2, as on the command line."""
    from kdx.cli import main

    def run(args: list[str]) -> int:
        try:
            main(args)
        except SystemExit as exc:
            return exc.code or 0
        return 0

    return run
