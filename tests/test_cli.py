"""The console scripts start, list their commands and turn user errors into one clear line."""

import subprocess
import sys

from typer.testing import CliRunner

from kdx.cli import app

runner = CliRunner()


def test_kdx_help_lists_commands():
    result = runner.invoke(app, ["--help"])
    assert result.exit_code == 0
    assert "envs" in result.output


def test_envs_list_shows_registered_envs():
    result = runner.invoke(app, ["envs", "list"])
    assert result.exit_code == 0, result.output
    assert "pettingzoo:" in result.output


def test_console_scripts_run_and_report_user_errors_without_traceback():
    help_out = subprocess.run([sys.executable, "-m", "kdx", "--help"], capture_output=True, text=True)
    assert help_out.returncode == 0 and "envs" in help_out.stdout
    rt = subprocess.run([sys.executable, "-m", "kdx.runtime.cli", "--help"], capture_output=True, text=True)
    assert rt.returncode == 0 and "version" in rt.stdout
    bad = subprocess.run(
        [sys.executable, "-m", "kdx", "envs", "rollout", "no/such_env", "--steps", "1"],
        capture_output=True,
        text=True,
    )
    assert bad.returncode == 2
    assert "unknown environment 'no/such_env'" in bad.stderr
    assert "Traceback" not in bad.stderr
