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


def test_devices_size_takes_distills_sizing_knobs_as_the_mpe_recipe_sets_them():
    """simple_spread's agent (18 inputs, 5 actions) under a 128x128 teacher: one 16-wide layer with
    the defaults (30x cut), two 32-wide layers with MPE's recipe values (what `kdx distill` builds)."""
    base = ["devices", "size", "rpi5", "--agent", "agent_0=18:5", "--teacher-hidden", "128x128"]
    plain = runner.invoke(app, base, env=WIDE)
    mpe = runner.invoke(app, [*base, "--min-mac-reduction", "10", "--two-layer-min-obs-dim", "16"], env=WIDE)
    assert plain.exit_code == 0 and mpe.exit_code == 0, plain.output + mpe.output
    assert "32x32" in mpe.output and f"{18 * 32 + 32 * 32 + 32 * 5:,}" in mpe.output
    assert "32x32" not in plain.output and f"{18 * 16 + 16 * 5:,}" in plain.output


@pytest.mark.parametrize(
    ("args", "expected"),
    [
        (["--agent", "a=3"], "NAME=OBS_DIM:N_ACTIONS"),
        (["--agent", "a=3:3", "--student", "b=16"], "unknown agent 'b'"),
        (["--agent", "a=3:3", "--student", "a=16x"], "AGENT=W1xW2"),
        (["--agent", "a=3:3", "--teacher-hidden", "256,256"], "256x256x256"),
        (["--agent", "a=3:3", "--min-mac-reduction", "0.5"], "--min-mac-reduction"),
    ],
)
def test_devices_size_bad_input(args, expected):
    result = runner.invoke(app, ["devices", "size", "rpi4", *args])
    assert isinstance(result.exception, KdxError)
    assert expected in str(result.exception)
