"""Manifest parsing never fails with anything but KdxError (issue 17). tests/runtime/
test_manifest.py fuzzes arbitrary JSON and one replaced value; here every path of a valid
manifest (file entries included) can be replaced with a hostile value, deleted or added to,
several times over."""

from __future__ import annotations

import copy
import json
from pathlib import Path
from typing import Any

from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from kdx.errors import KdxError
from kdx.runtime.manifest import MANIFEST_NAME, Manifest

# Values a hostile or broken exporter might write where the schema expects something else.
hostile_leaves = st.sampled_from([
    None, True, False, 0, -1, 1 << 20, (1 << 20) + 1, 1 << 70, -(1 << 70), 0.5, 1e308, float("nan"),
    float("inf"), "", "..", "../manifest.json", "/etc/passwd", "a\\b", "nul\x00", "~/x", "x" * 200,
    "0" * 64, "G" * 64, "onnx", "engine", "student", "teacher", "fp32", "x86", [], {}, [1, 1], [None],
    {"x_extension": 1},
])
hostile_values = st.recursive(hostile_leaves, lambda inner: st.lists(inner, max_size=3)
                              | st.dictionaries(st.sampled_from(["path", "sha256", "kind", "x_a", "?"]),
                                                inner, max_size=3), max_leaves=6).map(copy.deepcopy)  # no shared []/{}


def _every_path(node: Any, prefix: tuple = ()) -> list[tuple]:
    """The (key or index) path of every value in a parsed JSON document."""
    paths = [prefix]
    children = node.items() if isinstance(node, dict) else enumerate(node) if isinstance(node, list) else ()
    for key, value in children:
        paths += _every_path(value, (*prefix, key))
    return paths


@st.composite
def mutated(draw: st.DrawFn, base: dict) -> Any:
    doc = copy.deepcopy(base)
    for _ in range(draw(st.integers(1, 4))):
        path = draw(st.sampled_from(_every_path(doc)))
        if not path:
            doc = draw(hostile_values)
            continue
        parent = doc
        for key in path[:-1]:
            parent = parent[key]
        change = draw(st.sampled_from(("replace", "delete", "add")))
        if change == "replace":
            parent[path[-1]] = draw(hostile_values)
        elif change == "delete":
            del parent[path[-1]]
        elif isinstance(parent, dict):
            parent[draw(st.sampled_from(["x_new", "new", "name", "files"]))] = draw(hostile_values)
        else:
            parent.append(draw(hostile_values))
    return doc


@settings(max_examples=300, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(data=st.data())
def test_mutated_manifests_parse_or_raise_kdx_error(masked_abuse_bundle: Path, data: st.DataObject) -> None:
    base = json.loads((masked_abuse_bundle / MANIFEST_NAME).read_text())
    text = json.dumps(data.draw(mutated(base)))
    try:
        manifest = Manifest.from_json(text)
    except KdxError:
        return
    manifest.validate()  # what parsed is valid


def test_deeply_nested_json_is_a_kdx_error() -> None:
    try:
        Manifest.from_json("[" * 100_000 + "]" * 100_000)
    except KdxError as exc:
        assert "not valid JSON" in str(exc)
    else:
        raise AssertionError("a nested list was accepted as a manifest")
