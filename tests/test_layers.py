"""The dependency direction of kdx: no module imports from a layer above its own.

Layers, lowest first (docs/ARCHITECTURE.md draws the same picture). A module may import its own
layer and any layer below. Every ``import``/``from ... import`` of a kdx module counts, including
imports inside functions; the scan reads the source with ``ast`` and imports nothing.
"""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

KDX = Path(__file__).resolve().parents[1] / "kdx"

# (layer name, module prefixes), lowest first. A module belongs to the longest prefix it matches.
LAYERS: list[tuple[str, tuple[str, ...]]] = [
    ("base", ("kdx", "kdx.errors", "kdx.fileio", "kdx.layout", "kdx.lazy", "kdx.cli_common")),
    ("devices", ("kdx.devices",)),
    ("envs", ("kdx.envs",)),
    ("runtime", ("kdx.runtime",)),
    ("trainer.common", ("kdx.trainer", "kdx.trainer.common")),
    ("trainer.teacher", ("kdx.trainer.teacher",)),
    ("trainer.distill", ("kdx.trainer.distill",)),
    ("trainer.evaluation", ("kdx.trainer.evaluation", "kdx.trainer.sweep", "kdx.trainer.sweep_commands",
                            "kdx.trainer.commands")),
    ("export", ("kdx.export",)),
    ("report", ("kdx.report",)),
    ("cli", ("kdx.cli", "kdx.demo", "kdx.__main__")),
]
# Within the envs layer, the torch-free runtime may read only the twin table and the torch-free
# view modules (a bundle's manifest records each student's view; kdx-runtime applies it).
RUNTIME_MAY_IMPORT_FROM_ENVS = {"kdx.envs.twins", "kdx.envs.obs_layout", "kdx.envs.view_spec",
                                "kdx.envs.view_numpy"}


def layer_of(module: str) -> int:
    best, best_len = None, -1
    for index, (_, prefixes) in enumerate(LAYERS):
        for prefix in prefixes:
            if (module == prefix or module.startswith(prefix + ".")) and len(prefix) > best_len:
                best, best_len = index, len(prefix)
    assert best is not None, f"{module} is in no layer: add it to LAYERS"
    return best


def module_name(path: Path) -> str:
    parts = path.relative_to(KDX.parent).with_suffix("").parts
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


def kdx_imports_of(source: str, package: str) -> list[str]:
    """Absolute names of the kdx modules ``source`` imports; ``package`` resolves relative imports."""
    found = []
    for node in ast.walk(ast.parse(source)):
        if isinstance(node, ast.Import):
            found += [a.name for a in node.names if a.name.split(".")[0] == "kdx"]
        elif isinstance(node, ast.ImportFrom):
            if node.level:
                base = package.split(".")
                base = base[: len(base) - node.level + 1]
                name = ".".join(base + ([node.module] if node.module else []))
            else:
                name = node.module or ""
            if name.split(".")[0] == "kdx":
                found.append(name)
    return found


def kdx_imports(path: Path) -> list[str]:
    name = module_name(path)
    return kdx_imports_of(path.read_text(), name if path.name == "__init__.py" else name.rsplit(".", 1)[0])


MODULES = sorted(KDX.rglob("*.py"))


def test_every_module_has_a_layer() -> None:
    for path in MODULES:
        layer_of(module_name(path))


@pytest.mark.parametrize("path", MODULES, ids=lambda p: module_name(p))
def test_no_import_from_a_layer_above(path: Path) -> None:
    me = module_name(path)
    mine = layer_of(me)
    upward = []
    for target in kdx_imports(path):
        if mine == layer_of("kdx.runtime") and target.startswith("kdx.envs"):
            if target not in RUNTIME_MAY_IMPORT_FROM_ENVS:
                upward.append(f"{target} (the runtime reads only {sorted(RUNTIME_MAY_IMPORT_FROM_ENVS)})")
            continue
        if layer_of(target) > mine:
            upward.append(f"{target} (layer {LAYERS[layer_of(target)][0]})")
    assert not upward, f"{me} (layer {LAYERS[mine][0]}) imports from above: {upward}"


def test_stage_two_never_imports_stage_one_loop() -> None:
    for path in (KDX / "trainer" / "distill").rglob("*.py"):
        assert "kdx.trainer.teacher.mappo" not in kdx_imports(path), path


def test_the_scan_sees_upward_imports() -> None:
    """The checker itself: imports inside functions are seen and relative imports resolve."""
    source = "def f():\n    from kdx.trainer.teacher.store import load_teacher\n    from ..report import flops\n"
    found = kdx_imports_of(source, "kdx.devices")
    assert found == ["kdx.trainer.teacher.store", "kdx.report"]
    assert all(layer_of(name) > layer_of("kdx.devices.sizing") for name in found)
