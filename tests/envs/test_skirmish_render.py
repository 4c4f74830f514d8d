"""`kdx envs render`: one skirmish episode drawn as a GIF."""

from __future__ import annotations

from PIL import Image
from typer.testing import CliRunner

from kdx.cli import app


def test_render_writes_an_animated_gif(tmp_path):
    out = tmp_path / "battle.gif"
    result = CliRunner().invoke(app, ["envs", "render", "skirmish/3m", "--policy", "focus-fire",
                                      "--out", str(out), "--max-steps", "4"])
    assert result.exit_code == 0, result.output
    assert "wrote" in result.output
    with Image.open(out) as gif:
        assert gif.n_frames == 5  # the start plus four steps
        assert gif.size == (400, 400)


def test_render_refuses_unknown_policies_and_non_skirmish_envs(tmp_path):
    runner = CliRunner()
    bad_policy = runner.invoke(app, ["envs", "render", "skirmish/3m", "--policy", "greedy",
                                     "--out", str(tmp_path / "a.gif")])
    assert bad_policy.exit_code != 0 and "focus-fire" in str(bad_policy.exception)
    bad_env = runner.invoke(app, ["envs", "render", "mpe/simple_spread", "--out", str(tmp_path / "b.gif")])
    assert bad_env.exit_code != 0 and "skirmish/<map>" in str(bad_env.exception)
    assert not (tmp_path / "a.gif").exists()
