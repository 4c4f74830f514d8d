"""``--json`` to a path that cannot be written: one clear error, before the work, no OSError
traceback (issue 17)."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

from kdx.errors import KdxError
from kdx.runtime.cli import app

REPO = Path(__file__).resolve().parents[2]


def _bench(bundle: Path, json_out: Path) -> None:
    app(args=["bench", str(bundle), "--backend", "numpy", "--iters", "10", "--warmup", "0", "--json",
              str(json_out)], standalone_mode=False)


def test_a_path_under_a_file_is_refused(masked_abuse_bundle: Path, tmp_path: Path) -> None:
    (tmp_path / "notes.txt").write_text("a file, not a folder")
    with pytest.raises(KdxError, match=r"--json .*notes.txt/bench.json: cannot write there"):
        _bench(masked_abuse_bundle, tmp_path / "notes.txt" / "bench.json")


def test_a_folder_is_refused(masked_abuse_bundle: Path, tmp_path: Path) -> None:
    with pytest.raises(KdxError, match="is a folder; name a file in it"):
        _bench(masked_abuse_bundle, tmp_path)


@pytest.mark.skipif(os.name != "posix" or os.geteuid() == 0, reason="root writes into read-only folders")
def test_a_read_only_folder_is_refused(masked_abuse_bundle: Path, tmp_path: Path) -> None:
    folder = tmp_path / "read-only"
    folder.mkdir()
    folder.chmod(0o555)
    try:
        with pytest.raises(KdxError, match="cannot write there"):
            _bench(masked_abuse_bundle, folder / "bench.json")
    finally:
        folder.chmod(0o755)


def test_the_command_prints_one_error_line(masked_abuse_bundle: Path, tmp_path: Path) -> None:
    (tmp_path / "notes.txt").write_text("")
    result = subprocess.run([sys.executable, "-m", "kdx.runtime.cli", "bench", str(masked_abuse_bundle),
                             "--json", str(tmp_path / "notes.txt" / "bench.json")], cwd=REPO,
                            capture_output=True, text=True, timeout=120,
                            env={**os.environ, "PYTHONPATH": str(REPO), "COLUMNS": "1000"})
    assert result.returncode == 2 and "Traceback" not in result.stderr
    assert result.stderr.startswith("error: --json") and "cannot write there" in result.stderr
