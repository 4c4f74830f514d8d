"""The manifest schema: round trip, precise refusals, atomic writes, and a fuzzed parser."""

from __future__ import annotations

import copy
import json
from pathlib import Path

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from kdx.errors import KdxError
from kdx.runtime.manifest import (
    SUPPORTED_SCHEMA_VERSIONS,
    AgentEntry,
    FileEntry,
    InputNames,
    Manifest,
    OutputNames,
    load_manifest,
    write_manifest,
)

SHA = "ab" * 32


def _manifest() -> Manifest:
    student = AgentEntry(
        name="agent_0", obs_dim=18, n_actions=5, hidden_sizes=[32, 32], params=1829, macs=1760,
        files=[FileEntry("agent_0.fp32.onnx", SHA, "onnx", 100), FileEntry("agent_0.fp32.npz", "cd" * 32, "npz")],
        inputs=InputNames("obs", "action_mask", "h_in"), outputs=OutputNames("logits", "action", "h_out"),
        recurrent_state_shape=[1, 32], precision="int8", normalisation_folded=False,
        parity={"action_agreement": 0.998, "max_abs_logit_diff": 0.01, "n": 1000},
    )
    teacher = AgentEntry(name="agent_0", role="teacher", obs_dim=18, n_actions=5, id_one_hot_size=3,
                         id_index=0, files=[FileEntry("teacher.onnx", "ef" * 32, "onnx")])
    return Manifest(agents=[student], teacher=[teacher], target="rpi", precision="int8",
                    env="mpe/simple_spread", kdx_version="0.1.0", created_at="2026-01-01T00:00:00Z")


def _dict() -> dict:
    return json.loads(_manifest().to_json())


def test_round_trip_keeps_every_field() -> None:
    original = _manifest()
    again = Manifest.from_json(original.to_json())
    assert again == original
    assert again.agents[0].inputs.h_in == "h_in"
    assert again.teacher[0].model_input_dim == 21


def test_c_symbol_round_trips_and_is_absent_from_other_bundles() -> None:
    plain = _dict()
    assert all("c_symbol" not in agent for agent in [*plain["agents"], *plain["teacher"]])  # older runtimes read it
    with_c = _manifest()
    with_c.agents[0].c_symbol = "agent_0"
    with_c.agents[0].files.append(FileEntry("c/agent_0.c", "12" * 32, "c_source", 10))
    again = Manifest.from_json(with_c.to_json())
    assert again.agents[0].c_symbol == "agent_0" and again.agents[0].file_of_kind("c_source").path == "c/agent_0.c"
    assert again.teacher[0].c_symbol is None
    bad = _dict()
    bad["agents"][0]["c_symbol"] = "agent-0; system()"
    with pytest.raises(KdxError, match="c_symbol"):
        Manifest.from_dict(bad)


def test_write_manifest_is_atomic_and_readable(tmp_path: Path) -> None:
    path = write_manifest(tmp_path, _manifest())
    assert path == tmp_path / "manifest.json"
    assert [p.name for p in tmp_path.iterdir()] == ["manifest.json"]  # no temp file left
    assert load_manifest(tmp_path) == _manifest()


def test_non_finite_parity_is_refused_on_write_as_on_read() -> None:
    bad = _manifest()
    bad.agents[0].parity["max_abs_logit_diff"] = float("nan")
    with pytest.raises(KdxError, match="parity"):
        bad.to_json()


def test_write_refuses_an_invalid_manifest(tmp_path: Path) -> None:
    bad = _manifest()
    bad.agents[0].obs_dim = 0
    with pytest.raises(KdxError, match="obs_dim"):
        write_manifest(tmp_path, bad)
    assert not (tmp_path / "manifest.json").exists()


def _refused(data: dict, *fragments: str) -> None:
    with pytest.raises(KdxError) as info:
        Manifest.from_json(json.dumps(data), source="m.json")
    message = str(info.value)
    assert message.startswith("m.json")
    for fragment in fragments:
        assert fragment in message, message


def test_unknown_schema_version_lists_the_supported_ones() -> None:
    data = _dict()
    data["schema_version"] = 99
    _refused(data, "schema_version 99", f"supported: {SUPPORTED_SCHEMA_VERSIONS[0]}")


@pytest.mark.parametrize("path", ["../outside.onnx", "a/../../b.onnx", "/etc/passwd", "a\\b.onnx",
                                  "", "dir/", "~/x.onnx", "./"])
def test_paths_must_stay_inside_the_bundle(path: str) -> None:
    data = _dict()
    data["agents"][0]["files"][0]["path"] = path
    _refused(data, repr(path))


@pytest.mark.parametrize(("mutate", "fragment"), [
    (lambda d: d["agents"][0].__setitem__("n_actions", True), "n_actions"),
    (lambda d: d["agents"][0].__setitem__("obs_dim", -3), "obs_dim"),
    (lambda d: d.__setitem__("target", "toaster"), "target"),
    (lambda d: d["agents"][0].__setitem__("precision", "fp8"), "precision"),
    (lambda d: d["agents"][0]["files"][0].__setitem__("sha256", "XYZ"), "sha256"),
    (lambda d: d["agents"][0]["files"][0].__setitem__("kind", "pickle"), "kind"),
    (lambda d: d["agents"][0].__setitem__("files", []), "files"),
    (lambda d: d["agents"].append(copy.deepcopy(d["agents"][0])), "repeat"),
    (lambda d: d.__setitem__("agents", []), "at least one student"),
    (lambda d: d["agents"][0].__setitem__("recurrent_state_shape", None), "recurrent_state_shape"),
    (lambda d: d["agents"][0]["outputs"].__setitem__("h_out", None), "h_out"),
    (lambda d: d["agents"][0].__setitem__("surprise", 1), "surprise"),
    (lambda d: d["agents"][0].__setitem__("role", "teacher"), "role"),
    (lambda d: d["teacher"][0].__setitem__("id_index", 3), "id_index"),
    (lambda d: d["agents"][0]["parity"].__setitem__("x", [1]), "parity"),
    (lambda d: d.pop("agents"), "agents"),
    (lambda d: d["agents"][0].__setitem__("name", "../a"), "name"),
])
def test_bad_fields_are_refused_with_their_name(mutate, fragment: str) -> None:
    data = _dict()
    mutate(data)
    _refused(data, fragment)


def test_extension_keys_are_ignored() -> None:
    data = _dict()
    data["x_vendor"] = {"anything": [1, 2]}
    data["agents"][0]["x_note"] = "kept out"
    assert Manifest.from_json(json.dumps(data)) == _manifest()


def test_not_json_is_refused() -> None:
    with pytest.raises(KdxError, match="not valid JSON"):
        Manifest.from_json(b"\xff\xfe{", source="m.json")


# --- fuzzing: no input may raise anything but KdxError ----------------------------------------

json_values = st.recursive(
    st.none() | st.booleans() | st.integers(-2**40, 2**40) | st.floats(allow_nan=True) | st.text(max_size=12),
    lambda children: st.lists(children, max_size=4) | st.dictionaries(st.text(max_size=10), children, max_size=4),
    max_leaves=20,
)


def _parse_or_refuse(text: str | bytes) -> None:
    try:
        manifest = Manifest.from_json(text)
    except KdxError:
        return
    manifest.validate()  # anything accepted must be valid


@settings(max_examples=200, deadline=None)
@given(st.binary(max_size=200) | st.text(max_size=200))
def test_fuzz_arbitrary_text(data: bytes | str) -> None:
    _parse_or_refuse(data)


@settings(max_examples=300, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(st.data())
def test_fuzz_mutated_valid_manifests(data: st.DataObject) -> None:
    manifest = _dict()
    # Walk to a random container inside the valid manifest and replace/insert one value.
    node = manifest
    for _ in range(data.draw(st.integers(0, 4))):
        children = list(node.items()) if isinstance(node, dict) else list(enumerate(node))
        children = [(k, v) for k, v in children if isinstance(v, (dict, list)) and v]
        if not children:
            break
        node = data.draw(st.sampled_from(children))[1]
    key = (data.draw(st.sampled_from(sorted(node) + ["new"])) if isinstance(node, dict)
           else data.draw(st.integers(0, len(node) - 1)) if node else None)
    if key is not None:
        node[key] = data.draw(json_values)
    _parse_or_refuse(json.dumps(manifest))
