"""The base install (numpy only: no onnxruntime, no onnx) runs what it can and says what to
install for the rest (issue 17): before, ``kdx-runtime bench BUNDLE`` failed outright because the
teacher (ONNX only, as ``kdx export`` writes it) had no backend.

The absence of onnxruntime and onnx is an environment condition, made real in a subprocess by a
``sitecustomize`` that makes both imports fail (``sys.modules[name] = None``)."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from kdx.runtime.testing import make_test_bundle

REPO = Path(__file__).resolve().parents[2]
NEEDS_ORT = "needs onnxruntime (pip install 'kdx[runtime]')"


@pytest.fixture(scope="module")
def exported_like_bundle(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """Students with ONNX + npz sidecar, the teacher ONNX only (the exporter's layout)."""
    pytest.importorskip("onnx")
    return make_test_bundle(tmp_path_factory.mktemp("base-install"), n_agents=2, student_hidden=(16,),
                            teacher_hidden=(32,), teacher_npz=False)


@pytest.fixture(scope="module")
def numpy_only_env(tmp_path_factory: pytest.TempPathFactory) -> dict[str, str]:
    blocker = tmp_path_factory.mktemp("numpy-only")
    (blocker / "sitecustomize.py").write_text(
        "import sys\nfor name in ('onnxruntime', 'onnx', 'tensorrt'):\n    sys.modules[name] = None\n")
    return {**os.environ, "PYTHONPATH": os.pathsep.join([str(blocker), str(REPO)]),
            "CC": "/nonexistent/cc",  # nor a C compiler: the c backend is unavailable too
            "COLUMNS": "1000"}  # one message, one line


def _runtime(env: dict[str, str], *argv: str) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "kdx.runtime.cli", *argv], cwd=REPO, env=env,
                          capture_output=True, text=True, timeout=120)


def test_the_blocker_hides_the_libraries(numpy_only_env: dict[str, str]) -> None:
    result = _runtime(numpy_only_env, "version")
    assert result.returncode == 0 and result.stdout.strip().endswith("backends: numpy"), result


def test_bench_runs_the_students_and_skips_the_teacher(exported_like_bundle: Path, numpy_only_env: dict,
                                                       tmp_path: Path) -> None:
    out = tmp_path / "bench.json"
    result = _runtime(numpy_only_env, "bench", str(exported_like_bundle), "--iters", "20", "--warmup", "0",
                      "--json", str(out))
    assert result.returncode == 0, result.stderr
    for name in ("agent_0", "agent_1"):
        assert f"teacher {name}: skipped, {NEEDS_ORT}" in result.stdout
    report = json.loads(out.read_text())
    assert [(r["role"], r["agent"], r["backend"]) for r in report["results"]] == [
        ("student", "agent_0", "numpy"), ("student", "agent_1", "numpy")]
    assert len(report["skipped"]) == 2


def test_bench_of_only_what_cannot_run_is_an_error(exported_like_bundle: Path, numpy_only_env: dict) -> None:
    result = _runtime(numpy_only_env, "bench", str(exported_like_bundle), "--role", "teacher", "--iters", "20")
    assert result.returncode == 2 and "nothing to benchmark here" in result.stderr + result.stdout
    assert NEEDS_ORT in result.stderr + result.stdout


def test_info_says_what_cannot_run_here(exported_like_bundle: Path, numpy_only_env: dict) -> None:
    result = _runtime(numpy_only_env, "info", str(exported_like_bundle))
    assert result.returncode == 0, result.stderr
    assert f"teacher agent_1: cannot run here, {NEEDS_ORT}" in result.stdout
    assert "student agent_0: cannot run" not in result.stdout


def test_serving_the_teacher_says_what_to_install(exported_like_bundle: Path, numpy_only_env: dict) -> None:
    result = _runtime(numpy_only_env, "serve", str(exported_like_bundle), "--agent", "agent_0",
                      "--role", "teacher", "--port", "0")
    assert result.returncode == 2 and NEEDS_ORT in result.stderr + result.stdout
    assert "Traceback" not in result.stderr
