"""One meaning per name: configs call the torch device `torch_device` and the device profile
`profile`; runs saved with the old keys still load, and the options come straight from the fields."""

from __future__ import annotations

from dataclasses import fields

import pytest

from kdx.errors import KdxError
from kdx.trainer.distill import commands as distill_commands
from kdx.trainer.distill.config import DistillConfig
from kdx.trainer.distill.store import students_profile
from kdx.trainer.teacher import commands as teacher_commands
from kdx.trainer.teacher.config import TeacherConfig


def test_saved_teacher_configs_with_the_old_device_key_still_load():
    old = TeacherConfig().to_json()
    del old["torch_device"]
    old["device"] = "cuda"  # the key runs were saved with before the rename
    assert TeacherConfig.from_json(old).torch_device == "cuda"
    assert TeacherConfig.from_json(TeacherConfig(torch_device="cuda").to_json()).torch_device == "cuda"
    with pytest.raises(KdxError, match="unknown fields"):
        TeacherConfig.from_json({"warp_speed": 9})


def test_saved_distill_configs_with_the_old_keys_still_load():
    old = DistillConfig().to_json()
    del old["profile"], old["torch_device"]
    old.update(device_profile="rpi5", device="cuda")
    config = DistillConfig.from_json(old)
    assert (config.profile, config.torch_device) == ("rpi5", "cuda")
    assert DistillConfig.from_json(DistillConfig(profile="rpi4").to_json()).profile == "rpi4"


def test_students_profile_reads_the_record_and_the_old_top_level_name():
    record = {"name": "rpi5", "target": "rpi", "precision": "int8"}
    assert students_profile({"profile": record}) == record
    assert students_profile({"device_profile": "jetson-orin-nano"}) == {
        "name": "jetson-orin-nano", "target": "jetson", "precision": "fp16"}
    # a user's own profile file kdx does not ship: the name survives, target and precision are unknown
    assert students_profile({"device_profile": "boards/mine.toml"}) == {
        "name": "boards/mine.toml", "target": None, "precision": None}
    assert students_profile({}) == {"name": None, "target": None, "precision": None}


@pytest.mark.parametrize(("config_cls", "renamed"), [
    (TeacherConfig, teacher_commands._RENAMED),
    (DistillConfig, distill_commands._RENAMED),
])
def test_device_options_are_named_after_their_fields(config_cls, renamed):
    names = {f.name for f in fields(config_cls)}
    assert "torch_device" in names and "device" not in names and "device_profile" not in names
    assert not {"torch_device", "profile"} & set(renamed)
