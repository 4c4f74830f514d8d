"""`kdx devices list | show | size` through the real CLI app."""

from __future__ import annotations

import json

import pytest
from typer.testing import CliRunner

from kdx.cli import app, main
from kdx.devices.registry import PROFILES
from kdx.errors import KdxError

runner = CliRunner()
WIDE = {"COLUMNS": "220"}


def test_devices_list_shows_every_profile():
    result = runner.invoke(app, ["devices", "list"], env=WIDE)
    assert result.exit_code == 0, result.output
    for name, profile in PROFILES.items():
        assert name in result.output
        assert f"{profile.budget.max_macs_per_agent:,}" in result.output
    assert "Cortex-A78AE" in result.output and "10.3" in result.output


def test_devices_show_prints_the_fields():
    result = runner.invoke(app, ["devices", "show", "jetson-xavier-nx"], env=WIDE)
    assert result.exit_code == 0, result.output
    for text in ("Carmel", "384 CUDA", "5 / 8.5", "fp16", "jetson", "8,192", "500 us"):
        assert text in result.output


def test_devices_show_json_is_machine_readable():
    result = runner.invoke(app, ["devices", "show", "rpi4", "--json"])
    assert result.exit_code == 0, result.output
    data = json.loads(result.output)
    assert data["target"] == "rpi" and data["default_precision"] == "int8"
    assert data["budget"]["max_macs_per_agent"] == PROFILES["rpi4"].budget.max_macs_per_agent
    assert data["accelerator"] is None


def test_devices_show_unknown_profile_raises_kdx_error_listing_profiles():
    result = runner.invoke(app, ["devices", "show", "jetson-orin"])
    assert isinstance(result.exception, KdxError)
    assert "jetson-orin-nano" in str(result.exception) and "x86-cpu" in str(result.exception)


def test_console_script_exits_2_with_the_message(capsys):
    with pytest.raises(SystemExit) as info:
        main(["devices", "show", "nope"])
    assert info.value.code == 2
    assert "unknown device profile 'nope'" in capsys.readouterr().err


def test_devices_size_prints_the_student_table():
    result = runner.invoke(
        app,
        ["devices", "size", "rpi4", "--agent", "speaker_0=3:3", "--agent", "listener_0=11:5",
         "--student", "listener_0=16x16", "--teacher-hidden", "256x256x256"],
        env=WIDE,
    )
    assert result.exit_code == 0, result.output
    assert "speaker_0" in result.output and "16x16" in result.output and "override" in result.output
    assert "96" in result.output  # speaker_0's student: 3*16 + 16*3 MACs


@pytest.mark.parametrize(
    ("args", "expected"),
    [
        (["--agent", "a=3"], "NAME=OBS_DIM:N_ACTIONS"),
        (["--agent", "a=3:3", "--student", "b=16"], "unknown agent 'b'"),
        (["--agent", "a=3:3", "--student", "a=16x"], "AGENT=W1xW2"),
        (["--agent", "a=3:3", "--teacher-hidden", "256,256"], "256x256x256"),
    ],
)
def test_devices_size_bad_input(args, expected):
    result = runner.invoke(app, ["devices", "size", "rpi4", *args])
    assert isinstance(result.exception, KdxError)
    assert expected in str(result.exception)
