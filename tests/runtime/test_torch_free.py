"""kdx.runtime and kdx.devices never import torch, and run with numpy alone."""

from __future__ import annotations

import subprocess
import sys
import textwrap
from pathlib import Path

REPO = Path(__file__).resolve().parents[2]

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
        names = []
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
