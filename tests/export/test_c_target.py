"""``kdx export --target c``: the generated C against torch (fp32, int8, a recurrent teacher
stepped across calls), the C error codes, name mangling, the bundle's Makefile and harness, and
the export without a compiler."""

from __future__ import annotations

import ctypes
import json
import shutil
import subprocess
import tarfile
from pathlib import Path

import numpy as np
import pytest
import torch

from kdx.devices.targets import PRECISIONS
from kdx.errors import KdxError
from kdx.export.bundle import ExportConfig, export_bundle
from kdx.export.c_codegen import (
    SHARED_HEADER,
    CPolicy,
    c_symbols,
    mangle,
    policy_files,
    shared_header,
)
from kdx.export.c_target import C_FP32_MAX_ABS_LOGIT_DIFF
from kdx.runtime.bundle import Bundle
from kdx.runtime.c_build import act_function, compile_shared, find_compiler, load_library
from kdx.runtime.manifest import load_manifest
from kdx.runtime.mlp_npz import MlpLayer
from kdx.trainer.distill.store import load_students
from kdx.trainer.teacher.store import load_teacher
from tests.export.conftest import save_run

COMPILER, NO_COMPILER = find_compiler()
needs_compiler = pytest.mark.skipif(COMPILER is None, reason=f"{NO_COMPILER}; the C code cannot be compiled here")


@pytest.fixture(scope="module")
def c_run(tmp_path_factory, spread_students) -> Path:
    return save_run(tmp_path_factory.mktemp("c") / "run", "mpe/simple_spread", spread_students,
                    recurrent_teacher=True)


@pytest.fixture(scope="module")
def fp32_export(c_run: Path):
    return export_bundle(ExportConfig(c_run, "c"))


def _c_results(bundle_dir: Path) -> list[dict]:
    doc = json.loads((bundle_dir / "parity.json").read_text())
    return [r for r in doc["results"] if r["backend"] == "c"]


def _library(bundle_dir: Path, tmp_path: Path) -> ctypes.CDLL:
    c = bundle_dir / "c"
    sources = {str(p.relative_to(c)): p.read_bytes() for p in c.rglob("*") if p.suffix in (".c", ".h")
               and p.name != "harness.c"}
    out = tmp_path / "lib.so"
    compile_shared(COMPILER, sources, out)
    return load_library(out)


@needs_compiler
def test_fp32_c_matches_torch_for_students_and_recurrent_teacher(fp32_export) -> None:
    bundle_dir = fp32_export.bundle_dir
    results = _c_results(bundle_dir)
    manifest = load_manifest(bundle_dir)
    assert {(r["role"], r["agent"]) for r in results} == {(e.role, e.name) for e in manifest.entries()}
    assert manifest.teacher and manifest.teacher[0].is_recurrent
    for r in results:
        assert r["passed"] and r["precision"] == "fp32" and r["samples"] >= 1000
        assert r["max_abs_logit_diff"] <= C_FP32_MAX_ABS_LOGIT_DIFF and r["action_agreement"] == 1.0
    for entry in manifest.entries():
        assert entry.precision == "fp32" and entry.parity["c_passed"] is True
        source = entry.file_of_kind("c_source")
        assert source.path == ("c/teacher/" if entry.role == "teacher" else "c/") + f"{entry.name}.c"
        assert entry.c_symbol == (f"teacher_{entry.name}" if entry.role == "teacher" else entry.name)
        kinds = {f.kind for f in entry.files}
        assert {"onnx", "c_source", "c_header", "c_build", "c_harness", "c_data"} <= kinds
    assert manifest.agents[0].file_of_kind("npz") is not None  # the CPU targets' models stay
    text = (bundle_dir / "c" / "agent_0.c").read_text()
    assert "static const float" in text and "malloc" not in text


@needs_compiler
def test_bundle_makefile_builds_libraries_and_harness_passes(fp32_export, tmp_path: Path) -> None:
    if shutil.which("make") is None:
        pytest.skip("make is not installed")
    c = tmp_path / "c"
    shutil.copytree(fp32_export.bundle_dir / "c", c)
    build = subprocess.run(["make", f"CC={COMPILER.path}", "all"], cwd=c, capture_output=True, text=True)
    assert build.returncode == 0, build.stderr
    assert (c / "libkdx_policy.a").is_file() and (c / "libkdx_policy.so").is_file()
    run = subprocess.run(["make", f"CC={COMPILER.path}", "test"], cwd=c, capture_output=True, text=True)
    assert run.returncode == 0, run.stdout + run.stderr
    lines = [line for line in run.stdout.splitlines() if "agreement" in line]
    assert len(lines) == 6 and all(line.endswith(" ok") for line in lines)
    bench = subprocess.run(["./harness", "--bench", "1000"], cwd=c, capture_output=True, text=True)
    assert bench.returncode == 0 and bench.stdout.count("p50") == 6
    # The harness fails when the rows do not fit the code: corrupt torch's logits of the first policy.
    rows = bytearray((c / "parity_rows.bin").read_bytes())
    first = 12 + 16 + 1024 * 18 * 4 + 1024 * 5  # header, dims, obs, mask: then the logits
    rows[first:first + 4] = np.float32(1e3).tobytes()
    (c / "parity_rows.bin").write_bytes(bytes(rows))
    failed = subprocess.run(["./harness"], cwd=c, capture_output=True, text=True)
    assert failed.returncode == 1 and "FAIL" in failed.stdout


@needs_compiler
def test_runtime_c_backend_steps_the_recurrent_teacher_like_torch(fp32_export, c_run: Path) -> None:
    teacher = load_teacher(c_run)
    view = teacher.actor.agent_view(1, 5, 18).eval()
    policy = Bundle.load(fp32_export.bundle_dir).policy("agent_1", "c", role="teacher")
    rng = np.random.default_rng(0)
    for _episode in range(2):
        policy.reset()
        hidden = torch.zeros(1, teacher.actor.hidden_dim)
        for _ in range(25):
            obs = rng.standard_normal(18).astype(np.float32)
            with torch.no_grad():
                logits, hidden = view(torch.from_numpy(obs)[None], hidden)
            action = policy.act(obs)
            assert action == int(logits.argmax())
            np.testing.assert_allclose(policy.last_logits(), logits[0].numpy(), atol=1e-5, rtol=0)
            np.testing.assert_allclose(policy.backend.h_in[0], hidden[0].numpy(), atol=1e-5, rtol=0)


@needs_compiler
def test_c_error_codes_and_mask(fp32_export, tmp_path: Path) -> None:
    library = _library(fp32_export.bundle_dir, tmp_path)
    act = act_function(library, "agent_0", recurrent=False)
    recurrent_act = act_function(library, "teacher_agent_0", recurrent=True)
    rng = np.random.default_rng(1)
    logits = np.zeros(5, np.float32)
    for _ in range(30):
        obs = rng.standard_normal(18).astype(np.float32)
        free = act(obs.ctypes.data, None, logits.ctypes.data)
        assert free == int(np.argmax(logits))
        mask = np.ones(5, np.uint8)
        mask[free] = 0
        masked = act(obs.ctypes.data, mask.ctypes.data, None)  # logits may be NULL
        assert masked != free and mask[masked]
    assert act(obs.ctypes.data, np.zeros(5, np.uint8).ctypes.data, None) == -2  # KDX_ERR_NO_LEGAL_ACTION
    state = np.full(32, 0.25, np.float32)
    for bad in (np.nan, np.inf, -np.inf):
        obs[7] = bad
        assert act(obs.ctypes.data, None, None) == -1  # KDX_ERR_NONFINITE_INPUT
        assert recurrent_act(state.ctypes.data, obs.ctypes.data, None, None) == -1
        assert (state == 0.25).all()  # the state moves only with a returned action
    with pytest.raises(KdxError, match="NaN or inf"):
        Bundle.load(fp32_export.bundle_dir).policy("agent_0", "c").act(obs)
    header = (fp32_export.bundle_dir / "c" / SHARED_HEADER).read_text()
    assert "#define KDX_ERR_NONFINITE_INPUT (-1)" in header and "#define KDX_ERR_NO_LEGAL_ACTION (-2)" in header
    assert "#define KDX_ERR_NONFINITE_LOGITS (-3)" in header


@needs_compiler
def test_int8_c_code_meets_the_int8_bar_or_falls_back(c_run: Path) -> None:
    result = export_bundle(ExportConfig(c_run, "c", precision="int8", include_teacher=False, force=True))
    manifest = result.manifest
    shipped = {e.name: e.precision for e in manifest.agents}
    results = _c_results(result.bundle_dir)
    bar = PRECISIONS["int8"].min_action_agreement
    for entry in manifest.agents:
        final = [r for r in results if r["agent"] == entry.name][-1]
        assert final["passed"] and final["precision"] == entry.precision
        text = (result.bundle_dir / "c" / f"{entry.name}.c").read_text()
        if entry.precision == "int8":
            assert final["action_agreement"] >= bar and "static const int8_t" in text
            assert 0 < entry.parity["c_int8_mac_fraction"] <= 1
        else:  # an int8 attempt missed the bar: fp32 C code, with the failed attempt recorded
            assert entry.parity["c_fallback_from"] == "int8" and "static const int8_t" not in text
            assert any(r["agent"] == entry.name and r["precision"] == "int8" and not r["passed"] for r in results)
    assert "int8" in shipped.values(), f"no student kept int8: {shipped}"
    onnx = [f.path for e in manifest.agents for f in e.files if f.kind == "onnx"]
    assert all(path.endswith(".fp32.onnx") for path in onnx)  # ONNX stays fp32 in a c bundle


def _numpy_int8_dense(x: np.ndarray, weight_in_out: np.ndarray, bias: np.ndarray) -> np.ndarray:
    """The C int8 kernel in numpy: per-row symmetric int8 weights, a per-call input scale."""
    from kdx.export.c_codegen import quantize_rows

    q_w, s_w = quantize_rows(weight_in_out.T)
    amax = np.abs(x).max()
    s_x = np.float32(amax / np.float32(127.0))
    v = x * (np.float32(127.0) / amax)
    q_x = np.where(v >= 0, np.floor(v + 0.5), -np.floor(-v + 0.5)).astype(np.int32)
    acc = q_w.astype(np.int32) @ q_x
    return bias + acc.astype(np.float32) * (s_w * s_x)


@needs_compiler
def test_int8_kernel_matches_its_numpy_statement(tmp_path: Path) -> None:
    rng = np.random.default_rng(4)
    w0, w1 = rng.normal(0, 0.3, (20, 16)).astype(np.float32), rng.normal(0, 0.3, (16, 6)).astype(np.float32)
    b0, b1 = rng.normal(0, 0.1, 16).astype(np.float32), rng.normal(0, 0.1, 6).astype(np.float32)
    layers = [MlpLayer("dense", "relu", {"weight": w0, "bias": b0}), MlpLayer("dense", "identity", {"weight": w1, "bias": b1})]
    policy = CPolicy("q", "student", "q", 20, 6, layers, int8_layers=frozenset({0, 1}))
    out = tmp_path / "q.so"
    compile_shared(COMPILER, {SHARED_HEADER: shared_header().encode(),
                              **{k: v.encode() for k, v in policy_files(policy, "q").items()}}, out)
    act = act_function(load_library(out), "q", recurrent=False)
    logits = np.zeros(6, np.float32)
    for _ in range(20):
        obs = rng.standard_normal(20).astype(np.float32)
        act(obs.ctypes.data, None, logits.ctypes.data)
        hidden = np.maximum(_numpy_int8_dense(obs, w0, b0), 0)
        np.testing.assert_allclose(logits, _numpy_int8_dense(hidden, w1, b1), atol=1e-5, rtol=1e-5)
    huge = np.full(20, 3e38, np.float32)  # finite, but the first layer overflows to inf
    assert act(huge.ctypes.data, None, None) == -3  # KDX_ERR_NONFINITE_LOGITS, not an arbitrary action


def test_mangling_is_deterministic_and_collision_free() -> None:
    assert mangle("agent-0") == "agent_0" and mangle("red.team 1") == "red_team_1" and mangle("3d") == "a_3d"
    names = ["agent_0", "agent-0", "agent.0", "A", "a", "9lives", "ok"]
    symbols = c_symbols(names)
    assert symbols == c_symbols(list(reversed(names)))  # order of the input does not matter
    assert symbols["agent-0"] == "agent_0" and symbols["agent.0"] == "agent_0_2" and symbols["agent_0"] == "agent_0_3"
    assert symbols["A"] == "A" and symbols["a"] == "a_2"  # the macros are upper case: KDX_A_... once
    assert symbols["9lives"] == "a_9lives" and symbols["ok"] == "ok"
    assert len({s.lower() for s in symbols.values()}) == len(names)


@needs_compiler
def test_mangled_names_compile_side_by_side(tmp_path: Path) -> None:
    rng = np.random.default_rng(2)
    files = {SHARED_HEADER: shared_header()}
    symbols = c_symbols(["agent-0", "agent.0", "7up"])
    for name, symbol in symbols.items():
        layer = MlpLayer("dense", "identity", {"weight": rng.normal(size=(3, 2)).astype(np.float32),
                                               "bias": np.zeros(2, np.float32)})
        files.update(policy_files(CPolicy(name, "student", symbol, 3, 2, [layer]), symbol))
    out = tmp_path / "names.so"
    compile_shared(COMPILER, {k: v.encode() for k, v in files.items()}, out)
    library = load_library(out)
    for symbol in symbols.values():
        assert act_function(library, symbol, recurrent=False)(np.ones(3, np.float32).ctypes.data, None, None) in (0, 1)
    assert "#define KDX_A_7UP_OBS_DIM 3" in files["a_7up.h"]


def test_names_cannot_break_out_of_comments_or_strings() -> None:
    layer = MlpLayer("dense", "identity", {"weight": np.ones((2, 2), np.float32), "bias": np.zeros(2, np.float32)})
    name = 'evil*/ "x\\'
    files = policy_files(CPolicy(name, "student", c_symbols([name])[name], 2, 2, [layer]), "evil")
    for text in files.values():
        first = text.splitlines()[0]
        assert "evil?? ?x?" in first and first.count("*/") == 1 and first.endswith("*/")
        assert '"' not in first and "\\" not in text


def test_export_without_a_compiler_notes_it_and_skips_c_parity(c_run: Path, monkeypatch, tmp_path: Path) -> None:
    monkeypatch.setenv("CC", "/nonexistent/cc")
    run = tmp_path / "run"
    shutil.copytree(c_run / "students", run / "students")
    lines: list[str] = []
    result = export_bundle(ExportConfig(run, "c", include_teacher=False), log=lines.append)
    notes = [line for line in lines if "no C compiler found" in line]
    assert len(notes) == 1 and "C parity not checked" in notes[0] and "/nonexistent/cc" in notes[0]
    assert _c_results(result.bundle_dir) == []
    entry = result.manifest.agents[0]
    assert entry.parity["c_checked"] is False and entry.file_of_kind("c_source") is not None
    with tarfile.open(result.tarball) as tar:
        assert "c/c/agent_0.c" in tar.getnames()
    assert load_students(run)  # the run itself is untouched


@needs_compiler
def test_students_with_views_export_to_c(tmp_path: Path, capsys) -> None:
    """A student distilled on a view reads the view's features: its C code takes the view's width
    and its parity rows are the device view (as in every target)."""
    from kdx.trainer.distill.config import DistillConfig
    from kdx.trainer.distill.loop import distill
    from tests.trainer.test_distill import TOY, make_teacher_run

    torch.set_num_threads(1)
    run = tmp_path / "run"
    make_teacher_run(run, env="mpe/simple_spread")
    distill(run, DistillConfig(total_steps=16 * 4, views=("agent_0=-comm.* quant:6:2",), **TOY), show_progress=False)
    result = export_bundle(ExportConfig(run, "c", include_teacher=False))
    entry = result.manifest.agent("agent_0")
    assert entry.view is not None and entry.obs_dim == entry.view.width < entry.view.raw_obs_dim
    assert f"#define KDX_AGENT_0_OBS_DIM {entry.view.width}" in (result.bundle_dir / "c" / "agent_0.h").read_text()
    assert all(r["passed"] for r in _c_results(result.bundle_dir))
    bundle = Bundle.load(result.bundle_dir)
    c, reference = bundle.policy("agent_0", "c"), bundle.policy("agent_0", "numpy")
    obs = np.random.default_rng(0).standard_normal(entry.obs_dim).astype(np.float32)
    assert c.backend.infer(obs) == reference.backend.infer(obs)
    np.testing.assert_allclose(c.last_logits(), reference.last_logits(), atol=1e-5)
    from kdx.runtime.cli import main as runtime_main

    try:
        runtime_main(["info", str(result.bundle_dir)])
    except SystemExit as exc:
        assert exc.code in (0, None)
    printed = " ".join(capsys.readouterr().out.split())  # rich wraps long lines
    assert "target c" in printed and "view of student agent_0: -comm.* quant:6:2: the device applies -comm.* " \
           f"quant:6:2; raw obs {entry.view.raw_obs_dim} -> model input {entry.view.width}" in printed
    assert "view of student agent_1" not in printed  # full observation: no view line
