"""Recipes (kdx/trainer/recipes/*.toml): selection, precedence, validation, provenance in the run's
config, and the demo's teacher, which must train exactly as it did with hand-picked flags."""

from __future__ import annotations

import configparser
import json
from dataclasses import replace
from pathlib import Path

import pytest
import typer

from kdx.demo import DemoConfig, train_args
from kdx.errors import KdxError
from kdx.layout import RunLayout
from kdx.trainer.common.recipes import (
    RECIPE_STAGES,
    config_with_recipe,
    parse_recipe_file,
    recipe_files,
    recipe_for,
)
from kdx.trainer.distill.config import DistillConfig
from kdx.trainer.teacher.commands import teacher_config
from kdx.trainer.teacher.config import TeacherConfig
from kdx.trainer.teacher.store import load_teacher, read_teacher_config

ROOT = Path(__file__).resolve().parents[2]
CONFIGS = {TeacherConfig.KIND: TeacherConfig, DistillConfig.KIND: DistillConfig}
TINY_TEACHER = ["--num-envs", "8", "--rollout-length", "5", "--hidden", "16", "--epochs", "1", "--threads", "1"]


def test_recipe_stages_are_the_kinds_of_the_two_stage_configs():
    assert set(RECIPE_STAGES) == set(CONFIGS)


def test_recipe_files_ship_with_the_package():
    cfg = configparser.ConfigParser()
    cfg.read(ROOT / "setup.cfg")
    assert cfg["options.package_data"]["kdx.trainer"].strip() == "recipes/*.toml"
    assert {"mpe", "skirmish"} <= set(recipe_files())


@pytest.mark.parametrize("kind", sorted(CONFIGS))
@pytest.mark.parametrize("family", sorted(recipe_files()))
def test_every_shipped_recipe_validates_against_its_config(family, kind):
    config_cls = CONFIGS[kind]
    for recipe in parse_recipe_file(family, recipe_files()[family], config_cls).values():
        config_cls(**recipe.values).validate()
        assert recipe.source.startswith(f"kdx/trainer/recipes/{family}.toml [")


FILES = {"skirmish": """
[skirmish.teacher]
num_envs = 32
[skirmish."3m".teacher]
num_envs = 16
[skirmish."3m".distill]
lr = 1e-2
"""}


def test_selection_is_the_exact_env_else_its_family_else_the_defaults():
    exact = recipe_for("skirmish/3m", TeacherConfig, FILES)
    assert (exact.name, exact.values) == ("skirmish/3m", {"num_envs": 16})
    assert exact.source == 'kdx/trainer/recipes/skirmish.toml [skirmish."3m".teacher]'
    family = recipe_for("skirmish/8m", TeacherConfig, FILES)
    assert (family.name, family.values) == ("skirmish", {"num_envs": 32})
    assert recipe_for("skirmish/3m", DistillConfig, FILES).values == {"lr": 1e-2}
    assert recipe_for("skirmish/8m", DistillConfig, FILES).name == "defaults"  # no family distill section
    assert recipe_for("mpe/simple_spread", TeacherConfig, FILES).name == "defaults"  # no file for the family
    assert recipe_for("toy/match", TeacherConfig).name == "defaults"  # a family without a file
    # the shipped files follow the same rule
    assert recipe_for("skirmish/3m", TeacherConfig).name == "skirmish/3m"
    assert recipe_for("skirmish/25m", TeacherConfig).name == "skirmish"
    assert recipe_for("mpe/simple_reference", TeacherConfig).name == "defaults"


def test_a_flag_overrides_the_recipe_and_the_recipe_overrides_the_default():
    config, use = teacher_config({"env": "skirmish/3m", "num_envs": 16})
    assert config.num_envs == 16 and use.overridden == {"num_envs": 64}  # flag over recipe
    assert config.rollout_length == 60 and use.values["rollout_length"] == 60  # recipe over default
    assert config.epochs == TeacherConfig().epochs  # neither: the default
    config, use = config_with_recipe(DistillConfig, "skirmish/3m", {"rollout_length": 8}, profile="rpi5")
    assert (config.num_envs, config.rollout_length, config.profile) == (64, 8, "rpi5")
    assert use.to_json() == {"name": "skirmish", "source": "kdx/trainer/recipes/skirmish.toml [skirmish.distill]",
                             "values": {"num_envs": 64}, "overridden": {"rollout_length": 60}}


@pytest.mark.parametrize("text, expected", [
    ("[mpe.simple_spread.teacher]\nnum_env = 8\n",
     ["kdx/trainer/recipes/mpe.toml [mpe.simple_spread.teacher]", "'num_env'", "num_envs", "rollout_length"]),
    ("[mpe.teacher]\nlr = \"fast\"\n", ["[mpe.teacher]", "lr = 'fast'", "float"]),
    ("[mpe.teacher]\nepochs = 2.5\n", ["epochs = 2.5", "int"]),
    ("[mpe.simple_spread.teacher]\nenv = \"mpe/simple_tag\"\n", ["'env'", "says which run"]),
    ("[mpe.simple_sprad.teacher]\nlr = 1e-3\n", ["simple_sprad", "simple_spread"]),
    ("[mpe.simple_spread.techer]\nlr = 1e-3\n", ["unknown stage 'techer'", "teacher, distill"]),
    ("[skirmish.teacher]\nlr = 1e-3\n", ["mpe.toml", "named after the file"]),
    ("[mpe.teacher\n", ["not valid TOML"]),
])
def test_a_bad_recipe_is_an_error_naming_the_file_the_key_and_the_fix(text, expected):
    with pytest.raises(KdxError) as err:
        parse_recipe_file("mpe", text, TeacherConfig)
    for piece in expected:
        assert piece in str(err.value)


def test_a_stage_checks_only_its_own_keys_but_every_stage_name():
    text = "[mpe.teacher]\nhidden = \"32\"\n[mpe.distill]\nw_kl = 2.0\n"
    assert parse_recipe_file("mpe", text, DistillConfig)[None].values == {"w_kl": 2.0}
    assert parse_recipe_file("mpe", text, TeacherConfig)[None].values == {"hidden": "32"}
    assert parse_recipe_file("mpe", "[mpe.teacher]\nmax_grad_norm = 5\n", TeacherConfig)[None].values == {
        "max_grad_norm": 5.0}  # an int for a float field is the same number, stored as a float


def _parse_train(args: list[str]) -> dict:
    """The options `kdx train ARGS` is called with, parsed by the real command (nothing runs)."""
    from kdx.cli import app

    command = typer.main.get_command(app).commands["train"]
    params = command.make_context("train", list(args[1:] if args[0] == "train" else args)).params
    return {k: v for k, v in params.items() if v is not None}


def test_the_demo_teacher_is_its_envs_recipe_plus_the_demos_step_count_and_seed(tmp_path):
    demo = DemoConfig(out=tmp_path / "demo")
    assert demo.extra_train_args == ()  # plain defaults: the recipe does the tuning
    config, use = teacher_config(_parse_train(train_args(demo)))
    plain, _ = teacher_config({"env": demo.env})
    assert use.recipe.name == demo.env and use.overridden == {"minutes": plain.minutes}
    assert replace(config, minutes=plain.minutes, seed=plain.seed).dumps() == plain.dumps()
    assert (config.minutes, config.seed) == (demo.teacher_minutes, demo.seed)
    assert demo.teacher_steps is None and config.total_steps == plain.total_steps  # the recipe's step bound


def test_train_prints_and_records_the_recipe_and_runs_without_one_still_load(tmp_path, capsys, run_kdx):
    run = tmp_path / "run"
    assert run_kdx(["train", "--env", "mpe/simple_spread", "--steps", "40", "--out", str(run), "--quiet",
                    *TINY_TEACHER]) == 0
    out = " ".join(capsys.readouterr().out.split())
    assert "recipe mpe/simple_spread (kdx/trainer/recipes/mpe.toml [mpe.simple_spread.teacher])" in out
    assert "minibatches=2" in out and "flags override num_envs, epochs, hidden" in out
    layout = RunLayout(run)
    doc = json.loads(layout.teacher.config.read_text())
    assert doc["recipe"] == {
        "name": "mpe/simple_spread", "source": "kdx/trainer/recipes/mpe.toml [mpe.simple_spread.teacher]",
        "values": {"minibatches": 2, "lr": 1e-3, "input_norm": False, "minutes": 10.0},
        "overridden": {"num_envs": 256, "epochs": 5, "hidden": "128,128", "total_steps": 100_000_000}}
    config, _ = read_teacher_config(layout.teacher)
    assert (config.minibatches, config.lr, config.input_norm, config.num_envs) == (2, 1e-3, False, 8)
    # a run written before recipes has no "recipe" key: it loads, resumes and distils as before
    del doc["recipe"]
    layout.teacher.config.write_text(json.dumps(doc))
    assert load_teacher(run).config == config
    assert run_kdx(["train", "--resume", str(run), "--steps", "80", "--quiet"]) == 0
    assert "recipe" not in json.loads(layout.teacher.config.read_text())


def test_distill_uses_the_recipe_of_the_teachers_env_and_records_it(tmp_path, capsys, run_kdx):
    from test_distill import make_teacher_run

    make_teacher_run(tmp_path, env="skirmish/3m", hidden="16")
    assert run_kdx(["distill", str(tmp_path), "--profile", "rpi5", "--steps", "240", "--num-envs", "4",
                    "--threads", "1", "--obs-norm-steps", "2", "--quiet"]) == 0
    out = " ".join(capsys.readouterr().out.split())
    assert "recipe skirmish (kdx/trainer/recipes/skirmish.toml [skirmish.distill]): rollout_length=60" in out
    doc = json.loads(RunLayout(tmp_path).students.config.read_text())
    assert doc["recipe"]["values"] == {"rollout_length": 60} and doc["recipe"]["overridden"] == {"num_envs": 64}
    assert (doc["distill"]["rollout_length"], doc["distill"]["num_envs"]) == (60, 4)


def test_mpe_recipe_sizes_simple_spread_students_as_measured_and_the_defaults_still_cut_30x(tmp_path):
    """The MPE distillation recipe's sizing knobs reach the capacity rule: a 128,128 simple_spread
    teacher gets two 32-wide layers per agent on rpi5 (>= 10x fewer MACs); without the recipe the
    default 30x cut leaves one 16-wide layer, marked as limited by the teacher ratio."""
    from test_distill import make_teacher_run

    from kdx.trainer.distill.loop import size_run_students

    teacher = make_teacher_run(tmp_path, env="mpe/simple_spread", hidden="128,128")
    recipe_config, use = config_with_recipe(DistillConfig, "mpe/simple_spread", {"profile": "rpi5"})
    assert use.recipe.name == "mpe"
    assert (recipe_config.min_mac_reduction, recipe_config.two_layer_min_obs_dim) == (10.0, 16)
    _, rows = size_run_students(teacher, recipe_config)
    for row in rows:
        assert row.arch.hidden == (32, 32) and row.macs == 18 * 32 + 32 * 32 + 32 * 5
        assert row.teacher_macs >= 18 * 128 + 128 * 128 and row.teacher_macs / row.macs >= 10.0
    _, plain = size_run_students(teacher, DistillConfig(profile="rpi5"))
    for row in plain:
        assert row.arch.hidden == (16,) and "teacher ratio" in row.limited_by
        assert row.teacher_macs / row.macs >= 30.0


@pytest.mark.parametrize(("field", "value", "expected"), [
    ("min_mac_reduction", 0.5, "--min-mac-reduction must be at least 1"),
    ("two_layer_min_obs_dim", 0, "--two-layer-min-obs-dim must be at least 1"),
])
def test_bad_sizing_knobs_are_errors_naming_the_flag(field, value, expected):
    with pytest.raises(KdxError, match=expected):
        DistillConfig(**{field: value}).validate()
