"""The console scripts start, list their commands and turn user errors into one clear line."""

import subprocess
import sys

import pytest
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


@pytest.mark.parametrize(("args", "message"), [
    (["train", "--device", "cuda", "--out", "nowhere"], "`--device` is now `--torch-device`"),
    (["train", "--device=cuda", "--out", "nowhere"], "`--device` is now `--torch-device`"),
    (["evaluate", "nowhere", "--device", "cuda"], "`--device` is now `--torch-device`"),
    (["distill", "nowhere", "--device", "rpi5"],
     "`--device` is now `--profile` (the device profile; the torch device is `--torch-device`)"),
    (["sweep", "nowhere", "--devices", "rpi5,rpi4"], "`--devices` is now `--profiles`"),
    (["demo", "--device", "rpi5"], "`--device` is now `--profile`"),
])
def test_retired_option_spellings_name_their_replacement(args, message, run_kdx, capsys):
    assert run_kdx(args) == 2
    err = " ".join(capsys.readouterr().err.split())
    assert message in err and "Traceback" not in err


def test_an_option_that_never_existed_still_gets_clicks_usage_error(run_kdx, capsys):
    assert run_kdx(["train", "--warp-speed", "9"]) == 2
    err = capsys.readouterr().err
    assert "No such option" in err and "is now" not in err


@pytest.mark.parametrize(("command", "present", "absent"), [
    ("train", ["--torch-device"], ["--device ", "--profile"]),
    ("evaluate", ["--torch-device"], ["--device "]),
    ("distill", ["--profile", "--torch-device"], ["--device ", "--device-profile"]),
    ("sweep", ["--profiles", "--torch-device"], ["--devices"]),
    ("demo", ["--profile"], ["--device "]),
])
def test_device_profile_and_torch_device_have_one_name_each(command, present, absent, monkeypatch):
    monkeypatch.setenv("COLUMNS", "250")
    result = runner.invoke(app, [command, "--help"])
    assert result.exit_code == 0, result.output
    for option in present:
        assert option in result.output
    for option in absent:
        assert option not in result.output
