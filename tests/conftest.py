"""Fixtures shared by every test folder."""

from __future__ import annotations

from collections.abc import Callable, Iterator

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


@pytest.fixture(scope="session", autouse=True)
def kdx_cache_dir(tmp_path_factory: pytest.TempPathFactory) -> Iterator[None]:
    """The c backend's compiled policies go to a session folder, not ~/.cache/kdx (subprocesses
    started by tests inherit it)."""
    import os

    before = os.environ.get("KDX_CACHE_DIR")
    os.environ["KDX_CACHE_DIR"] = str(tmp_path_factory.mktemp("kdx-cache"))
    yield
    if before is None:
        os.environ.pop("KDX_CACHE_DIR", None)
    else:
        os.environ["KDX_CACHE_DIR"] = before
