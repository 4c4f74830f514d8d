"""TensorRT engine building on the device: version dispatch and manifest bookkeeping are tested
here without TensorRT; the real build runs only where TensorRT is installed."""

from __future__ import annotations

import importlib.util
import json
import subprocess
import sys
from pathlib import Path

import pytest

from kdx.errors import KdxError
from kdx.runtime.bundle import verify_files
from kdx.runtime.commands import engine_line
from kdx.runtime.manifest import load_manifest, write_manifest
from kdx.runtime.tensorrt_build import (
    TENSORRT_MISSING,
    TIMING_CACHE,
    build_engines,
    engine_path_for,
    group_by_source,
    plan_build,
    store_engine,
    with_engines,
)
from kdx.runtime.testing import make_test_bundle

HAS_TENSORRT = importlib.util.find_spec("tensorrt") is not None
REPO = Path(__file__).resolve().parents[2]


@pytest.mark.parametrize(("version", "precision", "network", "flags", "workspace"), [
    ("8.2.1.8", "fp16", ("EXPLICIT_BATCH",), ("FP16",), "max_workspace_size"),  # JetPack 4.6
    ("8.5.2.2", "fp16", ("EXPLICIT_BATCH",), ("FP16",), "set_memory_pool_limit"),  # JetPack 5
    ("8.5.2.2", "int8", ("EXPLICIT_BATCH",), ("INT8",), "set_memory_pool_limit"),
    ("8.5.2.2", "fp32", ("EXPLICIT_BATCH",), (), "set_memory_pool_limit"),
    ("10.3.0.30", "fp16", (), ("FP16",), "set_memory_pool_limit"),  # JetPack 6
    ("10.3.0.30", "int8", (), ("INT8",), "set_memory_pool_limit"),
    ("11.0.0", "fp16", ("STRONGLY_TYPED",), (), "set_memory_pool_limit"),  # JetPack 7
    ("11.2.1", "int8", ("STRONGLY_TYPED",), (), "set_memory_pool_limit"),
])
def test_plan_per_version(version, precision, network, flags, workspace) -> None:
    plan = plan_build(version, precision)
    assert plan.network_flags == network
    assert plan.builder_flags == flags
    assert plan.workspace_api == workspace
    assert plan.strongly_typed == (plan.major >= 11)
    assert ("TF32" in plan.cleared_flags) == (precision == "fp32" and plan.major < 11)


def test_plan_refuses_old_or_bad_versions() -> None:
    with pytest.raises(KdxError, match="too old"):
        plan_build("7.1.3", "fp16")
    with pytest.raises(KdxError, match="cannot read"):
        plan_build("ten", "fp16")
    with pytest.raises(KdxError, match="valid precisions"):
        plan_build("10.3", "bf16")


def test_engine_paths_mirror_the_onnx_paths() -> None:
    assert engine_path_for("agent_0.fp16.onnx") == "engines/agent_0.fp16.engine"
    assert engine_path_for("teacher/agent_0.int8.onnx") == "engines/teacher/agent_0.int8.engine"


@pytest.mark.skipif(HAS_TENSORRT, reason="TensorRT is installed here")
def test_build_engines_without_tensorrt_says_where_to_build(tmp_path: Path) -> None:
    bundle = make_test_bundle(tmp_path / "b", teacher_hidden=None)
    with pytest.raises(KdxError) as info:
        build_engines(bundle)
    assert str(info.value) == TENSORRT_MISSING
    assert load_manifest(bundle).agents[0].file_of_kind("engine") is None


def test_bookkeeping_lists_engines_and_keeps_the_bundle_valid(tmp_path: Path) -> None:
    """What build_engines does after TensorRT returns the plan bytes (opaque here)."""
    bundle = make_test_bundle(tmp_path / "b")  # shared teacher ONNX for all three agents
    manifest = load_manifest(bundle)
    groups = group_by_source(manifest.entries())
    assert len(groups) == 4  # three students, one shared teacher file
    plan = plan_build("10.3.0.30", "fp32")
    records = [store_engine(bundle, users, plan, f"plan-{path}".encode(), 0.5)
               for path, users in groups.items()]
    (bundle / TIMING_CACHE).write_bytes(b"cache")
    updated = with_engines(manifest, bundle, records, TIMING_CACHE)
    write_manifest(bundle, updated)
    reloaded = load_manifest(bundle)
    verify_files(bundle, reloaded)
    for entry in reloaded.entries():
        engine = entry.file_of_kind("engine")
        assert engine is not None and engine.path == engine_path_for(entry.file_of_kind("onnx").path)
        meta = json.loads((bundle / (engine.path + ".json")).read_text())
        assert [entry.role, entry.name] in meta["users"]
        assert meta["tensorrt_version"] == "10.3.0.30" and meta["onnx_sha256"] == entry.file_of_kind("onnx").sha256
        assert (bundle / engine.path).read_bytes().startswith(b"plan-")  # no header in front
        assert entry.file_of_kind("timing-cache").path == TIMING_CACHE
    # rebuilding replaces the entries instead of piling them up
    again = with_engines(reloaded, bundle, records, TIMING_CACHE)
    assert [f.kind for f in again.agents[0].files].count("engine") == 1
    shared = next(r for r in records if len(r.users) == 3)  # the teacher's one engine
    line = engine_line(shared)
    assert line.startswith("teacher agent_0, teacher agent_1, teacher agent_2: engines/teacher.fp32.engine (")
    assert "TensorRT 10.3.0.30" in line and "0.5 s" in line


def test_runtime_side_stays_torch_free() -> None:
    code = ("import sys, kdx.runtime.tensorrt_build, kdx.runtime.commands, kdx.runtime.cli; "
            "bad = [m for m in ('torch', 'tensorrt') if m in sys.modules]; "
            "print(bad); sys.exit(1 if bad else 0)")
    result = subprocess.run([sys.executable, "-c", code], cwd=REPO, capture_output=True, text=True)
    assert result.returncode == 0, result.stdout + result.stderr


def test_kdx_runtime_has_build_engines(tmp_path: Path) -> None:
    from typer.testing import CliRunner

    from kdx.runtime.cli import app

    runner = CliRunner()
    assert "build-engines" in runner.invoke(app, ["--help"]).output
    if not HAS_TENSORRT:
        bundle = make_test_bundle(tmp_path / "b", teacher_hidden=None)
        out = runner.invoke(app, ["build-engines", str(bundle)])
        assert out.exit_code != 0 and TENSORRT_MISSING in str(out.exception)


@pytest.mark.skipif(not HAS_TENSORRT, reason="TensorRT is not installable here: engines are built on the Jetson")
def test_real_engine_build(tmp_path: Path) -> None:  # pragma: no cover - needs TensorRT and a GPU
    bundle = make_test_bundle(tmp_path / "b", teacher_hidden=None)
    records = build_engines(bundle)
    manifest = load_manifest(bundle)
    verify_files(bundle, manifest)
    assert len(records) == 3 and all(e.file_of_kind("engine") for e in manifest.agents)
