"""kdx.devices must work on a device without torch: import every module with torch blocked."""

from __future__ import annotations

import subprocess
import sys
import textwrap
from pathlib import Path

REPO = Path(__file__).resolve().parents[2]

SCRIPT = textwrap.dedent(
    """
    import importlib, pkgutil, sys

    class Blocker:
        BLOCKED = ("torch", "kdx.envs", "kdx.trainer", "kdx.export")

        def find_spec(self, name, path=None, target=None):
            if any(name == b or name.startswith(b + ".") for b in self.BLOCKED):
                raise ImportError(f"blocked import of {name} (kdx.devices must stay torch-free)")
            return None

    sys.meta_path.insert(0, Blocker())

    import kdx.devices
    names = sorted(m.name for m in pkgutil.walk_packages(kdx.devices.__path__, "kdx.devices."))
    for name in names:
        importlib.import_module(name)

    from kdx.devices.registry import PROFILES
    from kdx.devices.sizing import size_students, parse_overrides
    rows = size_students([("a", 18, 5), ("b", 80, 14)], PROFILES["rpi4"], parse_overrides(["a=16"], ["a", "b"]))
    assert rows[0].arch.hidden == (16,), rows
    assert not any(m == "torch" or m.startswith("torch.") for m in sys.modules)
    print("OK", len(names), "modules:", ",".join(names))
    """
)


def test_kdx_devices_imports_and_sizes_without_torch():
    result = subprocess.run(
        [sys.executable, "-c", SCRIPT], cwd=REPO, capture_output=True, text=True, timeout=60
    )
    assert result.returncode == 0, result.stderr
    assert result.stdout.startswith("OK")
    for module in ("mlp", "profile", "registry", "sizing", "commands", "tables"):
        assert f"kdx.devices.{module}" in result.stdout


def test_the_blocker_really_blocks_torch():
    # The check above is only meaningful if the blocker makes `import torch` fail.
    script = SCRIPT.split("import kdx.devices")[0] + "import torch\n"
    result = subprocess.run([sys.executable, "-c", script], cwd=REPO, capture_output=True, text=True, timeout=60)
    assert result.returncode != 0 and "blocked import of torch" in result.stderr
