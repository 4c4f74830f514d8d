"""``kdx-runtime build-engines BUNDLE``: TensorRT engines from a bundle's ONNX, on the device.

Torch-free: imports only kdx.export.tensorrt (which imports TensorRT lazily) and the runtime.
"""

from __future__ import annotations

from pathlib import Path

import typer
from rich.console import Console


def build_engines_command(
    bundle: Path = typer.Argument(..., help="Bundle folder (holds manifest.json)."),
    workspace_mib: int = typer.Option(256, "--workspace-mib", help="TensorRT builder workspace limit in MiB."),
    agent: list[str] = typer.Option([], "--agent", help="Only this agent (repeat); default: every agent."),
) -> None:
    """Build one TensorRT engine per agent (students and teacher) and list them in the manifest."""
    from kdx.export.tensorrt import build_engines

    console = Console()
    records = build_engines(bundle, workspace_mib, agents=list(agent) or None,
                            log=lambda message: console.print(message, highlight=False))
    for r in records:
        console.print(f"{r.role} {r.agent}: {r.engine} ({r.size_bytes} bytes, {r.precision}, "
                      f"TensorRT {r.tensorrt_version}, {r.build_seconds:.1f} s)", highlight=False)


def register(app: typer.Typer) -> None:
    """Add ``build-engines`` to the ``kdx-runtime`` app."""
    app.command("build-engines")(build_engines_command)
