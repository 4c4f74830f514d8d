"""``kdx export``: a run's students (and teacher actor) -> a deployment bundle for one target.

The target defaults to the one of the device profile the students were distilled for, and the
precision to that profile's default precision (``students/config.json`` records both); a given
target (or profile name) and precision override them.

Layout of ``RUN/bundles/<target>/`` (the manifest lists every file with its sha256)::

    manifest.json                  schema: kdx.runtime.manifest
    <agent>.<precision>.onnx       students, static batch 1 (+ .dynamic.onnx with --dynamic-batch)
    <agent>.npz                    students' numpy sidecar (fp32 weights, numpy backend)
    teacher/<agent>.<precision>.onnx   the teacher actor seen from each agent
    calib.npz                      >= 1000 observations per agent recorded from rollouts (calibration)
    parity.json                    onnxruntime vs torch for every model, on held-out observations
                                   (target c: also the compiled C code, backend "c")
    c/                             target c: C99 sources, Makefile, harness (kdx.export.c_target)
    build_engines.sh               jetson: trtexec commands (kdx-runtime build-engines does more)

and ``RUN/bundles/<target>.tar.gz`` holding the folder. The bundle is built in a temporary
folder beside the destination and renamed into place at the end, so a failure part-way leaves
nothing behind; an existing bundle is replaced only with ``force``.

Parity is measured on observations recorded from other rollouts (``ExportConfig.parity_seed``)
than the calibration rows in calib.npz, so a quantiser that fits its calibration rows is not
judged on them.

Students distilled on a view (``kdx distill --view``) take the view as input: their models read
the view's width, their manifest entries record the view (``kdx.runtime.manifest_view``), and
their calibration and parity rows are the device view of the recorded observations, i.e. what
the model reads on the device (``kdx.export.calib``).

Precision: fp16 and int8 models must pass their parity bar (``kdx.export.parity``). For int8
the exporter first quantises every matrix multiply, then, if that misses the bar, keeps the
logits layer in float, then instead the first layer (the one reading raw observations); an
agent that still misses it is shipped in fp32 with a warning (per agent; the manifest records
the precision of each, and for int8 the share of multiply-adds that run in int8).
"""

from __future__ import annotations

import json
import os
import re
import shutil
import tarfile
import tempfile
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path

from kdx import __version__
from kdx.errors import KdxError
from kdx.export.calib import MIN_PARITY_SAMPLES, CalibData, record_rollouts
from kdx.export.parity import ParityResult, measure_parity
from kdx.export.sources import PolicySource, RunPolicies, load_run_policies
from kdx.export.targets import (
    TARGETS,
    ExportTarget,
    default_precision,
    get_target,
    resolve_precision,
)
from kdx.fileio import dead_writer_temporaries, remove_path
from kdx.layout import RunLayout
from kdx.runtime.manifest import (
    AgentEntry,
    FileEntry,
    InputNames,
    Manifest,
    OutputNames,
    write_manifest,
)

CALIB_NAME = "calib.npz"
PARITY_NAME = "parity.json"
SCRIPT_NAME = "build_engines.sh"


@dataclass
class ExportConfig:
    """What ``kdx export`` does."""

    run_dir: Path
    # jetson, rpi, x86, or a device profile name (exports to that profile's target);
    # None: the target of the device profile the students were distilled for
    target: str | None = None
    precision: str | None = None  # None: the profile's default precision, else the target's
    force: bool = False  # replace an existing bundle
    dynamic_batch: bool = False  # also write a dynamic-batch ONNX per agent
    include_teacher: bool = True  # export the teacher actor per agent too (if the run has one)
    calib_samples: int = 1024  # observations recorded per agent (>= 1000 for the parity checks)
    calib_envs: int = 16  # envs stepped together while recording
    seed: int = 20_000  # seed of the recording rollouts (differs from train/eval seeds)
    parity_seed: int = 30_011  # seed of the held-out rollouts that parity is measured on

    @property
    def layout(self) -> RunLayout:
        return RunLayout(Path(self.run_dir))


@dataclass
class ExportResult:
    """What an export wrote and measured. Numbers, no formatting."""

    bundle_dir: Path
    tarball: Path
    manifest: Manifest
    parity: list[ParityResult]
    warnings: list[str]
    seconds: dict[str, float] = field(default_factory=dict)


@contextmanager
def _torch_threads(n: int) -> Iterator[None]:
    """Tiny batch-1 models: extra torch threads only fight other processes for the cores."""
    import torch

    before = torch.get_num_threads()
    torch.set_num_threads(n)
    try:
        yield
    finally:
        torch.set_num_threads(before)


def int8_mac_fraction(matmul_macs: dict[str, int], float_nodes: list[str], recurrent_macs: int = 0) -> float:
    """Share of a model's weight multiply-adds that run in int8 (``kdx.export.quantize.model_macs``):
    its quantisable matmuls minus those kept in float, over all of them plus those of its GRU
    cells (which stay in float). Recorded so that an "int8" agent says how much of it really is
    (a small student spends most of its multiply-adds reading the observation)."""
    total = sum(matmul_macs.values()) + recurrent_macs
    quantised = sum(m for name, m in matmul_macs.items() if name not in float_nodes)
    return round(quantised / total, 4) if total else 0.0


def int8_attempts(precision: str, nodes: list[str]) -> list[tuple[str, list[str] | None, str]]:
    """``(precision, layers kept in float, note)`` in the order tried: for int8 (``nodes``: the
    quantisable matmuls, first to last) every matmul in int8, then the logits layer in float,
    then the layer reading the observation in float (most int8 multiply-adds first). Shared by
    the ONNX and the C (``kdx.export.c_target``) int8 paths."""
    if precision != "int8":
        return [(precision, None, "")]
    attempts = [("int8", [], "every matmul int8")]
    if len(nodes) > 1:
        attempts.append(("int8", nodes[-1:], "last layer kept in float"))
    if nodes:
        attempts.append(("int8", nodes[:1], "first layer kept in float"))
    return attempts


class _AgentExporter:
    """Exports one policy at the requested precision, with the fallbacks described above."""

    def __init__(self, root: Path, scratch: Path, target: ExportTarget, calib: CalibData,
                 heldout: CalibData, dynamic_batch: bool, warn: Callable[[str], None]) -> None:
        self.root, self.scratch, self.target = root, scratch, target
        self.calib, self.heldout, self.dynamic_batch, self.warn = calib, heldout, dynamic_batch, warn

    def rel(self, source: PolicySource, precision: str, dynamic: bool = False) -> str:
        prefix = "teacher/" if source.role == "teacher" else ""
        return f"{prefix}{source.name}.{precision}{'.dynamic' if dynamic else ''}.onnx"

    def _fp32_dynamic(self, source: PolicySource) -> Path:
        """The fp32 dynamic-batch model that int8 models are quantised from (made once)."""
        from kdx.export.onnx_export import export_onnx

        path = self.scratch / f"{source.role}-{source.name}.fp32.dynamic.onnx"
        if not path.is_file():
            export_onnx(source, path, "fp32", True, self.target.name)
        return path

    def _write(self, source: PolicySource, precision: str, dynamic: bool, float_nodes: list[str] | None) -> str:
        from kdx.export.onnx_export import export_onnx
        from kdx.export.quantize import quantize_int8, with_static_batch

        rel = self.rel(source, precision, dynamic)
        out = self.root / rel
        out.parent.mkdir(parents=True, exist_ok=True)
        if precision == "int8":
            # Quantised from the dynamic-batch model: calibration then runs as one batch instead
            # of a thousand batch-1 calls; the static model is the same graph with batch 1.
            key = "-".join(float_nodes or []).replace("/", "_")
            quantized = self.scratch / f"{source.role}-{source.name}.int8.{len(float_nodes or [])}{key}.onnx"
            if not quantized.is_file():
                quantize_int8(self._fp32_dynamic(source), quantized, self.calib.inputs(source),
                              exclude_nodes=float_nodes,
                              symmetric_activations=self.target.symmetric_int8_activations)
            if dynamic:
                shutil.copyfile(quantized, out)
            else:
                with_static_batch(quantized, out)
        else:
            export_onnx(source, out, precision, dynamic, self.target.name)
        return rel

    def export(self, source: PolicySource, precision: str) -> tuple[AgentEntry, list[ParityResult]]:
        inputs = self.heldout.inputs(source)  # parity rows: never seen by the quantiser
        matmul_macs, recurrent_macs = {}, 0
        if precision == "int8":
            from kdx.export.quantize import model_macs

            matmul_macs, recurrent_macs = model_macs(self._fp32_dynamic(source))
        results: list[ParityResult] = []
        chosen: tuple[str, list[str] | None, str, ParityResult] | None = None
        for attempt_precision, float_nodes, note in int8_attempts(precision, list(matmul_macs)):
            rel = self._write(source, attempt_precision, False, float_nodes)
            result = measure_parity(source, self.root / rel, attempt_precision, inputs)
            result.model = rel
            result.note = note
            if result.passed:
                chosen = (attempt_precision, float_nodes, rel, result)
                break
            results.append(result)  # a failed attempt stays in parity.json
            (self.root / rel).unlink()
        if chosen is None:
            if precision == "fp32":
                raise KdxError(
                    f"{source.role} {source.name!r}: the fp32 model misses its parity bar (agreement "
                    f"{result.action_agreement:.4f}, max |dlogit| {result.max_abs_logit_diff:.3g}); "
                    "this is a bug in the exporter, please report it")
            if not self.target.fallback_to_fp32:
                raise KdxError(f"{source.role} {source.name!r}: the {precision} model misses its parity "
                               f"bar (agreement {result.action_agreement:.4f}); export in fp32 instead")
            self.warn(f"{source.role} {source.name}: {precision} greedy-action agreement "
                      f"{result.action_agreement:.2%} < {result.required_agreement:.1%}; "
                      "shipping this agent in fp32")
            rel = self._write(source, "fp32", False, None)
            fp32_result = measure_parity(source, self.root / rel, "fp32", inputs)
            fp32_result.model = rel
            fp32_result.note = f"fallback: {precision} missed its bar"
            if not fp32_result.passed:
                raise KdxError(f"{source.role} {source.name!r}: the fp32 model misses its parity "
                               "bar; this is a bug in the exporter, please report it")
            chosen = ("fp32", None, rel, fp32_result)
        shipped_precision, float_nodes, rel, result = chosen
        failed = results[-1] if shipped_precision != precision else None
        results.append(result)
        files = [FileEntry.of_file(self.root, rel, "onnx")]
        if self.dynamic_batch:
            dyn = self._write(source, shipped_precision, True, float_nodes)
            dyn_result = measure_parity(source, self.root / dyn, shipped_precision, inputs)
            dyn_result.model = dyn
            dyn_result.note = result.note
            results.append(dyn_result)
            files.append(FileEntry.of_file(self.root, dyn, "onnx-dynamic"))
        from kdx.export.onnx_export import write_student_npz

        if source.role == "student":
            npz_rel = f"{source.name}.npz"
            if write_student_npz(source, self.root / npz_rel) is not None:
                files.append(FileEntry.of_file(self.root, npz_rel, "npz"))
        parity = result.manifest_parity()
        if failed is not None:  # shipped in fp32 because the requested precision missed its bar
            parity["fallback_from"] = failed.precision
            parity["fallback_from_action_agreement"] = failed.action_agreement
        if shipped_precision == "int8":
            parity["int8_mac_fraction"] = int8_mac_fraction(matmul_macs, float_nodes or [], recurrent_macs)
        if float_nodes:
            parity["float_nodes"] = ",".join(float_nodes)
            self.warn(f"{source.role} {source.name}: int8 with the {result.note} "
                      f"({parity['int8_mac_fraction']:.0%} of its multiply-adds in int8)")
        recurrent = source.recurrent_size is not None
        entry = AgentEntry(
            name=source.name, role=source.role, obs_dim=source.obs_dim, n_actions=source.n_actions,
            files=files, hidden_sizes=list(source.hidden_sizes),
            params=source.cost.params, macs=source.cost.macs,  # as stored by kdx distill (PolicySource.cost)
            inputs=InputNames.of_policy(action_mask=True, recurrent=recurrent),
            outputs=OutputNames.of_policy(recurrent),
            recurrent_state_shape=[1, source.recurrent_size] if recurrent else None,
            precision=shipped_precision, normalisation_folded=True, parity=parity, view=source.view,
        )
        return entry, results


def _add_c_sources(root: Path, scratch: Path, sources: list[PolicySource], precision: str, heldout: CalibData,
                   entries: list[AgentEntry], warn: Callable[[str], None],
                   log: Callable[[str], None]) -> list[ParityResult]:
    """Write ``root/c/`` (``kdx.export.c_target``) and add its files, symbol, precision and parity
    to each agent entry; returns the C parity results."""
    from kdx.export.c_target import export_c

    result = export_c(root, scratch, sources, precision, heldout.inputs, int8_attempts, warn)
    for note in result.notes:
        log(f"note: {note}")
    for entry in entries:
        key = (entry.role, entry.name)
        entry.files.extend(result.files[key])
        entry.c_symbol = result.symbols[key]
        entry.precision = result.precisions[key]
        entry.parity.update(result.parity[key])
    log(f"wrote C sources for {len(entries)} policies ({precision})")
    return result.results


def _write_tarball(folder: Path, arcname: str, tmp_path: Path) -> None:
    with tarfile.open(tmp_path, "w:gz") as tar:
        tar.add(folder, arcname=arcname)
    with open(tmp_path, "rb") as handle:
        os.fsync(handle.fileno())


_TEMP_NAME = re.compile(r"^\.(?:tmp-[A-Za-z0-9]+|scratch|old-[A-Za-z0-9]+)-(\d+)(?:[-.]|$)")


def remove_stale_temporaries(bundles: Path) -> list[Path]:
    """Remove what an export killed part-way left in ``bundles`` (temp folders, tarballs, scratch,
    a set-aside old bundle) when the process that made it is gone; returns what was removed.
    A set-aside old bundle whose replacement never arrived is put back instead."""
    removed = []
    for path in dead_writer_temporaries(bundles, _TEMP_NAME):
        if path.name.startswith(".old-"):
            target = bundles / path.name[len(".old-"):].rsplit("-", 1)[0]
            if not target.exists():
                os.rename(path, target)
                continue
        remove_path(path)
        removed.append(path)
    return removed


def _publish(tmp_dir: Path, dest: Path, tmp_tar: Path, tarball: Path) -> None:
    """Rename the finished folder and tarball into place (the old bundle goes last)."""
    old = None
    if dest.exists():
        old = dest.with_name(f".old-{dest.name}-{os.getpid()}")
        os.rename(dest, old)
    try:
        os.rename(tmp_dir, dest)
    except BaseException:
        if old is not None:  # put the previous bundle back
            os.rename(old, dest)
        raise
    os.replace(tmp_tar, tarball)
    if old is not None:
        shutil.rmtree(old, ignore_errors=True)


def export_target(config: ExportConfig) -> tuple[ExportTarget, str]:
    """The target and precision of an export: ``config.target`` (a target or a profile name) if
    given, else the target of the device profile the students were distilled for; ``config.precision``
    if given, else the default precision of that profile (else of the target)."""
    if config.target is not None:
        target = get_target(config.target)
        return target, resolve_precision(target, config.precision or default_precision(config.target))
    from kdx.trainer.distill.store import read_students_config, students_profile

    run, students = config.run_dir, config.layout.students
    targets = ", ".join(TARGETS)
    if not students.config.is_file():
        raise KdxError(f"{run} has no students ({students.config} is missing), so there is no device profile "
                       f"to take the export target from: distil them with `kdx distill {run} --profile PROFILE`, "
                       f"or name the target with --target ({targets})")
    profile = students_profile(read_students_config(run))
    if profile["target"] is None:
        raise KdxError(f"the students of {run} were sized for device profile {profile['name']!r}, whose export "
                       f"target this run does not record (a profile file kdx does not ship); pass --target ({targets})")
    target = get_target(profile["target"])
    return target, resolve_precision(target, config.precision or profile["precision"])


def export_bundle(config: ExportConfig, policies: RunPolicies | None = None,
                  log: Callable[[str], None] = lambda message: None) -> ExportResult:
    """Export ``config.run_dir`` for its target (see ``export_target``); see the module docstring.

    Bad settings fail before anything is touched; then the run's writer lock is held throughout
    (a second writer gets an error naming it)."""
    started = time.perf_counter()
    if config.calib_samples < MIN_PARITY_SAMPLES:
        raise KdxError(f"calib_samples must be >= {MIN_PARITY_SAMPLES} (parity is measured on as many "
                       "held-out observations)")
    if config.parity_seed == config.seed:
        raise KdxError(f"parity_seed must differ from seed ({config.seed}): parity is measured on held-out "
                       "rollouts")
    with config.layout.writing("kdx export"):
        return _export_bundle(config, policies, log, started)


def _export_bundle(config: ExportConfig, policies: RunPolicies | None,
                   log: Callable[[str], None], started: float) -> ExportResult:
    target, precision = export_target(config)
    bundles = config.layout.bundles
    dest, tarball = config.layout.bundle(target.name), config.layout.bundle_archive(target.name)
    if (dest.exists() or tarball.exists()) and not config.force:
        raise KdxError(f"{dest} already exists; pass --force to replace it")
    seconds: dict[str, float] = {}
    warnings: list[str] = []

    def warn(message: str) -> None:
        warnings.append(message)
        log(f"warning: {message}")

    with _torch_threads(1):
        t = time.perf_counter()
        if policies is None:
            policies = load_run_policies(config.run_dir, config.include_teacher)
        teacher = policies.teacher if config.include_teacher else []
        for note in policies.notes:
            warn(note)
        seconds["load"] = time.perf_counter() - t
        bundles.mkdir(parents=True, exist_ok=True)
        remove_stale_temporaries(bundles)
        pid = os.getpid()
        tmp_dir = Path(tempfile.mkdtemp(prefix=f".tmp-{target.name}-{pid}-", dir=bundles))
        tmp_tar = bundles / f"{tmp_dir.name}.tar.gz"
        scratch = Path(tempfile.mkdtemp(prefix=f".scratch-{pid}-", dir=bundles))
        try:
            t = time.perf_counter()
            calib = record_rollouts(policies.env, policies.students, teacher,
                                    config.calib_samples, config.calib_envs, config.seed)
            calib.save(tmp_dir / CALIB_NAME)
            heldout = record_rollouts(policies.env, policies.students, teacher,
                                      config.calib_samples, config.calib_envs, config.parity_seed)
            seconds["record"] = time.perf_counter() - t
            log(f"recorded {calib.n_samples} calibration and {heldout.n_samples} held-out parity observations "
                f"per agent from {policies.env}")
            exporter = _AgentExporter(tmp_dir, scratch, target, calib, heldout, config.dynamic_batch, warn)
            t = time.perf_counter()
            parity: list[ParityResult] = []
            students, teachers = [], []
            onnx_precision = "fp32" if target.native_c else precision  # the C code carries the precision
            for source in [*policies.students, *teacher]:
                entry, results = exporter.export(source, onnx_precision)
                (students if source.role == "student" else teachers).append(entry)
                parity += results
                log(f"exported {source.role} {source.name} ({entry.precision})")
            seconds["export_and_parity"] = time.perf_counter() - t
            if target.native_c:
                t = time.perf_counter()
                parity += _add_c_sources(tmp_dir, scratch, [*policies.students, *teacher], precision, heldout,
                                         [*students, *teachers], warn, log)
                seconds["c_sources"] = time.perf_counter() - t
            t = time.perf_counter()
            manifest = Manifest(
                agents=students, teacher=teachers, target=target.name, precision=precision,
                env=policies.env, kdx_version=__version__,
                created_at=time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
            )
            manifest.schema_version = manifest.needed_schema_version  # 2 only with views
            parity_doc = {
                "target": target.name, "precision": precision, "env": policies.env,
                "samples": heldout.n_samples, "calibration_samples": calib.n_samples,
                "rows": f"held-out: rollouts with seed {config.parity_seed} (calib.npz: seed {config.seed})",
                "results": [r.to_json() for r in parity],
            }
            views = {s.name: s.view.text for s in policies.students if s.view is not None}
            if views:  # those students' rows are the device view of the recorded observations
                parity_doc["student_views"] = views
            (tmp_dir / PARITY_NAME).write_text(json.dumps(parity_doc, indent=2) + "\n")
            shared = [FileEntry.of_file(tmp_dir, CALIB_NAME, "calib"), FileEntry.of_file(tmp_dir, PARITY_NAME, "json")]
            if target.engine_build_on_device:
                from kdx.export.trtexec import trtexec_script

                script = tmp_dir / SCRIPT_NAME
                script.write_text(trtexec_script(manifest))
                script.chmod(0o755)
                shared.append(FileEntry.of_file(tmp_dir, SCRIPT_NAME, "script"))
            for entry in manifest.entries():
                entry.files.extend(shared)
            write_manifest(tmp_dir, manifest)
            _write_tarball(tmp_dir, target.name, tmp_tar)
            _publish(tmp_dir, dest, tmp_tar, tarball)
            seconds["write"] = time.perf_counter() - t
        except BaseException:
            shutil.rmtree(tmp_dir, ignore_errors=True)
            tmp_tar.unlink(missing_ok=True)
            raise
        finally:
            shutil.rmtree(scratch, ignore_errors=True)
    seconds["total"] = time.perf_counter() - started
    return ExportResult(dest, tarball, manifest, parity, warnings, seconds)
