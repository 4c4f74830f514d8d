"""The loop settings both stages share: one definition, one set of checks, one JSON round trip."""

from __future__ import annotations

from dataclasses import fields

import pytest

from kdx.errors import KdxError
from kdx.trainer.common.config_options import cli_order
from kdx.trainer.common.loop_config import LoopConfig
from kdx.trainer.distill.config import DistillConfig
from kdx.trainer.teacher.config import TeacherConfig

STAGES = [TeacherConfig, DistillConfig]


@pytest.mark.parametrize("config_cls", STAGES)
def test_both_stages_inherit_every_loop_setting(config_cls):
    loop = {f.name for f in fields(LoopConfig)}
    assert loop <= {f.name for f in fields(config_cls)}


@pytest.mark.parametrize("config_cls", STAGES)
@pytest.mark.parametrize("name", ["lr", "gamma", "clip", "entropy_coef", "max_grad_norm"])
@pytest.mark.parametrize("value", [float("nan"), float("inf")])
def test_non_finite_hyper_parameters_are_refused(config_cls, name, value):
    with pytest.raises(KdxError, match=f"--{name.replace('_', '-')} must be a finite number"):
        config_cls(**{name: value}).validate()


@pytest.mark.parametrize("config_cls", STAGES)
def test_json_round_trip(config_cls):
    config = config_cls(seed=7, num_envs=64)
    assert config_cls.from_json(config.to_json()) == config
    with pytest.raises(KdxError, match="unknown fields"):
        config_cls.from_json({**config.to_json(), "nope": 1})


def test_stage_defaults_differ_where_declared():
    assert TeacherConfig().epochs != DistillConfig().epochs and DistillConfig().total_steps == 300_000
    assert DistillConfig.from_json({"device_profile": "rpi5", "students": ["a=8"]}).students == ("a=8",)


def test_help_lists_a_stage_s_own_knobs_before_the_shared_loop_settings():
    names = [f.name for f in cli_order(TeacherConfig)]
    assert names[0] == "env" and names.index("hidden") < names.index("num_envs")
    assert [f.name for f in cli_order(DistillConfig)][0] == "profile"
