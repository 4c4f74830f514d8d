"""The precision and target registries (kdx.devices.targets): defined there once, spelled out
nowhere else, and every entry works everywhere it is used (profiles, manifest, TensorRT, export)."""

from __future__ import annotations

import ast
import re
from dataclasses import replace
from pathlib import Path

import pytest

from kdx.devices.profile import RUNTIME_BACKENDS
from kdx.devices.registry import PROFILES
from kdx.devices.targets import PRECISIONS, TARGETS
from kdx.errors import KdxError
from kdx.runtime.manifest import AgentEntry, FileEntry, Manifest

REPO = Path(__file__).resolve().parents[2]
REGISTRY = REPO / "kdx" / "devices" / "targets.py"
SCANNED = ("kdx", "benchmarks")
NAME_SETS = {"precision": set(PRECISIONS), "target": set(TARGETS)}


def _enumeration(names: set[str]) -> re.Pattern[str]:
    """Two or more of ``names`` in a row, as a list is written in prose: "a, b or c", "a/b", "a | b"."""
    word = r"\b(?:" + "|".join(sorted(names)) + r")\b"
    return re.compile(word + r"(?:\s*(?:,|/|\||\bor\b|\band\b)\s*(?:or\s+|and\s+)?" + word + ")+")


ENUMERATIONS = {kind: _enumeration(names) for kind, names in NAME_SETS.items()}


def spelled_out_lists(source: str) -> list[str]:
    """``line: what`` for every place in ``source`` that writes out two or more precision (or
    target) names together: a tuple, list or set literal, the keys of a dict literal, or an
    enumeration inside a string or f-string that is not a docstring (help texts, messages)."""
    tree = ast.parse(source)
    docstrings = {id(node.body[0].value) for node in ast.walk(tree)
                  if isinstance(node, (ast.Module, ast.ClassDef, ast.FunctionDef, ast.AsyncFunctionDef))
                  and node.body and isinstance(node.body[0], ast.Expr)
                  and isinstance(node.body[0].value, ast.Constant)}
    found = []
    for node in ast.walk(tree):
        if isinstance(node, (ast.Tuple, ast.List, ast.Set)):
            items = node.elts
        elif isinstance(node, ast.Dict):
            items = [key for key in node.keys if key is not None]
        elif isinstance(node, ast.Constant) and isinstance(node.value, str) and id(node) not in docstrings:
            found += [f"{node.lineno}: {kind}s in {node.value[:60]!r}"
                      for kind, pattern in ENUMERATIONS.items() if pattern.search(node.value)]
            continue
        else:
            continue
        strings = {item.value for item in items if isinstance(item, ast.Constant) and isinstance(item.value, str)}
        for kind, names in NAME_SETS.items():
            if len(strings & names) >= 2:
                found.append(f"{node.lineno}: {kind}s {sorted(strings & names)}")
    return found


def test_no_module_but_the_registry_spells_out_the_precisions_or_targets() -> None:
    files = [path for folder in SCANNED for path in sorted((REPO / folder).rglob("*.py")) if path != REGISTRY]
    assert len(files) > 50
    bad = {str(path.relative_to(REPO)): found for path in files if (found := spelled_out_lists(path.read_text()))}
    assert not bad, f"import PRECISIONS / TARGETS from kdx.devices.targets instead: {bad}"
    assert spelled_out_lists(REGISTRY.read_text())  # the registry itself is seen by the scan


@pytest.mark.parametrize("source", [
    'PRECISIONS = ("fp32", "fp16", "int8")',
    'targets = ["rpi", "x86"]',
    'ok = precision in {"fp16", "int8"}',
    'flags = {"fp32": (), "int8": ("INT8",)}',
    'help = "fp32, fp16 or int8; default: the target\'s"',
    'msg = f"valid targets: jetson, rpi, x86 (got {name})"',
    'script = \'FP32=""; echo fp16/int8\'',
])
def test_the_scan_catches_every_form(source: str) -> None:
    assert spelled_out_lists(source)


def test_the_scan_passes_single_names_prose_and_docstrings() -> None:
    source = ('"""Precisions: fp32, fp16 or int8."""\n'
              'if precision == "int8":\n    attempts = [("int8", [], "every matmul int8")]\n'
              'note = "fp32 students, as the int8 column"\n'
              'extra = ("x86",)\nprofile = "rpi5"\n'
              'def f():\n    """Targets jetson, rpi, x86."""\n')
    assert spelled_out_lists(source) == []


# --- every entry of the registries, wherever it is used ------------------------------------

@pytest.mark.parametrize("name", list(PRECISIONS))
def test_every_precision_is_complete(name: str) -> None:
    precision = PRECISIONS[name]
    assert precision.name == name
    assert isinstance(precision.bytes_per_param, int) and precision.bytes_per_param >= 1
    assert 0.0 < precision.min_action_agreement <= 1.0
    assert precision.max_abs_logit_diff is None or precision.max_abs_logit_diff > 0
    assert precision.trtexec_option == ("" if precision.tensorrt_flag is None else f"--{name}")
    assert any(name in target.precisions for target in TARGETS.values())


def test_precisions_run_from_most_to_least_bytes() -> None:
    """Tables list precisions in registry order: full precision first, then ever smaller."""
    sizes = [p.bytes_per_param for p in PRECISIONS.values()]
    assert sizes == sorted(sizes, reverse=True) and len(set(sizes)) == len(sizes)
    assert not next(iter(PRECISIONS.values())).quantized  # the reference every other is checked against


@pytest.mark.parametrize("name", list(TARGETS))
def test_every_target_is_complete(name: str) -> None:
    target = TARGETS[name]
    assert target.name == name
    assert target.default_precision in target.precisions and set(target.precisions) <= set(PRECISIONS)
    assert target.backends and set(target.backends) <= set(RUNTIME_BACKENDS)
    assert target.engine_build_on_device == ("tensorrt" in target.backends)


def _manifest(target: str, precision: str) -> Manifest:
    entry = AgentEntry(name="a", obs_dim=2, n_actions=2, precision=precision,
                       files=[FileEntry(f"a.{precision}.onnx", "0" * 64, "onnx")])
    return Manifest(agents=[entry], target=target, precision=precision)


@pytest.mark.parametrize("target", list(TARGETS))
@pytest.mark.parametrize("precision", list(PRECISIONS))
def test_the_manifest_accepts_every_registered_pair(target: str, precision: str) -> None:
    manifest = _manifest(target, precision)
    manifest.validate()
    assert Manifest.from_json(manifest.to_json()) == manifest


def test_the_manifest_refuses_what_the_registries_do_not_hold() -> None:
    with pytest.raises(KdxError, match="precision is 'int4'; expected one of " + ", ".join(PRECISIONS)):
        replace(_manifest("rpi", "int8"), precision="int4").validate()
    with pytest.raises(KdxError, match="target is 'esp32'; expected one of " + ", ".join(TARGETS)):
        _manifest("esp32", "int8").validate()


@pytest.mark.parametrize("name", list(PRECISIONS))
def test_every_precision_builds_with_every_tensorrt_generation(name: str) -> None:
    from kdx.runtime.tensorrt_build import plan_build

    flag = PRECISIONS[name].tensorrt_flag
    for version in ("8.2", "10.3"):
        assert plan_build(version, name).builder_flags == (() if flag is None else (flag,))
    assert plan_build("11.0", name).strongly_typed and plan_build("11.0", name).builder_flags == ()


@pytest.mark.parametrize("name", list(PROFILES))
def test_every_profile_names_a_registered_target_and_precision(name: str) -> None:
    profile = PROFILES[name]
    assert profile.default_precision in TARGETS[profile.target].precisions
    assert profile.bytes_per_param == PRECISIONS[profile.default_precision].bytes_per_param
