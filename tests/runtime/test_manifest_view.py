"""A student's view in the manifest (kdx/runtime/manifest_view.py), torch-free: round trip,
schema versions (old manifests without views load unchanged), and refusals: a view whose width
is not the model's input, a teacher with a view, fields that do not follow from the ops."""

from __future__ import annotations

import json

import pytest

from kdx.envs.obs_layout import Entity, ObservationLayout
from kdx.envs.view_spec import View
from kdx.errors import KdxError
from kdx.runtime.manifest import SCHEMA_VERSION, AgentEntry, FileEntry, Manifest
from kdx.runtime.manifest_view import VIEW_SCHEMA_VERSION, AgentView

SHA = "ab" * 32
LAYOUT = ObservationLayout.concat([
    ("self", Entity("self"), ["vel_x", "vel_y"]),
    ("landmark.0", Entity("landmark", 0), ["dx", "dy"]),
    ("landmark.1", Entity("landmark", 1), ["dx", "dy"]),
    ("comm.0", Entity("communication", 0), ["c0", "c1"]),
])
VIEW = View.parse("-comm.* noise:0.1 dropout:landmark.*:0.3 sight:2 quant:8")


def _manifest(view: AgentView | None, obs_dim: int, version: int | None = None) -> Manifest:
    student = AgentEntry(name="agent_0", obs_dim=obs_dim, n_actions=5, view=view,
                         files=[FileEntry("agent_0.fp32.onnx", SHA, "onnx", 100)])
    teacher = AgentEntry(name="agent_0", role="teacher", obs_dim=LAYOUT.size, n_actions=5,
                         files=[FileEntry("teacher/agent_0.fp32.onnx", "cd" * 32, "onnx")])
    manifest = Manifest(agents=[student], teacher=[teacher], env="mpe/simple_spread")
    manifest.schema_version = version if version is not None else manifest.needed_schema_version
    return manifest


def test_the_record_says_what_the_device_applies_and_feeds():
    view = AgentView.of(VIEW, LAYOUT)
    assert view.text == ["-comm.*", "noise:0.1", "dropout:landmark.*:0.3", "sight:2", "quant:8"]
    assert View.from_json(view.device_ops).text == ["-comm.*", "dropout:landmark.*:0", "sight:2", "quant:8"]
    assert view.training_only == ["noise:0.1", "dropout:landmark.*:0.3"]
    assert view.raw_obs_dim == 8 and view.width == 8  # 2 comm features dropped, 2 flags added
    assert view.features == ["self.vel_x", "self.vel_y", "landmark.0.dx", "landmark.0.dy", "landmark.0.available",
                             "landmark.1.dx", "landmark.1.dy", "landmark.1.available"]
    assert view.available_flags == ["landmark.0.available", "landmark.1.available"]
    line = view.summary(max_features=4)
    assert "training only, not applied: noise:0.1 dropout:landmark.*:0.3" in line
    assert "feed 1 to 2 available flag(s)" in line and "raw obs 8 -> model input 8" in line and "..." in line


def test_round_trip_with_a_view_and_schema_2():
    manifest = _manifest(AgentView.of(VIEW, LAYOUT), 8)
    assert manifest.schema_version == VIEW_SCHEMA_VERSION
    again = Manifest.from_json(manifest.to_json())
    assert again == manifest
    assert again.agents[0].view.layout() == LAYOUT and again.agents[0].view.view() == VIEW
    assert again.teacher[0].view is None
    device = again.agents[0].view.device()  # applies the device part to a raw observation
    assert device([0.5, -0.5, 1.0, 1.0, 3.0, 0.0, 7.0, 7.0]).tolist() == pytest.approx(
        [0.5039, -0.5039, 1.0, 1.0, 1.0, 0.0, 0.0, 0.0], abs=1e-3)  # landmark.1 at 3 >= 2: zeroed


def test_old_manifests_without_views_load_unchanged():
    manifest = _manifest(None, LAYOUT.size)
    data = json.loads(manifest.to_json())
    assert data["schema_version"] == SCHEMA_VERSION == 1 and data["agents"][0]["view"] is None
    del data["agents"][0]["view"], data["teacher"][0]["view"]  # as kdx wrote them before views
    again = Manifest.from_json(json.dumps(data))
    assert again.agents[0].view is None and again == manifest


def _refused(manifest_or_data, *fragments: str) -> None:
    text = manifest_or_data if isinstance(manifest_or_data, str) else json.dumps(manifest_or_data)
    with pytest.raises(KdxError) as info:
        Manifest.from_json(text, source="m.json")
    for fragment in fragments:
        assert fragment in str(info.value), (fragment, str(info.value))


def test_a_view_whose_width_is_not_the_model_input_is_refused():
    data = json.loads(_manifest(AgentView.of(VIEW, LAYOUT), 8).to_json())
    data["agents"][0]["obs_dim"] = 10
    _refused(data, "student 'agent_0'", "gives 8 features", "model's input is 10")
    with pytest.raises(KdxError, match="gives 8 features"):
        _manifest(AgentView.of(VIEW, LAYOUT), 10).to_json()  # never written either


def test_fields_that_do_not_follow_from_the_ops_are_refused():
    good = json.loads(_manifest(AgentView.of(VIEW, LAYOUT), 8).to_json())
    for key, value, fragment in (("features", ["x"] * 8, "view features"),
                                 ("device_ops", [{"kind": "drop", "pattern": "comm.*"}], "view device_ops"),
                                 ("training_only", [], "view training_only"),
                                 ("raw_obs_dim", 9, "raw_obs_dim 9"),
                                 ("ops", [{"kind": "blur"}], "'kind' must be one of")):
        data = json.loads(json.dumps(good))
        data["agents"][0]["view"][key] = value
        _refused(data, fragment)
    data = json.loads(json.dumps(good))
    data["agents"][0]["view"]["extra"] = 1
    _refused(data, "unknown key(s) ['extra']")
    data = json.loads(json.dumps(good))
    del data["agents"][0]["view"]["features"]
    _refused(data, "lacks ['features']")


def test_a_view_needs_schema_2_and_a_teacher_has_none():
    data = json.loads(_manifest(AgentView.of(VIEW, LAYOUT), 8).to_json())
    data["schema_version"] = 1
    _refused(data, "need schema_version 2")
    data = json.loads(_manifest(None, LAYOUT.size, version=VIEW_SCHEMA_VERSION).to_json())
    data["teacher"][0]["view"] = data["teacher"][0]["view"] or AgentView.of(View.parse("-comm.*"), LAYOUT).__dict__
    data["teacher"][0]["obs_dim"] = 6
    _refused(data, "teacher 'agent_0'", "has no view")
