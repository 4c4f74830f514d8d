"""kdx.runtime and kdx.devices never import torch, run with numpy alone, and import nothing from
the workstation packages (export, trainer, report): the dependency runs export -> runtime only."""

from __future__ import annotations

import ast
import re
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[2]
DEVICE_SIDE = ("kdx/runtime", "kdx/devices")
# A module of the workstation packages, as imported or as a string handed to importlib.
WORKSTATION_MODULE = re.compile(r"kdx\.(export|trainer|report)(\.\w+)*")


def workstation_imports(source: str, module: str) -> list[str]:
    """``line: name`` for every import (at any depth; relative ones resolved against ``module``)
    and every string constant in ``source`` that names a module of kdx.export/trainer/report."""
    found = []
    for node in ast.walk(ast.parse(source)):
        names: list[str] = []
        if isinstance(node, ast.Import):
            names = [alias.name for alias in node.names]
        elif isinstance(node, ast.ImportFrom):
            base = node.module or ""
            if node.level:
                base = ".".join(module.split(".")[: -node.level] + ([base] if base else []))
            names = [f"{base}.{alias.name}" for alias in node.names]
        elif isinstance(node, ast.Constant) and isinstance(node.value, str):
            names = [node.value]
        found += [f"{node.lineno}: {name}" for name in names if WORKSTATION_MODULE.fullmatch(name)]
    return found


def test_device_side_imports_nothing_from_the_workstation_packages() -> None:
    files = [path for folder in DEVICE_SIDE for path in sorted((REPO / folder).rglob("*.py"))]
    assert len(files) >= 20
    bad = {}
    for path in files:
        module = ".".join(path.relative_to(REPO).with_suffix("").parts)
        found = workstation_imports(path.read_text(), module)
        if found:
            bad[str(path.relative_to(REPO))] = found
    assert not bad, f"device-side modules reach into kdx.export/trainer/report: {bad}"


@pytest.mark.parametrize("source", [
    "import kdx.export.bundle",
    "from kdx.trainer import checkpoint",
    "def f():\n    from kdx.report.collect import collect",
    "COMMAND_MODULES = ('kdx.runtime.commands', 'kdx.export.runtime_commands')",
    "from ...export import targets",  # relative, seen from kdx.runtime.backends.x
])
def test_the_scan_catches_every_form(source: str) -> None:
    """The scan above must see imports inside functions, relative ones and importlib strings."""
    assert workstation_imports(source, "kdx.runtime.backends.x")


def test_the_scan_passes_allowed_imports() -> None:
    source = ("import kdx.runtime.manifest\nfrom kdx.fileio import sha256_file\n"
              "'''kdx.export writes bundles; see kdx.export.trtexec.'''\nx = 'kdx.exporter'\n"
              "from .. import manifest\n")
    assert workstation_imports(source, "kdx.runtime.backends.x") == []


# An import hook that makes the named top-level packages impossible to import.
BLOCKER = textwrap.dedent("""
    import sys
    BLOCKED = {blocked!r}

    class Blocker:
        def find_spec(self, name, path=None, target=None):
            if name.split(".")[0] in BLOCKED:
                raise ImportError(f"{{name}} is blocked in this test")
            return None

    sys.meta_path.insert(0, Blocker())
""")


def _run(code: str, blocked: tuple[str, ...]) -> subprocess.CompletedProcess:
    script = BLOCKER.format(blocked=set(blocked)) + textwrap.dedent(code)
    return subprocess.run([sys.executable, "-c", script], cwd=REPO, capture_output=True,
                          text=True, timeout=120)


def test_every_runtime_and_devices_module_imports_without_torch() -> None:
    result = _run("""
        import importlib, pkgutil
        import kdx.runtime, kdx.devices
        # the runtime reads each kdx env's PettingZoo twin, and applies views, with these
        names = ["kdx.envs.twins", "kdx.envs.obs_layout", "kdx.envs.view_spec", "kdx.envs.view_numpy"]
        for package in (kdx.runtime, kdx.devices):
            names.append(package.__name__)
            for info in pkgutil.walk_packages(package.__path__, package.__name__ + "."):
                names.append(info.name)
        for name in names:
            importlib.import_module(name)
        assert "torch" not in sys.modules
        print("imported", len(names))
    """, blocked=("torch",))
    assert result.returncode == 0, result.stderr
    count = int(result.stdout.split()[-1])
    assert count >= 15  # the runtime package alone has more modules than that


def test_hook_really_blocks_torch() -> None:
    """The blocker must make torch unimportable, or the test above proves nothing."""
    result = _run("import torch", blocked=("torch",))
    assert result.returncode != 0
    assert "blocked in this test" in result.stderr


def test_numpy_backend_alone_runs_a_bundle_and_says_so(spread_bundle: Path) -> None:
    result = _run(f"""
        import os
        os.environ["CC"] = "/nonexistent/cc"  # no C compiler either: the c backend is unavailable
        import numpy as np
        from kdx.runtime.bundle import Bundle
        bundle = Bundle.load({str(spread_bundle)!r})
        policy = bundle.policy("agent_0")  # auto
        action = policy.act(np.zeros(18, dtype=np.float32))
        assert 0 <= action < 5
        print("backend", policy.backend_name, sorted(policy.selection))
        from kdx.runtime.cli import main
        try:
            main(["info", {str(spread_bundle)!r}])
        except SystemExit as exit:
            assert exit.code in (0, None), exit.code
    """, blocked=("torch", "onnxruntime", "tensorrt", "onnx"))
    assert result.returncode == 0, result.stderr
    assert "backend numpy" in result.stdout
    assert "backends available here: numpy" in result.stdout
    assert "neither onnxruntime nor TensorRT" in result.stdout
