"""Manifest parsing never fails with anything but KdxError, whatever the JSON (issue 17)."""

from __future__ import annotations

import copy
import json
from pathlib import Path
from typing import Any

from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from kdx.errors import KdxError
from kdx.runtime.manifest import MANIFEST_NAME, Manifest

json_values = st.recursive(
    st.none() | st.booleans() | st.integers(-(1 << 70), 1 << 70)
    | st.floats(allow_nan=True, allow_infinity=True) | st.text(max_size=12),
    lambda children: st.lists(children, max_size=4) | st.dictionaries(st.text(max_size=8), children, max_size=4),
    max_leaves=12,
)


def _parse(text: str | bytes) -> None:
    try:
        manifest = Manifest.from_json(text)
    except KdxError:
        return
    assert isinstance(manifest, Manifest)
    manifest.validate()  # what parsed is valid


def _paths(node: Any, prefix: tuple = ()) -> list[tuple]:
    """Every (key or index) path into a parsed JSON document."""
    out = [prefix]
    if isinstance(node, dict):
        for key, value in node.items():
            out += _paths(value, (*prefix, key))
    elif isinstance(node, list):
        for index, value in enumerate(node):
            out += _paths(value, (*prefix, index))
    return out


@st.composite
def mutated_manifests(draw: st.DrawFn, base: dict) -> Any:
    doc = copy.deepcopy(base)
    for _ in range(draw(st.integers(1, 4))):
        paths = _paths(doc)
        path = draw(st.sampled_from(paths))
        if not path:
            doc = draw(json_values)
            continue
        parent = doc
        for key in path[:-1]:
            parent = parent[key]
        action = draw(st.sampled_from(("replace", "delete", "add")))
        if action == "replace":
            parent[path[-1]] = draw(json_values)
        elif action == "delete":
            del parent[path[-1]]
        elif isinstance(parent, dict):
            parent[draw(st.text(max_size=8))] = draw(json_values)
        else:
            parent.append(draw(json_values))
    return doc


@settings(max_examples=300, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(data=st.data())
def test_mutated_manifests_parse_or_raise_kdx_error(masked_abuse_bundle: Path, data: st.DataObject) -> None:
    base = json.loads((masked_abuse_bundle / MANIFEST_NAME).read_text())
    _parse(json.dumps(data.draw(mutated_manifests(base))))


@settings(max_examples=200, deadline=None)
@given(doc=json_values)
def test_arbitrary_json_parses_or_raises_kdx_error(doc: Any) -> None:
    _parse(json.dumps(doc))


@settings(max_examples=200, deadline=None)
@given(raw=st.binary(max_size=200) | st.text(max_size=200))
def test_arbitrary_bytes_parse_or_raise_kdx_error(raw: bytes | str) -> None:
    _parse(raw)


def test_deeply_nested_json_is_a_kdx_error() -> None:
    _parse("[" * 100_000 + "]" * 100_000)
